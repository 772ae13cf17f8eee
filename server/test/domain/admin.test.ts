import { describe, expect, it } from "vitest";
import { PoolEngine } from "../../src/domain/engine.js";
import type { DomainError } from "../../src/domain/errors.js";
import type { Grant } from "../../src/domain/types.js";
import { FakeClock } from "../fake-clock.js";
import { addKeys, addPool, codeOf, flush, grantNow, harness, req } from "./helpers.js";

function fieldOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as DomainError).details.field ?? (e as DomainError).code;
  }
  return undefined;
}

describe("pool configuration", () => {
  it("applies the documented defaults without mutating engine state", () => {
    const { engine } = harness();
    const cfg = engine.preparePool({ name: "openai-prod" });
    expect(cfg).toMatchObject({
      strategy: "round_robin",
      minTtlMs: 1_000,
      maxTtlMs: 3_600_000,
      defaultTtlMs: 60_000,
      defaultCooldownMs: 10_000,
      maxCooldownMs: 300_000,
      failureThreshold: 3,
      openDurationMs: 30_000,
      maxOpenDurationMs: 600_000,
      halfOpenProbes: 1,
      description: "",
    });
    expect(engine.listPools()).toEqual([]);
    engine.createPool(cfg);
    expect(engine.getPool("openai-prod").keyCount).toBe(0);
    expect(codeOf(() => engine.preparePool({ name: "openai-prod" }))).toBe("pool_exists");
  });

  it("names the offending proto field", () => {
    const { engine } = harness();
    expect(fieldOf(() => engine.preparePool({ name: "Bad Name" }))).toBe("name");
    expect(fieldOf(() => engine.preparePool({ name: "-x" }))).toBe("name");
    expect(fieldOf(() => engine.preparePool({ name: "x".repeat(64) }))).toBe("name");
    expect(fieldOf(() => engine.preparePool({ name: "p", strategy: "random" as never }))).toBe("strategy");
    expect(fieldOf(() => engine.preparePool({ name: "p", maxTtlMs: -1 }))).toBe("max_ttl");
    expect(fieldOf(() => engine.preparePool({ name: "p", minTtlMs: 5_000, maxTtlMs: 4_000 }))).toBe("min_ttl");
    expect(fieldOf(() => engine.preparePool({ name: "p", defaultTtlMs: 10 }))).toBe("default_ttl");
    expect(fieldOf(() => engine.preparePool({ name: "p", defaultCooldownMs: -5 }))).toBe("default_cooldown");
    expect(fieldOf(() => engine.preparePool({ name: "p", failureThreshold: -1 }))).toBe("circuit_breaker.failure_threshold");
    expect(fieldOf(() => engine.preparePool({ name: "p", openDurationMs: 60_000, maxOpenDurationMs: 1_000 }))).toBe(
      "circuit_breaker.max_open_duration",
    );
    expect(fieldOf(() => engine.preparePool({ name: "p", halfOpenProbes: 1.5 }))).toBe("circuit_breaker.half_open_probes");
  });

  it("treats zero circuit breaker fields as defaults and fits an unspecified default ttl into the bounds", () => {
    const { engine } = harness();
    expect(engine.preparePool({ name: "p", failureThreshold: 0, halfOpenProbes: 0, openDurationMs: 0 })).toMatchObject({
      failureThreshold: 3,
      halfOpenProbes: 1,
      openDurationMs: 30_000,
    });
    expect(engine.preparePool({ name: "p", maxTtlMs: 20_000 }).defaultTtlMs).toBe(20_000);
  });

  it("updates keep unspecified fields and refuse a rename", () => {
    const { engine } = harness();
    addPool(engine, { strategy: "weighted", description: "d" });
    const existing = engine.getPool("p");
    const next = engine.preparePool({ name: "p", maxTtlMs: 120_000 }, existing);
    expect(next).toMatchObject({ strategy: "weighted", description: "d", maxTtlMs: 120_000 });
    engine.updatePool(next);
    expect(engine.getPool("p").maxTtlMs).toBe(120_000);
    expect(fieldOf(() => engine.preparePool({ name: "q" }, existing))).toBe("name");
  });

  it("delete refuses while leases are live unless forced; forcing revokes them and rejects waiters", async () => {
    const { engine, events } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"], { maxConcurrency: 1 });
    const g = grantNow(engine, req());
    const revoked: string[] = [];
    engine.watchLease(g.leaseId, (reason) => revoked.push(reason));
    const waiter = (engine.acquire(req("p", { waitTimeoutMs: 10_000 })) as Promise<Grant>).catch((e: DomainError) => e.code);
    expect(codeOf(() => engine.checkDeletePool("p", false))).toBe("pool_has_leases");
    engine.checkDeletePool("p", true);
    engine.deletePool("p");
    await flush();
    expect(revoked).toEqual(["revoked"]);
    expect(await waiter).toBe("pool_not_found");
    expect(codeOf(() => engine.release(g.leaseId, {}))).toBe("lease_revoked");
    expect(codeOf(() => engine.getPool("p"))).toBe("pool_not_found");
    expect(events.at(-1)?.type).toBe("pool_deleted");
  });
});

