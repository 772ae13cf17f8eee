import { describe, expect, it } from "vitest";
import type { PoolEngine } from "../../src/domain/engine.js";
import type { Grant, KeyConfig, Limits, PoolConfig, RuntimeSnapshot } from "../../src/domain/types.js";
import type { FakeClock } from "../fake-clock.js";
import { addKeys, addPool, codeOf, flush, grantNow, harness, req, settle, thrown } from "./helpers.js";

const limits = (l: Partial<Limits>): Limits => ({ requestsPerMinute: 0, tokensPerMinute: 0, requestsPerDay: 0, ...l });

function restart(engine: PoolEngine, clock: FakeClock, snapshot: RuntimeSnapshot) {
  const pools: PoolConfig[] = engine.listPools().map(({ keyCount: _, ...cfg }) => cfg);
  const keys: KeyConfig[] = pools.flatMap((p) => engine.listKeys(p.name).map((k) => k.config));
  engine.close();
  const next = harness({ clock, epoch: 2 });
  next.engine.load(pools, keys, JSON.parse(JSON.stringify(snapshot)) as RuntimeSnapshot, { 1: 1_000 });
  return next;
}

describe("declared request budgets", () => {
  it("lends a key's requests_per_minute at once, then one every window/limit, with the exact retry-after", () => {
    const { engine, clock } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"], { limits: limits({ requestsPerMinute: 60 }) });
    for (let i = 0; i < 60; i++) grantNow(engine, req());
    expect(thrown(() => engine.acquire(req())).details.retryAfterMs).toBe(1_000);
    clock.advance(999);
    expect(codeOf(() => engine.acquire(req()))).toBe("no_key_available");
    clock.advance(1);
    grantNow(engine, req());
    expect(codeOf(() => engine.acquire(req()))).toBe("no_key_available");
    clock.advance(10_000);
    for (let i = 0; i < 10; i++) grantNow(engine, req());
    expect(codeOf(() => engine.acquire(req()))).toBe("no_key_available");
    expect(engine.stats("p").keys[0]!.remaining).toEqual({ requestsPerMinute: 0 });
  });

  it("enforces requests_per_day beside requests_per_minute, and a quota group's limits across its keys: the strictest wins", () => {
    const { engine, clock } = harness();
    addPool(engine, { quotaGroups: { org: limits({ requestsPerMinute: 3 }) } });
    addKeys(engine, "p", ["a", "b"], { quotaGroup: "org", limits: limits({ requestsPerMinute: 100, requestsPerDay: 5 }) });
    addKeys(engine, "p", ["c"], { limits: limits({ requestsPerDay: 2 }) });
    const lent = Array.from({ length: 5 }, () => grantNow(engine, req()).keyId);
    expect(lent.filter((k) => k !== "c")).toHaveLength(3);
    expect(lent.filter((k) => k === "c")).toHaveLength(2);
    expect(codeOf(() => engine.acquire(req()))).toBe("no_key_available");
    // The group refills one request every 20 s; c's day budget one every 12 h.
    expect(thrown(() => engine.acquire(req())).details.retryAfterMs).toBe(20_000);
    clock.advance(20_000);
    expect(["a", "b"]).toContain(grantNow(engine, req()).keyId);
    const stats = engine.stats("p");
    expect(stats.quotaGroups).toEqual([
      { name: "org", limits: limits({ requestsPerMinute: 3 }), remaining: { requestsPerMinute: 0 }, usage: expect.objectContaining({ requests: 4 }), keys: 2 },
    ]);
  });

  it("never lends a key beyond max_concurrency or a learned budget, whichever binds first", () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"], { maxConcurrency: 2, limits: limits({ requestsPerMinute: 100 }) });
    const held = [grantNow(engine, req()), grantNow(engine, req())];
    expect(codeOf(() => engine.acquire(req()))).toBe("no_key_available");
    engine.release(held[0]!.leaseId, { rateLimit: { requestsRemaining: 0, requestsLimit: 100, requestsResetMs: 30_000 } });
    expect(codeOf(() => engine.acquire(req()))).toBe("no_key_available");
  });
});

