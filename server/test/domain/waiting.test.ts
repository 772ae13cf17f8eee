import { describe, expect, it } from "vitest";
import type { DomainError } from "../../src/domain/errors.js";
import type { Grant } from "../../src/domain/types.js";
import { addKeys, addPool, codeOf, flush, grantNow, harness, req, settle } from "./helpers.js";

describe("waiting", () => {
  it("serves waiters first-in first-out as slots free, and a new arrival does not barge", async () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"], { maxConcurrency: 1 });
    const held = grantNow(engine, req());
    const waits = [1, 2, 3].map((i) => {
      const p = engine.acquire(req("p", { waitTimeoutMs: 10_000, holder: `w${i}` }));
      expect(p).toBeInstanceOf(Promise);
      return settle(p as Promise<Grant>);
    });
    expect(engine.stats("p").waiters).toBe(3);
    engine.release(held.leaseId, {});
    // The slot went to the oldest waiter synchronously, so a newcomer finds nothing.
    expect(codeOf(() => engine.acquire(req()))).toBe("no_key_available");
    await flush();
    expect(waits.map((w) => w.value?.leaseId !== undefined)).toEqual([true, false, false]);
    expect(engine.listLeases("p")[0]!.holder).toBe("w1");
    engine.release(waits[0]!.value!.leaseId, {});
    await flush();
    expect(engine.listLeases("p")[0]!.holder).toBe("w2");
    engine.release(waits[1]!.value!.leaseId, {});
    await flush();
    expect(engine.listLeases("p")[0]!.holder).toBe("w3");
  });

  it("wakes a waiter when a lease expires", async () => {
    const { engine, clock } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"], { maxConcurrency: 1 });
    grantNow(engine, req("p", { ttlMs: 2_000 }));
    const w = settle(engine.acquire(req("p", { waitTimeoutMs: 5_000 })) as Promise<Grant>);
    clock.advance(1_999);
    await flush();
    expect(w.value).toBeUndefined();
    clock.advance(1);
    await flush();
    expect(w.value?.keyId).toBe("a");
  });

  it("wakes a waiter the moment a cooldown ends", async () => {
    const { engine, clock, events } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"]);
    const g = grantNow(engine, req());
    engine.markRateLimited(g.leaseId, { retryAfterMs: 7_000 });
    const w = settle(engine.acquire(req("p", { waitTimeoutMs: 20_000 })) as Promise<Grant>);
    clock.advance(6_999);
    await flush();
    expect(w.value).toBeUndefined();
    clock.advance(1);
    await flush();
    expect(w.value?.keyId).toBe("a");
    expect(events.map((e) => e.type)).toContain("cooldown_ended");
  });

  it("wakes waiters when a key is added or enabled", async () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"]);
    engine.disableKey("p", "a", false, "maintenance");
    const w1 = settle(engine.acquire(req("p", { waitTimeoutMs: 1_000 })) as Promise<Grant>);
    const w2 = settle(engine.acquire(req("p", { waitTimeoutMs: 1_000 })) as Promise<Grant>);
    engine.enableKey("p", "a");
    addKeys(engine, "p", ["b"], { maxConcurrency: 1 });
    await flush();
    expect(w1.value?.keyId).toBe("a");
    expect(w2.value?.keyId).toBe("a");
  });

  it("wakes a waiter when a key update or pool update admits more leases", async () => {
    const { engine, clock } = harness();
    addPool(engine, { failureThreshold: 1, openDurationMs: 1_000 });
    addKeys(engine, "p", ["a"], { maxConcurrency: 1 });
    grantNow(engine, req());
    const w1 = settle(engine.acquire(req("p", { waitTimeoutMs: 60_000 })) as Promise<Grant>);
    engine.updateKey(engine.prepareKey({ pool: "p", id: "a", maxConcurrency: 5 }, engine.getKeyConfig("p", "a")));
    await flush();
    expect(w1.value?.keyId).toBe("a");
    engine.markFailed(grantNow(engine, req()).leaseId, { reason: "transient", httpStatus: 500, message: "" });
    clock.advance(1_000);
    grantNow(engine, req());
    const w2 = settle(engine.acquire(req("p", { waitTimeoutMs: 60_000 })) as Promise<Grant>);
    engine.updatePool(engine.preparePool({ name: "p", halfOpenProbes: 2 }, engine.getPool("p")));
    await flush();
    expect(w2.value?.keyId).toBe("a");
  });

  it("times out with no_key_available and the earliest known availability", async () => {
    const { engine, clock } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a", "b"]);
    for (const [id, wait] of [["a", 30_000], ["b", 12_000]] as const) {
      const g = grantNow(engine, req("p", { excludeKeyIds: id === "a" ? ["b"] : ["a"] }));
      engine.markRateLimited(g.leaseId, { retryAfterMs: wait });
    }
    const w = settle(engine.acquire(req("p", { waitTimeoutMs: 2_000 })) as Promise<Grant>);
    clock.advance(2_000);
    await flush();
    expect(w.error?.code).toBe("no_key_available");
    expect(w.error?.details.retryAfterMs).toBe(10_000);
    expect(engine.stats("p").waiters).toBe(0);
    const hint = (excludeKeyIds: string[]) => {
      try {
        engine.acquire(req("p", { excludeKeyIds }));
      } catch (e) {
        return (e as DomainError).details.retryAfterMs;
      }
    };
    expect(hint([])).toBe(10_000);
    expect(hint(["b"])).toBe(28_000);
    expect(hint(["a", "b"])).toBeUndefined();
  });

  it("a cancelled caller leaves the queue and the next waiter gets the slot", async () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"], { maxConcurrency: 1 });
    const held = grantNow(engine, req());
    const ac = new AbortController();
    const first = settle(engine.acquire(req("p", { waitTimeoutMs: 5_000, holder: "first" }), () => ac.signal) as Promise<Grant>);
    const second = settle(engine.acquire(req("p", { waitTimeoutMs: 5_000, holder: "second" })) as Promise<Grant>);
    ac.abort();
    await flush();
    expect(first.error?.code).toBe("cancelled");
    expect(engine.stats("p").waiters).toBe(1);
    engine.release(held.leaseId, {});
    await flush();
    expect(second.value?.keyId).toBe("a");
    expect(engine.listLeases("p")[0]!.holder).toBe("second");
  });

  it("fails at once for an empty pool and when wait is zero", () => {
    const { engine } = harness();
    addPool(engine);
    expect(codeOf(() => engine.acquire(req("p", { waitTimeoutMs: 5_000 })))).toBe("pool_empty");
    addKeys(engine, "p", ["a"], { maxConcurrency: 1 });
    grantNow(engine, req());
    expect(codeOf(() => engine.acquire(req()))).toBe("no_key_available");
  });

  it("serves a later waiter that can use a key an earlier one excludes", async () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a", "b"], { maxConcurrency: 1 });
    const ga = grantNow(engine, req());
    const gb = grantNow(engine, req());
    const picky = settle(engine.acquire(req("p", { waitTimeoutMs: 5_000, excludeKeyIds: ["a"] })) as Promise<Grant>);
    const plain = settle(engine.acquire(req("p", { waitTimeoutMs: 5_000 })) as Promise<Grant>);
    engine.release(ga.leaseId, {});
    await flush();
    expect(picky.value).toBeUndefined();
    expect(plain.value?.keyId).toBe("a");
    engine.release(gb.leaseId, {});
    await flush();
    expect(picky.value?.keyId).toBe("b");
  });

  it("a key with an exhausted provider budget and no known refill is skipped until the reset, then wakes waiters", async () => {
    const { engine, clock } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"]);
    const g = grantNow(engine, req());
    engine.release(g.leaseId, { rateLimit: { requestsRemaining: 0, requestsResetMs: 4_000 } });
    expect(engine.stats("p").keys[0]!.eligible).toBe(false);
    const w = settle(engine.acquire(req("p", { waitTimeoutMs: 10_000 })) as Promise<Grant>);
    clock.advance(3_999);
    await flush();
    expect(w.value).toBeUndefined();
    clock.advance(1);
    await flush();
    expect(w.value?.keyId).toBe("a");
  });

  it("skips a key whose token budget is below the caller's estimate", async () => {
    const { engine, clock } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"]);
    const g = grantNow(engine, req());
    engine.release(g.leaseId, { rateLimit: { headers: { "x-ratelimit-remaining-tokens": "500", "x-ratelimit-reset-tokens": "3s" } } });
    expect(grantNow(engine, req("p", { estimatedTokens: 400 })).keyId).toBe("a");
    const w = settle(engine.acquire(req("p", { estimatedTokens: 800, waitTimeoutMs: 5_000 })) as Promise<Grant>);
    clock.advance(3_000);
    await flush();
    expect(w.value?.keyId).toBe("a");
  });

  it("close rejects waiters with cancelled", async () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"], { maxConcurrency: 1 });
    grantNow(engine, req());
    const w = settle(engine.acquire(req("p", { waitTimeoutMs: 5_000 })) as Promise<Grant>);
    engine.close();
    await flush();
    expect(w.error?.code).toBe("cancelled");
  });
});