describe("key configuration", () => {
  it("generates an id, defaults label and weight, and validates fields", () => {
    const { engine } = harness();
    addPool(engine);
    const cfg = engine.prepareKey({ pool: "p", secret: "sk-1" });
    expect(cfg.id).toMatch(/^k_[a-z2-7]{8}$/);
    expect(cfg).toMatchObject({ label: cfg.id, weight: 1, maxConcurrency: 0, quotaGroup: "", disabled: false, metadata: {} });
    engine.addKey(cfg);
    expect(codeOf(() => engine.prepareKey({ pool: "p", id: cfg.id, secret: "x" }))).toBe("key_exists");
    expect(codeOf(() => engine.prepareKey({ pool: "nope", secret: "x" }))).toBe("pool_not_found");
    expect(fieldOf(() => engine.prepareKey({ pool: "p", id: "bad id", secret: "x" }))).toBe("key.id");
    expect(fieldOf(() => engine.prepareKey({ pool: "p", id: "k", secret: "" }))).toBe("secret");
    expect(fieldOf(() => engine.prepareKey({ pool: "p", id: "k", secret: "x", weight: 0 }))).toBe("key.weight");
    expect(fieldOf(() => engine.prepareKey({ pool: "p", id: "k", secret: "x", weight: -2 }))).toBe("key.weight");
    expect(fieldOf(() => engine.prepareKey({ pool: "p", id: "k", secret: "x", maxConcurrency: -1 }))).toBe("key.max_concurrency");
  });

  it("an update keeps the secret when none is given and cannot change the id", () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"]);
    const existing = engine.getKeyConfig("p", "a");
    const next = engine.prepareKey({ pool: "p", id: "a", maxConcurrency: 2, label: "Primary" }, existing);
    expect(next).toMatchObject({ secret: "sk-a", maxConcurrency: 2, label: "Primary" });
    engine.updateKey(next);
    expect(engine.getKey("p", "a").config.label).toBe("Primary");
    expect(fieldOf(() => engine.prepareKey({ pool: "p", id: "b" }, existing))).toBe("key.id");
  });

  it("disable without drain revokes live leases and pushes the revocation", () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"]);
    const g = grantNow(engine, req());
    const pushed: string[] = [];
    engine.watchLease(g.leaseId, (reason, message) => pushed.push(`${reason}: ${message}`));
    const view = engine.disableKey("p", "a", false, "leaked");
    expect(view.state).toBe("disabled");
    expect(pushed).toEqual(["revoked: key disabled: leaked"]);
    expect(codeOf(() => engine.renew(g.leaseId))).toBe("lease_revoked");
  });

  it("disable with drain lets leases finish and lends no more", () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"]);
    const g = grantNow(engine, req());
    expect(engine.disableKey("p", "a", true, "rotating").state).toBe("draining");
    expect(codeOf(() => engine.acquire(req()))).toBe("no_key_available");
    engine.renew(g.leaseId);
    engine.release(g.leaseId, {});
    expect(engine.getKey("p", "a").state).toBe("disabled");
  });

  it("remove with drain keeps the key until its last lease ends, then reports key_removed", () => {
    const { engine, events } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a", "b"]);
    const g = grantNow(engine, req());
    expect(g.keyId).toBe("a");
    expect(engine.removeKey("p", "a", true)).toEqual({ removedNow: false });
    expect(engine.getKey("p", "a").state).toBe("draining");
    expect(grantNow(engine, req()).keyId).toBe("b");
    expect(grantNow(engine, req()).keyId).toBe("b");
    engine.release(g.leaseId, {});
    expect(events.filter((e) => e.type === "key_removed").map((e) => e.keyId)).toEqual(["a"]);
    expect(codeOf(() => engine.getKey("p", "a"))).toBe("key_not_found");
    expect(engine.getPool("p").keyCount).toBe(1);
  });

  it("remove without drain revokes now", () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"]);
    const g = grantNow(engine, req());
    expect(engine.removeKey("p", "a", false)).toEqual({ removedNow: true });
    expect(codeOf(() => engine.release(g.leaseId, {}))).toBe("lease_revoked");
    expect(codeOf(() => engine.acquire(req()))).toBe("pool_empty");
  });

  it("emits an event for every kind of change", () => {
    const { engine, events, clock } = harness();
    addPool(engine, { failureThreshold: 1, openDurationMs: 1_000 });
    addKeys(engine, "p", ["a"]);
    engine.updateKey(engine.prepareKey({ pool: "p", id: "a", weight: 2 }, engine.getKeyConfig("p", "a")));
    engine.updatePool(engine.preparePool({ name: "p" }, engine.getPool("p")));
    engine.markFailed(grantNow(engine, req()).leaseId, { httpStatus: 500, message: "" });
    clock.advance(1_000);
    engine.release(grantNow(engine, req()).leaseId, {});
    engine.markRateLimited(grantNow(engine, req()).leaseId, { retryAfterMs: 100 });
    clock.advance(100);
    grantNow(engine, req("p", { ttlMs: 1_000 }));
    clock.advance(1_000);
    engine.revokeLease(grantNow(engine, req()).leaseId, "x");
    engine.disableKey("p", "a", false, "x");
    expect(codeOf(() => engine.acquire(req()))).toBe("no_key_available");
    engine.enableKey("p", "a");
    engine.markFailed(grantNow(engine, req()).leaseId, { httpStatus: 401, message: "" });
    engine.removeKey("p", "a", false);
    engine.deletePool("p");
    expect(new Set(events.map((e) => e.type))).toEqual(
      new Set([
        "pool_created",
        "pool_updated",
        "pool_deleted",
        "key_added",
        "key_updated",
        "key_removed",
        "key_enabled",
        "key_disabled",
        "key_auto_disabled",
        "cooldown_started",
        "cooldown_ended",
        "circuit_opened",
        "circuit_half_opened",
        "circuit_closed",
        "lease_expired",
        "lease_revoked",
        "pool_exhausted",
        "lease_granted",
        "lease_ended",
      ]),
    );
  });

  it("puts disable reasons in the event's reason, never in its lease id", () => {
    const { engine, events } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a", "b"]);
    engine.disableKey("p", "a", false, "rotating");
    engine.markFailed(grantNow(engine, req()).leaseId, { httpStatus: 401, message: "invalid api key" });
    const disabled = events.find((e) => e.type === "key_disabled")!;
    expect(disabled).toMatchObject({ keyId: "a", reason: "rotating" });
    expect(disabled.leaseId).toBeUndefined();
    const auto = events.find((e) => e.type === "key_auto_disabled")!;
    expect(auto).toMatchObject({ keyId: "b", reason: "auth: invalid api key" });
    expect(auto.leaseId).toBeUndefined();
  });

  it("survives a subscriber that throws", () => {
    const engine = new PoolEngine({
      clock: new FakeClock(),
      leaseSecret: new Uint8Array([1, 2, 3]),
      epoch: 1,
      onEvent: () => {
        throw new Error("subscriber bug");
      },
    });
    addPool(engine);
    addKeys(engine, "p", ["a"]);
    engine.release(grantNow(engine, req()).leaseId, {});
    expect(engine.stats("p").keys[0]!.totalLeases).toBe(1);
  });
});
