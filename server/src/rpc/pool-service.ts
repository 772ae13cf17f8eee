// KeyPoolService: the hot path. Handlers map wire <-> domain and call the engine; nothing else.
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { PoolEngine } from "../domain/engine.js";
import { DomainError } from "../domain/errors.js";
import type { Grant, LeaseGoneReason } from "../domain/types.js";
import { ErrorReason } from "../gen/keymesh/v1/common_pb.js";
import type {
  AcquireRequest,
  KeepAliveRequest,
  KeepAliveResponseSchema,
  KeyPoolService,
  MarkFailedRequest,
  MarkRateLimitedRequest,
  ReleaseRequest,
  RenewLeaseRequest,
} from "../gen/keymesh/v1/pool_pb.js";
import { encodeAcquireResponse, type AcquireReply } from "./acquire-wire.js";
import { Channel } from "./channel.js";
import { decodeAcquireRequest, decodeReleaseRequest } from "./request-wire.js";
import { dur, failureFromProto, failureToProto, optionalMs, rateLimitFromProto, ts } from "./convert.js";
import type { Guard } from "./guard.js";

/** Makes grants durable (the store's group commit); see README "Persistence and crash safety". */
export interface GrantJournal {
  /** Resolves once the grant is durable. */
  record(grant: Grant, holder: string): Promise<void>;
  /** Writes the grant soon, with nobody waiting. */
  recordBehind(grant: Grant, holder: string): void;
}

/** Hot-path instrumentation (metrics); counters only, nothing that waits. */
export interface PoolObserver {
  observeAcquire(pool: string, result: "granted" | "exhausted" | "pool_not_found" | "cancelled" | "error", durationMs: number, waitedMs?: number): void;
}

export interface PoolServiceDeps {
  engine: PoolEngine;
  journal: GrantJournal;
  guard: Guard;
  observer: PoolObserver;
  /** Removes anything that looks like a credential from holder-supplied text before it is stored or shown. */
  scrub: (text: string) => string;
}

function acquireResult(err: unknown): "exhausted" | "pool_not_found" | "cancelled" | "error" {
  if (!(err instanceof DomainError)) return "error";
  if (err.code === "no_key_available" || err.code === "pool_empty") return "exhausted";
  if (err.code === "pool_not_found") return "pool_not_found";
  if (err.code === "cancelled") return "cancelled";
  return "error";
}

/** Margin kept before the RPC deadline so a timed-out wait answers RESOURCE_EXHAUSTED, not DEADLINE_EXCEEDED. */
const DEADLINE_MARGIN_MS = 20;

const goneReasons: Record<LeaseGoneReason, ErrorReason> = {
  expired: ErrorReason.LEASE_EXPIRED,
  released: ErrorReason.LEASE_RELEASED,
  revoked: ErrorReason.LEASE_REVOKED,
  unknown: ErrorReason.LEASE_UNKNOWN,
};

const errorGone: Partial<Record<DomainError["code"], ErrorReason>> = {
  lease_expired: ErrorReason.LEASE_EXPIRED,
  lease_released: ErrorReason.LEASE_RELEASED,
  lease_revoked: ErrorReason.LEASE_REVOKED,
  lease_unknown: ErrorReason.LEASE_UNKNOWN,
  lease_id_malformed: ErrorReason.LEASE_ID_MALFORMED,
};

function grantToProto(g: Grant): AcquireReply {
  return {
    leaseId: g.leaseId,
    key: g.secret,
    keyId: g.keyId,
    keyLabel: g.keyLabel,
    keyMetadata: g.metadata,
    expiresAt: ts(g.expiresAt),
    ttl: dur(g.ttlMs),
    renewInterval: dur(g.renewIntervalMs),
    pool: g.pool,
  };
}

/** The lease cycle's messages, read and written by hand on the gRPC listener (acquire-wire.ts, request-wire.ts). */
export const poolWireCodecs = {
  acquire: { decode: decodeAcquireRequest, encode: encodeAcquireResponse },
  release: { decode: decodeReleaseRequest },
};

export class KeyPoolServiceImpl implements ServiceImpl<typeof KeyPoolService> {
  private readonly engine: PoolEngine;
  private readonly journal: GrantJournal;
  private readonly guard: Guard;
  private readonly observer: PoolObserver;
  private readonly scrub: (text: string) => string;

  constructor(deps: PoolServiceDeps) {
    this.engine = deps.engine;
    this.journal = deps.journal;
    this.guard = deps.guard;
    this.observer = deps.observer;
    this.scrub = deps.scrub;
  }

  /**
   * Answers synchronously when a key is free and its grant need not be durable first: a promise and its
   * microtask cost a tenth of a cycle's throughput (bench floor), so only a wait or a journal commit makes one.
   */
  acquire(req: AcquireRequest, ctx: HandlerContext): AcquireReply | Promise<AcquireReply> {
    this.guard.usePool(ctx, req.pool);
    let waitTimeoutMs = optionalMs(req.waitTimeout, "wait_timeout") ?? 0;
    const remaining = ctx.timeoutMs();
    if (remaining !== undefined) waitTimeoutMs = Math.max(0, Math.min(waitTimeoutMs, remaining - DEADLINE_MARGIN_MS));
    const started = performance.now();
    let granted: Grant | Promise<Grant>;
    try {
      granted = this.engine.acquire(
        {
          pool: req.pool,
          waitTimeoutMs,
          ttlMs: optionalMs(req.leaseTtl, "lease_ttl"),
          holder: req.holder,
          estimatedTokens: Number(req.estimatedTokens),
          excludeKeyIds: req.excludeKeyIds,
        },
        () => ctx.signal,
      );
    } catch (e) {
      this.observer.observeAcquire(req.pool, acquireResult(e), performance.now() - started);
      throw e;
    }
    if (granted instanceof Promise) return this.waited(req, granted, started);
    return this.answer(req, granted, started, undefined);
  }

