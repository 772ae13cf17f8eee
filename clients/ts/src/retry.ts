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
 * errors move to another key (exclude_key_ids); overloads retry on any key; between attempts it
 * backs off with full jitter. When no other key is eligible it waits for any key (the server keeps
 * a rate-limited key cooling until its retry-after), and gives up at once when that retry-after
 * reaches past the budget. Resolves with fn's value, or rejects with the last error.
 */
export async function callWithRetry<T>(ctx: LeaseContext, pool: string, fn: (lease: Lease) => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const deadline = Date.now() + (opts.budgetMs ?? 30_000);
  const baseExclude = opts.excludeKeyIds ?? [];
  const exclude = [...baseExclude];
  let lastError: unknown;
  let hasLastError = false;
  let pastBudget = false; // the last rate-limited key's retry-after ends after the budget
  for (let attempt = 0; ; attempt++) {
    let lease: Lease | undefined;
    try {
      lease = await acquireWithin(ctx, pool, opts, baseExclude, exclude, deadline, pastBudget);
    } catch (err) {
      if (hasLastError && keymeshErrorReason(err) === ErrorReason.NO_KEY_AVAILABLE) throw lastError;
      if (!isUnavailable(err)) throw err;
      lastError = err;
      hasLastError = true;
    }
    if (lease) {
      const result = await run(ctx, lease, fn, opts);
      try {
        return settle(result);
      } catch (err) {
        lastError = err;
        hasLastError = true;
      }
      const { outcome } = result;
      if (!isRetryable(outcome.kind) || opts.signal?.aborted) throw lastError;
      if (outcome.kind !== "overloaded" && !exclude.includes(lease.keyId)) exclude.push(lease.keyId);
      pastBudget = outcome.kind === "rate_limited" && outcome.retryAfterMs !== null && Date.now() + outcome.retryAfterMs > deadline;
    }
    const pause = fullJitterMs(opts.backoffBaseMs ?? 100, opts.backoffCapMs ?? 5_000, attempt);
    if (Date.now() + pause > deadline) throw lastError;
    await sleep(pause, opts.signal);
    if (opts.signal?.aborted) throw lastError;
  }
}

/** A key not in exclude at once if there is one; otherwise, unless that would only find keys cooling past the budget, any key within the budget. */
async function acquireWithin(
  ctx: LeaseContext,
  pool: string,
  opts: LeaseOptions,
  baseExclude: string[],
  exclude: string[],
  deadline: number,
  pastBudget: boolean,
): Promise<Lease> {
  if (exclude.length > baseExclude.length) {
    try {
      return await acquire(ctx, pool, opts, exclude, 0);
    } catch (err) {
      if (pastBudget || keymeshErrorReason(err) !== ErrorReason.NO_KEY_AVAILABLE) throw err;
    }
  }
  return acquire(ctx, pool, opts, baseExclude, Math.max(Math.min(opts.waitMs ?? 30_000, deadline - Date.now()), 0));
}

/** A random pause in [0, min(capMs, baseMs·2^attempt)) ("full jitter"). */
export function fullJitterMs(baseMs: number, capMs: number, attempt: number): number {
  return Math.random() * Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
}
