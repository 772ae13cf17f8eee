// Engine-level measurements in this process: the wake-up path without a network, and the scale run
// (10,000 keys, 100,000 live leases) against the real store on a fresh Postgres database.
import { randomBytes } from "node:crypto";
import { constants as perf, PerformanceObserver } from "node:perf_hooks";
import { setImmediate as nextTurn, setTimeout as sleep } from "node:timers/promises";
import { PoolEngine } from "../../server/src/domain/engine.js";
import type { Grant, KeyConfig, KeyRuntime } from "../../server/src/domain/types.js";
import { systemClock } from "../../server/src/domain/system-clock.js";
import { openDatabase } from "../../server/src/store/database.js";
import { migrate } from "../../server/src/store/migrate.js";
import { SecretBox } from "../../server/src/store/secrets.js";
import { Snapshotter } from "../../server/src/store/snapshotter.js";
import { Availability } from "../../server/src/store/availability.js";
import { PostgresConfigStore } from "../../server/src/store/config-store.js";
import { PostgresGrantJournal } from "../../server/src/store/journal.js";
import { beginEpoch } from "../../server/src/store/restore.js";
import { PostgresSnapshotStore } from "../../server/src/store/snapshot-writer.js";
import { scratchDatabase } from "../../test/support/database.js";
import { summarize, type Summary } from "./stats.js";

const quietLog = { info() {}, warn() {}, error() {} };

/** The server's default snapshot interval. */
const SNAPSHOT_INTERVAL_MS = 1000;

function newEngine(epoch = 1): PoolEngine {
  return new PoolEngine({ clock: systemClock, leaseSecret: randomBytes(32), epoch });
}

export interface EngineWake {
  samples: number;
  /** engine.release() called → the waiter's promise continuation runs, in microseconds. */
  wake_us: Summary;
}

/** One key with max_concurrency 1: a holder releases, and a queued acquire's promise resolves. */
export async function engineWake(samples: number): Promise<EngineWake> {
  const engine = newEngine();
  engine.createPool(engine.preparePool({ name: "wake" }));
  engine.addKey(engine.prepareKey({ pool: "wake", id: "k1", secret: "sk-bench-wake", maxConcurrency: 1 }));
  const input = { pool: "wake", waitTimeoutMs: 5000, holder: "bench", estimatedTokens: 0, excludeKeyIds: [] };
  let held = engine.acquire(input) as Grant;
  const us: number[] = [];
  for (let i = 0; i < samples; i++) {
    const waiting = engine.acquire(input);
    if (!(waiting instanceof Promise)) throw new Error("the second acquire should have queued");
    let t0 = 0;
    const woken = waiting.then((g) => {
      us.push((performance.now() - t0) * 1000);
      return g;
    });
    t0 = performance.now();
    engine.release(held.leaseId, {});
    held = await woken;
  }
  engine.release(held.leaseId, {});
  engine.close();
  return { samples, wake_us: summarize(us) };
}

export interface ScaleOptions {
  postgresUrl: string;
  keys: number;
  leases: number;
  /** Acquire+Release cycles sampled for each latency figure. */
  probes: number;
  /** Concurrent probing callers. */
  callers: number;
  /** Acquire+Release cycles a second for the paced (open-loop) probes. */
  pacedRate: number;
  /** Least snapshots written while probing, a server's interval apart (more until `probes` cycles overlapped one). */
  snapshots: number;
  /** Acquire+Release cycles whose ended leases are weighed. */
  endedLeases: number;
}

/** This process's GC pauses within one phase of probes. */
export interface GcPauses {
  /** Mark-compact pauses (the end of a major GC; its incremental marking steps are not reported on their own). */
  major: number;
  /** Scavenges (young generation). */
  minor: number;
  /** The longest pause of either kind, and all pauses together, in ms. */
  max_ms: number;
  total_ms: number;
}

