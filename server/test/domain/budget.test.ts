import { describe, expect, it } from "vitest";
import type { Grant, RateLimitReport, RuntimeSnapshot } from "../../src/domain/types.js";
import { addKeys, addPool, flush, grantNow, harness, req, settle } from "./helpers.js";

/** One key "a" whose provider just reported `rateLimit` on a released lease. */
function reported(rateLimit: RateLimitReport) {
  const h = harness();
  addPool(h.engine);
  addKeys(h.engine, "p", ["a"]);
  h.engine.release(grantNow(h.engine, req()).leaseId, { rateLimit });
  const key = () => h.engine.stats("p").keys[0]!;
  return { ...h, key };
}

describe("provider request budget", () => {
  it("debits one per grant and refills at (limit - remaining) / reset, up to the limit", () => {
    // 2 left of 5, full in 60 ms: the provider refills 5 per 100 ms, one every 20 ms.
    const { engine, clock, key } = reported({ requestsRemaining: 2, requestsLimit: 5, requestsResetMs: 60 });
    const t0 = clock.now();
    expect(key().budget).toMatchObject({ requestsRemaining: 2, requestsLimit: 5, requestsResetAt: t0 + 60, requestsWindowMs: 100 });
    grantNow(engine, req());
    grantNow(engine, req());
    expect(key()).toMatchObject({ eligible: false, budget: { requestsRemaining: 0, requestsResetAt: t0 + 100 } });
    clock.advance(10);
    expect(key()).toMatchObject({ eligible: false, budget: { requestsRemaining: 0 } });
    clock.advance(10);
    expect(key()).toMatchObject({ eligible: true, budget: { requestsRemaining: 1, requestsResetAt: t0 + 100 } });
    clock.advance(50);
    expect(key().budget.requestsRemaining).toBe(3);
    grantNow(engine, req());
    expect(key().budget).toMatchObject({ requestsRemaining: 2, requestsResetAt: t0 + 120 });
    // Two more grants leave 0.5, so the next request is due at t0+80.
    grantNow(engine, req());
    grantNow(engine, req());
    expect(key().eligible).toBe(false);
    clock.advance(9);
    expect(key().eligible).toBe(false);
    clock.advance(1);
    expect(key().eligible).toBe(true);
    clock.advance(10_000);
    expect(key().budget).toMatchObject({ requestsRemaining: 5, requestsResetAt: clock.now() });
  });

  it("below one request the key is skipped and one wake serves the oldest waiter when the next is due", async () => {
    const { engine, clock, key } = reported({ requestsRemaining: 1, requestsLimit: 5, requestsResetMs: 80 });
    grantNow(engine, req());
    expect(key().eligible).toBe(false);
    const first = settle(engine.acquire(req("p", { waitTimeoutMs: 1_000, holder: "first" })) as Promise<Grant>);
    const second = settle(engine.acquire(req("p", { waitTimeoutMs: 1_000, holder: "second" })) as Promise<Grant>);
    expect(clock.pending).toBe(1);
    clock.advance(19);
    await flush();
    expect(first.value).toBeUndefined();
    clock.advance(1);
    await flush();
    expect(first.value?.keyId).toBe("a");
    expect(second.value).toBeUndefined();
    expect(engine.listLeases("p").find((l) => l.leaseId === first.value!.leaseId)?.holder).toBe("first");
    clock.advance(19);
    await flush();
    expect(second.value).toBeUndefined();
    clock.advance(1);
    await flush();
    expect(second.value?.keyId).toBe("a");
    expect(engine.stats("p").waiters).toBe(0);
  });

  it("a fresh report replaces the estimate, up or down", async () => {
    const { engine, clock, key } = reported({ requestsRemaining: 1, requestsLimit: 60, requestsResetMs: 60_000 });
    const held = grantNow(engine, req());
    expect(key().eligible).toBe(false);
    const w = settle(engine.acquire(req("p", { waitTimeoutMs: 5_000 })) as Promise<Grant>);
    engine.release(held.leaseId, { rateLimit: { requestsRemaining: 3, requestsLimit: 60, requestsResetMs: 57_000 } });
    await flush();
    expect(w.value?.keyId).toBe("a");
    expect(key().budget.requestsRemaining).toBe(2);
    clock.advance(1);
    engine.release(w.value!.leaseId, { rateLimit: { requestsRemaining: 0, requestsLimit: 60, requestsResetMs: 60_000 } });
    expect(key()).toMatchObject({ eligible: false, budget: { requestsRemaining: 0, requestsResetAt: clock.now() + 60_000 } });
  });

  it("with a limit, a 0 is due its first request at reset / limit, not at the reset", () => {
    const { clock, key } = reported({ requestsRemaining: 0, requestsLimit: 60, requestsResetMs: 60_000 });
    clock.advance(999);
    expect(key().eligible).toBe(false);
    clock.advance(1);
    expect(key().eligible).toBe(true);
  });

  it("with no limit known, the budget holds until its reset and is unknown after it", async () => {
    const { engine, clock, key } = reported({ requestsRemaining: 2, requestsResetMs: 1_000 });
    grantNow(engine, req());
    grantNow(engine, req());
    expect(key()).toMatchObject({ eligible: false, budget: { requestsRemaining: 0 } });
    const w = settle(engine.acquire(req("p", { waitTimeoutMs: 5_000 })) as Promise<Grant>);
    clock.advance(999);
    await flush();
    expect(w.value).toBeUndefined();
    clock.advance(1);
    await flush();
    expect(w.value?.keyId).toBe("a");
    for (let i = 0; i < 5; i++) grantNow(engine, req());
  });

  it("a budget counted down to 0 with no reset known is trusted for one default cooldown", () => {
    const { engine, clock, key } = reported({ requestsRemaining: 1 });
    grantNow(engine, req());
    expect(key()).toMatchObject({ eligible: false, budget: { requestsResetAt: clock.now() + 10_000 } });
    clock.advance(9_999);
    expect(key().eligible).toBe(false);
    clock.advance(1);
    expect(key().eligible).toBe(true);
  });

  it("export and load keep the estimate, and the restored engine wakes at the same instant", async () => {
    const { engine, clock } = reported({ requestsRemaining: 2, requestsLimit: 5, requestsResetMs: 60 });
    clock.advance(3);
    grantNow(engine, req());
    grantNow(engine, req());
    const snapshot = engine.exportRuntime();
    const before = engine.stats("p").keys[0]!;
    const pools = engine.listPools().map(({ keyCount: _, ...cfg }) => cfg);
    const keys = engine.listKeys("p").map((k) => k.config);
    engine.close();

    const next = harness({ clock, epoch: 2 });
    next.engine.load(pools, keys, JSON.parse(JSON.stringify(snapshot)) as RuntimeSnapshot, {});
    expect(next.engine.exportRuntime().keys).toEqual(snapshot.keys);
    expect(next.engine.stats("p").keys[0]!.budget).toEqual(before.budget);
    // 2.15 left at t0+3 less two grants: 0.15, so the next request is due 17 ms later.
    const w = settle(next.engine.acquire(req("p", { waitTimeoutMs: 1_000 })) as Promise<Grant>);
    clock.advance(16);
    await flush();
    expect(w.value).toBeUndefined();
    clock.advance(1);
    await flush();
    expect(w.value?.keyId).toBe("a");
  });
});
