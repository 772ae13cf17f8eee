import { describe, expect, it } from "vitest";
import type { Grant } from "../../src/domain/types.js";
import { addKeys, addPool, codeOf, flush, grantNow, harness, req } from "./helpers.js";

const transient = { reason: "transient" as const, httpStatus: 500, message: "boom" };

describe("health and circuit breaker", () => {
  it("tracks EMA latency (alpha 0.2), success rate and consecutive failures reset by a success", () => {
    const { engine } = harness();
    addPool(engine, { failureThreshold: 10 });
    addKeys(engine, "p", ["a"]);
    const use = (fn: (id: string) => void) => fn(grantNow(engine, req()).leaseId);
    use((id) => engine.release(id, { latencyMs: 100 }));
    use((id) => engine.release(id, { latencyMs: 200 }));
    use((id) => engine.markFailed(id, { ...transient, latencyMs: 100 }));
    use((id) => engine.markFailed(id, transient));
    let s = engine.stats("p").keys[0]!;
    expect(s.emaLatencyMs).toBeCloseTo(100 + 0.2 * 100 + 0.2 * (100 - 120), 10);
    expect(s.successRate).toBe(0.5);
    expect(s.consecutiveFailures).toBe(2);
    use((id) => engine.release(id, {}));
    s = engine.stats("p").keys[0]!;
    expect(s.consecutiveFailures).toBe(0);
    expect(s.successRate).toBeCloseTo(3 / 5, 10);
  });

  it("opens after failure_threshold transient failures, half-opens after open_duration, closes on a probe success", () => {
    const { engine, clock, events } = harness();
    addPool(engine, { failureThreshold: 3, openDurationMs: 30_000 });
    addKeys(engine, "p", ["a"]);
    for (let i = 0; i < 2; i++) engine.markFailed(grantNow(engine, req()).leaseId, transient);
    expect(engine.stats("p").keys[0]!.circuitState).toBe("closed");
    engine.markFailed(grantNow(engine, req()).leaseId, transient);
    const s = engine.stats("p").keys[0]!;
    expect(s.circuitState).toBe("open");
    expect(s.circuitOpenUntil).toBe(clock.now() + 30_000);
    expect(codeOf(() => engine.acquire(req()))).toBe("no_key_available");
    clock.advance(30_000);
    expect(engine.stats("p").keys[0]!.circuitState).toBe("half_open");
    expect(events.map((e) => e.type)).toContain("circuit_half_opened");
    const probe = grantNow(engine, req());
    expect(codeOf(() => engine.acquire(req()))).toBe("no_key_available");
    engine.release(probe.leaseId, {});
    expect(engine.stats("p").keys[0]!.circuitState).toBe("closed");
    expect(events.filter((e) => e.type.startsWith("circuit_")).map((e) => e.type)).toEqual([
      "circuit_opened",
      "circuit_half_opened",
      "circuit_closed",
    ]);
  });

  it("a failed probe re-opens with the open duration doubled, capped at max_open_duration", () => {
    const { engine, clock } = harness();
    addPool(engine, { failureThreshold: 1, openDurationMs: 10_000, maxOpenDurationMs: 25_000 });
    addKeys(engine, "p", ["a"]);
    engine.markFailed(grantNow(engine, req()).leaseId, transient);
    const durations: number[] = [];
    for (let i = 0; i < 3; i++) {
      const until = engine.stats("p").keys[0]!.circuitOpenUntil!;
      durations.push(until - clock.now());
      clock.advance(until - clock.now());
      engine.markFailed(grantNow(engine, req()).leaseId, transient);
    }
    expect(durations).toEqual([10_000, 20_000, 25_000]);
  });

  it("the half-open probe limit holds when many acquires race for the key", async () => {
    const { engine, clock } = harness();
    addPool(engine, { failureThreshold: 1, openDurationMs: 1_000, halfOpenProbes: 2 });
    addKeys(engine, "p", ["a"]);
    engine.markFailed(grantNow(engine, req()).leaseId, transient);
    const outcomes: Array<Grant | undefined> = [];
    for (let i = 0; i < 20; i++) {
      (engine.acquire(req("p", { waitTimeoutMs: 5_000 })) as Promise<Grant>).then(
        (g) => outcomes.push(g),
        () => outcomes.push(undefined),
      );
    }
    clock.advance(1_000);
    await flush();
    expect(outcomes.filter(Boolean)).toHaveLength(2);
    expect(engine.stats("p").keys[0]!.activeLeases).toBe(2);
    expect(codeOf(() => engine.acquire(req()))).toBe("no_key_available");
    // A probe that ends without an outcome frees its probe slot for the next waiter and leaves the circuit half-open.
    engine.revokeLease(outcomes[0]!.leaseId, "test");
    await flush();
    expect(outcomes.filter(Boolean)).toHaveLength(3);
    expect(engine.stats("p").keys[0]!.circuitState).toBe("half_open");
    engine.release(outcomes[1]!.leaseId, {});
    await flush();
    expect(engine.stats("p").keys[0]!.circuitState).toBe("closed");
    expect(outcomes.filter(Boolean).length).toBeGreaterThan(3);
  });

  it("OVERLOADED and CLIENT_ERROR cost the key nothing", () => {
    const { engine } = harness();
    addPool(engine, { failureThreshold: 1 });
    addKeys(engine, "p", ["a"]);
    const reports: Array<[number, string]> = [[529, ""], [503, "The engine is currently Overloaded"], [400, ""], [404, ""], [422, ""]];
    for (const [status, message] of reports) {
      expect(engine.markFailed(grantNow(engine, req()).leaseId, { httpStatus: status, message })).toMatch(/overloaded|client_error/);
    }
    engine.markFailed(grantNow(engine, req()).leaseId, { reason: "overloaded", httpStatus: 500, message: "" });
    const s = engine.stats("p").keys[0]!;
    expect(s).toMatchObject({ circuitState: "closed", consecutiveFailures: 0, successRate: 1, state: "enabled", eligible: true });
  });

  it("a 503 is OVERLOADED only when its message says so, otherwise TRANSIENT and the key's fault", () => {
    const { engine } = harness();
    addPool(engine, { failureThreshold: 1 });
    addKeys(engine, "p", ["a"]);
    expect(engine.markFailed(grantNow(engine, req()).leaseId, { httpStatus: 503, message: "model OVERLOADED, retry later" })).toBe("overloaded");
    expect(engine.stats("p").keys[0]!.circuitState).toBe("closed");
    expect(engine.markFailed(grantNow(engine, req()).leaseId, { httpStatus: 503, message: "Service Unavailable" })).toBe("transient");
    expect(engine.stats("p").keys[0]).toMatchObject({ circuitState: "open", consecutiveFailures: 1 });
  });

  it("classifies by http status when no reason is given", () => {
    const { engine } = harness();
    addPool(engine, { failureThreshold: 100 });
    addKeys(engine, "p", ["a", "b", "c", "d"]);
    const fail = (status: number) => engine.markFailed(grantNow(engine, req()).leaseId, { httpStatus: status, message: "m" });
    expect([500, 502, 408, 0].map(fail)).toEqual(["transient", "transient", "transient", "transient"]);
    expect(fail(429)).toBe("rate_limited");
    expect(fail(401)).toBe("auth");
    expect(fail(402)).toBe("quota_exhausted");
    expect(fail(403)).toBe("auth");
  });

  it("AUTH auto-disables the key, shown apart from a manual disable; enable clears it", async () => {
    const { engine, events } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a", "b"]);
    const g = grantNow(engine, req());
    expect(engine.markFailed(g.leaseId, { httpStatus: 401, message: "invalid api key" })).toBe("auth");
    expect(engine.getKey("p", "a")).toMatchObject({ state: "auto_disabled_auth", stateReason: "invalid api key", config: { disabled: false } });
    engine.disableKey("p", "b", false, "rotating");
    expect(engine.getKey("p", "b")).toMatchObject({ state: "disabled", stateReason: "rotating", config: { disabled: true } });
    expect(events.filter((e) => e.type === "key_auto_disabled").map((e) => e.keyId)).toEqual(["a"]);
    expect(codeOf(() => engine.acquire(req()))).toBe("no_key_available");
    const w = engine.acquire(req("p", { waitTimeoutMs: 1_000 })) as Promise<Grant>;
    engine.enableKey("p", "a");
    expect((await w).keyId).toBe("a");
    expect(engine.getKey("p", "a").state).toBe("enabled");
  });

  it("QUOTA_EXHAUSTED auto-disables with its own state", () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"]);
    engine.markFailed(grantNow(engine, req()).leaseId, { reason: "quota_exhausted", httpStatus: 429, message: "insufficient_quota" });
    expect(engine.getKey("p", "a").state).toBe("auto_disabled_quota");
    expect(engine.stats("p").keys[0]!.eligible).toBe(false);
  });
});

