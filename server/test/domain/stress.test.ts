import { describe, expect, it } from "vitest";
import type { DomainError } from "../../src/domain/errors.js";
import type { Grant, Limits, Strategy } from "../../src/domain/types.js";
import { seededRandom as prng } from "../../../test/support/random.js";
import { addPool, flush, harness, req } from "./helpers.js";

const LEASE_ERRORS = new Set(["lease_expired", "lease_released", "lease_revoked"]);
const STEPS = 3_000;
const MINUTE = 60_000;
const DAY = 86_400_000;

/** Declared budgets in the run: per key, and the quota group g1's (keys a and b). */
const KEY_LIMITS: Record<string, Partial<Limits>> = {
  a: { requestsPerMinute: 30 },
  c: { requestsPerMinute: 20, tokensPerMinute: 3_000 },
  d: { requestsPerDay: 150 },
};
const G1_LIMITS: Limits = { requestsPerMinute: 40, tokensPerMinute: 0, requestsPerDay: 0 };

/** What happened to one budget, in order: a grant (with the tokens it reserved) or a reconciliation. */
type BudgetStep = { at: number; grant: boolean; tokens: number };

/**
 * Replays a budget's grants against a bucket of `limit` refilled at limit/window, starting full: every grant
 * must have found what it took, which is the same as: over any span T, at most limit + T·limit/window granted.
 */
function expectWithinBudget(steps: BudgetStep[], limit: number, windowMs: number, what: string): void {
  let level = limit;
  let at = steps[0]?.at ?? 0;
  for (const s of steps) {
    level = Math.min(limit, level + ((s.at - at) * limit) / windowMs);
    at = s.at;
    if (s.grant) expect(level, `${what}: lent ${s.tokens} with ${level} left at ${s.at}`).toBeGreaterThanOrEqual(s.tokens - 1e-6);
    level = Math.min(limit, level - s.tokens);
  }
}

/** The most grants in any window of `windowMs`: a bucket allows its limit plus what refills meanwhile, so at most twice it. */
function mostInWindow(times: number[], windowMs: number): number {
  let most = 0;
  for (let i = 0, j = 0; j < times.length; j++) {
    while (times[j]! - times[i]! >= windowMs) i++;
    most = Math.max(most, j - i + 1);
  }
  return most;
}

