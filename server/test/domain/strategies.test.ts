import { describe, expect, it } from "vitest";
import { addKeys, addPool, grantNow, harness, req } from "./helpers.js";

function counts(ids: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const id of ids) out[id] = (out[id] ?? 0) + 1;
  return out;
}

describe("strategies", () => {
  it("round_robin takes each eligible key in turn and skips ineligible ones", () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a", "b", "c"]);
    const picks = Array.from({ length: 6 }, () => {
      const g = grantNow(engine, req());
      engine.release(g.leaseId, {});
      return g.keyId;
    });
    expect(picks).toEqual(["a", "b", "c", "a", "b", "c"]);
    engine.disableKey("p", "b", false, "x");
    const next = Array.from({ length: 4 }, () => grantNow(engine, req()).keyId);
    expect(next).toEqual(["a", "c", "a", "c"]);
  });

  it("weighted gives exact proportions over 1,000 picks, without bursts", () => {
    const { engine } = harness();
    addPool(engine, { strategy: "weighted" });
    engine.addKey(engine.prepareKey({ pool: "p", id: "a", secret: "s", weight: 5 }));
    engine.addKey(engine.prepareKey({ pool: "p", id: "b", secret: "s", weight: 3 }));
    engine.addKey(engine.prepareKey({ pool: "p", id: "c", secret: "s", weight: 2 }));
    const picks = Array.from({ length: 1_000 }, () => {
      const g = grantNow(engine, req());
      engine.release(g.leaseId, {});
      return g.keyId;
    });
    expect(counts(picks)).toEqual({ a: 500, b: 300, c: 200 });
    // Smooth: within every window of 10 picks the proportions already hold.
    for (let i = 0; i < 1_000; i += 10) expect(counts(picks.slice(i, i + 10))).toEqual({ a: 5, b: 3, c: 2 });
    let longestRun = 1;
    for (let i = 1, run = 1; i < picks.length; i++) {
      run = picks[i] === picks[i - 1] ? run + 1 : 1;
      longestRun = Math.max(longestRun, run);
    }
    expect(longestRun).toBeLessThanOrEqual(2);
  });

  it("least_busy picks the key with fewest active leases and rotates ties", () => {
    const { engine } = harness();
    addPool(engine, { strategy: "least_busy" });
    addKeys(engine, "p", ["a", "b", "c"]);
    const rotation = Array.from({ length: 6 }, () => {
      const g = grantNow(engine, req());
      engine.release(g.leaseId, {});
      return g.keyId;
    });
    expect(rotation).toEqual(["a", "b", "c", "a", "b", "c"]);
    const held = [grantNow(engine, req()), grantNow(engine, req())];
    expect(new Set(held.map((g) => g.keyId)).size).toBe(2);
    const third = grantNow(engine, req()).keyId;
    expect(held.map((g) => g.keyId)).not.toContain(third);
    engine.release(held[0]!.leaseId, {});
    expect(grantNow(engine, req()).keyId).toBe(held[0]!.keyId);
  });

  it("least_used picks the key with fewest grants in the sliding window", () => {
    const { engine, clock } = harness();
    addPool(engine, { strategy: "least_used" });
    addKeys(engine, "p", ["a", "b"]);
    for (let i = 0; i < 3; i++) engine.release(grantNow(engine, req("p", { excludeKeyIds: ["b"] })).leaseId, {});
    clock.advance(30_000);
    engine.release(grantNow(engine, req("p", { excludeKeyIds: ["a"] })).leaseId, {});
    expect(grantNow(engine, req()).keyId).toBe("b");
    clock.advance(31_000);
    // a's three grants left the window (it counts whole seconds: theirs went once all of it was a minute old); b's did not.
    expect(grantNow(engine, req()).keyId).toBe("a");
    expect(engine.stats("p").keys.find((k) => k.keyId === "b")!.recentLeases).toBe(2);
  });

  it("latency prefers the lowest EMA, samples unmeasured keys first, and explores a little", () => {
    let next = 0.5;
    const { engine } = harness({ random: () => next });
    addPool(engine, { strategy: "latency" });
    addKeys(engine, "p", ["a", "b", "c"]);
    const lat: Record<string, number> = { a: 300, b: 100, c: 200 };
    const first = Array.from({ length: 3 }, () => {
      const g = grantNow(engine, req());
      engine.release(g.leaseId, { latencyMs: lat[g.keyId] });
      return g.keyId;
    });
    expect(new Set(first)).toEqual(new Set(["a", "b", "c"]));
    for (let i = 0; i < 5; i++) {
      const g = grantNow(engine, req());
      expect(g.keyId).toBe("b");
      engine.release(g.leaseId, { latencyMs: 100 });
    }
    next = 0.01; // below the exploration share: random start index floor(0.01 * 3) = 0
    expect(grantNow(engine, req()).keyId).toBe("a");
  });

  it("honours exclude_key_ids in every strategy", () => {
    for (const strategy of ["round_robin", "least_busy", "weighted", "least_used", "latency"] as const) {
      const { engine } = harness();
      addPool(engine, { strategy });
      addKeys(engine, "p", ["a", "b", "c"]);
      for (let i = 0; i < 10; i++) {
        const g = grantNow(engine, req("p", { excludeKeyIds: ["a", "c"] }));
        expect(g.keyId).toBe("b");
        engine.release(g.leaseId, {});
      }
    }
  });

  it("never exceeds max_concurrency", () => {
    const { engine } = harness();
    addPool(engine, { strategy: "least_busy" });
    addKeys(engine, "p", ["a", "b"], { maxConcurrency: 3 });
    const got = Array.from({ length: 6 }, () => grantNow(engine, req()).keyId);
    expect(counts(got)).toEqual({ a: 3, b: 3 });
    expect(() => engine.acquire(req())).toThrow(/no key/);
  });
});
