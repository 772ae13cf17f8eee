import { hostname } from "node:os";
import { inspect } from "node:util";
import type { Client, ContextValues } from "@connectrpc/connect";
import { type AcquireResponse, KeyPoolService } from "./gen/keymesh/v1/pool_pb.js";
import { classify, failureReasonOf, type Outcome } from "./classify.js";
import { durationFromMs, msFromDuration } from "./duration.js";
import { isLeaseEnded, LeaseGoneError, ProviderCallError } from "./errors.js";
import type { Keeper } from "./keeper.js";
import { type HeadersLike, parseRateLimitHeaders, rateLimitToProto } from "./ratelimit.js";

export interface LeaseOptions {
  /** How long Acquire waits for a key when none is eligible (default 30 000 ms). */
  waitMs?: number;
  /** Requested lease time to live (default: the pool's); renewals ask for the same. */
  ttlMs?: number;
  /** Describes the borrower in lease listings (default "<hostname>/<pid>"). */
  holder?: string;
  /** Lets the server skip keys whose known token budget is lower. */
  estimatedTokens?: number;
  /** Keys not to lend. */
  excludeKeyIds?: string[];
  /** Aborts the wait for a key, and lease.signal while the key is in use; the lease is still ended. */
  signal?: AbortSignal;
}

/** What withKey needs from the client. */
export interface LeaseContext {
  pool: Client<typeof KeyPoolService>;
  keeper: Keeper;
  defaultTimeoutMs: number;
  logger: Pick<Console, "warn">;
  /** Call options saying that a call by lease id is about that lease's pool (routed to its owner). */
  poolContext(pool: string): ContextValues | undefined;
}

/** Bounds the report that ends a lease, which runs even when the caller's signal aborted; it outlasts a replica's failover. */
const FINAL_REPORT_TIMEOUT_MS = 15_000;

/** The mutable side of a lease, shared by withKey and the Keeper; not part of the public API. */
export class LeaseState {
  readonly abort = new AbortController();
  /** When the lease ends unless renewed, on the local clock. */
  deadlineMs: number;
  /** The server's recommended renewal interval (0: none recommended). */
  renewIntervalMs: number;
  gone: LeaseGoneError | undefined;
  reported: Outcome | undefined;
  usage: { inputTokens: bigint; outputTokens: bigint } | undefined;

  constructor(ttlMs: number, renewIntervalMs: number) {
    this.deadlineMs = Date.now() + ttlMs;
    this.renewIntervalMs = renewIntervalMs;
  }

  renewed(ttlMs: number, renewIntervalMs: number): void {
    this.deadlineMs = Date.now() + ttlMs;
    if (renewIntervalMs > 0) this.renewIntervalMs = renewIntervalMs;
  }

  /** Ends the lease early (the first reason wins) and aborts its signal. */
  end(reason: unknown): void {
    if (reason instanceof LeaseGoneError) this.gone ??= reason;
    this.abort.abort(reason);
  }
}

let stateOfLease: (lease: Lease) => LeaseState;

/** The internal state of a lease (for withKey and the Keeper). */
export function leaseState(lease: Lease): LeaseState {
  return stateOfLease(lease);
}

/**
 * A key lent by KeyMesh for the duration of a withKey callback. Use `key` with the provider's SDK;
 * never log it (console.log and JSON.stringify of a Lease leave it out).
 */
export class Lease {
  readonly leaseId: string;
  readonly pool: string;
  readonly keyId: string;
  readonly keyLabel: string;
  /** The key's metadata for the SDK, e.g. base_url or organization. */
  readonly metadata: Readonly<Record<string, string>>;
  /** Aborts when the server revokes the lease, renewal fails for good, or the caller's signal aborts. */
  readonly signal: AbortSignal;
  readonly #key: string;
  readonly #state: LeaseState;

  static {
    stateOfLease = (lease) => lease.#state;
  }

  constructor(resp: AcquireResponse) {
    this.leaseId = resp.leaseId;
    this.pool = resp.pool;
    this.#key = resp.key;
    this.keyId = resp.keyId;
    this.keyLabel = resp.keyLabel;
    this.metadata = { ...resp.keyMetadata };
    this.#state = new LeaseState(msFromDuration(resp.ttl), msFromDuration(resp.renewInterval));
    this.signal = this.#state.abort.signal;
  }

  /** The secret API key. */
  get key(): string {
    return this.#key;
  }

  /** Whether the lease ended while in use (revoked, or not renewed in time). */
  get revoked(): boolean {
    return this.#state.gone !== undefined;
  }

  /** Why the lease ended early, if it did. */
  get gone(): LeaseGoneError | undefined {
    return this.#state.gone;
  }