async function run(strategy: Strategy, seed: number): Promise<void> {
  const rnd = prng(seed);
  const { engine, clock, events } = harness({ random: prng(seed + 1) });
  const int = (n: number) => Math.floor(rnd() * n);
  const pick = <T>(xs: T[]): T | undefined => (xs.length ? xs[int(xs.length)] : undefined);
  addPool(engine, {
    strategy,
    failureThreshold: 2,
    openDurationMs: 800,
    maxOpenDurationMs: 3_000,
    halfOpenProbes: 2,
    defaultCooldownMs: 300,
    maxCooldownMs: 2_000,
    quotaGroups: { g1: G1_LIMITS },
  });
  const keyIds = ["a", "b", "c", "d", "e", "f"];
  for (const id of keyIds) {
    engine.addKey(
      engine.prepareKey({
        pool: "p",
        id,
        secret: `sk-${id}`,
        weight: 1 + int(4),
        maxConcurrency: int(4),
        quotaGroup: id < "c" ? "g1" : "",
        limits: { requestsPerMinute: 0, tokensPerMinute: 0, requestsPerDay: 0, ...KEY_LIMITS[id] },
        // f is a backup tier: lent only while every other key is ineligible.
        priority: id === "f" ? 1 : 0,
      }),
    );
  }
  /** Each grant and reconciliation per key, tokens reserved per lease, usage reported per released lease. */
  const budgetSteps = new Map<string, BudgetStep[]>(keyIds.map((id) => [id, []]));
  const reservedBy = new Map<string, number>();
  const usageOf = new Map<string, number>();

  const start = clock.now();
  const live = new Set<string>();
  const ended = new Set<string>();
  let eventIndex = 0;
  const waiters = new Set<Promise<unknown>>();
  /** Waiters whose promise has not settled yet, with the keys each excludes. */
  const pending = new Map<number, Set<string>>();
  let waiterSeq = 0;
  const aborts: AbortController[] = [];

  const consumeEvents = (step: number) => {
    for (; eventIndex < events.length; eventIndex++) {
      const e = events[eventIndex]!;
      if (e.type === "lease_granted") {
        expect(live.has(e.leaseId!) || ended.has(e.leaseId!), `step ${step}: granted twice`).toBe(false);
        live.add(e.leaseId!);
        budgetSteps.get(e.keyId!)!.push({ at: e.time, grant: true, tokens: reservedBy.get(e.leaseId!) ?? 0 });
      } else if (e.type === "lease_ended") {
        const used = usageOf.get(e.leaseId!);
        if (e.outcome === "success" && used !== undefined) {
          budgetSteps.get(e.keyId!)!.push({ at: e.time, grant: false, tokens: used - (reservedBy.get(e.leaseId!) ?? 0) });
        }
        expect(live.has(e.leaseId!), `step ${step}: ${e.leaseId} ended but not live`).toBe(true);
        live.delete(e.leaseId!);
        ended.add(e.leaseId!);
      }
    }
  };

  const checkInvariants = (step: number) => {
    const stats = engine.stats("p");
    expect(new Set(engine.listLeases("p").map((l) => l.leaseId))).toEqual(live);
    expect(stats.activeLeases).toBe(live.size);
    for (const k of stats.keys) {
      if (k.maxConcurrency > 0) expect(k.activeLeases, `step ${step}: key ${k.keyId} over max_concurrency`).toBeLessThanOrEqual(k.maxConcurrency);
    }
    expect(stats.waiters).toBe(pending.size);
    for (const k of stats.keys) {
      const b = k.budget;
      const known = b.requestsWindowMs !== undefined || (b.requestsResetAt ?? Infinity) > clock.now();
      if (k.eligible && b.requestsRemaining !== undefined && known) {
        expect(b.requestsRemaining, `step ${step}: key ${k.keyId} lent with no request budget`).toBeGreaterThanOrEqual(1);
      }
    }
    const eligible = stats.keys.filter((k) => k.eligible).map((k) => k.keyId);
    for (const exclude of pending.values()) {
      expect(eligible.filter((id) => !exclude.has(id)), `step ${step}: waiter left behind`).toEqual([]);
    }
  };

  for (let step = 0; step < STEPS; step++) {
    const op = int(100);
    const leaseIds = [...live];
    const anyLease = () => (rnd() < 0.1 ? pick([...ended]) : pick(leaseIds));
    const expectLeaseCall = (fn: () => unknown, id: string | undefined) => {
      if (!id) return;
      const wasLive = live.has(id);
      try {
        fn();
        expect(wasLive, `step ${step}: call on an ended lease succeeded`).toBe(true);
      } catch (e) {
        const code = (e as DomainError).code;
        expect(LEASE_ERRORS.has(code), `step ${step}: unexpected ${code}`).toBe(true);
        // Only a lease reclaimed by a deadline that passed at this very call may have been live.
        if (wasLive) expect(code).toBe("lease_expired");
      }
    };
    if (op < 30) {
      const waitTimeoutMs = rnd() < 0.5 ? 0 : 1 + int(3_000);
      const input = req("p", {
        waitTimeoutMs,
        ttlMs: 200 + int(4_000),
        excludeKeyIds: rnd() < 0.3 ? [pick(keyIds)!, pick(keyIds)!] : [],
        // The invariant check reads eligibility without a token estimate, so only immediate acquires carry one.
        estimatedTokens: waitTimeoutMs === 0 && rnd() < 0.2 ? 500 : 0,
      });
      const ac = rnd() < 0.2 ? new AbortController() : undefined;
      try {
        const r = engine.acquire({ ...input, affinity: rnd() < 0.3 ? pick(["x", "y", "z"]) : undefined }, ac ? () => ac.signal : undefined);
        if (!(r instanceof Promise)) reservedBy.set(r.leaseId, input.estimatedTokens);
        if (r instanceof Promise) {
          if (ac) aborts.push(ac);
          const id = waiterSeq++;
          pending.set(id, new Set(input.excludeKeyIds));
          const p: Promise<unknown> = r.then(
            (g: Grant) => {
              pending.delete(id);
              expect(live.has(g.leaseId) || ended.has(g.leaseId)).toBe(true);
              expect(input.excludeKeyIds).not.toContain(g.keyId);
            },
            (e: DomainError) => {
              pending.delete(id);
              expect(["no_key_available", "cancelled"]).toContain(e.code);
            },
          );
          waiters.add(p);
          void p.finally(() => waiters.delete(p));
        }
      } catch (e) {
        expect((e as DomainError).code).toBe("no_key_available");
      }
    } else if (op < 45) {
      const id = anyLease();
      // Half the reports carry a limit, so the request budget refills between them; the rest hold until their reset.
      const rateLimit = { requestsRemaining: int(3), requestsLimit: rnd() < 0.5 ? 2 + int(4) : undefined, requestsResetMs: int(1_500) };
      const budget = rnd() < 0.2 ? { rateLimit: { ...rateLimit, tokensRemaining: int(1_000), tokensResetMs: int(1_500) } } : {};
      const used = rnd() < 0.5 ? int(1_500) : undefined;
      if (id && used !== undefined && live.has(id)) usageOf.set(id, used);
      expectLeaseCall(() => engine.release(id!, { latencyMs: int(500), inputTokens: used, ...budget }), id);
    } else if (op < 53) {
      const id = anyLease();
      const status = pick([500, 502, 0, 408, 529, 503, 400, 429, 401, 402])!;
      expectLeaseCall(() => engine.markFailed(id!, { httpStatus: status, message: "stress" }), id);
    } else if (op < 58) {
      const id = anyLease();
      expectLeaseCall(() => engine.markRateLimited(id!, rnd() < 0.5 ? { retryAfterMs: int(1_000) } : {}), id);
    } else if (op < 66) {
      const id = anyLease();
      expectLeaseCall(() => engine.renew(id!, rnd() < 0.5 ? undefined : 100 + int(3_000)), id);
    } else if (op < 68) {
      const id = anyLease();
      expectLeaseCall(() => engine.revokeLease(id!, "stress"), id);
    } else if (op < 71) {
      engine.disableKey("p", pick(keyIds)!, rnd() < 0.5, "stress");
    } else if (op < 76) {
      engine.enableKey("p", pick(keyIds)!);
    } else if (op < 78) {
      pick(aborts)?.abort();
    } else {
      clock.advance(int(400));
    }
    consumeEvents(step);
    // Settles the promises of waiters the step served, timed out or cancelled; engine state does not move.
    await flush();
    checkInvariants(step);
  }
  engine.close();
  await flush();
  await Promise.all(waiters);
  consumeEvents(STEPS);
  checkInvariants(STEPS);
  expect(ended.size).toBeGreaterThan(STEPS / 10);

  // The budget invariant: never more granted than a declared budget allows, for keys and for the quota group.
  const grantsOf = (ids: string[]) => ids.flatMap((id) => budgetSteps.get(id)!.filter((s) => s.grant)).sort((x, y) => x.at - y.at);
  const requests = (steps: BudgetStep[]) => steps.filter((s) => s.grant).map((s) => ({ ...s, tokens: 1 }));
  expectWithinBudget(requests(budgetSteps.get("a")!), 30, MINUTE, "a requests_per_minute");
  expectWithinBudget(requests(budgetSteps.get("c")!), 20, MINUTE, "c requests_per_minute");
  expectWithinBudget(budgetSteps.get("c")!, 3_000, MINUTE, "c tokens_per_minute");
  expectWithinBudget(requests(budgetSteps.get("d")!), 150, DAY, "d requests_per_day");
  expectWithinBudget(requests(grantsOf(["a", "b"])), 40, MINUTE, "g1 requests_per_minute");
  expect(mostInWindow(grantsOf(["a"]).map((s) => s.at), MINUTE)).toBeLessThanOrEqual(60);
  expect(mostInWindow(grantsOf(["a", "b"]).map((s) => s.at), MINUTE)).toBeLessThanOrEqual(80);
  expect(grantsOf(["d"]).length).toBeLessThanOrEqual(150 + Math.ceil(((clock.now() - start) * 150) / DAY));
  // The budgets were binding, not idle.
  expect(grantsOf(["a", "b"]).length).toBeGreaterThan(40);
}

describe("randomized stress", () => {
  for (const [i, strategy] of (["round_robin", "least_busy", "weighted", "least_used", "latency"] as const).entries()) {
    it(`keeps every invariant after every step (${strategy})`, async () => {
      await run(strategy, 1_000 + i);
    });
  }
});