describe("cooldowns", () => {
  it("only grow: the later of the current end and now + retry_after wins", () => {
    const { engine, clock } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"], {});
    const t0 = clock.now();
    expect(engine.markRateLimited(grantNow(engine, req()).leaseId, { retryAfterMs: 0 }).cooldownUntil).toBe(t0);
    const l1 = grantNow(engine, req());
    const l2 = grantNow(engine, req());
    expect(engine.markRateLimited(l1.leaseId, { retryAfterMs: 60_000 }).cooldownUntil).toBe(t0 + 60_000);
    clock.advance(1_000);
    expect(engine.markRateLimited(l2.leaseId, { retryAfterMs: 5_000 }).cooldownUntil).toBe(t0 + 60_000);
    expect(engine.stats("p").keys[0]!.cooldownRemainingMs).toBe(59_000);
  });

  it("without retry-after uses the pool default, doubling for repeated 429s, capped at max_cooldown", () => {
    const { engine, clock } = harness();
    addPool(engine, { defaultCooldownMs: 10_000, maxCooldownMs: 300_000 });
    addKeys(engine, "p", ["a"]);
    const waits: number[] = [];
    for (let i = 0; i < 3; i++) {
      const { cooldownUntil } = engine.markRateLimited(grantNow(engine, req()).leaseId, {});
      waits.push(cooldownUntil - clock.now());
      clock.advance(cooldownUntil - clock.now());
    }
    expect(waits).toEqual([10_000, 20_000, 40_000]);
    clock.advance(300_000);
    expect(engine.markRateLimited(grantNow(engine, req()).leaseId, {}).cooldownUntil - clock.now()).toBe(10_000);
    const capped = harness();
    addPool(capped.engine, { defaultCooldownMs: 10_000, maxCooldownMs: 25_000 });
    addKeys(capped.engine, "p", ["a"]);
    const seen: number[] = [];
    for (let i = 0; i < 3; i++) {
      const { cooldownUntil } = capped.engine.markRateLimited(grantNow(capped.engine, req()).leaseId, {});
      seen.push(cooldownUntil - capped.clock.now());
      capped.clock.advance(cooldownUntil - capped.clock.now());
    }
    expect(seen).toEqual([10_000, 20_000, 25_000]);
  });

  it("a 429 reported through MarkFailed cools the key with the default and no breaker penalty", () => {
    const { engine, clock } = harness();
    addPool(engine, { failureThreshold: 1, defaultCooldownMs: 8_000 });
    addKeys(engine, "p", ["a"]);
    expect(engine.markFailed(grantNow(engine, req()).leaseId, { httpStatus: 429, message: "" })).toBe("rate_limited");
    const s = engine.stats("p").keys[0]!;
    expect(s).toMatchObject({ circuitState: "closed", consecutiveFailures: 0, cooldownUntil: clock.now() + 8_000 });
  });

  it("a quota group cools every key of the group, and only that group", () => {
    const { engine, clock } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a", "b"], { quotaGroup: "org-1" });
    addKeys(engine, "p", ["c"], { quotaGroup: "org-2" });
    addKeys(engine, "p", ["d"]);
    engine.markRateLimited(grantNow(engine, req()).leaseId, { retryAfterMs: 15_000 });
    const byId = Object.fromEntries(engine.stats("p").keys.map((k) => [k.keyId, k.cooldownUntil]));
    expect(byId).toEqual({ a: clock.now() + 15_000, b: clock.now() + 15_000, c: undefined, d: undefined });
    const picks = [grantNow(engine, req()).keyId, grantNow(engine, req()).keyId, grantNow(engine, req()).keyId];
    expect(picks.every((id) => id === "c" || id === "d")).toBe(true);
  });

  it("takes retry-after from raw headers and the budget from typed fields over headers", () => {
    const { engine, clock } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"]);
    const g = grantNow(engine, req());
    const { cooldownUntil } = engine.markRateLimited(g.leaseId, {
      rateLimit: { requestsRemaining: 3, headers: { "Retry-After": "12", "x-ratelimit-remaining-requests": "9", "x-ratelimit-limit-requests": "60" } },
    });
    expect(cooldownUntil).toBe(clock.now() + 12_000);
    expect(engine.stats("p").keys[0]!.budget).toMatchObject({ requestsRemaining: 3, requestsLimit: 60 });
  });
});