  /** When the lease ends unless renewed (local clock). */
  get expiresAt(): Date {
    return new Date(this.#state.deadlineMs);
  }

  /** Sets the call's outcome from its HTTP status and headers; wins over classifying a thrown error. */
  report(status: number, headers?: HeadersLike): void {
    this.#state.reported = classify({ status, headers });
  }

  /** Records the tokens the call consumed; sent with Release. */
  setUsage(inputTokens: number, outputTokens: number): void {
    this.#state.usage = { inputTokens: BigInt(inputTokens), outputTokens: BigInt(outputTokens) };
  }

  toJSON() {
    return { leaseId: this.leaseId, pool: this.pool, keyId: this.keyId, keyLabel: this.keyLabel };
  }

  [inspect.custom]() {
    return `Lease ${JSON.stringify(this.toJSON())}`;
  }
}

/** What one lease run ended with. */
export type RunResult<T> = { outcome: Outcome; lease: Lease } & ({ ok: true; value: T } | { ok: false; error: unknown });

/**
 * Borrows a key of `pool`, runs `fn` with it and ends the lease. While `fn` runs the lease is
 * renewed over a KeepAlive stream; a revocation or a definite renewal failure aborts
 * `lease.signal`. When `fn` settles the outcome is reported: a value is a success (Release with the
 * measured latency), a throw is classified (classify) and reported as a rate limit or a failure
 * before it is rethrown, and `lease.report()` wins over both. The lease is always ended, also when
 * the caller's signal aborts. A failure set with report() while `fn` returned throws ProviderCallError.
 * A final report that fails does not change the result (the work is done; the server reclaims the
 * lease at its expiry): it is logged as a warning.
 */
export async function withKey<T>(ctx: LeaseContext, pool: string, fn: (lease: Lease) => Promise<T>, opts: LeaseOptions = {}): Promise<T> {
  const lease = await acquire(ctx, pool, opts, opts.excludeKeyIds ?? [], opts.waitMs ?? 30_000);
  return settle(await run(ctx, lease, fn, opts));
}

export function settle<T>(result: RunResult<T>): T {
  if (!result.ok) throw result.error;
  if (result.outcome.kind !== "success") throw new ProviderCallError(result.outcome);
  return result.value;
}

let holder: string | undefined;
const defaultHolder = () => (holder ??= `${hostname()}/${process.pid}`);

export async function acquire(ctx: LeaseContext, pool: string, opts: LeaseOptions, exclude: string[], waitMs: number): Promise<Lease> {
  const resp = await ctx.pool.acquire(
    {
      pool,
      holder: opts.holder ?? defaultHolder(),
      estimatedTokens: BigInt(opts.estimatedTokens ?? 0),
      excludeKeyIds: exclude,
      waitTimeout: waitMs > 0 ? durationFromMs(waitMs) : undefined,
      leaseTtl: opts.ttlMs ? durationFromMs(opts.ttlMs) : undefined,
    },
    { signal: opts.signal, timeoutMs: waitMs + ctx.defaultTimeoutMs },
  );
  return new Lease(resp);
}

/** Runs fn under an acquired lease and ends the lease with the call's outcome. */
export async function run<T>(ctx: LeaseContext, lease: Lease, fn: (lease: Lease) => Promise<T>, opts: LeaseOptions): Promise<RunResult<T>> {
  const state = leaseState(lease);
  const onCallerAbort = () => state.end(opts.signal?.reason);
  opts.signal?.addEventListener("abort", onCallerAbort, { once: true });
  if (opts.signal?.aborted) onCallerAbort();
  const stopKeeping = ctx.keeper.keep(lease, opts.ttlMs, (gone) => state.end(gone));
  const start = performance.now();
  let result: { ok: true; value: T } | { ok: false; error: unknown };
  try {
    result = { ok: true, value: await fn(lease) };
  } catch (error) {
    result = { ok: false, error };
  }
  const latencyMs = performance.now() - start;
  stopKeeping();
  opts.signal?.removeEventListener("abort", onCallerAbort);

  let outcome: Outcome;
  if (state.reported) {
    outcome = state.reported;
  } else if (result.ok) {
    outcome = classify({ status: 200 });
  } else {
    outcome = classify({ error: result.error });
    const callerGaveUp = opts.signal?.aborted && !isTimeout(opts.signal.reason);
    if (outcome.httpStatus === 0 && (lease.revoked || callerGaveUp)) {
      // No answer because the lease or the caller went away: no verdict on the key.
      outcome = { kind: "client_error", httpStatus: 0, rateLimit: parseRateLimitHeaders(null), retryAfterMs: null, message: "abandoned: lease ended or caller aborted" };
    }
  }
  if (lease.key !== "") outcome = { ...outcome, message: outcome.message.split(lease.key).join("[key]") };
  const reportError = await report(ctx, lease, outcome, latencyMs).catch((e: unknown) => e);
  if (reportError !== undefined && !isLeaseEnded(reportError)) {
    // The call's own result stands; the server reclaims the lease at its expiry.
    ctx.logger.warn(`keymesh: could not end lease of key ${lease.keyId} in pool ${lease.pool} (${outcome.kind}): ${String(reportError)}`);
  }
  return { ...result, outcome, lease };
}

const isTimeout = (reason: unknown) => reason instanceof Error && reason.name === "TimeoutError";

/** Ends the lease with its outcome, on a fresh deadline so an aborted caller still ends it. */
async function report(ctx: LeaseContext, lease: Lease, o: Outcome, latencyMs: number): Promise<undefined> {
  const call = { timeoutMs: FINAL_REPORT_TIMEOUT_MS, contextValues: ctx.poolContext(lease.pool) };
  const latency = latencyMs > 0 ? durationFromMs(latencyMs) : undefined;
  const rateLimit = rateLimitToProto(o.rateLimit);
  switch (o.kind) {
    case "success":
      await ctx.pool.release({ leaseId: lease.leaseId, latency, usage: leaseState(lease).usage, rateLimit }, call);
      break;
    case "rate_limited":
      await ctx.pool.markRateLimited(
        { leaseId: lease.leaseId, retryAfter: o.retryAfterMs === null ? undefined : durationFromMs(o.retryAfterMs), rateLimit },
        call,
      );
      break;
    default:
      await ctx.pool.markFailed(
        { leaseId: lease.leaseId, reason: failureReasonOf(o.kind), httpStatus: o.httpStatus, message: o.message.slice(0, 200), latency },
        call,
      );
  }
  return undefined;
}

/** Resolves after ms, or at once when signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
