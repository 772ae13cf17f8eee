// The Health rules on their own: a key, its timers on a scheduler, and the events they emit.
import { describe, expect, it } from "vitest";
import { EventSink } from "../../src/domain/events.js";
import { Health } from "../../src/domain/health.js";
import { Scheduler } from "../../src/domain/scheduler.js";
import { SnapshotChanges } from "../../src/domain/snapshot-changes.js";
import type { TimerItem } from "../../src/domain/state.js";
import type { DomainEvent, PoolInput } from "../../src/domain/types.js";
import { FakeClock } from "../fake-clock.js";
import { keyEntry, poolEntry } from "./helpers.js";

function setup(pool: Partial<PoolInput> = {}, keys = ["a"], quotaGroup = "") {
  const clock = new FakeClock();
  const events: DomainEvent[] = [];
  let health: Health;
  const timers = new Scheduler<TimerItem>(clock, (item, now) => {
    if (item.kind === "cooldown") health.cooldownEnded(item.key, now);
    else if (item.kind === "circuit") health.halfOpen(item.key, now);
    else if (item.kind === "budget") health.scheduleBudgetWake(item.key, now);
  });
  health = new Health(timers, new EventSink((e) => events.push(e)));
  const p = poolEntry(pool, clock.now());
  const changes = new SnapshotChanges(100);
  const entries = keys.map((id) => keyEntry(p, changes, id, { quotaGroup }));
  const types = () => events.map((e) => `${e.type}${e.keyId ? ` ${e.keyId}` : ""}${e.until ? ` +${e.until - t0}` : ""}`);
  const t0 = clock.now();
  return { clock, t0, health, events, types, key: entries[0]!, keys: entries };
}

const transient = { httpStatus: 502, message: "" };

describe("health rules", () => {
  it("keeps an EMA of latency with alpha 0.2, ignoring what is not a latency", () => {
    const { clock, health, key } = setup();
    for (const latencyMs of [100, 200, -1, Number.NaN, undefined, 50]) health.success(key, { latencyMs }, clock.now());
    expect(key.emaLatencyMs).toBeCloseTo(0.8 * 120 + 0.2 * 50, 10);
  });

  it("counts successes and failures in the window; a success ends the failure streak and adds the tokens", () => {
    const { clock, health, key } = setup({ failureThreshold: 10 });
    health.failure(key, "transient", transient, clock.now());
    health.failure(key, "transient", transient, clock.now());
    health.failure(key, "overloaded", transient, clock.now());
    health.failure(key, "client_error", transient, clock.now());
    expect([key.consecutiveFailures, key.successRate(clock.now())]).toEqual([2, 0]);
    health.success(key, { inputTokens: 10, outputTokens: 3 }, clock.now());
    health.success(key, { inputTokens: -1, outputTokens: 2.5 }, clock.now());
    expect([key.consecutiveFailures, key.successRate(clock.now()), key.inputTokens, key.outputTokens]).toEqual([0, 0.5, 10, 3]);
    clock.advance(300_000);
    expect(key.successRate(clock.now())).toBe(1);
  });

  it("opens after failure_threshold, half-opens on time, closes on a probe's success and re-opens doubled on a probe's failure", () => {
    const { clock, health, key, types } = setup({ failureThreshold: 2, openDurationMs: 1_000, maxOpenDurationMs: 3_000 });
    health.failure(key, "transient", transient, clock.now());
    expect(key.circuitState).toBe("closed");
    health.failure(key, "transient", transient, clock.now());
    expect([key.circuitState, key.circuitOpenUntil! - clock.now()]).toEqual(["open", 1_000]);
    clock.advance(1_000);
    expect(key.circuitState).toBe("half_open");
    health.failure(key, "transient", transient, clock.now());
    expect([key.circuitState, key.circuitOpenUntil! - clock.now()]).toEqual(["open", 2_000]);
    clock.advance(2_000);
    health.failure(key, "transient", transient, clock.now());
    expect(key.circuitOpenUntil! - clock.now()).toBe(3_000);
    clock.advance(3_000);
    health.success(key, {}, clock.now());
    expect([key.circuitState, key.circuitOpenCount, key.circuitOpenUntil]).toEqual(["closed", 0, undefined]);
    expect(clock.pending).toBe(0);
    expect(types()).toEqual([
      "circuit_opened a +1000",
      "circuit_half_opened a",
      "circuit_opened a +3000",
      "circuit_half_opened a",
      "circuit_opened a +6000",
      "circuit_half_opened a",
      "circuit_closed a",
    ]);
  });

  it("auto-disables on AUTH and QUOTA_EXHAUSTED, keeping the first cause", () => {
    const { clock, health, key, events } = setup();
    health.failure(key, "quota_exhausted", { httpStatus: 402, message: "" }, clock.now());
    health.failure(key, "auth", { httpStatus: 401, message: "invalid key" }, clock.now());
    expect(key.autoDisabled).toEqual({ cause: "quota", message: "provider answered 402", at: clock.now() });
    expect(key.lendable).toBe(false);
    expect(events.map((e) => [e.type, e.reason])).toEqual([["key_auto_disabled", "quota: provider answered 402"]]);
    expect(key.consecutiveFailures).toBe(0);
  });

  it("cools a rate-limited key and its quota group; cooldowns only grow and double without retry-after", () => {
    const { clock, t0, health, keys, types } = setup({ defaultCooldownMs: 1_000, maxCooldownMs: 5_000 }, ["a", "b"], "org");
    const [a, b] = keys;
    expect(health.rateLimited(a!, { retryAfterMs: 4_000 }, clock.now())).toBe(t0 + 4_000);
    expect(health.rateLimited(a!, { retryAfterMs: 1_000 }, clock.now())).toBe(t0 + 4_000);
    expect(b!.cooldownUntil).toBe(t0 + 4_000);
    clock.advance(4_000);
    expect([a!.cooldownUntil, b!.cooldownUntil]).toEqual([undefined, undefined]);
    const waits = [1, 2, 3, 4].map(() => health.rateLimited(a!, {}, clock.now()) - clock.now());
    expect(waits).toEqual([4_000, 5_000, 5_000, 5_000]);
    expect(a!.rateLimitStreak).toBe(6);
    expect(types().slice(0, 5)).toEqual(["cooldown_started a +4000", "cooldown_started b +4000", "cooldown_ended a", "cooldown_ended b", "cooldown_started a +8000"]);
  });

  it("learns the budget from a report, typed fields over headers, and wakes when it allows the next request", () => {
    const { clock, t0, health, key } = setup({ defaultCooldownMs: 1_000 });
    const wait = health.rateLimited(
      key,
      { rateLimit: { requestsRemaining: 1, headers: { "x-ratelimit-remaining-requests": "7", "x-ratelimit-limit-requests": "10", "retry-after": "3" } } },
      clock.now(),
    );
    expect(wait).toBe(t0 + 3_000);
    expect(key.budget).toMatchObject({ requestsRemaining: 1, requestsLimit: 10 });
    clock.advance(3_000);
    health.lent(key, clock.now());
    expect(key.budget.requestsRemaining).toBe(0);
    // Exhausted with no reset known: blocked for one default cooldown, and the wake is armed for it.
    expect(key.requestsBlockedUntil).toBe(clock.now() + 1_000);
    expect(clock.deadlines()).toEqual([clock.now() + 1_000]);
  });
});
