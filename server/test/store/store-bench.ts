// Store cost figures (not a test): `npx tsx server/test/store/store-bench.ts [postgres|embedded]`.
// Snapshot of 10,000 keys + 100,000 leases (first write and a steady-state rewrite), the longest
// event-loop stall while it runs, and the grant journal's per-call latency and throughput at 64 callers.
import { randomBytes } from "node:crypto";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import type { RuntimeSnapshot } from "../../src/domain/types.js";
import { migrate } from "../../src/store/migrate.js";
import { SecretBox } from "../../src/store/secrets.js";
import { embedded, freshSchema, journalCommits, keyConfig, keyRuntime, leaseRecord, openStore, poolConfig, type TestDb } from "./helpers.js";

const KEYS = 10_000;
const LEASES = 100_000;
const CALLERS = 64;
const GRANTS_PER_CALLER = 200;

const kind = process.argv[2] === "embedded" ? "embedded" : "postgres";
const db: TestDb = kind === "postgres" ? await freshSchema() : await embedded();
await migrate(db.sql);
const store = await openStore(db.sql, new SecretBox(randomBytes(32)));
const { epoch, journal, snapshots } = await store.beginEpoch();

await store.config.insertPool(poolConfig("bench"));
const keys = Array.from({ length: KEYS }, (_, i) => keyConfig("bench", `k${i}`));
for (let i = 0; i < keys.length; i += 1000) {
  await Promise.all(keys.slice(i, i + 1000).map((k) => store.config.insertKey(k)));
}

const t = Date.now();
/** The runtime at `now`; below 1, `changed` is the share of leases renewed since the last one (and 1% of keys touched). */
function snapshotAt(now: number, changed: number): RuntimeSnapshot {
  const renewed = (i: number) => changed < 1 && i % Math.round(1 / changed) === 0;
  return {
    takenAt: now,
    keys: keys.map((k, i) =>
      keyRuntime("bench", k.id, {
        cooldownUntil: now + (i % 7) * 1000,
        emaLatencyMs: 100 + (i % 50),
        outcomes: { gaps: [now - 900, ...Array.from({ length: 9 }, () => 100)], failed: [0, 3, 6, 9] },
        grantsPerSecond: { until: Math.floor(now / 1000), counts: Array.from({ length: 10 }, (_, j) => j + 1) },
        totalLeases: i + (changed < 1 && i % 100 === 0 ? 1 : 0),
      }),
    ),
    leases: Array.from({ length: LEASES }, (_, i) =>
      leaseRecord("bench", `k${i % KEYS}`, `lk1.bench-${i}`, {
        acquiredAt: now - 1000,
        expiresAt: now + 60_000 + i + (renewed(i) ? 20_000 : 0),
        holder: `worker-${i % 64}`,
      }),
    ),
  };
}

async function timedSnapshot(label: string, now: number, changed: number): Promise<void> {
  const loop = monitorEventLoopDelay({ resolution: 10 });
  const started = performance.now();
  const s = snapshotAt(now, changed);
  const exported = performance.now();
  loop.enable();
  await snapshots.writeSnapshot(s);
  loop.disable();
  const done = performance.now();
  console.log(
    `${kind} snapshot ${label}: build ${(exported - started).toFixed(0)} ms + write ${(done - exported).toFixed(0)} ms` +
      ` = ${(done - started).toFixed(0)} ms; longest event-loop stall during write ${(loop.max / 1e6).toFixed(0)} ms`,
  );
}

// Journal first, on a database not yet busy with the snapshots' writes: 64 callers, each awaiting its
// grant before the next, as Acquire handlers would.
let seq = 0;
const latencies: number[] = [];
const stats = journalCommits(journal);
const started = performance.now();
await Promise.all(
  Array.from({ length: CALLERS }, async (_, c) => {
    for (let i = 0; i < GRANTS_PER_CALLER; i++) {
      const s = ++seq;
      const t0 = performance.now();
      await journal.record({ ...leaseRecord("bench", `k${s % KEYS}`, `lk1.grant-${s}`), epoch, seq: s, holder: `caller-${c}` });
      latencies.push(performance.now() - t0);
    }
  }),
);
const elapsed = performance.now() - started;
latencies.sort((a, b) => a - b);
const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))].toFixed(2);
const { grants, batches } = stats;
console.log(
  `${kind} journal: ${grants} grants from ${CALLERS} callers in ${elapsed.toFixed(0)} ms = ${((grants / elapsed) * 1000).toFixed(0)} grants/s; ` +
    `${batches} statements (${(grants / batches).toFixed(1)} grants each); latency p50 ${pct(0.5)} ms p99 ${pct(0.99)} ms max ${pct(1)} ms`,
);

const single: number[] = [];
for (let i = 0; i < 200; i++) {
  const s = ++seq;
  const t0 = performance.now();
  await journal.record({ ...leaseRecord("bench", "k0", `lk1.single-${s}`), epoch, seq: s });
  single.push(performance.now() - t0);
}
single.sort((a, b) => a - b);
console.log(`${kind} journal, one caller: latency p50 ${single[100].toFixed(2)} ms p99 ${single[198].toFixed(2)} ms`);

await timedSnapshot(`first, full (${KEYS} keys, ${LEASES} leases inserted)`, t, 1);
await timedSnapshot("steady state (5% of leases renewed, 1% of keys changed)", t, 0.05);
await timedSnapshot("worst case (every row changed)", t + 1000, 1);

const roundTrips: number[] = [];
for (let i = 0; i < 200; i++) {
  const t0 = performance.now();
  await db.sql`select 1`;
  roundTrips.push(performance.now() - t0);
}
roundTrips.sort((a, b) => a - b);
console.log(`${kind} baseline, one caller: select 1 round trip p50 ${roundTrips[100].toFixed(2)} ms p99 ${roundTrips[198].toFixed(2)} ms`);

await journal.close();
store.availability.close();
await db.close();
