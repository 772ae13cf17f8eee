import { describe, expect, it } from "vitest";
import { PoolEngine } from "../../src/domain/engine.js";
import { OutcomeWindow } from "../../src/domain/state.js";
import type { KeyRuntime, LeaseRecord, PoolRuntime, RuntimeChanges, RuntimeSnapshot } from "../../src/domain/types.js";
import { FakeClock } from "../fake-clock.js";
import { addKeys, addPool, grantNow, harness, req } from "./helpers.js";

const keyOf = (k: { pool: string; keyId: string }) => `${k.pool}/${k.keyId}`;

/** What a store holds after writing `base` and then `changes`, as a snapshot. */
function apply(base: RuntimeSnapshot, changes: RuntimeChanges): RuntimeSnapshot {
  const keys = new Map<string, KeyRuntime>(base.keys.map((k) => [keyOf(k), k]));
  for (const k of changes.removedKeys) keys.delete(keyOf(k));
  for (const k of changes.keys) keys.set(keyOf(k), k);
  const leases = new Map<string, LeaseRecord>(base.leases.map((l) => [l.leaseId, l]));
  for (const id of changes.endedLeases) leases.delete(id);
  for (const l of changes.leases) leases.set(l.leaseId, l);
  const pools = new Map<string, PoolRuntime>((base.pools ?? []).map((p) => [p.pool, p]));
  for (const p of changes.pools ?? []) pools.set(p.pool, p);
  return { takenAt: changes.takenAt, keys: [...keys.values()], leases: [...leases.values()], pools: [...pools.values()] };
}

/** A deleted pool's row goes with the pool's own (the store's cascade), so only the pools still there compare. */
function normal(s: RuntimeSnapshot, present: Set<string>) {
  return {
    takenAt: s.takenAt,
    keys: [...s.keys].sort((a, b) => keyOf(a).localeCompare(keyOf(b))),
    leases: [...s.leases].sort((a, b) => a.leaseId.localeCompare(b.leaseId)),
    pools: (s.pools ?? []).filter((p) => present.has(p.pool)).sort((a, b) => a.pool.localeCompare(b.pool)),
  };
}

/** Exports changes and, at the same instant, everything: the first applied to `base` must equal the second. */
function expectChangesMatch(engine: PoolEngine, base: RuntimeSnapshot): { full: RuntimeSnapshot; changes: RuntimeChanges } {
  const changes = engine.exportChanges();
  expect(changes).toBeDefined();
  const full = engine.exportRuntime();
  const present = new Set((full.pools ?? []).map((p) => p.pool));
  expect(normal(apply(base, changes!), present)).toEqual(normal(full, present));
  return { full, changes: changes! };
}

