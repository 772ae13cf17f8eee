// Store test helpers: a real Postgres (scripts/pg.sh) with a schema per test, the embedded database in a
// temp dir, a fake clock, a capturing logger, and row factories with defaults (River style).
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { systemClock } from "../../src/domain/system-clock.js";
import type { Clock, KeyConfig, KeyRuntime, LeaseRecord, PoolConfig } from "../../src/domain/types.js";
import { Availability } from "../../src/store/availability.js";
import { PostgresConfigStore } from "../../src/store/config-store.js";
import { driverOptions, openDatabase } from "../../src/store/database.js";
import { PostgresGrantJournal, type JournalOptions } from "../../src/store/journal.js";
import type { StoreLog } from "../../src/store/log.js";
import { beginEpoch, loadState } from "../../src/store/restore.js";
import type { SecretBox } from "../../src/store/secrets.js";
import { PostgresSnapshotStore } from "../../src/store/snapshot-writer.js";
import type { Fence } from "../../src/store/fence.js";
import type { HeldTerm } from "../../src/store/sql/pool-owners.js";

export { FakeClock, settle } from "../fake-clock.js";

export const ROOT = fileURLToPath(new URL("../../../", import.meta.url));

/** Runs a scripts/pg.sh function for the cluster `name`; returns the DATABASE_URL and data directory it exports. */
export function pgScript(fn: "pg_start" | "pg_kill" | "pg_restart" | "pg_stop", name = "pg"): { url: string; dataDir: string } {
  const out = execFileSync("bash", ["-c", `source scripts/pg.sh && ${fn} >&2 && echo "$DATABASE_URL $KEYMESH_TEST_PG_DATA"`], {
    cwd: ROOT,
    env: { ...process.env, KEYMESH_PG_NAME: name },
    encoding: "utf8",
  });
  const [url, dataDir] = out.trim().split(" ");
  return { url, dataDir };
}

/** The shared real Postgres: DATABASE_URL from the test command, or the cluster scripts/pg.sh starts. */
function realDatabaseUrl(): string {
  if (!process.env.DATABASE_URL) {
    const { url, dataDir } = pgScript("pg_start");
    process.env.DATABASE_URL = url;
    process.env.KEYMESH_TEST_PG_DATA = dataDir;
  }
  return process.env.DATABASE_URL;
}

export interface TestDb {
  sql: postgres.Sql;
  embedded: boolean;
  /** Where the embedded database keeps its files. */
  dataDir?: string;
  close(): Promise<void>;
}

/** A client whose every session works in its own new schema of the database at `url`. */
export async function freshSchema(url: string = realDatabaseUrl(), max = 4): Promise<TestDb & { schema: string; url: string }> {
  const schema = `km_${process.pid}_${randomBytes(4).toString("hex")}`;
  const admin = postgres(url, { max: 1, onnotice: () => {} });
  await admin`create schema ${admin(schema)}`;
  await admin.end();
  const sql = postgres(url, { ...driverOptions(max), connection: { application_name: "keymesh-test", search_path: schema } });
  return {
    sql,
    schema,
    url,
    embedded: false,
    close: async () => {
      await sql.end({ timeout: 1 });
      const cleanup = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 2 });
      await cleanup`drop schema if exists ${cleanup(schema)} cascade`.catch(() => undefined);
      await cleanup.end();
    },
  };
}

/** A client on the same schema as `db` (a second server process, say). */
export function sameSchema(db: { url: string; schema: string }, max = 2, settings: Record<string, number> = {}): postgres.Sql {
  return postgres(db.url, { ...driverOptions(max), connection: { application_name: "keymesh-test", search_path: db.schema, ...settings } });
}

