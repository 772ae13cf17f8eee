// The headline figures (the JSON's top-level fields), the targets they are held against, and the table.
import type { EngineWake, GcPauses, ScaleResult } from "./inprocess.js";
import type { GoodputResult, RenewResult, UnaryResult, WakeResult } from "./loadgen.js";
import type { VsEtcdCell } from "./vs-etcd.js";

interface Target {
  value: number | null;
  target: string;
  met: boolean | null;
}

const r1 = (n: number) => Math.round(n * 10) / 10;
const r3 = (n: number) => Math.round(n * 1000) / 1000;

export function printReport(result: Record<string, unknown>): Record<string, unknown> {
  const hot = result.hot as
    | {
        echo: Record<number, UnaryResult>;
        cycle: Record<number, UnaryResult>;
        floor: UnaryResult;
        paced: UnaryResult & { paced_cycles_per_sec: number };
        pacedEcho: UnaryResult;
        limited: Record<number, UnaryResult>;
      }
    | undefined;
  const renew = result.renew as Record<number, RenewResult> | undefined;
  const wake = result.wake as { e2e: WakeResult; engine: EngineWake } | undefined;
  const vsEtcd = result.vs_etcd as VsEtcdCell[] | undefined;
  const scale = result.scale as ScaleResult | undefined;
  const goodput = result.goodput as
    | { setup: { aggregate_rps: number; offered_rps: number }; scenarios: Record<string, GoodputResult & { provider_429s: number }> }
    | undefined;

  const rows: Array<[string, string]> = [];
  const summary: Record<string, unknown> = {};

  if (hot) {
    const ceiling = hot.echo[64]!.rps;
    const cycle = hot.cycle[64]!.rps;
    summary.ceiling_rps = Math.round(ceiling);
    summary.cycle_rps = Math.round(cycle);
    summary.ratio = r3(cycle / ceiling);
    summary.ceiling_rps_by_concurrency = Object.fromEntries(Object.entries(hot.echo).map(([c, r]) => [c, Math.round(r.rps)]));
    summary.cycle_rps_by_concurrency = Object.fromEntries(Object.entries(hot.cycle).map(([c, r]) => [c, Math.round(r.rps)]));
    summary.ratio_by_concurrency = Object.fromEntries(Object.entries(hot.cycle).map(([c, r]) => [c, r3(r.rps / hot.echo[Number(c)]!.rps)]));
    summary.acquire_p50_ms = r3(hot.cycle[64]!.acquire!.p50_ms);
    summary.acquire_p99_ms = r3(hot.cycle[64]!.acquire!.p99_ms);
    for (const c of Object.keys(hot.echo)) {
      const e = hot.echo[Number(c)]!;
      const y = hot.cycle[Number(c)]!;
      rows.push([
        `c=${c}: echo rpc/s | cycle rpc/s | ratio`,
        `${Math.round(e.rps)} | ${Math.round(y.rps)} | ${r3(y.rps / e.rps)}`,
      ]);
    }
    summary.server_cpu_us_per_rpc = Object.fromEntries(
      Object.keys(hot.echo).map((c) => [c, { echo: r1(hot.echo[Number(c)]!.server_cpu_us_per_rpc ?? 0), cycle: r1(hot.cycle[Number(c)]!.server_cpu_us_per_rpc ?? 0) }]),
    );
    for (const c of Object.keys(hot.echo)) {
      const e = hot.echo[Number(c)]!;
      const y = hot.cycle[Number(c)]!;
      rows.push([
        `c=${c}: CPU µs per RPC, server echo | cycle; client echo | cycle`,
        `${r1(e.server_cpu_us_per_rpc ?? 0)} | ${r1(y.server_cpu_us_per_rpc ?? 0)}; ${r1(e.client_cpu_us_per_rpc)} | ${r1(y.client_cpu_us_per_rpc)}`,
      ]);
    }
    summary.floor_rps = Math.round(hot.floor.rps);
    summary.floor_ratio = r3(hot.floor.rps / ceiling);
    summary.floor_server_cpu_us_per_rpc = r1(hot.floor.server_cpu_us_per_rpc ?? 0);
    rows.push([
      "c=64: floor (cycle's messages and adapter, no engine) rpc/s | ratio | server CPU µs per RPC",
      `${Math.round(hot.floor.rps)} | ${r3(hot.floor.rps / ceiling)} | ${r1(hot.floor.server_cpu_us_per_rpc ?? 0)}`,
    ]);
    // The bare echo's own latency at the same concurrency: the floor any method on this transport sees.
    summary.echo_p99_ms = r3(hot.echo[64]!.latency.p99_ms);
    summary.acquire_p99_ratio = r3(hot.cycle[64]!.acquire!.p99_ms / hot.echo[64]!.latency.p99_ms);
    for (const c of Object.keys(hot.cycle)) {
      const a = hot.cycle[Number(c)]!.acquire!;
      const e = hot.echo[Number(c)]!.latency;
      rows.push([`c=${c}: Acquire p50 / p99 (ms) | bare echo p50 / p99 | p99 ratio`, `${r3(a.p50_ms)} / ${r3(a.p99_ms)} | ${r3(e.p50_ms)} / ${r3(e.p99_ms)} | ${r3(a.p99_ms / e.p99_ms)}`]);
    }
    const pa = hot.paced.acquire!;
    summary.acquire_p99_ms_paced = r3(pa.p99_ms);
    summary.acquire_paced_cycles_per_sec = hot.paced.paced_cycles_per_sec;
    const pe = hot.pacedEcho.latency;
    summary.echo_p99_ms_paced = r3(pe.p99_ms);
    rows.push([
      `c=64 paced at ${hot.paced.paced_cycles_per_sec} cycles/s: Acquire p50 / p99 (ms) | bare echo at the same RPC rate`,
      `${r3(pa.p50_ms)} / ${r3(pa.p99_ms)} | ${r3(pe.p50_ms)} / ${r3(pe.p99_ms)}`,
    ]);
    summary.cycle_rps_limited_keys = Object.fromEntries(Object.entries(hot.limited).map(([c, r]) => [c, Math.round(r.rps)]));
    summary.acquire_p99_ms_limited_keys = r3(hot.limited[64]!.acquire!.p99_ms);
    for (const [c, r] of Object.entries(hot.limited)) {
      rows.push([`keys with max_concurrency (journal awaited), c=${c}: cycle rpc/s | Acquire p50 / p99 ms`, `${Math.round(r.rps)} | ${r3(r.acquire!.p50_ms)} / ${r3(r.acquire!.p99_ms)}`]);
    }
  }
  if (vsEtcd) {
    const cycleName = { grant_revoke: "grant+revoke", grant_keepalive_revoke: "grant+keepalive+revoke" };
    rows.push(["vs etcd (cycles/s KeyMesh | etcd | ratio, range of pairs; server CPU µs/cycle KeyMesh | etcd | ratio)", ""]);
    for (const cell of vsEtcd) {
      const range = cell.ratio_range[0] === cell.ratio_range[1] ? "" : ` (${r3(cell.ratio_range[0])}-${r3(cell.ratio_range[1])})`;
      rows.push([
        `  ${cycleName[cell.cycle]}, ${cell.keys} keys, ${cell.database}, c=${cell.callers}`,
        `${Math.round(cell.keymesh.cycles_per_sec)} | ${Math.round(cell.etcd.cycles_per_sec)} | ${r3(cell.ratio)}${range}; ` +
          `${r1(cell.keymesh.cpu_us_per_cycle)} | ${r1(cell.etcd.cpu_us_per_cycle)} | ${r3(cell.cpu_ratio)}`,
      ]);
    }
    summary.vs_etcd_ratio_min = Math.min(...vsEtcd.map((c) => c.ratio));
    // The durable path: grants of limited keys are journaled before the reply.
    summary.vs_etcd_cpu_ratio_max_limited_keys = Math.max(...vsEtcd.filter((c) => c.keys === "limited").map((c) => c.cpu_ratio));
  }
  if (wake) {
    summary.wake_p99_ms = r3(wake.e2e.wake.p99_ms);
    summary.wake_p50_ms = r3(wake.e2e.wake.p50_ms);
    summary.wake_engine_p99_ms = r3(wake.engine.wake_us.p99 / 1000);
    summary.wake_release_rtt_p99_ms = r3(wake.e2e.release_rtt.p99_ms);
    summary.wake_echo_rtt_p99_ms = r3(wake.e2e.echo_rtt.p99_ms);
    summary.wake_release_before_p99_ms = r3(wake.e2e.release_before_rtt.p99_ms);
    summary.wake_p99_ratio = r3(wake.e2e.wake.p99_ms / wake.e2e.release_before_rtt.p99_ms);
    rows.push(["wake, loopback Release→Acquire p50 / p99 (ms)", `${r3(wake.e2e.wake.p50_ms)} / ${r3(wake.e2e.wake.p99_ms)}`]);
    rows.push(["  (the waking Release's round trip p50 / p99, ms)", `${r3(wake.e2e.release_rtt.p50_ms)} / ${r3(wake.e2e.release_rtt.p99_ms)}`]);
    rows.push([
      "  (a Release round trip with nobody waiting, just before, p50 / p99, ms | wake p99 ratio to it)",
      `${r3(wake.e2e.release_before_rtt.p50_ms)} / ${r3(wake.e2e.release_before_rtt.p99_ms)} | ${summary.wake_p99_ratio}`,
    ]);
    rows.push(["  (bare echo round trip just before, p50 / p99, ms)", `${r3(wake.e2e.echo_rtt.p50_ms)} / ${r3(wake.e2e.echo_rtt.p99_ms)}`]);
    rows.push(["wake, in the engine p50 / p99 (µs)", `${r1(wake.engine.wake_us.p50)} / ${r1(wake.engine.wake_us.p99)}`]);
  }
  if (renew) {
    summary.renew_rps = Object.fromEntries(Object.entries(renew).map(([s, r]) => [`streams_${s}`, Math.round(r.renewals_per_sec)]));
    for (const [s, r] of Object.entries(renew)) {
      rows.push([`KeepAlive renewals/s over ${s} stream(s) (p99 ms)`, `${Math.round(r.renewals_per_sec)} (${r3(r.latency.p99_ms)})`]);
    }
  }
  if (scale) {
    summary.snapshot_p99_ratio = r3(scale.snapshot_p99_ratio);
    summary.scale_acquire_p99_ms = r3(scale.acquire_ms.p99);
    summary.scale_engine_acquire_p99_us = r1(scale.engine_acquire_us.p99);
    summary.heap_bytes_per_lease = scale.heap_bytes_per_lease;
    summary.snapshot_ms = { first_full: r1(scale.first_snapshot.export_ms + scale.first_snapshot.write_ms), steady_idle: r1(scale.steady_snapshot.export_ms + scale.steady_snapshot.write_ms), under_load_median: r1(scale.snapshot.total_ms.p50) };
    rows.push([`scale ${scale.keys} keys / ${scale.leases} leases: engine Acquire p50 / p99 (µs)`, `${r1(scale.engine_acquire_us.p50)} / ${r1(scale.engine_acquire_us.p99)}`]);
    rows.push(["  Acquire incl. journal, p50 / p99 (ms), idle", `${r3(scale.acquire_ms.p50)} / ${r3(scale.acquire_ms.p99)}`]);
    rows.push(["  Acquire incl. journal, p50 / p99 (ms), during snapshot", `${r3(scale.acquire_during_snapshot_ms.p50)} / ${r3(scale.acquire_during_snapshot_ms.p99)}`]);
    rows.push(["  event-loop wait + Acquire, no journal, p99 idle / during snapshot (ms)", `${r3(scale.loop_acquire_ms.p99)} / ${r3(scale.loop_acquire_during_snapshot_ms.p99)}`]);
    const paced = scale.paced;
    summary.snapshot_p99_ratio_paced = r3(paced.snapshot_p99_ratio);
    rows.push([
      `  paced at ${paced.cycles_per_sec} cycles/s (open loop): Acquire incl. journal p99 idle / during snapshot (ms)`,
      `${r3(paced.acquire_ms.p99)} / ${r3(paced.acquire_during_snapshot_ms.p99)}`,
    ]);
    rows.push([
      `  paced, event-loop wait + Acquire, no journal, p99 idle / during snapshot (ms)`,
      `${r3(paced.loop_acquire_ms.p99)} / ${r3(paced.loop_acquire_during_snapshot_ms.p99)}`,
    ]);
    const pauses = (g: GcPauses) => `${g.major} / ${r1(g.max_ms)}`;
    rows.push([
      "  GC: major GCs / longest pause (ms), idle | during snapshots | paced idle | paced during snapshots",
      `${pauses(scale.gc.idle)} | ${pauses(scale.gc.during_snapshots)} | ${pauses(scale.gc.paced_idle)} | ${pauses(scale.gc.paced_during_snapshots)}`,
    ]);
    rows.push(["  heap per live lease / per ended lease (bytes)", `${scale.heap_bytes_per_lease} / ${scale.heap_bytes_per_ended_lease}`]);
    rows.push(["  snapshot export + write (ms): first (full)", `${r1(scale.first_snapshot.export_ms)} + ${r1(scale.first_snapshot.write_ms)}`]);
    rows.push(["  snapshot export + write (ms): steady, idle", `${r1(scale.steady_snapshot.export_ms)} + ${r1(scale.steady_snapshot.write_ms)}`]);
    rows.push(["  snapshot export + write (ms): steady, under probes, median", `${r1(scale.snapshot.export_ms.p50)} + ${r1(scale.snapshot.write_ms.p50)}`]);
    rows.push(["  least_busy engine Acquire p50 / p99 (µs)", `${r1(scale.least_busy_engine_acquire_us.p50)} / ${r1(scale.least_busy_engine_acquire_us.p99)}`]);
  }
  if (goodput) {
    const pct = (r: GoodputResult) => ({
      goodput_pct: r1((100 * r.success_per_sec) / goodput.setup.aggregate_rps),
      failed_pct: r3((100 * r.failed) / Math.max(1, r.requests)),
    });
    summary.goodput_by_scenario = Object.fromEntries(Object.entries(goodput.scenarios).map(([s, r]) => [s, pct(r)]));
    const km = goodput.scenarios.keymesh;
    if (km) Object.assign(summary, pct(km));
    for (const [s, r] of Object.entries(goodput.scenarios)) {
      const p = pct(r);
      rows.push([
        `goodput ${s}: ok/s | goodput % | failed % | 429s | p99 ms`,
        `${r1(r.success_per_sec)} | ${p.goodput_pct} | ${p.failed_pct} | ${r.rate_limited_answers} | ${r1(r.latency.p99_ms)}`,
      ]);
    }
  }

  const target = (value: unknown, ok: (v: number) => boolean, text: string): Target =>
    typeof value === "number" ? { value, target: text, met: ok(value) } : { value: null, target: text, met: null };
  summary.targets = {
    ratio: target(summary.ratio, (v) => v >= 0.8, ">= 0.80"),
    acquire_p99_ratio: target(summary.acquire_p99_ratio, (v) => v <= 1.25, "<= 1.25"),
    wake_p99_ratio: target(summary.wake_p99_ratio, (v) => v <= 1.5, "<= 1.5"),
    vs_etcd_ratio_min: target(summary.vs_etcd_ratio_min, (v) => v >= 1, ">= 1.0"),
    vs_etcd_cpu_ratio_max_limited_keys: target(summary.vs_etcd_cpu_ratio_max_limited_keys, (v) => v <= 1, "<= 1.0"),
    snapshot_p99_ratio: target(summary.snapshot_p99_ratio, (v) => v < 2, "< 2"),
    goodput_pct: target(summary.goodput_pct, (v) => v >= 95, ">= 95"),
    failed_pct: target(summary.failed_pct, (v) => v < 1, "< 1"),
  };

  // A heading (a row without a value) does not widen the column.
  const width = Math.max(...rows.filter(([, v]) => v).map(([k]) => k.length));
  console.log("");
  for (const [k, v] of rows) console.log(v ? `${k.padEnd(width)}  ${v}` : k);
  console.log("");
  for (const [name, t] of Object.entries(summary.targets as Record<string, Target>)) {
    const mark = t.met === null ? "n/a " : t.met ? "met " : "MISS";
    console.log(`${mark} ${name.padEnd(34)} ${String(t.value ?? "-").padStart(10)}  target ${t.target}`);
  }
  return summary;
}
