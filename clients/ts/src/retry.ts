import { ErrorReason } from "./gen/keymesh/v1/common_pb.js";
import { isRetryable } from "./classify.js";
import { isUnavailable, keymeshErrorReason } from "./errors.js";
import { acquire, type Lease, type LeaseContext, type LeaseOptions, run, settle, sleep } from "./lease.js";

export interface RetryOptions extends LeaseOptions {
  /** Total time for attempts and backoff (default 30 000 ms). */
  budgetMs?: number;
  /** Full-jitter backoff: pause in [0, min(capMs, baseMs·2^attempt)) (defaults 100 and 5 000). */
  backoffBaseMs?: number;
  backoffCapMs?: number;
}

/**
 * withKey with retries within a time budget. Rate limits, auth and quota failures and transient
 * errors move at once to another key (exclude_key_ids). When no other key is eligible, and after an
 * overload, it backs off with full jitter and then waits for any key — the server keeps a
 * rate-limited key cooling until its retry-after — unless that retry-after reaches past the budget,
 * when it gives up at once. Client errors are not retried. Resolves with fn's value, or rejects
 * with the last error.
 */
export async function callWithRetry<T>(ctx: LeaseContext, pool: string, fn: (lease: Lease) => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const deadline = Date.now() + (opts.budgetMs ?? 30_000);
  const baseExclude = opts.excludeKeyIds ?? [];
  const exclude = [...baseExclude];
  const waitForAny = () => attempt(() => acquire(ctx, pool, opts, baseExclude, Math.max(Math.min(opts.waitMs ?? 30_000, deadline - Date.now()), 0)));
  let lastError: { error: unknown } | undefined;
  let next = await waitForAny();
  for (let n = 0; ; n++) {
    if ("error" in next) {
      if (lastError && keymeshErrorReason(next.error) === ErrorReason.NO_KEY_AVAILABLE) throw lastError.error;
      if (!isUnavailable(next.error)) throw next.error;
      lastError = next;
    } else {
      const result = await run(ctx, next.lease, fn, opts);
      try {
        return settle(result);
      } catch (error) {
        lastError = { error };
      }
      const { outcome, lease } = result;
      if (!isRetryable(outcome.kind) || opts.signal?.aborted) throw lastError.error;
      if (outcome.kind !== "overloaded") {
        if (!exclude.includes(lease.keyId)) exclude.push(lease.keyId);
        // Another key needs no backoff.
        next = await attempt(() => acquire(ctx, pool, opts, exclude, 0));
        if (!("error" in next) || keymeshErrorReason(next.error) !== ErrorReason.NO_KEY_AVAILABLE) continue;
        if (outcome.kind === "rate_limited" && outcome.retryAfterMs !== null && Date.now() + outcome.retryAfterMs > deadline) throw lastError.error;
      }
    }
    const pause = fullJitterMs(opts.backoffBaseMs ?? 100, opts.backoffCapMs ?? 5_000, n);
    if (Date.now() + pause > deadline) throw lastError.error;
    await sleep(pause, opts.signal);
    if (opts.signal?.aborted) throw lastError.error;
    next = await waitForAny();
  }
}

async function attempt(acquireLease: () => Promise<Lease>): Promise<{ lease: Lease } | { error: unknown }> {
  try {
    return { lease: await acquireLease() };
  } catch (error) {
    return { error };
  }
}

/** A random pause in [0, min(capMs, baseMs·2^attempt)) ("full jitter"). */
export function fullJitterMs(baseMs: number, capMs: number, attempt: number): number {
  return Math.random() * Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
}