describe("exporting changes", () => {
  it("applied to the previous export, gives what a full export gives, across every kind of change", () => {
    const { engine, clock } = harness();
    addPool(engine, { failureThreshold: 1, openDurationMs: 10_000 });
    addPool(engine, { name: "q" });
    addKeys(engine, "p", ["a", "b", "c", "d", "e"], { quotaGroup: "" });
    addKeys(engine, "q", ["x"]);
    const held = Array.from({ length: 6 }, () => grantNow(engine, req("p", { ttlMs: 60_000 })));
    grantNow(engine, req("q"));
    let base = engine.exportRuntime();

    // Leases: granted and ended in between, renewed, expired, revoked; health, cooldowns, circuits, budgets.
    engine.release(grantNow(engine, req("p", { excludeKeyIds: ["b", "c", "d", "e"] })).leaseId, { latencyMs: 40, inputTokens: 5 });
    engine.renew(held[0]!.leaseId, 90_000);
    engine.release(held[1]!.leaseId, { rateLimit: { requestsRemaining: 3, requestsLimit: 10, requestsResetMs: 5_000 } });
    engine.markRateLimited(grantNow(engine, req("p", { excludeKeyIds: ["a", "c", "d", "e"] })).leaseId, { retryAfterMs: 20_000 });
    engine.markFailed(grantNow(engine, req("p", { excludeKeyIds: ["a", "b", "d", "e"] })).leaseId, { reason: "transient", httpStatus: 502, message: "" });
    engine.markFailed(grantNow(engine, req("p", { excludeKeyIds: ["a", "b", "c", "e"] })).leaseId, { httpStatus: 401, message: "revoked by provider" });
    const short = grantNow(engine, req("p", { ttlMs: 1_000, excludeKeyIds: ["a", "b", "c", "d"] }));
    engine.revokeLease(held[2]!.leaseId, "operator");
    clock.advance(1_000);
    expect(engine.listLeases("p").some((l) => l.leaseId === short.leaseId)).toBe(false);
    ({ full: base } = expectChangesMatch(engine, base));

    // Keys: removed at once, drained out, re-added under the same id; a pool deleted; time passing.
    engine.removeKey("p", "e", false);
    engine.removeKey("p", "a", true);
    for (const l of engine.listLeases("p", "a")) engine.release(l.leaseId, {});
    engine.addKey(engine.prepareKey({ pool: "p", id: "e", secret: "sk-e2" }));
    engine.disableKey("p", "b", true, "maintenance");
    engine.deletePool("q");
    clock.advance(20_000);
    grantNow(engine, req("p"));
    ({ full: base } = expectChangesMatch(engine, base));

    // Nothing changed: nothing to write.
    const nothing = engine.exportChanges()!;
    expect({ ...nothing, keys: [...nothing.keys] }).toEqual({ takenAt: clock.now(), keys: [], removedKeys: [], leases: [], endedLeases: [], pools: [] });
  });

  it("reads each changed key when the store does: a later change is in it and in the next export, a removed key is skipped", () => {
    const { engine } = harness();
    addPool(engine);
    addKeys(engine, "p", ["a", "b", "c"]);
    const held = grantNow(engine, req("p", { excludeKeyIds: ["b", "c"] }));
    engine.exportRuntime();
    const other = grantNow(engine, req("p", { excludeKeyIds: ["a", "c"] }));
    engine.release(held.leaseId, { inputTokens: 1 });
    engine.release(other.leaseId, {});
    const changes = engine.exportChanges()!;
    // After the export, before the store reads the keys: "a" changes again and "b" goes.
    engine.release(grantNow(engine, req("p", { excludeKeyIds: ["b", "c"] })).leaseId, { inputTokens: 10 });
    engine.removeKey("p", "b", false);
    expect([...changes.keys].map((k) => [k.keyId, k.inputTokens, k.totalLeases])).toEqual([["a", 11, 2]]);
    expect(changes.endedLeases).toEqual([held.leaseId, other.leaseId]);
    const next = engine.exportChanges()!;
    expect([...next.keys].map((k) => k.keyId)).toEqual(["a"]);
    expect(next.removedKeys).toEqual([{ pool: "p", keyId: "b" }]);
  });

  it("carries outcomes and grants that aged out of their windows when stats or least_used read them", () => {
    const { engine, clock } = harness();
    addPool(engine, { strategy: "least_used" });
    addKeys(engine, "p", ["a", "b"]);
    engine.release(grantNow(engine, req("p", { excludeKeyIds: ["b"] })).leaseId, {});
    let base = engine.exportRuntime();
    clock.advance(61_000);
    engine.stats("p");
    ({ full: base } = expectChangesMatch(engine, base));
    expect(base.keys.find((k) => k.keyId === "a")).toMatchObject({
      outcomes: { gaps: [clock.now() - 61_000], failed: [] },
      grantsPerSecond: { until: 0, counts: [] },
    });
    clock.advance(240_000);
    engine.stats("p");
    ({ full: base } = expectChangesMatch(engine, base));
    expect(base.keys.find((k) => k.keyId === "a")).toMatchObject({ outcomes: { gaps: [], failed: [] }, grantsPerSecond: { until: 0, counts: [] } });
    engine.release(grantNow(engine, req("p", { excludeKeyIds: ["a"] })).leaseId, {});
    base = engine.exportRuntime();
    clock.advance(61_000);
    grantNow(engine, req("p"));
    expectChangesMatch(engine, base);
    expect(engine.dirty).toBe(true);
  });

  it("gives up tracking when too many leases ended since the last export, until a full export", () => {
    const engine = new PoolEngine({ clock: new FakeClock(), leaseSecret: new Uint8Array(32), epoch: 1, maxEndedUnexported: 10 });
    addPool(engine);
    addKeys(engine, "p", ["a"]);
    engine.exportRuntime();
    for (let i = 0; i < 10; i++) engine.release(grantNow(engine, req()).leaseId, {});
    expect(engine.exportChanges()?.endedLeases).toHaveLength(10);
    for (let i = 0; i < 11; i++) engine.release(grantNow(engine, req()).leaseId, {});
    expect(engine.exportChanges()).toBeUndefined();
    const live = grantNow(engine, req());
    const full = engine.exportRuntime();
    expect(full.leases.map((l) => l.leaseId)).toEqual([live.leaseId]);
    engine.release(live.leaseId, {});
    expect(engine.exportChanges()).toMatchObject({ endedLeases: [live.leaseId], leases: [] });
  });
});

describe("outcome window", () => {
  const pairs = ({ gaps, failed }: KeyRuntime["outcomes"]): Array<[number, 0 | 1]> => {
    let at = 0;
    return gaps.map((gap, i) => [(at += gap), failed.includes(i) ? 0 : 1]);
  };

  /** The window as specified: the newest 100 outcomes younger than five minutes. */
  function reference() {
    let o: Array<[number, 0 | 1]> = [];
    return {
      record(now: number, ok: 0 | 1) {
        o.push([now, ok]);
        o = o.slice(-100).filter(([t]) => t > now - 300_000);
      },
      rate(now: number) {
        o = o.filter(([t]) => t > now - 300_000);
        return o.length === 0 ? 1 : o.filter(([, v]) => v === 1).length / o.length;
      },
      pairs: () => o,
    };
  }

  it("keeps the same outcomes and rate as a plain array through wrap-around and ageing", () => {
    const w = new OutcomeWindow();
    const ref = reference();
    let now = 1_000_000;
    let seed = 7;
    const next = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 2_000; i++) {
      now += next() < 0.02 ? 200_000 : Math.floor(next() * 3_000);
      const ok = next() < 0.7 ? 1 : 0;
      w.record(now, ok);
      ref.record(now, ok);
      if (i % 7 === 0) {
        const at = now + Math.floor(next() * 400_000);
        w.prune(at);
        expect(w.rate()).toBe(ref.rate(at));
      }
      expect(pairs(w.export())).toEqual(ref.pairs());
    }
    expect(OutcomeWindow.from(w.export()).export()).toEqual(w.export());
  });

  it("exports instants as gaps from the one before and failures by position", () => {
    const w = new OutcomeWindow();
    w.record(1_000, 1);
    w.record(1_250, 0);
    w.record(1_250, 1);
    w.record(4_000, 0);
    expect(w.export()).toEqual({ gaps: [1_000, 250, 0, 2_750], failed: [1, 3] });
    expect(new OutcomeWindow().export()).toEqual({ gaps: [], failed: [] });
  });
});
