import { type Client, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { PoolAdminService } from "./gen/keymesh/v1/admin_pb.js";
import { KeyPoolService } from "./gen/keymesh/v1/pool_pb.js";
import { Keeper } from "./keeper.js";
import { type Lease, type LeaseOptions, withKey } from "./lease.js";
import { callWithRetry, type RetryOptions } from "./retry.js";
import { type WrapOptions, wrapClient } from "./wrap.js";

export interface TlsOptions {
  /** PEM CA bundle to trust instead of the system roots. */
  ca?: string | Buffer;
  /** PEM client certificate and key, for mutual TLS. */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Defaults to true; false only for local experiments. */
  rejectUnauthorized?: boolean;
}

export interface KeyMeshClientOptions {
  /** "http://127.0.0.1:50051" (plaintext HTTP/2) or "https://keymesh.example.com". */
  baseUrl: string;
  /** Native gRPC (default, the fast listener) or Connect; or a ready Transport (tests). */
  transport?: "grpc" | "connect" | Transport;
  /** Sent as "authorization: Bearer <token>"; over plaintext only to a loopback address. */
  token?: string;
  tls?: TlsOptions;
  /** Deadline for unary calls that set none (default 10 000 ms); streams have none. */
  defaultTimeoutMs?: number;
  /** Receives the helpers' warnings, e.g. a lease whose final report failed (default console). Keys are never logged. */
  logger?: Pick<Console, "warn">;
}

export interface KeyMeshClient {
  /** The generated KeyPoolService client: acquire, release, markFailed, markRateLimited, renewLease, keepAlive. */
  pool: Client<typeof KeyPoolService>;
  /** The generated PoolAdminService client. */
  admin: Client<typeof PoolAdminService>;
  /** Borrows a key of `pool` for the duration of `fn`; see Lease. */
  withKey<T>(pool: string, fn: (lease: Lease) => Promise<T>, opts?: LeaseOptions): Promise<T>;
  /** withKey with retries on another key within a time budget. */
  callWithRetry<T>(pool: string, fn: (lease: Lease) => Promise<T>, opts?: RetryOptions): Promise<T>;
  /** An SDK client (openai-node, @anthropic-ai/sdk, any with `keyed`) whose every call runs under a lease of `pool`, with retries. */
  wrap<C extends object>(pool: string, client: C, opts?: WrapOptions<C>): C;
}

/** Connects to a KeyMesh server (lazily: the first call opens the connection). */
export function createKeyMeshClient(options: KeyMeshClientOptions): KeyMeshClient {
  const defaultTimeoutMs = options.defaultTimeoutMs ?? 10_000;
  const transport = typeof options.transport === "object" ? options.transport : createTransport(options, defaultTimeoutMs);
  const pool = createClient(KeyPoolService, transport);
  const admin = createClient(PoolAdminService, transport);
  const ctx = { pool, keeper: new Keeper(pool), defaultTimeoutMs, logger: options.logger ?? console };
  return {
    pool,
    admin,
    withKey: (name, fn, opts) => withKey(ctx, name, fn, opts),
    callWithRetry: (name, fn, opts) => callWithRetry(ctx, name, fn, opts),
    wrap: (name, client, opts) => wrapClient(ctx, name, client, opts),
  };
}

function createTransport(options: KeyMeshClientOptions, defaultTimeoutMs: number): Transport {
  const url = new URL(options.baseUrl);
  const interceptors: Interceptor[] = [];
  if (options.token !== undefined) {
    if (url.protocol !== "https:" && !isLoopback(url.hostname)) {
      throw new Error("keymesh: a bearer token over plaintext is only allowed to a loopback address");
    }
    const header = `Bearer ${options.token}`;
    interceptors.push((next) => (req) => {
      req.header.set("authorization", header);
      return next(req);
    });
  }
  const nodeOptions = options.tls ? { ...options.tls } : undefined;
  const common = { baseUrl: options.baseUrl, interceptors, defaultTimeoutMs, nodeOptions };
  return options.transport === "connect"
    ? createConnectTransport({ ...common, httpVersion: "2" })
    : createGrpcTransport(common);
}

function isLoopback(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, "");
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}