describe("token reservations", () => {
  it("reserves estimated_tokens against tokens_per_minute and refunds or charges at Release by the usage reported", () => {
    const { engine, clock } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"], { limits: limits({ tokensPerMinute: 1_000 }) });
    const first = grantNow(engine, req("p", { estimatedTokens: 400 }));
    const second = grantNow(engine, req("p", { estimatedTokens: 400 }));
    expect(engine.stats("p").keys[0]).toMatchObject({ reservedTokens: 800, remaining: { tokensPerMinute: 200 } });
    expect(codeOf(() => engine.acquire(req("p", { estimatedTokens: 400 })))).toBe("no_key_available");
    // Used 100 of 400: 300 come back.
    engine.release(first.leaseId, { inputTokens: 60, outputTokens: 40 });
    expect(engine.stats("p").keys[0]).toMatchObject({ reservedTokens: 400, remaining: { tokensPerMinute: 500 } });
    const third = grantNow(engine, req("p", { estimatedTokens: 400 }));
    // Used 900 of 400: 500 more are charged, leaving the budget 400 below empty.
    engine.release(second.leaseId, { inputTokens: 700, outputTokens: 200 });
    expect(engine.stats("p").keys[0]!.remaining.tokensPerMinute).toBe(0);
    engine.release(third.leaseId, { inputTokens: 400 });
    // 100 - 500 = -400 left: 500 tokens (a 400-token request needs 800 refilled) take 48 s at 1,000 a minute.
    expect(thrown(() => engine.acquire(req("p", { estimatedTokens: 400 }))).details.retryAfterMs).toBe(48_000);
    clock.advance(48_000);
    grantNow(engine, req("p", { estimatedTokens: 400 }));
  });

  it("keeps the reservation of a lease that ends without usage: a failure, a 429, an expiry, a release with none", () => {
    const { engine, clock } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"], { limits: limits({ tokensPerMinute: 1_000 }) });
    const remaining = () => engine.stats("p").keys[0]!.remaining.tokensPerMinute;
    engine.markFailed(grantNow(engine, req("p", { estimatedTokens: 100 })).leaseId, { reason: "transient", httpStatus: 502, message: "" });
    engine.release(grantNow(engine, req("p", { estimatedTokens: 100 })).leaseId, { latencyMs: 5 });
    grantNow(engine, req("p", { estimatedTokens: 100, ttlMs: 1_000 }));
    clock.advance(1_000);
    // 300 reserved, 1 s refilled 16.7.
    expect(remaining()).toBe(716);
    expect(engine.stats("p").keys[0]!.reservedTokens).toBe(0);
    expect(engine.stats("p").keys[0]!.usage).toMatchObject({ requests: 3, successes: 1, failures: 1, unreported: 1 });
  });

  it("reserves the pool's default estimate when the caller gives none", () => {
    const { engine } = harness();
    addPool(engine, { defaultEstimatedTokens: 300 });
    addKeys(engine, "p", ["a"], { limits: limits({ tokensPerMinute: 1_000 }) });
    for (let i = 0; i < 3; i++) grantNow(engine, req());
    expect(codeOf(() => engine.acquire(req()))).toBe("no_key_available");
    grantNow(engine, req("p", { estimatedTokens: 100 }));
  });

  it("refuses a request larger than every key's whole tokens_per_minute with INVALID_ARGUMENT on estimated_tokens, instead of queueing it", () => {
    const { engine } = harness();
    addPool(engine, { quotaGroups: { org: limits({ tokensPerMinute: 5_000 }) } });
    addKeys(engine, "p", ["a"], { limits: limits({ tokensPerMinute: 8_000 }) });
    addKeys(engine, "p", ["b"], { quotaGroup: "org", limits: limits({ tokensPerMinute: 20_000 }) });
    const e = thrown(() => engine.acquire(req("p", { estimatedTokens: 8_001, waitTimeoutMs: 10_000 })));
    expect([e.code, e.details.field]).toEqual(["invalid_argument", "estimated_tokens"]);
    expect(grantNow(engine, req("p", { estimatedTokens: 8_000 })).keyId).toBe("a");
    // A key with no token budget takes anything.
    addKeys(engine, "p", ["c"]);
    expect(grantNow(engine, req("p", { estimatedTokens: 50_000 })).keyId).toBe("c");
  });

  it("answers a waiter INVALID_ARGUMENT when a change leaves no key able to hold its reservation", async () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"], { limits: limits({ tokensPerMinute: 1_000 }) });
    grantNow(engine, req("p", { estimatedTokens: 1_000 }));
    const w = settle(engine.acquire(req("p", { estimatedTokens: 900, waitTimeoutMs: 60_000 })) as Promise<Grant>);
    engine.updateKey(engine.prepareKey({ pool: "p", limits: limits({ tokensPerMinute: 500 }) }, engine.getKeyConfig("p", "a")));
    await flush();
    expect([w.error?.code, w.error?.details.field]).toEqual(["invalid_argument", "estimated_tokens"]);
  });
});

