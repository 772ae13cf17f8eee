import { describe, expect, it } from "vitest";
import { SnapshotChanges } from "../../src/domain/snapshot-changes.js";
import { FakeClock } from "../fake-clock.js";
import { keyEntry, leaseOn, poolEntry } from "./helpers.js";

function setup(maxEnded = 100) {
  const clock = new FakeClock();
  const changes = new SnapshotChanges(maxEnded);
  const pool = poolEntry();
  const [a, b] = ["a", "b"].map((id) => keyEntry(pool, changes, id));
  changes.exportAll([pool], new Map(), clock.now());
  changes.markClean();
  return { clock, changes, pool, a: a!, b: b! };
}

const everyKey = () => true;

describe("snapshot changes", () => {
  it("is dirty after every kind of change until markClean", () => {
    const { clock, changes, a } = setup();
    const lease = leaseOn(a, "l1", 1, clock.now() + 60_000);
    const kinds: Array<() => void> = [
      () => changes.keyChanged(a),
      () => changes.leaseChanged(lease),
      () => changes.leaseEnded(lease),
      () => changes.keyRemoved("p", "a"),
      () => changes.poolDeleted(),
    ];
    for (const change of kinds) {
      expect(changes.dirty).toBe(false);
      change();
      expect(changes.dirty).toBe(true);
      changes.markClean();
    }
  });

  it("a key marks itself through its own methods; new configuration and ageing out are no reason to snapshot", () => {
    const { clock, changes, pool, a } = setup();
    const marks: Array<[string, () => void]> = [
      ["disable", () => a.disable("x")],
      ["enable", () => a.enable()],
      ["drain", () => a.drain(false)],
      ["stopDraining", () => a.stopDraining()],
      ["autoDisable", () => a.autoDisable("auth", "401", clock.now())],
      ["setEmaLatency", () => a.setEmaLatency(12)],
      ["recordSuccess", () => a.recordSuccess(clock.now(), 1, 2)],
      ["recordFailure", () => a.recordFailure(clock.now(), true)],
      ["openCircuit", () => a.openCircuit(clock.now() + 1_000)],
      ["halfOpenCircuit", () => a.halfOpenCircuit()],
      ["closeCircuit", () => a.closeCircuit()],
      ["coolDown", () => a.coolDown(clock.now() + 1_000)],
      ["endCooldown", () => a.endCooldown()],
      ["setRateLimitStreak", () => a.setRateLimitStreak(2, clock.now())],
      ["reportBudget", () => a.reportBudget({ remaining: 5, limit: 10, resetMs: 1_000 }, { remaining: undefined, limit: undefined, resetMs: undefined }, clock.now(), clock.now() + 1)],
      ["debitRequest", () => a.debitRequest(clock.now(), clock.now() + 1)],
      ["countGrant", () => a.countGrant(clock.now())],
    ];
    const marked = marks.map(([name, change]) => {
      changes.exportAll([pool], new Map(), clock.now());
      changes.markClean();
      change();
      return [name, a.unsaved, changes.dirty];
    });
    expect(marked).toEqual(marks.map(([name]) => [name, true, true]));

    changes.exportAll([pool], new Map(), clock.now());
    changes.markClean();
    a.configure({ ...a.cfg, weight: 3 }, clock.now());
    expect([a.unsaved, changes.dirty]).toEqual([false, false]);
    clock.advance(300_000);
    a.successRate(clock.now());
    a.recentGrants(clock.now());
    expect([a.unsaved, changes.dirty]).toEqual([true, false]);
  });

  it("exports what changed since: changed keys once, leases granted or renewed and still live, ended ids, removed keys", () => {
    const { clock, changes, pool, a, b } = setup();
    const kept = leaseOn(a, "kept", 1, clock.now() + 60_000);
    const gone = leaseOn(a, "gone", 2, clock.now() + 60_000);
    changes.leaseChanged(kept);
    changes.leaseChanged(gone);
    changes.leaseEnded(gone);
    a.recordSuccess(clock.now(), 0, 0);
    changes.keyRemoved("p", "old");
    const first = changes.exportSince([pool], everyKey, clock.now())!;
    expect({ ...first, keys: [...first.keys].map((k) => k.keyId) }).toEqual({
      takenAt: clock.now(),
      keys: ["a"],
      removedKeys: [{ pool: "p", keyId: "old" }],
      leases: [kept.record],
      endedLeases: ["gone"],
      pools: [],
    });
    expect([a.unsaved, b.unsaved]).toEqual([false, false]);
    const second = changes.exportSince([pool], everyKey, clock.now())!;
    expect({ ...second, keys: [...second.keys] }).toEqual({ takenAt: clock.now(), keys: [], removedKeys: [], leases: [], endedLeases: [], pools: [] });
  });

  it("reads a changed key when the store does, skipping one no longer in its pool", () => {
    const { clock, changes, pool, a, b } = setup();
    a.setEmaLatency(5);
    b.setEmaLatency(7);
    let bPresent = true;
    const changed = changes.exportSince([pool], (k) => k !== b || bPresent, clock.now())!;
    a.setEmaLatency(9);
    bPresent = false;
    expect([...changed.keys].map((k) => [k.keyId, k.emaLatencyMs])).toEqual([["a", 9]]);
  });

  it("stops tracking past maxEnded ended leases, until a full export", () => {
    const { clock, changes, pool, a } = setup(3);
    const leases = [1, 2, 3, 4].map((seq) => leaseOn(a, `l${seq}`, seq, clock.now() + 60_000));
    for (const l of leases.slice(0, 3)) changes.leaseEnded(l);
    expect(changes.exportSince([pool], everyKey, clock.now())?.endedLeases).toEqual(["l1", "l2", "l3"]);
    for (const l of leases) changes.leaseEnded(l);
    expect(changes.exportSince([pool], everyKey, clock.now())).toBeUndefined();
    expect(changes.exportSince([pool], everyKey, clock.now())).toBeUndefined();
    const live = leaseOn(a, "live", 5, clock.now() + 60_000);
    const full = changes.exportAll([pool], new Map([[live.id, live]]), clock.now());
    expect(full.leases).toEqual([live.record]);
    expect(full.keys.map((k) => k.keyId)).toEqual(["a", "b"]);
    changes.leaseEnded(live);
    expect(changes.exportSince([pool], everyKey, clock.now())).toMatchObject({ endedLeases: ["live"], leases: [] });
  });
});
