import type { LookupFunction } from "node:net";
import { type Client, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { PoolAdminService } from "./gen/keymesh/v1/admin_pb.js";
import { KeyPoolService } from "./gen/keymesh/v1/pool_pb.js";
import { Keeper } from "./keeper.js";
import { type Lease, type LeaseOptions, withKey } from "./lease.js";
import { callWithRetry, type RetryOptions } from "./retry.js";
import { type PinnedAddress, RoutingTransport } from "./router.js";
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
  /**
   * "http://127.0.0.1:50051" (plaintext HTTP/2) or "https://keymesh.example.com". A host name stands for
   * every address it resolves to (at the first call): each is an endpoint, as with `endpoints`.
   */
  baseUrl?: string;
  /**
   * Several replicas instead of baseUrl, same scheme for all: a call goes to its pool's owner when a
   * replica named it (the keymesh-owner header), else to the current endpoint, and moves to the next
   * one on UNAVAILABLE (test/vectors/failover.json).
   */
  endpoints?: string[];
  /**
   * Native gRPC (default, the fast listener) or Connect; or a ready Transport (tests). Over Connect
   * owner headers are not followed: they name a replica's gRPC listener.
   */
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

/** Connects to a KeyMesh server or replicas (lazily: the first call opens the connection). */
export function createKeyMeshClient(options: KeyMeshClientOptions): KeyMeshClient {
  const defaultTimeoutMs = options.defaultTimeoutMs ?? 10_000;
  const router = typeof options.transport === "object" ? undefined : createRouter(options, defaultTimeoutMs);
  const transport = router ?? (options.transport as Transport);
  const pool = createClient(KeyPoolService, transport);
  const admin = createClient(PoolAdminService, transport);
  const ctx = {
    pool,
    keeper: new Keeper(pool),
    defaultTimeoutMs,
    logger: options.logger ?? console,
    poolContext: router ? (name: string) => router.poolContext(name) : () => undefined,
  };
  return {
    pool,
    admin,
    withKey: (name, fn, opts) => withKey(ctx, name, fn, opts),
    callWithRetry: (name, fn, opts) => callWithRetry(ctx, name, fn, opts),
    wrap: (name, client, opts) => wrapClient(ctx, name, client, opts),
  };
}

function createRouter(options: KeyMeshClientOptions, defaultTimeoutMs: number): RoutingTransport {
  if ((options.baseUrl === undefined) === (options.endpoints === undefined)) throw new Error("keymesh: give either baseUrl or endpoints");
  const seeds = (options.endpoints ?? [options.baseUrl!]).map((u) => new URL(u));
  if (seeds.length === 0) throw new Error("keymesh: endpoints is empty");
  const secure = seeds[0]!.protocol === "https:";
  if (seeds.some((u) => u.protocol !== seeds[0]!.protocol)) throw new Error("keymesh: every endpoint must have the same scheme");
  const interceptors: Interceptor[] = [];
  if (options.token !== undefined) {
    if (!secure && !seeds.every((u) => isLoopback(u.hostname))) {
      throw new Error("keymesh: a bearer token over plaintext is only allowed to a loopback address");
    }
    const header = `Bearer ${options.token}`;
    interceptors.push((next) => (req) => {
      req.header.set("authorization", header);
      return next(req);
    });
  }
  return new RoutingTransport({
    seeds,
    defaultTimeoutMs,
    connect(url: URL, pinned?: PinnedAddress): Transport {
      const nodeOptions = { ...options.tls, ...(pinned ? { lookup: pinnedLookup(pinned) } : {}) };
      const common = { baseUrl: url.href.replace(/\/$/, ""), interceptors, defaultTimeoutMs, nodeOptions };
      return options.transport === "connect" ? createConnectTransport({ ...common, httpVersion: "2" }) : createGrpcTransport(common);
    },
    // A token never crosses a network in the clear, whichever replica a header names.
    mayFollow: (hostPort) => options.transport !== "connect" && (secure || options.token === undefined || isLoopback(hostPort.slice(0, hostPort.lastIndexOf(":")))),
  });
}

/** Connects to one address of a host name; the name stays the TLS server name and the :authority. */
function pinnedLookup({ address, family }: PinnedAddress): LookupFunction {
  return (_hostname, opts, callback) => {
    if (opts.all) callback(null, [{ address, family }]);
    else callback(null, address, family);
  };
}

function isLoopback(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, "");
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}
