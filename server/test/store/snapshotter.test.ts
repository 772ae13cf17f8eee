import { describe, expect, it } from "vitest";
import type { KeyRuntime, RuntimeChanges, RuntimeSnapshot } from "../../src/domain/types.js";
import { StoreUnavailable } from "../../src/store/errors.js";
import { Snapshotter, type SnapshotSource } from "../../src/store/snapshotter.js";
import { captureLog, FakeClock, keyRuntime } from "./helpers.js";

class FakeSource implements SnapshotSource {
  dirty = false;
  exports = 0;
  version = 0;

  constructor(private readonly clock: FakeClock) {}

  change(): void {
    this.version += 1;
    this.dirty = true;
  }

  exportRuntime(): RuntimeSnapshot {
    this.exports += 1;
    return { takenAt: this.clock.now(), keys: [keyRuntime("p", `v${this.version}`)], leases: [] };
  }

  exportChanges(): RuntimeChanges {
    this.exports += 1;
    return { takenAt: this.clock.now(), keys: [keyRuntime("p", `v${this.version}`)], removedKeys: [], leases: [], endedLeases: [] };
  }

  markClean(): void {
    this.dirty = false;
  }
}

/** Records each write's time, kind and content; fails while `failWith` is set; can hold a write open. */
class FakeStore {
  writes: Array<{ at: number; full: boolean; snapshot: { keys: RuntimeSnapshot["keys"] } }> = [];
  attempts: number[] = [];
  failWith: Error | undefined;
  hold: Promise<void> | undefined;
  /** As the real store: until a full snapshot lands, and again after any failed write. */
  needsFullSnapshot = true;

  constructor(private readonly clock: FakeClock) {}

  writeSnapshot(s: RuntimeSnapshot): Promise<void> {
    return this.write(true, s);
  }

  writeChanges(c: RuntimeChanges): Promise<void> {
    return this.write(false, c);
  }

  private async write(full: boolean, { keys }: { keys: Iterable<KeyRuntime> }): Promise<void> {
    this.attempts.push(this.clock.now());
    if (this.hold) await this.hold;
    if (this.failWith) {
      this.needsFullSnapshot = true;
      throw this.failWith;
    }
    if (full) this.needsFullSnapshot = false;
    this.writes.push({ at: this.clock.now(), full, snapshot: { keys: [...keys] } });
  }
}

function setup() {
  const clock = new FakeClock();
  const source = new FakeSource(clock);
  const store = new FakeStore(clock);
  const { log, lines } = captureLog();
  const snapshots: number[] = [];
  const snapshotter = new Snapshotter({
    store,
    source,
    log,
    clock,
    intervalMs: 1000,
    maxBackoffMs: 10_000,
    onSnapshot: (_ms, takenAt) => snapshots.push(takenAt),
  });
  const t0 = clock.now();
  return { clock, source, store, snapshotter, lines, snapshots, t0 };
}