describe("waiting on budgets", () => {
  it("wakes a waiter at the exact refill with one timer, and times out with the exact retry-after", async () => {
    const { engine, clock } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"], { limits: limits({ requestsPerMinute: 2 }) });
    grantNow(engine, req());
    grantNow(engine, req());
    const start = clock.now();
    const w = settle(engine.acquire(req("p", { waitTimeoutMs: 60_000 })) as Promise<Grant>);
    // The waiter's timeout and the budget's refill: nothing polls.
    expect(clock.deadlines()).toEqual([start + 30_000]);
    clock.advance(29_999);
    await flush();
    expect(w.value).toBeUndefined();
    clock.advance(1);
    await flush();
    expect(w.value?.keyId).toBe("a");
    const late = settle(engine.acquire(req("p", { waitTimeoutMs: 10_000 })) as Promise<Grant>);
    clock.advance(10_000);
    await flush();
    expect([late.error?.code, late.error?.details.retryAfterMs]).toEqual(["no_key_available", 20_000]);
  });

  it("a large reservation holds the key it needs: small waiters behind it pass only on other keys, and are served right after it", async () => {
    const { engine, clock } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"], { limits: limits({ tokensPerMinute: 6_000 }) });
    grantNow(engine, req("p", { estimatedTokens: 5_000 }));
    // 1,000 left, 100 a second: the large waiter needs 50 s, small ones could go now.
    const large = settle(engine.acquire(req("p", { estimatedTokens: 6_000, waitTimeoutMs: 120_000, holder: "large" })) as Promise<Grant>);
    const small = [1, 2, 3].map(() => settle(engine.acquire(req("p", { estimatedTokens: 100, waitTimeoutMs: 120_000 })) as Promise<Grant>));
    expect(codeOf(() => engine.acquire(req("p", { estimatedTokens: 100 })))).toBe("no_key_available");
    // Another key appears: the small ones go there; the large one keeps its claim on a.
    addKeys(engine, "p", ["b"], { limits: limits({ tokensPerMinute: 200 }) });
    await flush();
    expect(small.map((s) => s.value?.keyId)).toEqual(["b", "b", undefined]);
    clock.advance(50_000);
    await flush();
    expect(large.value?.keyId).toBe("a");
    // b refilled first (100 tokens in 30 s), so the third small one was served before: not blocked behind the large one for ever.
    expect(small[2]!.value?.keyId).toBe("b");
  });

  it("with one key, serves the large reservation first and the small ones behind it as soon as it is lent", async () => {
    const { engine, clock } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"], { limits: limits({ tokensPerMinute: 6_000 }) });
    grantNow(engine, req("p", { estimatedTokens: 6_000 }));
    const large = settle(engine.acquire(req("p", { estimatedTokens: 3_000, waitTimeoutMs: 120_000 })) as Promise<Grant>);
    const small = settle(engine.acquire(req("p", { estimatedTokens: 100, waitTimeoutMs: 120_000 })) as Promise<Grant>);
    clock.advance(1_000);
    await flush();
    // 100 tokens are there for the small one, but they are the large one's.
    expect(small.value).toBeUndefined();
    clock.advance(29_000);
    await flush();
    expect(large.value).toBeDefined();
    expect(small.value).toBeUndefined();
    clock.advance(1_000);
    await flush();
    expect(small.value).toBeDefined();
  });
});

