import { describe, expect, it } from "vitest";
import type { PoolEngine } from "../../src/domain/engine.js";
import type { KeyConfig, PoolConfig, RuntimeSnapshot } from "../../src/domain/types.js";
import { FakeClock } from "../fake-clock.js";
import { addKeys, addPool, codeOf, grantNow, harness, req } from "./helpers.js";

function configOf(engine: PoolEngine): { pools: PoolConfig[]; keys: KeyConfig[] } {
  const pools = engine.listPools().map(({ keyCount: _, ...cfg }) => cfg);
  const keys = pools.flatMap((p) => engine.listKeys(p.name).map((k) => k.config));
  return { pools, keys };
}

/** The process dies: its timers stop; the configuration is what the store has. */
function crash(engine: PoolEngine): { pools: PoolConfig[]; keys: KeyConfig[] } {
  const config = configOf(engine);
  engine.close();
  return config;
}

/** A restart: a new engine with the next epoch on the same clock and secret, loaded from what the store kept. */
function restart(
  { pools, keys }: { pools: PoolConfig[]; keys: KeyConfig[] },
  clock: FakeClock,
  snapshot: RuntimeSnapshot | undefined,
  highWater: Record<number, number>,
  epoch = 2,
) {
  const next = harness({ clock, epoch });
  next.engine.load(pools, keys, snapshot && (JSON.parse(JSON.stringify(snapshot)) as RuntimeSnapshot), highWater);
  return next;
}