/** Records GC pauses from perf_hooks, so a figure can say whether its stalls lined up with a major GC. */
function watchGc() {
  const pauses: Array<{ at: number; ms: number; major: boolean }> = [];
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind;
      pauses.push({ at: e.startTime, ms: e.duration, major: kind === perf.NODE_PERFORMANCE_GC_MAJOR });
    }
  });
  observer.observe({ entryTypes: ["gc"] });
  return {
    async between(from: number, to: number): Promise<GcPauses> {
      // Entries reach the observer on a later turn.
      await sleep(10);
      const inside = pauses.filter((p) => p.at >= from && p.at < to);
      return {
        major: inside.filter((p) => p.major).length,
        minor: inside.filter((p) => !p.major).length,
        max_ms: Math.max(0, ...inside.map((p) => p.ms)),
        total_ms: inside.reduce((sum, p) => sum + p.ms, 0),
      };
    },
    stop: () => observer.disconnect(),
  };
}

export interface ScaleResult {
  keys: number;
  leases: number;
  setup_seconds: number;
  heap_bytes_per_lease: number;
  /** Acquire alone (engine call), with 100k leases live, in microseconds. */
  engine_acquire_us: Summary;
  /** Arrival → grant journaled (as the server answers), no snapshot running. */
  acquire_ms: Summary;
  /** The same for arrivals that overlapped a snapshot's export or write (snapshots a server's interval apart). */
  acquire_during_snapshot_ms: Summary;
  snapshot_p99_ratio: number;
  /** The same figures with probes arriving on schedule at `cycles_per_sec` (open loop). */
  paced: {
    cycles_per_sec: number;
    acquire_ms: Summary;
    acquire_during_snapshot_ms: Summary;
    loop_acquire_ms: Summary;
    loop_acquire_during_snapshot_ms: Summary;
    snapshot_p99_ratio: number;
  };
  /** Arrival → grant with no journal (a quarter of the callers): the event-loop stall alone, idle and during snapshots. */
  loop_acquire_ms: Summary;
  loop_acquire_during_snapshot_ms: Summary;
  /** The first (full) and a steady-state snapshot (changes) with nothing else running, then those written while probing. */
  first_snapshot: { export_ms: number; write_ms: number; rows: number };
  steady_snapshot: { export_ms: number; write_ms: number; rows: number };
  snapshot: { export_ms: Summary; write_ms: Summary; total_ms: Summary; rows: number };
  /** Rows (keys and leases) each snapshot written while probing carried: what changed in the interval before it. */
  snapshot_rows: Summary;
  /** Heap kept per ended lease once a snapshot has written its end (why it ended stays in a preallocated ring). */
  heap_bytes_per_ended_lease: number;
  /** GC pauses during each phase of probes: back-to-back and paced, idle and while snapshots are written. */
  gc: { idle: GcPauses; during_snapshots: GcPauses; paced_idle: GcPauses; paced_during_snapshots: GcPauses };
  /** Least-busy scans every key per pick: its acquire cost at this pool size, for comparison. */
  least_busy_engine_acquire_us: Summary;
}

function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (!g) throw new Error("run with --expose-gc (scripts/bench.sh does)");
  g();
  g();
}

