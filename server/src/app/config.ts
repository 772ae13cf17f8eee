// Server settings from the environment. Every variable the server reads is here, with its default;
// a bad value is a start-up error naming the variable.
import path from "node:path";
import { parseDuration } from "../ops/duration.js";
import { DEFAULT_MAX_KEYS_PER_POOL } from "../ops/metrics.js";
import { DEFAULT_STATEMENT_TIMEOUT_MS } from "../store/database.js";

export interface ServerConfig {
  host: string;
  grpcPort: number;
  httpPort: number;
  /** Unset: the embedded database in dataDir. */
  databaseUrl?: string;
  dataDir: string;
  snapshotIntervalMs: number;
  maxMessageBytes: number;
  logLevel: string;
  /** KEYMESH_CONFIG: declarative pools, keys and tokens applied at start. */
  configFile?: string;
  /** KEYMESH_AUDIT_RETENTION: audit entries older than this are deleted. */
  auditRetentionMs: number;
  /** KEYMESH_METRICS_MAX_KEYS: a pool with more keys exports no per-key series; 0 turns them off. */
  metricsMaxKeys: number;
  /** KEYMESH_STATEMENT_TIMEOUT: the longest a statement may run on an external Postgres; 0: no limit. */
  statementTimeoutMs: number;
  /** KEYMESH_ADVERTISE_ADDR: host:port other replicas forward to; unset: the gRPC listener's host and bound port. */
  advertiseAddress?: string;
  /** KEYMESH_OWNERSHIP_TTL: how long a replica's claim of a pool lasts without renewal (renewed every fifth of it). */
  ownershipTtlMs: number;
}

class ConfigVariableError extends Error {
  constructor(variable: string, message: string) {
    super(`${variable}: ${message}`);
    this.name = "ConfigVariableError";
  }
}

function port(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new ConfigVariableError(name, `"${raw}" is not a port (0-65535)`);
  return n;
}

function duration(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  const ms = parseDuration(raw);
  if (ms === undefined || ms <= 0) throw new ConfigVariableError(name, `"${raw}" is not a positive duration (e.g. 500ms, 1s, 2m)`);
  return ms;
}

function durationOrZero(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  const ms = parseDuration(raw);
  if (ms === undefined) throw new ConfigVariableError(name, `"${raw}" is not a duration (e.g. 30s, 2m; 0 for none)`);
  return ms;
}

function positiveInt(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new ConfigVariableError(name, `"${raw}" is not a positive integer`);
  return n;
}

function nonNegativeInt(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new ConfigVariableError(name, `"${raw}" is not a non-negative integer`);
  return n;
}

function address(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const raw = env[name]?.trim();
  if (!raw) return undefined;
  const m = /^(.+):(\d+)$/.exec(raw);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new ConfigVariableError(name, `"${raw}" is not host:port`);
  return raw;
}

export function configFromEnv(env: NodeJS.ProcessEnv = process.env): ServerConfig {
  return {
    host: env.KEYMESH_HOST?.trim() || "127.0.0.1",
    grpcPort: port(env, "KEYMESH_GRPC_PORT", 50051),
    httpPort: port(env, "KEYMESH_HTTP_PORT", 8080),
    databaseUrl: env.DATABASE_URL?.trim() || undefined,
    dataDir: path.resolve(env.KEYMESH_DATA_DIR?.trim() || ".keymesh"),
    snapshotIntervalMs: duration(env, "KEYMESH_SNAPSHOT_INTERVAL", 1000),
    maxMessageBytes: positiveInt(env, "KEYMESH_MAX_MESSAGE_BYTES", 1024 * 1024),
    logLevel: env.KEYMESH_LOG_LEVEL?.trim() || "info",
    configFile: env.KEYMESH_CONFIG?.trim() || undefined,
    auditRetentionMs: duration(env, "KEYMESH_AUDIT_RETENTION", 90 * 86_400_000),
    metricsMaxKeys: nonNegativeInt(env, "KEYMESH_METRICS_MAX_KEYS", DEFAULT_MAX_KEYS_PER_POOL),
    statementTimeoutMs: durationOrZero(env, "KEYMESH_STATEMENT_TIMEOUT", DEFAULT_STATEMENT_TIMEOUT_MS),
    advertiseAddress: address(env, "KEYMESH_ADVERTISE_ADDR"),
    ownershipTtlMs: duration(env, "KEYMESH_OWNERSHIP_TTL", 5000),
  };
}