/** The embedded database in a fresh temp dir (or `dataDir`), removed on close unless `keep`. */
export async function embedded(dataDir?: string, keep = false): Promise<TestDb> {
  const dir = dataDir ?? (await mkdtemp(path.join(tmpdir(), "keymesh-store-")));
  const db = await openDatabase({ dataDir: dir, log: captureLog().log });
  return {
    sql: db.sql,
    embedded: true,
    dataDir: dir,
    close: async () => {
      await db.close();
      if (!keep) await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface LogLine {
  level: "info" | "warn" | "error";
  obj: object;
  msg?: string;
}

export function captureLog(): { log: StoreLog; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const at = (level: LogLine["level"]) => (obj: object, msg?: string) => void lines.push({ level, obj, msg });
  return { log: { info: at("info"), warn: at("warn"), error: at("error") }, lines };
}

/** The terms a test's pools are held under: every pool created through the store is held, as by the one replica. */
class TestFence implements Fence {
  readonly owner = `test-${randomBytes(4).toString("hex")}`;
  readonly terms = new Map<string, number>();
  readonly lostPools: string[] = [];

  termOf(pool: string): number | undefined {
    return this.terms.get(pool);
  }

  held(): HeldTerm[] {
    return [...this.terms].map(([pool, term]) => ({ pool, term }));
  }

  lost(pools: string[]): void {
    for (const pool of pools) this.terms.delete(pool);
    this.lostPools.push(...pools);
  }
}

export interface StoreOptions {
  clock?: Clock;
  log?: StoreLog;
  /** Rows per snapshot statement. */
  snapshotChunk?: number;
  maxBatch?: number;
  /** Shared with another store of the test, whose pools this one writes too. */
  fence?: TestFence;
  vacuumEvery?: number;
}

/**
 * The store's parts on `sql`, wired as the server wires them (app.ts), its master key checked: availability,
 * the config store, the start-up reads, and per epoch a grant journal with its snapshot writer.
 */
export async function openStore(sql: postgres.Sql, box: SecretBox, options: StoreOptions = {}) {
  const log = options.log ?? captureLog().log;
  const clock = options.clock ?? systemClock;
  const availability = new Availability(sql, log, { clock });
  const fence = options.fence ?? new TestFence();
  const config = new PostgresConfigStore(sql, box, availability, clock, fence, 60_000);
  const insertPool = config.insertPool.bind(config);
  config.insertPool = async (pool, db) => {
    const term = await insertPool(pool, db);
    fence.terms.set(pool.name, term);
    return term;
  };
  await config.verifyMasterKey();
  return {
    availability,
    config,
    fence,
    loadAll: async () => loadState(sql, box, availability, (await sql<{ name: string }[]>`select name from pools`).map((r) => r.name)),
    /** Records a new epoch; its journal and snapshot writer. */
    async beginEpoch(isLive: JournalOptions["isLive"] = () => true) {
      const epoch = await beginEpoch(sql, availability, clock.now());
      const journal = new PostgresGrantJournal(sql, availability, log, { epoch, isLive, clock, maxBatch: options.maxBatch, vacuumEvery: options.vacuumEvery, fence, lendFromMemory: true });
      const snapshots = new PostgresSnapshotStore(sql, availability, journal, fence, { clock, snapshotChunk: options.snapshotChunk });
      return { epoch, journal, snapshots };
    },
  };
}

/** Counts the journal's statements and the grants they wrote, as each commits. */
export function journalCommits(journal: PostgresGrantJournal): { batches: number; grants: number } {
  const counts = { batches: 0, grants: 0 };
  journal.onCommit((grants) => {
    counts.batches += 1;
    counts.grants += grants.length;
  });
  return counts;
}

export type TestStore = Awaited<ReturnType<typeof openStore>>;

const T0 = Date.UTC(2026, 0, 1);

export function poolConfig(name: string, overrides: Partial<PoolConfig> = {}): PoolConfig {
  return {
    name,
    strategy: "round_robin",
    minTtlMs: 1000,
    maxTtlMs: 600_000,
    defaultTtlMs: 60_000,
    defaultCooldownMs: 5000,
    maxCooldownMs: 300_000,
    failureThreshold: 3,
    openDurationMs: 30_000,
    maxOpenDurationMs: 600_000,
    halfOpenProbes: 1,
    description: "",
    quotaGroups: {},
    defaultEstimatedTokens: 0,
    createdAt: T0,
    updatedAt: T0,
    ...overrides,
  };
}

/** A key whose secret is unique per call, so a test can search for its bytes. */
export function keyConfig(pool: string, id: string, overrides: Partial<KeyConfig> = {}): KeyConfig {
  return {
    pool,
    id,
    label: `label ${id}`,
    secret: `sk-test-${randomBytes(18).toString("hex")}`,
    weight: 1,
    maxConcurrency: 2,
    quotaGroup: "",
    limits: { requestsPerMinute: 0, tokensPerMinute: 0, requestsPerDay: 0 },
    priority: 0,
    metadata: {},
    disabled: false,
    disabledReason: "",
    createdAt: T0,
    updatedAt: T0,
    ...overrides,
  };
}

export function keyRuntime(pool: string, keyId: string, overrides: Partial<KeyRuntime> = {}): KeyRuntime {
  return {
    pool,
    keyId,
    rateLimitStreak: 0,
    circuitState: "closed",
    circuitOpenCount: 0,
    consecutiveFailures: 0,
    outcomes: { gaps: [], failed: [] },
    grantsPerSecond: { until: 0, counts: [] },
    budget: {},
    totalLeases: 0,
    inputTokens: 0,
    outputTokens: 0,
    ...overrides,
  };
}

export function leaseRecord(pool: string, keyId: string, leaseId: string, overrides: Partial<LeaseRecord> = {}): LeaseRecord {
  return { leaseId, pool, keyId, holder: "worker-1", acquiredAt: T0, expiresAt: T0 + 60_000, ttlMs: 60_000, ...overrides };
}
