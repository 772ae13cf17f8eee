import { isRetryable, type Outcome } from "./classify.js";
import { isUnavailable, keymeshErrorReason } from "./errors.js";
import { acquire, type Lease, type LeaseContext, type LeaseOptions, run, settle, sleep } from "./lease.js";

export interface RetryOptions extends LeaseOptions {
  /** Total time for attempts and backoff (default 30 000 ms). */
  budgetMs?: number;
  /** Full-jitter backoff: pause in [0, min(capMs, baseMs·2^pauses)) (defaults 100 and 5 000). */
  backoffBaseMs?: number;
  backoffCapMs?: number;
}

/** The retry loop's policy, in the terms of test/vectors/retry.json. */
export interface RetryPolicy {
  budgetMs: number;
  waitMs: number;
  exclude: string[];
  backoffBaseMs: number;
  backoffCapMs: number;
}

/** What the retry loop does to the world: Acquire, one call under a lease, the clock. Tests give fakes. */
export interface RetrySteps<L extends { keyId: string }, T> {
  acquire(exclude: string[], waitMs: number): Promise<L>;
  /** Runs the call under the lease and ends the lease; result() returns its value or throws its failure. */
  run(lease: L): Promise<{ outcome: Pick<Outcome, "kind" | "retryAfterMs">; result: () => T }>;
  now(): number;
  sleep(ms: number): Promise<void>;
  random(): number;
  aborted(): boolean;
}

/**
 * withKey with retries within a time budget (the rules of test/vectors/retry.json). A rate limit,
 * an auth or quota failure or a transient error moves at once, with no pause, to another key
 * (exclude_key_ids). When no other key is eligible, and after an overload (provider-wide, so the
 * same key will do), it pauses — full jitter, and at least the provider's retry-after after an
 * overload or a transient failure — then waits for any key: the server keeps a rate-limited key
 * cooling until its retry-after, so a rate limit whose retry-after ends past the budget gives up at
 * once. Client errors are not retried. Resolves with fn's value, or rejects with the last failure.
 */
export function callWithRetry<T>(ctx: LeaseContext, pool: string, fn: (lease: Lease) => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  return retryLoop<Lease, T>(
    {
      acquire: (exclude, waitMs) => acquire(ctx, pool, opts, exclude, waitMs),
      run: async (lease) => {
        const result = await run(ctx, lease, fn, opts);
        return { outcome: result.outcome, result: () => settle(result) };
      },
      now: Date.now,
      sleep: (ms) => sleep(ms, opts.signal),
      random: Math.random,
      aborted: () => opts.signal?.aborted ?? false,
    },
    {
      budgetMs: opts.budgetMs ?? 30_000,
      waitMs: opts.waitMs ?? 30_000,
      exclude: opts.excludeKeyIds ?? [],
      backoffBaseMs: opts.backoffBaseMs ?? 100,
      backoffCapMs: opts.backoffCapMs ?? 5_000,
    },
  );
}

export async function retryLoop<L extends { keyId: string }, T>(steps: RetrySteps<L, T>, policy: RetryPolicy): Promise<T> {
  const deadline = steps.now() + policy.budgetMs;
  const exclude = [...policy.exclude];
  const attempt = (exclude: string[], waitMs: number) => steps.acquire(exclude, waitMs).then((lease) => ({ lease }), (error: unknown) => ({ error }));
  const waitForAny = () => attempt(policy.exclude, Math.max(Math.min(policy.waitMs, deadline - steps.now()), 0));
  let lastFailure: { error: unknown } | undefined;
  let pauses = 0;
  let next = await waitForAny();
  for (;;) {
    let floorMs = 0;
    if ("error" in next) {
      if (lastFailure && keymeshErrorReason(next.error) === "NO_KEY_AVAILABLE") throw lastFailure.error;
      if (!isUnavailable(next.error)) throw next.error;
      lastFailure = next;
    } else {
      const { outcome, result } = await steps.run(next.lease);
      try {
        return result();
      } catch (error) {
        lastFailure = { error };
      }
      if (!isRetryable(outcome.kind) || steps.aborted()) throw lastFailure.error;
      if (outcome.kind !== "overloaded") {
        if (!exclude.includes(next.lease.keyId)) exclude.push(next.lease.keyId);
        // Another key needs no pause.
        next = await attempt(exclude, 0);
        if (!("error" in next) || keymeshErrorReason(next.error) !== "NO_KEY_AVAILABLE") continue;
        if (outcome.kind === "rate_limited" && outcome.retryAfterMs !== null && steps.now() + outcome.retryAfterMs > deadline) throw lastFailure.error;
      }
      // The server holds a rate-limited key back itself; after these the provider's word is the floor.
      if (outcome.kind === "overloaded" || outcome.kind === "transient") floorMs = outcome.retryAfterMs ?? 0;
    }
    const pause = Math.max(fullJitterMs(policy.backoffBaseMs, policy.backoffCapMs, pauses, steps.random), floorMs);
    if (steps.now() + pause > deadline) throw lastFailure.error;
    await steps.sleep(pause);
    pauses++;
    if (steps.aborted()) throw lastFailure.error;
    next = await waitForAny();
  }
}

/** A random pause in [0, min(capMs, baseMs·2^attempt)) ("full jitter"). */
export function fullJitterMs(baseMs: number, capMs: number, attempt: number, random: () => number = Math.random): number {
  return random() * Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
}