describe("Snapshotter", () => {
  it("writes once per interval, only when the source changed or the store needs a full snapshot", async () => {
    const { clock, source, store, snapshotter, snapshots, t0 } = setup();
    snapshotter.start();
    await clock.advanceAsync(3000);
    // The first snapshot of a process reconciles the tables, whether or not anything changed since the start.
    expect(store.writes.map((w) => [w.at, w.full])).toEqual([[t0 + 1000, true]]);
    source.change();
    await clock.advanceAsync(1000);
    expect(store.writes.map((w) => [w.at, w.full])).toEqual([[t0 + 1000, true], [t0 + 4000, false]]);
    expect(source.dirty).toBe(false);
    expect(snapshots).toEqual([t0 + 1000, t0 + 4000]);
    await clock.advanceAsync(5000);
    expect(store.writes).toHaveLength(2);
    source.change();
    source.change();
    await clock.advanceAsync(1000);
    expect(store.writes).toHaveLength(3);
    expect(store.writes[2].snapshot.keys[0].keyId).toBe("v3");
    // The store found the tables need repair (a grant journaled after a snapshot covered it): a full one follows.
    store.needsFullSnapshot = true;
    await clock.advanceAsync(1000);
    expect(store.writes.map((w) => w.full)).toEqual([true, false, false, true]);
    await snapshotter.stop();
  });

  it("writes in full first and after a failed write, and only changes otherwise", async () => {
    const { clock, source, store, snapshotter } = setup();
    snapshotter.start();
    for (const fail of [false, false, false, true, false, false]) {
      store.failWith = fail ? new Error("boom") : undefined;
      source.change();
      await clock.advanceAsync(fail ? 1000 : 2000);
    }
    expect(store.writes.map((w) => w.full)).toEqual([true, false, false, true, false]);
    expect(store.writes.map((w) => w.snapshot.keys[0].keyId)).toEqual(["v1", "v2", "v3", "v5", "v6"]);
    await snapshotter.stop();
  });

  it("retries a failed write with doubling backoff capped at maxBackoff, then returns to the interval", async () => {
    const { clock, source, store, snapshotter, lines, t0 } = setup();
    snapshotter.start();
    store.failWith = new StoreUnavailable("database unavailable", { cause: Object.assign(new Error("refused"), { code: "ECONNREFUSED" }) });
    source.change();
    await clock.advanceAsync(1000 + 2000 + 4000 + 8000 + 10_000 + 10_000);
    expect(store.attempts.map((t) => t - t0)).toEqual([1000, 3000, 7000, 15_000, 25_000, 35_000]);
    expect(snapshotter.failures).toBe(6);
    const warn = lines.find((l) => l.level === "warn");
    expect(warn?.obj).toMatchObject({ err: "StoreUnavailable", code: "ECONNREFUSED", failures: 1, retryInMs: 2000 });

    // The state changed meanwhile; the retry carries the newest export, not the failed one.
    source.change();
    store.failWith = undefined;
    await clock.advanceAsync(10_000);
    expect(store.writes.map((w) => w.at - t0)).toEqual([45_000]);
    expect(store.writes[0].snapshot.keys[0].keyId).toBe("v2");
    expect(snapshotter.failures).toBe(0);
    expect(clock.deadlines()).toEqual([t0 + 46_000]);
    await snapshotter.stop();
  });

  it("knows since when state waits to be written: from the first failed export until a write succeeds, never while idle", async () => {
    const { clock, source, store, snapshotter, t0 } = setup();
    snapshotter.start();
    await clock.advanceAsync(1000);
    await clock.advanceAsync(60_000);
    expect(snapshotter.unwrittenSince).toBeUndefined();
    store.failWith = new Error("boom");
    source.change();
    await clock.advanceAsync(1000);
    expect(snapshotter.unwrittenSince).toBe(t0 + 62_000);
    source.change();
    await clock.advanceAsync(2000 + 4000);
    expect([snapshotter.failures, snapshotter.unwrittenSince]).toEqual([3, t0 + 62_000]);
    store.failWith = undefined;
    await clock.advanceAsync(8000);
    expect([store.writes.length, snapshotter.unwrittenSince]).toEqual([2, undefined]);
    await snapshotter.stop();
  });

  it("retries after a failure even when nothing changed since", async () => {
    const { clock, source, store, snapshotter } = setup();
    snapshotter.start();
    store.failWith = new Error("boom");
    source.change();
    await clock.advanceAsync(1000);
    expect(source.dirty).toBe(false);
    store.failWith = undefined;
    await clock.advanceAsync(2000);
    expect(store.writes).toHaveLength(1);
    await snapshotter.stop();
  });

  it("flush waits for a write in flight, then writes what changed since", async () => {
    const { clock, source, store, snapshotter } = setup();
    snapshotter.start();
    let release!: () => void;
    store.hold = new Promise<void>((resolve) => (release = resolve));
    source.change();
    await clock.advanceAsync(1000);
    expect(store.attempts).toHaveLength(1);
    source.change();
    const flushed = snapshotter.flush();
    store.hold = undefined;
    release();
    await flushed;
    expect(store.writes.map((w) => w.snapshot.keys[0].keyId)).toEqual(["v1", "v2"]);
    await snapshotter.stop();
  });

  it("stop writes a final snapshot and schedules nothing more", async () => {
    const { clock, source, store, snapshotter } = setup();
    snapshotter.start();
    source.change();
    await snapshotter.stop();
    expect(store.writes).toHaveLength(1);
    expect(clock.deadlines()).toEqual([]);
    source.change();
    await clock.advanceAsync(5000);
    expect(store.writes).toHaveLength(1);
  });

  it("stop reports a final write that failed instead of throwing", async () => {
    const { source, store, snapshotter, lines } = setup();
    store.failWith = new Error("boom");
    source.change();
    await expect(snapshotter.stop()).resolves.toBeUndefined();
    expect(lines.some((l) => l.level === "error" && /final snapshot not written/.test(l.msg ?? ""))).toBe(true);
  });
});