describe("persistence", () => {
  it("export/load round trip keeps absolute deadlines, health and live leases", () => {
    const first = harness();
    const { engine, clock } = first;
    addPool(engine, { failureThreshold: 1, openDurationMs: 40_000 });
    addKeys(engine, "p", ["a", "b", "c", "d"]);
    const live = grantNow(engine, req("p", { ttlMs: 60_000, excludeKeyIds: ["b", "c", "d"] }));
    const shortLived = grantNow(engine, req("p", { ttlMs: 5_000, excludeKeyIds: ["b", "c", "d"] }));
    engine.markRateLimited(grantNow(engine, req("p", { excludeKeyIds: ["a", "c", "d"] })).leaseId, { retryAfterMs: 30_000 });
    engine.markFailed(grantNow(engine, req("p", { excludeKeyIds: ["a", "b", "d"] })).leaseId, { reason: "transient", httpStatus: 502, message: "", latencyMs: 80 });
    engine.markFailed(grantNow(engine, req("p", { excludeKeyIds: ["a", "b", "c"] })).leaseId, { httpStatus: 401, message: "bad key" });
    const before = engine.stats("p");
    const snapshot = engine.exportRuntime();
    expect(JSON.stringify(snapshot)).not.toContain("sk-");
    expect(snapshot.leases.map((l) => l.leaseId).sort()).toEqual([live.leaseId, shortLived.leaseId].sort());

    const down = crash(engine);
    clock.advance(10_000);
    const { engine: next, events } = restart(down, clock, snapshot, { 1: 5 });
    const after = next.stats("p");
    const pick = (s: typeof before, id: string) => s.keys.find((k) => k.keyId === id)!;
    expect(pick(after, "b").cooldownUntil).toBe(pick(before, "b").cooldownUntil);
    expect(pick(after, "c")).toMatchObject({
      circuitState: "open",
      circuitOpenUntil: pick(before, "c").circuitOpenUntil,
      emaLatencyMs: 80,
      consecutiveFailures: 1,
      successRate: 0,
    });
    expect(next.getKey("p", "d").state).toBe("auto_disabled_auth");
    expect(next.listLeases("p").map((l) => [l.leaseId, l.expiresAt])).toEqual([[live.leaseId, live.expiresAt]]);
    expect(codeOf(() => next.renew(shortLived.leaseId))).toBe("lease_expired");
    expect(next.renew(live.leaseId).expiresAt).toBe(clock.now() + 60_000);
    clock.advance(20_000);
    expect(events.map((e) => e.type)).toContain("cooldown_ended");
    clock.advance(10_000);
    expect(next.stats("p").keys.find((k) => k.keyId === "c")!.circuitState).toBe("half_open");
    expect(pick(next.stats("p"), "a").totalLeases).toBe(2);
  });

  it("a grant carries what the grant journal records: the lease as listed, its epoch and sequence", () => {
    const { engine, clock } = harness({ epoch: 7 });
    addPool(engine);
    addKeys(engine, "p", ["a"]);
    grantNow(engine, req());
    clock.advance(250);
    const g = grantNow(engine, req("p", { ttlMs: 30_000, holder: "worker-9" }));
    expect(g.record).toEqual({ leaseId: g.leaseId, pool: "p", keyId: "a", holder: "worker-9", acquiredAt: clock.now(), expiresAt: clock.now() + 30_000, ttlMs: 30_000 });
    expect(engine.listLeases("p").find((l) => l.leaseId === g.leaseId)).toEqual(g.record);
    expect([g.epoch, g.seq]).toEqual([7, 2]);
    expect(engine.leaseSeq(g.leaseId)).toEqual({ epoch: 7, seq: 2 });
  });

  it("re-adopts an authentic unexpired lease granted after the last snapshot and journal entry", () => {
    const { engine, clock } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"], { maxConcurrency: 2 });
    const journaled = grantNow(engine, req("p", { ttlMs: 60_000 }));
    const snapshot = engine.exportRuntime();
    const unrecorded = grantNow(engine, req("p", { ttlMs: 60_000 }));
    expect(engine.leaseSeq(unrecorded.leaseId)).toEqual({ epoch: 1, seq: 2 });
    expect(engine.leaseSeq("not-a-lease")).toBeUndefined();
    const down = crash(engine);
    clock.advance(1_000);
    const { engine: next, events } = restart(down, clock, snapshot, { 1: 1 });
    const r = next.renew(unrecorded.leaseId, 30_000);
    expect(r.expiresAt).toBe(clock.now() + 30_000);
    expect(events.some((e) => e.type === "lease_granted" && e.leaseId === unrecorded.leaseId)).toBe(true);
    expect(next.stats("p").keys[0]!.activeLeases).toBe(2);
    expect(codeOf(() => next.acquire(req()))).toBe("no_key_available");
    next.release(unrecorded.leaseId, {});
    next.release(journaled.leaseId, {});
    expect(codeOf(() => next.release(unrecorded.leaseId, {}))).toBe("lease_released");
  });

  it("does not re-adopt what the grant journal shows ended before the crash, or onto a full key", () => {
    const { engine, clock } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"], { maxConcurrency: 1 });
    const ended = grantNow(engine, req("p", { ttlMs: 20_000 }));
    engine.release(ended.leaseId, {});
    const holding = grantNow(engine, req("p", { ttlMs: 60_000 }));
    const snapshot = engine.exportRuntime();
    engine.release(holding.leaseId, {});
    const unrecorded = grantNow(engine, req("p", { ttlMs: 60_000 }));
    const { engine: next } = restart(crash(engine), clock, snapshot, { 1: 2 });
    expect(codeOf(() => next.renew(ended.leaseId))).toBe("lease_released");
    expect(next.leaseSeq(ended.leaseId)).toEqual({ epoch: 1, seq: 1 });
    // The snapshot still holds the only slot, so the unrecorded lease cannot come back.
    expect(codeOf(() => next.renew(unrecorded.leaseId))).toBe("lease_revoked");
    clock.advance(20_000);
    expect(codeOf(() => next.renew(ended.leaseId))).toBe("lease_expired");
    expect(next.listLeases("p").map((l) => l.leaseId)).toEqual([holding.leaseId]);
  });

  it("answers lease_unknown for ids from a future epoch or beyond this epoch's counter, and lease_expired for stale tokens", () => {
    const clock = new FakeClock();
    const current = harness({ clock, epoch: 3 });
    addPool(current.engine);
    addKeys(current.engine, "p", ["a"]);
    const sameEpochOther = harness({ clock, epoch: 3 });
    addPool(sameEpochOther.engine);
    addKeys(sameEpochOther.engine, "p", ["a"]);
    grantNow(sameEpochOther.engine, req());
    const beyond = grantNow(sameEpochOther.engine, req());
    const future = harness({ clock, epoch: 4 });
    addPool(future.engine);
    addKeys(future.engine, "p", ["a"]);
    const older = harness({ clock, epoch: 2 });
    addPool(older.engine);
    addKeys(older.engine, "p", ["a"]);
    const stale = grantNow(older.engine, req("p", { ttlMs: 1_000 }));
    grantNow(current.engine, req());
    expect(codeOf(() => current.engine.renew(beyond.leaseId))).toBe("lease_unknown");
    expect(codeOf(() => current.engine.renew(grantNow(future.engine, req()).leaseId))).toBe("lease_unknown");
    clock.advance(1_000);
    expect(codeOf(() => current.engine.renew(stale.leaseId))).toBe("lease_expired");
  });

  it("tracks dirtiness of runtime state", () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a"]);
    engine.markClean();
    engine.stats("p");
    engine.listLeases("p");
    expect(engine.dirty).toBe(false);
    const g = grantNow(engine, req());
    expect(engine.dirty).toBe(true);
    engine.markClean();
    engine.renew(g.leaseId);
    expect(engine.dirty).toBe(true);
    engine.markClean();
    engine.release(g.leaseId, {});
    expect(engine.dirty).toBe(true);
  });

  it("removes a key that was draining for removal when its leases did not survive the restart", () => {
    const { engine, clock } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a", "b"]);
    grantNow(engine, req("p", { ttlMs: 2_000 }));
    engine.removeKey("p", "a", true);
    const snapshot = engine.exportRuntime();
    const down = crash(engine);
    clock.advance(5_000);
    const { engine: next, events } = restart(down, clock, snapshot, {});
    expect(events.filter((e) => e.type === "key_removed").map((e) => e.keyId)).toEqual(["a"]);
    expect(next.listKeys("p").map((k) => k.config.id)).toEqual(["b"]);
  });
});