describe("priority tiers", () => {
  it("lends a later tier only while every key before it is ineligible, with events on fallback and return", async () => {
    const { engine, clock, events } = harness();
    addPool(engine);
    addKeys(engine, "p", ["p1", "p2"], { limits: limits({ requestsPerMinute: 60 }) });
    addKeys(engine, "p", ["backup"], { priority: 1 });
    const tiers = () => events.filter((e) => e.type === "tier_fallback" || e.type === "tier_restored").map((e) => [e.type, e.keyId]);
    const lent = Array.from({ length: 130 }, () => grantNow(engine, req()).keyId);
    expect(lent.slice(0, 120).every((k) => k !== "backup")).toBe(true);
    expect(lent.slice(120)).toEqual(Array(10).fill("backup"));
    expect(tiers()).toEqual([["tier_fallback", "backup"]]);
    expect(engine.stats("p").servingPriority).toBe(1);
    clock.advance(1_000);
    // One request refilled on each primary key: the primary tier lends them, still in fallback until it has lent alone for a second.
    expect(grantNow(engine, req()).keyId).not.toBe("backup");
    expect(grantNow(engine, req()).keyId).not.toBe("backup");
    expect(grantNow(engine, req()).keyId).toBe("backup");
    clock.advance(2_000);
    expect(grantNow(engine, req()).keyId).not.toBe("backup");
    expect(tiers()).toEqual([["tier_fallback", "backup"], ["tier_restored", expect.any(String)]]);
    // A disabled, cooling or excluded primary is ineligible too.
    engine.disableKey("p", "p1", false, "test");
    expect(grantNow(engine, req("p", { excludeKeyIds: ["p2"] })).keyId).toBe("backup");
  });

  it("moves a key between tiers when its priority changes", () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a", "b"]);
    engine.updateKey(engine.prepareKey({ pool: "p", priority: 2 }, engine.getKeyConfig("p", "a")));
    expect(Array.from({ length: 4 }, () => grantNow(engine, req()).keyId)).toEqual(["b", "b", "b", "b"]);
  });
});

describe("affinity", () => {
  it("lends an affinity's key while it stays eligible, and moves the affinity when it is not", () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a", "b", "c"], { maxConcurrency: 2 });
    const first = grantNow(engine, req("p", { affinity: "conv-1" })).keyId;
    expect(grantNow(engine, req("p", { affinity: "conv-1" })).keyId).toBe(first);
    // Full now: the strategy picks another key, and the affinity follows it.
    const moved = grantNow(engine, req("p", { affinity: "conv-1" })).keyId;
    expect(moved).not.toBe(first);
    expect(grantNow(engine, req("p", { affinity: "conv-1" })).keyId).toBe(moved);
    expect(engine.stats("p").affinities).toBe(1);
  });

  it("does not keep an affinity on a later tier once an earlier one has an eligible key", () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["primary"], { maxConcurrency: 1 });
    addKeys(engine, "p", ["backup"], { priority: 1 });
    const held = grantNow(engine, req());
    expect(grantNow(engine, req("p", { affinity: "x" })).keyId).toBe("backup");
    engine.release(held.leaseId, {});
    expect(grantNow(engine, req("p", { affinity: "x" })).keyId).toBe("primary");
  });

  it("remembers at most AFFINITY_CAP affinities per pool, dropping the least recently used, and keeps them across a restart", () => {
    const { engine, clock } = harness();
    addPool(engine, { strategy: "least_used" });
    addKeys(engine, "p", ["a", "b"]);
    const keyOf = new Map<string, string>();
    for (let i = 0; i < 10_001; i++) {
      const g = grantNow(engine, req("p", { affinity: `c${i}` }));
      keyOf.set(`c${i}`, g.keyId);
      engine.release(g.leaseId, {});
    }
    expect(engine.stats("p").affinities).toBe(10_000);
    const { engine: next } = restart(engine, clock, engine.exportRuntime());
    expect(next.stats("p").affinities).toBe(10_000);
    for (const c of ["c1", "c5000", "c10000"]) expect(grantNow(next, req("p", { affinity: c })).keyId).toBe(keyOf.get(c));
  });
});