  private async waited(req: AcquireRequest, granted: Promise<Grant>, started: number): Promise<AcquireReply> {
    let grant: Grant;
    try {
      grant = await granted;
    } catch (e) {
      this.observer.observeAcquire(req.pool, acquireResult(e), performance.now() - started, performance.now() - started);
      throw e;
    }
    return this.answer(req, grant, started, performance.now() - started);
  }

  private answer(req: AcquireRequest, grant: Grant, started: number, waitedMs: number | undefined): AcquireReply | Promise<AcquireReply> {
    // Only a limited key can be over-lent after a crash, so only its grant must be durable before the
    // reply. Batches commit in grant order, so an unlimited key's grant that is lost in a crash lies
    // above the high-water mark and its lease is re-adopted from its id.
    if (grant.maxConcurrency > 0) {
      return this.journal.record(grant, req.holder).then(() => {
        this.observer.observeAcquire(req.pool, "granted", performance.now() - started, waitedMs);
        return grantToProto(grant);
      });
    }
    this.journal.recordBehind(grant, req.holder);
    this.observer.observeAcquire(req.pool, "granted", performance.now() - started, waitedMs);
    return grantToProto(grant);
  }

  release(req: ReleaseRequest, ctx: HandlerContext) {
    this.guard.useLease(ctx, req.leaseId);
    this.engine.release(req.leaseId, {
      latencyMs: optionalMs(req.latency, "latency"),
      inputTokens: req.usage ? Number(req.usage.inputTokens) : undefined,
      outputTokens: req.usage ? Number(req.usage.outputTokens) : undefined,
      rateLimit: rateLimitFromProto(req.rateLimit, "rate_limit"),
    });
    return {};
  }

  markFailed(req: MarkFailedRequest, ctx: HandlerContext) {
    this.guard.useLease(ctx, req.leaseId);
    const applied = this.engine.markFailed(req.leaseId, {
      reason: failureFromProto(req.reason),
      httpStatus: req.httpStatus,
      message: this.scrub(req.message),
      latencyMs: optionalMs(req.latency, "latency"),
    });
    return { classifiedAs: failureToProto(applied) };
  }

  markRateLimited(req: MarkRateLimitedRequest, ctx: HandlerContext) {
    this.guard.useLease(ctx, req.leaseId);
    const { cooldownUntil } = this.engine.markRateLimited(req.leaseId, {
      retryAfterMs: optionalMs(req.retryAfter, "retry_after"),
      rateLimit: rateLimitFromProto(req.rateLimit, "rate_limit"),
    });
    return { cooldownUntil: ts(cooldownUntil) };
  }

  renewLease(req: RenewLeaseRequest, ctx: HandlerContext) {
    this.guard.useLease(ctx, req.leaseId);
    const r = this.engine.renew(req.leaseId, optionalMs(req.ttl, "ttl"));
    return { leaseId: r.leaseId, expiresAt: ts(r.expiresAt), ttl: dur(r.ttlMs), renewInterval: dur(r.renewIntervalMs) };
  }

  /**
   * Renews every lease the client sends and answers each one; leases the stream has renewed are
   * watched, so a revocation is pushed as "gone" without waiting for the next renewal.
   */
  async *keepAlive(requests: AsyncIterable<KeepAliveRequest>, ctx: HandlerContext) {
    type Out = MessageInitShape<typeof KeepAliveResponseSchema>;
    const out = new Channel<Out>();
    const watched = new Map<string, () => void>();
    const gone = (leaseId: string, reason: ErrorReason, message: string): Out => ({
      leaseId,
      result: { case: "gone", value: { reason, message } },
    });
    const unwatch = (leaseId: string) => {
      watched.get(leaseId)?.();
      watched.delete(leaseId);
    };
    const reader = (async () => {
      try {
        for await (const req of requests) {
          try {
            this.guard.useLease(ctx, req.leaseId);
            const r = this.engine.renew(req.leaseId, optionalMs(req.ttl, "ttl"));
            if (!watched.has(req.leaseId)) {
              watched.set(
                req.leaseId,
                this.engine.watchLease(req.leaseId, (reason, message) => {
                  watched.delete(req.leaseId);
                  out.push(gone(req.leaseId, goneReasons[reason], message));
                }),
              );
            }
            out.push({
              leaseId: r.leaseId,
              result: { case: "renewed", value: { expiresAt: ts(r.expiresAt), ttl: dur(r.ttlMs), renewInterval: dur(r.renewIntervalMs) } },
            });
          } catch (e) {
            const reason = e instanceof DomainError ? errorGone[e.code] : undefined;
            if (reason === undefined) throw e;
            unwatch(req.leaseId);
            out.push(gone(req.leaseId, reason, (e as DomainError).message));
          }
        }
      } finally {
        out.close();
      }
    })();
    // A failure in the reader (auth, bad input) must end the stream with that error.
    let failure: unknown;
    reader.catch((e: unknown) => {
      failure = e;
    });
    try {
      yield* out.drain(ctx.signal);
      await reader.catch(() => undefined);
      if (failure !== undefined) throw failure;
    } finally {
      for (const stop of watched.values()) stop();
      watched.clear();
    }
  }
}