export async function scale(o: ScaleOptions): Promise<ScaleResult> {
  const setupStart = performance.now();
  const db = await scratchDatabase(o.postgresUrl, "keymesh_scale");
  const handle = await openDatabase({ databaseUrl: db.url, dataDir: "/nonexistent", log: quietLog });
  try {
    await migrate(handle.sql, { log: quietLog });
    const availability = new Availability(handle.sql, quietLog);
    // One process owns the pool: the fence holds the term its creation claimed.
    const terms = new Map<string, number>();
    const fence = { owner: "bench", termOf: (p: string) => terms.get(p), held: () => [...terms].map(([pool, term]) => ({ pool, term })), lost() {} };
    const store = new PostgresConfigStore(handle.sql, new SecretBox(randomBytes(32)), availability, systemClock, fence, 3_600_000);
    await store.verifyMasterKey();
    const epoch = await beginEpoch(handle.sql, availability, systemClock.now());
    const grants = new PostgresGrantJournal(handle.sql, availability, quietLog, { epoch, isLive: () => true, fence, lendFromMemory: true });
    const engine = newEngine(epoch);
    const pool = engine.preparePool({ name: "scale", maxTtlMs: 3_600_000, defaultTtlMs: 3_600_000 });
    engine.createPool(pool);
    terms.set(pool.name, await store.insertPool(pool));
    const keyConfigs: KeyConfig[] = [];
    for (let i = 0; i < o.keys; i++) {
      const cfg = engine.prepareKey({ pool: "scale", id: `k${i}`, secret: `sk-bench-scale-${i.toString().padStart(6, "0")}` });
      engine.addKey(cfg);
      keyConfigs.push(cfg);
    }
    for (let i = 0; i < keyConfigs.length; i += 500) await Promise.all(keyConfigs.slice(i, i + 500).map((cfg) => store.insertKey(cfg)));

    const journal = (g: Grant) => {
      const seq = engine.leaseSeq(g.leaseId)!;
      return grants.record({
        leaseId: g.leaseId,
        pool: g.pool,
        keyId: g.keyId,
        holder: "bench-scale",
        acquiredAt: g.expiresAt - g.ttlMs,
        expiresAt: g.expiresAt,
        ttlMs: g.ttlMs,
        epoch: seq.epoch,
        seq: seq.seq,
      });
    };
    const input = { pool: "scale", waitTimeoutMs: 0, holder: "bench-scale", estimatedTokens: 0, excludeKeyIds: [] };

    gc();
    const heapBefore = process.memoryUsage().heapUsed;
    const pending: Promise<void>[] = [];
    for (let i = 0; i < o.leases; i++) {
      pending.push(journal(engine.acquire(input) as Grant));
      if (pending.length === 2000) await Promise.all(pending.splice(0));
    }
    await Promise.all(pending);
    gc();
    const heapPerLease = (process.memoryUsage().heapUsed - heapBefore) / o.leases;
    // Snapshots as the server writes them: the first of a process reconciles every row, later ones write what
    // changed since. The source times the engine's synchronous export; the rest of a flush is the write.
    let exported = { ms: 0, rows: 0 };
    const timed = <T>(fn: () => T, rows: (r: T) => number): T => {
      const t0 = performance.now();
      const r = fn();
      exported = { ms: performance.now() - t0, rows: rows(r) };
      return r;
    };
    // Keys of a snapshot of changes are read as the store writes them: count them then.
    function* counted(keys: Iterable<KeyRuntime>): Generator<KeyRuntime> {
      for (const k of keys) {
        exported.rows++;
        yield k;
      }
    }
    const snapshotter = new Snapshotter({
      store: new PostgresSnapshotStore(handle.sql, availability, grants, fence),
      log: quietLog,
      source: {
        exportRuntime: () => timed(() => engine.exportRuntime(), (s) => s.keys.length + s.leases.length),
        exportChanges: () => {
          const c = timed(() => engine.exportChanges(), (c) => (c ? c.removedKeys.length + c.leases.length + c.endedLeases.length : 0));
          return c && { ...c, keys: counted(c.keys) };
        },
        get dirty() {
          return engine.dirty;
        },
        markClean: () => engine.markClean(),
      },
    });
    const timeSnapshot = async () => {
      exported = { ms: 0, rows: 0 };
      const t0 = performance.now();
      await snapshotter.flush();
      return { export_ms: exported.ms, write_ms: performance.now() - t0 - exported.ms, rows: exported.rows };
    };
    const firstSnapshot = await timeSnapshot();
    const setupSeconds = (performance.now() - setupStart) / 1000;

    const engineUs: number[] = [];
    for (let i = 0; i < o.probes; i++) {
      const t = performance.now();
      const g = engine.acquire(input) as Grant;
      engineUs.push((performance.now() - t) * 1000);
      engine.release(g.leaseId, {});
    }

    // Whether a snapshot is being exported or written, and how often that began or ended: a probe overlapped
    // one when it was under way at the probe's arrival or began or ended before its answer.
    const snapshotWindow = { open: false, edges: 0 };

    // Each probe is an arrival that must wait for the event loop (as a request on a socket does),
    // then is granted and journaled before it "answers", and is released right after.
    // `loop` gets the same arrivals without the journal (a quarter of them): the event-loop stall alone.
    // With `overlapping`, only probes that overlapped a snapshot are kept.
    const probeOnce = async (journaled: boolean, arrived: number, samples: number[], overlapping: boolean) => {
      const [open, edges] = [snapshotWindow.open, snapshotWindow.edges];
      await nextTurn();
      const g = engine.acquire(input) as Grant;
      if (journaled) await journal(g);
      if (!overlapping || open || snapshotWindow.edges !== edges) samples.push(performance.now() - arrived);
      engine.release(g.leaseId, {});
    };
    // rate 0: `callers` back-to-back callers (closed loop). Otherwise arrivals on schedule at `rate` a second,
    // each answered on its own however many are in flight (open loop, as independent requests reach a server),
    // and timed from its scheduled instant, so a stall counts against every arrival due during it.
    const probe = async (count: number, running: () => boolean, out: number[], loop: number[], overlapping: boolean, rate: number) => {
      if (rate === 0) {
        // Every caller stops when the journaled probes are done, so callers without the journal load the event
        // loop for the whole phase, idle as during snapshots (they finish several times as many cycles).
        const caller = async (journaled: boolean) => {
          const samples = journaled ? out : loop;
          while (running() && out.length < count) await probeOnce(journaled, performance.now(), samples, overlapping);
        };
        await Promise.all(Array.from({ length: o.callers }, (_, i) => caller(i % 4 !== 3)));
        return;
      }
      const inFlight = new Set<Promise<void>>();
      const interval = 1000 / rate;
      let next = performance.now();
      for (let i = 0; running() && out.length < count; i++) {
        // One reading of the clock: a second one may already be past `next`, and Node turns a negative delay into 1 ms.
        const wait = next - performance.now();
        if (wait > 0) await sleep(wait);
        const journaled = i % 4 !== 3;
        const p = probeOnce(journaled, next, journaled ? out : loop, overlapping);
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
        next += interval;
      }
      await Promise.all(inFlight);
    };

    const gcWatch = watchGc();
    const phase = async <T>(run: () => Promise<T>): Promise<[T, GcPauses]> => {
      const from = performance.now();
      const result = await run();
      return [result, await gcWatch.between(from, performance.now())];
    };
    const idle: number[] = [];
    const idleLoop: number[] = [];
    const [, idleGc] = await phase(() => probe(o.probes, () => true, idle, idleLoop, false, 0));
    // A steady-state snapshot with nothing else running, after the churn of the probes above.
    const steadySnapshot = await timeSnapshot();

    const exportMs: number[] = [];
    const writeMs: number[] = [];
    const totalMs: number[] = [];
    const rows: number[] = [];
    /** Probes while snapshots are written a server's interval apart: at least `snapshots`, and until as many probes overlapped one as `enough`. */
    const duringSnapshots = async (rate: number, enough: number) => {
      const busy: number[] = [];
      const busyLoop: number[] = [];
      let snapshotting = true;
      const snapshots = (async () => {
        let written = 0;
        while (written < o.snapshots || busy.length < enough) {
          await sleep(SNAPSHOT_INTERVAL_MS);
          snapshotWindow.open = true;
          snapshotWindow.edges++;
          const t = await timeSnapshot();
          snapshotWindow.open = false;
          snapshotWindow.edges++;
          written++;
          exportMs.push(t.export_ms);
          writeMs.push(t.write_ms);
          totalMs.push(t.export_ms + t.write_ms);
          rows.push(t.rows);
        }
        snapshotting = false;
      })();
      await probe(Number.MAX_SAFE_INTEGER, () => snapshotting, busy, busyLoop, true, rate);
      await snapshots;
      return { busy, busyLoop };
    };
    const [{ busy, busyLoop }, busyGc] = await phase(() => duringSnapshots(0, o.probes));

    // The same at a rate a server can serve (open loop): arrivals come on schedule, so a stall delays every
    // arrival due during it, where back-to-back callers simply arrive less often while the loop is stalled.
    const pacedProbes = Math.min(o.probes, Math.round(o.pacedRate * 5));
    const pacedIdle: number[] = [];
    const pacedIdleLoop: number[] = [];
    const [, pacedIdleGc] = await phase(() => probe(pacedProbes, () => true, pacedIdle, pacedIdleLoop, false, o.pacedRate));
    const [paced, pacedBusyGc] = await phase(() => duringSnapshots(o.pacedRate, pacedProbes));
    gcWatch.stop();
    await timeSnapshot();
    gc();
    const heapBeforeEnded = process.memoryUsage().heapUsed;
    for (let i = 0; i < o.endedLeases; i++) engine.release((engine.acquire(input) as Grant).leaseId, {});
    await timeSnapshot();
    gc();
    const heapPerEnded = (process.memoryUsage().heapUsed - heapBeforeEnded) / o.endedLeases;

    const leastBusy = newEngine(epoch + 1);
    leastBusy.createPool(leastBusy.preparePool({ name: "lb", strategy: "least_busy", maxTtlMs: 3_600_000, defaultTtlMs: 3_600_000 }));
    for (let i = 0; i < o.keys; i++) leastBusy.addKey(leastBusy.prepareKey({ pool: "lb", id: `k${i}`, secret: `sk-bench-lb-${i}` }));
    const lbInput = { ...input, pool: "lb" };
    // The scan cost depends on the key count, so a lease per key is enough to load the pool.
    for (let i = 0; i < o.keys; i++) leastBusy.acquire(lbInput);
    const lbUs: number[] = [];
    for (let i = 0; i < Math.min(o.probes, 2000); i++) {
      const t = performance.now();
      const g = leastBusy.acquire(lbInput) as Grant;
      lbUs.push((performance.now() - t) * 1000);
      leastBusy.release(g.leaseId, {});
    }
    leastBusy.close();

    const acquireIdle = summarize(idle);
    const acquireBusy = summarize(busy);
    engine.close();
    await grants.close();
    availability.close();
    return {
      keys: o.keys,
      leases: o.leases,
      setup_seconds: setupSeconds,
      heap_bytes_per_lease: Math.round(heapPerLease),
      heap_bytes_per_ended_lease: Math.round(heapPerEnded),
      gc: { idle: idleGc, during_snapshots: busyGc, paced_idle: pacedIdleGc, paced_during_snapshots: pacedBusyGc },
      engine_acquire_us: summarize(engineUs),
      acquire_ms: acquireIdle,
      acquire_during_snapshot_ms: acquireBusy,
      snapshot_p99_ratio: acquireBusy.p99 / acquireIdle.p99,
      paced: {
        cycles_per_sec: o.pacedRate,
        acquire_ms: summarize(pacedIdle),
        acquire_during_snapshot_ms: summarize(paced.busy),
        loop_acquire_ms: summarize(pacedIdleLoop),
        loop_acquire_during_snapshot_ms: summarize(paced.busyLoop),
        snapshot_p99_ratio: summarize(paced.busy).p99 / summarize(pacedIdle).p99,
      },
      loop_acquire_ms: summarize(idleLoop),
      loop_acquire_during_snapshot_ms: summarize(busyLoop),
      first_snapshot: firstSnapshot,
      steady_snapshot: steadySnapshot,
      snapshot: { export_ms: summarize(exportMs), write_ms: summarize(writeMs), total_ms: summarize(totalMs), rows: o.keys + o.leases },
      snapshot_rows: summarize(rows),
      least_busy_engine_acquire_us: summarize(lbUs),
    };
  } finally {
    await handle.close().catch(() => undefined);
    await db.drop().catch(() => undefined);
  }
}