describe("usage accounting and restarts", () => {
  it("counts requests, tokens and outcomes per key, quota group and pool", () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"], { quotaGroup: "org" });
    addKeys(engine, "p", ["b"]);
    engine.release(grantNow(engine, req("p", { excludeKeyIds: ["b"] })).leaseId, { inputTokens: 10, outputTokens: 5 });
    engine.markRateLimited(grantNow(engine, req("p", { excludeKeyIds: ["b"] })).leaseId, {});
    engine.markFailed(grantNow(engine, req("p", { excludeKeyIds: ["a"] })).leaseId, { httpStatus: 500, message: "" });
    engine.revokeLease(grantNow(engine, req("p", { excludeKeyIds: ["a"] })).leaseId, "test");
    const s = engine.stats("p");
    expect(s.usage).toEqual({ requests: 4, inputTokens: 10, outputTokens: 5, successes: 1, rateLimited: 1, failures: 1, unreported: 1 });
    expect(s.quotaGroups[0]!.usage).toEqual({ requests: 2, inputTokens: 10, outputTokens: 5, successes: 1, rateLimited: 1, failures: 0, unreported: 0 });
    expect(s.keys.find((k) => k.keyId === "b")!.usage).toEqual({ requests: 2, inputTokens: 0, outputTokens: 0, successes: 0, rateLimited: 0, failures: 1, unreported: 1 });
    expect(engine.getKey("p", "a").usage.requests).toBe(2);
  });

  it("refills budgets across a restart for exactly the time it was down, and keeps usage", () => {
    const { engine, clock } = harness();
    addPool(engine, { quotaGroups: { org: limits({ tokensPerMinute: 600 }) } });
    addKeys(engine, "p", ["a"], { quotaGroup: "org", limits: limits({ requestsPerMinute: 6, requestsPerDay: 100 }) });
    for (let i = 0; i < 6; i++) grantNow(engine, req("p", { estimatedTokens: 100 }));
    const snapshot = engine.exportRuntime();
    clock.advance(25_000);
    const { engine: next } = restart(engine, clock, snapshot);
    const k = next.stats("p").keys[0]!;
    // 25 s refilled 2.5 requests and 250 tokens; the day budget 6 × 25 s / 86,400 s of a request.
    expect(k.remaining).toEqual({ requestsPerMinute: 2, tokensPerMinute: undefined, requestsPerDay: 94 });
    expect(next.stats("p").quotaGroups[0]!.remaining.tokensPerMinute).toBe(250);
    expect(k.usage.requests).toBe(6);
    expect(next.stats("p").usage.requests).toBe(6);
    grantNow(next, req("p", { estimatedTokens: 100 }));
    grantNow(next, req("p", { estimatedTokens: 100 }));
    expect(thrown(() => next.acquire(req("p", { estimatedTokens: 100 }))).details.retryAfterMs).toBe(5_000);
  });
});
