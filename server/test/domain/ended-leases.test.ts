import { describe, expect, it } from "vitest";
import { EndedLeases } from "../../src/domain/ended-leases.js";
import { FakeClock } from "../fake-clock.js";

const HOUR = 3_600_000;

describe("ended leases", () => {
  it("remembers this boot's leases by sequence number until the ring comes round", () => {
    const clock = new FakeClock();
    const ended = new EndedLeases(5, 4);
    ended.remember("l1", { epoch: 5, seq: 1 }, "released", clock.now());
    ended.remember("l2", { epoch: 5, seq: 2 }, "expired", clock.now());
    ended.remember("l3", { epoch: 5, seq: 3 }, "revoked", clock.now());
    const recall = (latestSeq: number) => [1, 2, 3, 4].map((seq) => ended.recall(`l${seq}`, { epoch: 5, seq }, latestSeq));
    expect(recall(4)).toEqual(["released", "expired", "revoked", undefined]);
    // Four grants on, seq 1's slot may hold a newer lease's end: it is forgotten, not misread.
    expect(recall(5)).toEqual([undefined, "expired", "revoked", undefined]);
    expect(recall(7)).toEqual([undefined, undefined, undefined, undefined]);
  });

  it("remembers earlier boots' leases by id for an hour", () => {
    const clock = new FakeClock();
    const ended = new EndedLeases(5, 4);
    ended.remember("old", { epoch: 4, seq: 1 }, "revoked", clock.now());
    clock.advance(HOUR - 1);
    ended.remember("newer", { epoch: 3, seq: 9 }, "expired", clock.now());
    expect(ended.recall("old", { epoch: 4, seq: 1 }, 0)).toBe("revoked");
    expect(ended.recall("other", { epoch: 4, seq: 2 }, 0)).toBeUndefined();
    // The same sequence number in this boot is another lease.
    expect(ended.recall("mine", { epoch: 5, seq: 1 }, 1)).toBeUndefined();
    clock.advance(1);
    // Tombstones age out as new ones arrive.
    ended.remember("newest", { epoch: 4, seq: 3 }, "released", clock.now());
    expect(ended.recall("old", { epoch: 4, seq: 1 }, 0)).toBeUndefined();
    expect(ended.recall("newer", { epoch: 3, seq: 9 }, 0)).toBe("expired");
  });

  it("keeps at most 100,000 tombstones, dropping the oldest", () => {
    const clock = new FakeClock();
    const ended = new EndedLeases(2, 4);
    for (let i = 0; i <= 100_000; i++) ended.remember(`l${i}`, { epoch: 1, seq: i }, "released", clock.now());
    expect(ended.recall("l0", { epoch: 1, seq: 0 }, 0)).toBeUndefined();
    expect(ended.recall("l1", { epoch: 1, seq: 1 }, 0)).toBe("released");
    expect(ended.recall("l100000", { epoch: 1, seq: 100_000 }, 0)).toBe("released");
  });

  it("takes one late outcome report for an expired or revoked lease, none for one the holder ended", () => {
    const clock = new FakeClock();
    const ended = new EndedLeases(5, 8);
    const leases = [
      { id: "mine-expired", lease: { epoch: 5, seq: 1 }, reason: "expired" as const },
      { id: "mine-released", lease: { epoch: 5, seq: 2 }, reason: "released" as const },
      { id: "old-revoked", lease: { epoch: 4, seq: 1 }, reason: "revoked" as const },
      { id: "old-released", lease: { epoch: 4, seq: 2 }, reason: "released" as const },
    ];
    for (const l of leases) ended.remember(l.id, l.lease, l.reason, clock.now());
    const reports: string[] = [];
    for (let round = 0; round < 3; round++) {
      for (const l of leases) expect(ended.recall(l.id, l.lease, 2, () => reports.push(l.id))).toBe(l.reason);
    }
    expect(reports).toEqual(["mine-expired", "old-revoked"]);
    // A call that is not an outcome report does not use up the one report.
    const fresh = new EndedLeases(5, 8);
    fresh.remember("x", { epoch: 5, seq: 1 }, "revoked", clock.now());
    fresh.recall("x", { epoch: 5, seq: 1 }, 1);
    let late = 0;
    fresh.recall("x", { epoch: 5, seq: 1 }, 1, () => late++);
    expect(late).toBe(1);
  });
});
