// KeyPoolService: the hot path. Handlers map wire <-> domain and call Lending; nothing else.
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
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
import type { Lending } from "../service/lending.js";
import { encodeAcquireResponse, type AcquireReply } from "./acquire-wire.js";
import { Channel } from "./channel.js";
import { decodeAcquireRequest, decodeReleaseRequest } from "./request-wire.js";
import { dur, failureFromProto, failureToProto, optionalMs, rateLimitFromProto, ts } from "./convert.js";
import type { Guard } from "./guard.js";

export interface PoolServiceDeps {
  lending: Lending;
  guard: Guard;
  /** Removes anything that looks like a credential from holder-supplied text before it is stored or shown. */
  scrub: (text: string) => string;
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
  private readonly lending: Lending;
  private readonly guard: Guard;
  private readonly scrub: (text: string) => string;

  constructor(deps: PoolServiceDeps) {
    this.lending = deps.lending;
    this.guard = deps.guard;
    this.scrub = deps.scrub;
  }

  /** Answers synchronously when Lending grants synchronously (see Lending.acquire). */
  acquire(req: AcquireRequest, ctx: HandlerContext): AcquireReply | Promise<AcquireReply> {
    this.guard.usePool(ctx, req.pool);
    let waitTimeoutMs = optionalMs(req.waitTimeout, "wait_timeout") ?? 0;
    const remaining = ctx.timeoutMs();
    if (remaining !== undefined) waitTimeoutMs = Math.max(0, Math.min(waitTimeoutMs, remaining - DEADLINE_MARGIN_MS));
    const granted = this.lending.acquire(
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
    return granted instanceof Promise ? granted.then(grantToProto) : grantToProto(granted);
  }

  release(req: ReleaseRequest, ctx: HandlerContext) {
    this.guard.useLease(ctx, req.leaseId);
    const ended = this.lending.release(req.leaseId, {
      latencyMs: optionalMs(req.latency, "latency"),
      inputTokens: req.usage ? Number(req.usage.inputTokens) : undefined,
      outputTokens: req.usage ? Number(req.usage.outputTokens) : undefined,
      rateLimit: rateLimitFromProto(req.rateLimit, "rate_limit"),
    });
    // A promise only when the lease's end must be made durable first.
    return ended ? ended.then(() => ({})) : {};
  }

  markFailed(req: MarkFailedRequest, ctx: HandlerContext) {
    this.guard.useLease(ctx, req.leaseId);
    const applied = this.lending.markFailed(req.leaseId, {
      reason: failureFromProto(req.reason),
      httpStatus: req.httpStatus,
      message: this.scrub(req.message),
      latencyMs: optionalMs(req.latency, "latency"),
    });
    const answer = (a: Awaited<typeof applied>) => ({ classifiedAs: failureToProto(a) });
    return applied instanceof Promise ? applied.then(answer) : answer(applied);
  }

  markRateLimited(req: MarkRateLimitedRequest, ctx: HandlerContext) {
    this.guard.useLease(ctx, req.leaseId);
    const limited = this.lending.markRateLimited(req.leaseId, {
      retryAfterMs: optionalMs(req.retryAfter, "retry_after"),
      rateLimit: rateLimitFromProto(req.rateLimit, "rate_limit"),
    });
    const answer = (l: Awaited<typeof limited>) => ({ cooldownUntil: ts(l.cooldownUntil) });
    return limited instanceof Promise ? limited.then(answer) : answer(limited);
  }

  renewLease(req: RenewLeaseRequest, ctx: HandlerContext) {
    this.guard.useLease(ctx, req.leaseId);
    const r = this.lending.renew(req.leaseId, optionalMs(req.ttl, "ttl"));
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
            const r = this.lending.renew(req.leaseId, optionalMs(req.ttl, "ttl"));
            if (!watched.has(req.leaseId)) {
              watched.set(
                req.leaseId,
                this.lending.watchLease(req.leaseId, (reason, message) => {
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
