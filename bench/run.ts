// KeyMesh benchmark (issue 7): transport ceiling vs the Acquire+Release hot path, latency, wake-up,
// KeepAlive renewals, the lease cycle beside etcd's (issue 22), scale (10k keys, 100k leases,
// snapshots) and goodput against a rate-limited fake provider. Figures only, never assertions. Run it
// with `npm run bench` (scripts/bench.sh).
import os from "node:os";
import { execFileSync } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Strategy } from "../server/src/gen/keymesh/v1/admin_pb.js";
import { startFakeProvider } from "../test/fake-provider/provider.js";
import { engineWake, scale } from "./lib/inprocess.js";
import { rpcsPerOp, runLoadgen, type GoodputResult, type RenewResult, type UnaryResult, type WakeResult } from "./lib/loadgen.js";
import { budgets } from "./lib/budgets.js";
import { benchKeys, createPool, startBenchServer, type BenchServer } from "./lib/server.js";
import { printReport } from "./lib/report.js";
import { ends } from "./lib/ends.js";
import { vsEtcd } from "./lib/vs-etcd.js";
import { addClientFigures, clientBench } from "./lib/clients.js";
import { pythonClientBench } from "./lib/clients-python.js";
import { replicasBench } from "./lib/replicas.js";

const quick = process.argv.includes("--quick");
const only = process.argv.find((a) => a.startsWith("--only="))?.slice("--only=".length).split(",");
/** --etcd-cells=limited,postgres: only the etcd section's cells matching every word; --etcd-pairs=N: pairs per cell. */
const etcdCells = process.argv.find((a) => a.startsWith("--etcd-cells="))?.slice("--etcd-cells=".length).split(",");
const etcdPairs = Number(process.argv.find((a) => a.startsWith("--etcd-pairs="))?.slice("--etcd-pairs=".length)) || undefined;
const postgresUrl = process.env.DATABASE_URL;
if (!postgresUrl) throw new Error("DATABASE_URL is not set: scripts/bench.sh starts Postgres (scripts/pg.sh) and sets it");

const P = quick
  ? { unarySec: 1, warmupSec: 0.3, etcdSec: 0.5, etcdWarmupSec: 0.2, etcdPairs: 1, renewSec: 1, wakeSamples: 300, engineWakeSamples: 5000, scaleKeys: 1000, scaleLeases: 10_000, scaleProbes: 2000, scaleSnapshots: 2, scaleEnded: 20_000, goodputSec: 1, goodputWarmupSec: 0.5, endsSec: 1, endsRuns: 1 }
  : { unarySec: 10, warmupSec: 2, etcdSec: 3, etcdWarmupSec: 1, etcdPairs: 3, renewSec: 8, wakeSamples: 2000, engineWakeSamples: 20_000, scaleKeys: 10_000, scaleLeases: 100_000, scaleProbes: 20_000, scaleSnapshots: 3, scaleEnded: 200_000, goodputSec: 20, goodputWarmupSec: 2, endsSec: 3, endsRuns: 3 };
const CONCURRENCY = [1, 16, 64];
const want = (part: string) => !only || only.includes(part);
const sec = (s: number) => `${Math.round(s * 1000)}ms`;
const limit = (s: number) => (s + 60) * 1000;

/** Keys with a concurrency limit never reached here: each grant is journaled before Acquire answers. */
const LIMITED = 10_000;
/** Scale probes paced at about the Acquire+Release cycles a second the server serves over gRPC here (hot section). */
const SCALE_PACED_RATE = 4000;

async function unary(addr: string, mode: UnaryResult["mode"], c: number, seconds = P.unarySec, rate = 0, pool = "bench"): Promise<UnaryResult> {
  process.stderr.write(`  ${mode} c=${c}${rate ? ` paced at ${rate}/s` : ""}${pool === "bench" ? "" : ` (${pool})`} … `);
  // The server runs in this process, idle but for it while the load generator runs.
  const cpu0 = process.cpuUsage();
  const r = await runLoadgen<UnaryResult>({ mode, addr, pool, c, duration: sec(seconds), warmup: sec(P.warmupSec), rate }, limit(seconds));
  const cpu = process.cpuUsage(cpu0);
  r.server_cpu_us_per_rpc = (cpu.user + cpu.system) / (r.ops_all * rpcsPerOp(mode));
  process.stderr.write(`${Math.round(r.rps)} rpc/s, server ${Math.round(r.server_cpu_us_per_rpc)} µs CPU/rpc${r.errors ? ` (${r.errors} errors: ${r.first_error})` : ""}\n`);
  return r;
}

async function hotPath(bs: BenchServer) {
  await createPool(bs.admin, { name: "bench", keys: benchKeys(8, "b") });
  const echo: Record<number, UnaryResult> = {};
  const cycle: Record<number, UnaryResult> = {};
  for (const c of CONCURRENCY) {
    echo[c] = await unary(bs.addr, "echo", c);
    cycle[c] = await unary(bs.addr, "cycle", c);
  }
  // The same cycle's messages through the same adapter with KeyMesh's own work left out: the floor of `ratio`.
  const floor = await unary(bs.addr, "floor", 64);
  // Back-to-back callers saturate the server, so their latency is queueing (Little's law); 64 callers
  // that pace themselves at a third of the measured capacity show the latency of a server with headroom.
  const pacedRate = Math.max(100, Math.round(cycle[64]!.ops_per_sec / 3));
  const paced = await unary(bs.addr, "cycle", 64, P.unarySec, pacedRate);
  // The bare echo at the same RPC rate (two RPCs a cycle): the latency floor of a server with that headroom.
  const pacedEcho = await unary(bs.addr, "echo", 64, P.unarySec, 2 * pacedRate);
  // The same cycle on keys with a concurrency limit: Acquire then waits for the grant journal's commit.
  await createPool(bs.admin, { name: "bench-limited", keys: benchKeys(8, "l", LIMITED) });
  const limited: Record<number, UnaryResult> = {};
  for (const c of [1, 64]) limited[c] = await unary(bs.addr, "cycle", c, P.unarySec, 0, "bench-limited");
  return { echo, cycle, floor, paced: { ...paced, paced_cycles_per_sec: pacedRate }, pacedEcho, limited };
}

async function renewals(bs: BenchServer) {
  await createPool(bs.admin, { name: "renew", keys: benchKeys(4, "r") });
  const out: Record<number, RenewResult> = {};
  // The same 64 renewals in flight either way, so the figures compare stream counts, not queue depth.
  for (const [streams, window] of [[1, 64], [16, 4]] as const) {
    process.stderr.write(`  KeepAlive over ${streams} stream(s) … `);
    out[streams] = await runLoadgen<RenewResult>(
      { mode: "renew", addr: bs.addr, pool: "renew", streams, window, leases: 64, duration: sec(P.renewSec), warmup: sec(P.warmupSec) },
      limit(P.renewSec),
    );
    process.stderr.write(`${Math.round(out[streams]!.renewals_per_sec)} renewals/s\n`);
  }
  return out;
}

async function wake(bs: BenchServer) {
  await createPool(bs.admin, { name: "wake", keys: [{ id: "w0", secret: "sk-bench-wake-0123456789", maxConcurrency: 1 }] });
  process.stderr.write("  wake-up over loopback … ");
  const e2e = await runLoadgen<WakeResult>({ mode: "wake", addr: bs.addr, pool: "wake", samples: P.wakeSamples }, limit(30));
  process.stderr.write(`p99 ${e2e.wake.p99_ms.toFixed(3)} ms\n  wake-up in the engine … `);
  const engine = await engineWake(P.engineWakeSamples);
  process.stderr.write(`p99 ${engine.wake_us.p99.toFixed(1)} µs\n`);
  return { e2e, engine };
}

const GOODPUT = { keys: 4, perKeyPerWindow: 5, windowMs: 100, latencyMs: 20, budgetMs: 5000 };

// (a) one key, (b) client-side round robin without KeyMesh, (c) KeyMesh through the Go helper's Do on a
// least_busy pool (the headline), and two diagnostics: the same on a round_robin pool, and the raw
// lease RPCs with no client backoff (separates the server's key choice from the helper's retry policy).
const GOODPUT_SCENARIOS = [
  { name: "one", scenario: "one" },
  { name: "rr", scenario: "rr" },
  { name: "keymesh", scenario: "keymesh", strategy: Strategy.LEAST_BUSY },
  { name: "keymesh_round_robin", scenario: "keymesh", strategy: Strategy.ROUND_ROBIN },
  { name: "keymesh_raw_rpcs", scenario: "keymesh-rpc", strategy: Strategy.LEAST_BUSY },
] as const;

async function goodput(bs: BenchServer) {
  const keys = Array.from({ length: GOODPUT.keys }, (_, i) => `sk-fake-goodput-${i}-0123456789`);
  const perKeyRps = (GOODPUT.perKeyPerWindow * 1000) / GOODPUT.windowMs;
  const aggregate = perKeyRps * GOODPUT.keys;
  // At the aggregate limit: above one key's limit, and the only load at which >= 95% of the limit is
  // reachable without turning the excess into failures.
  const offered = aggregate;
  const out: Record<string, GoodputResult & { provider_429s: number; load_avg: number[] }> = {};
  for (const sc of GOODPUT_SCENARIOS) {
    // A fresh pool and provider per scenario: every run starts with full buckets and no cooldowns.
    const pool = "strategy" in sc ? `goodput-${sc.name.replaceAll("_", "-")}` : "";
    if ("strategy" in sc) {
      await createPool(bs.admin, { name: pool, keys: keys.map((secret, i) => ({ id: `g${i}`, secret })), strategy: sc.strategy, defaultCooldownMs: 1000 });
    }
    const provider = await startFakeProvider({ port: 0, keys, limits: { requestsPerWindow: GOODPUT.perKeyPerWindow, windowMs: GOODPUT.windowMs }, latencyMs: GOODPUT.latencyMs });
    try {
      process.stderr.write(`  goodput ${sc.name} … `);
      const r = await runLoadgen<GoodputResult>(
        {
          mode: "goodput",
          scenario: sc.scenario,
          addr: bs.addr,
          pool: pool || "none",
          provider: provider.url,
          keys: keys.join(","),
          rate: offered,
          duration: sec(P.goodputSec),
          warmup: sec(P.goodputWarmupSec),
          budget: `${GOODPUT.budgetMs}ms`,
        },
        limit(P.goodputSec + P.goodputWarmupSec + GOODPUT.budgetMs / 1000),
      );
      const stats = provider.stats();
      out[sc.name] = { ...r, provider_429s: Object.values(stats.keys).reduce((n, k) => n + k.rateLimited, 0), load_avg: os.loadavg() };
      process.stderr.write(`${r.success_per_sec.toFixed(1)} ok/s, ${r.failed}/${r.requests} failed, ${r.rate_limited_answers} 429s\n`);
    } finally {
      await provider.close();
    }
  }
  return {
    setup: { ...GOODPUT, per_key_rps: perKeyRps, aggregate_rps: aggregate, offered_rps: offered, arrivals: "poisson", headline_pool_strategy: "least_busy" },
    scenarios: out,
  };
}

function goVersion(): string {
  try {
    return execFileSync("go", ["version"], { encoding: "utf8" }).trim();
  } catch {
    return "unknown";
  }
}

async function main() {
  const started = Date.now();
  const result: Record<string, unknown> = {
    generated_at: new Date().toISOString(),
    mode: quick ? "quick" : "full",
    machine: { cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model, node: process.version, go: goVersion(), platform: `${os.type()} ${os.release()}` },
  };

  process.stderr.write(`KeyMesh bench (${quick ? "quick" : "full"})\nserver on Postgres\n`);
  // Other processes on the machine skew every figure: each section records the load averages around it.
  const sections: Record<string, { seconds: number; load_avg_before: number[]; load_avg_after: number[] }> = {};
  const section = async <T>(name: string, run: () => Promise<T>): Promise<T | undefined> => {
    if (!want(name)) return undefined;
    const t0 = Date.now();
    const before = os.loadavg().map((l) => Math.round(l * 100) / 100);
    const r = await run();
    sections[name] = { seconds: (Date.now() - t0) / 1000, load_avg_before: before, load_avg_after: os.loadavg().map((l) => Math.round(l * 100) / 100) };
    return r;
  };
  const bs = await startBenchServer({ postgresUrl });
  try {
    result.hot = await section("hot", () => hotPath(bs));
    addClientFigures(result, await section("clients-python", () => pythonClientBench(bs, { quick, goodputSec: P.goodputSec, goodputWarmupSec: P.goodputWarmupSec, goodput: GOODPUT })));
    result.renew = await section("renew", () => renewals(bs));
    result.wake = await section("wake", () => wake(bs));
    result.goodput = await section("goodput", () => goodput(bs));
    addClientFigures(result, await section("clients", () => clientBench(bs, { quick, goodputSec: P.goodputSec, goodputWarmupSec: P.goodputWarmupSec, goodput: GOODPUT })));
    result.budgets = await section("budgets", () => budgets(bs, { ...(quick ? { seconds: 5, warmupSeconds: 1 } : { seconds: 30, warmupSeconds: 2 }), postgresUrl: postgresUrl! }));
  } finally {
    await bs.stop();
  }
  const etcd = await section("etcd", () => {
    const etcdAddr = process.env.KEYMESH_BENCH_ETCD;
    const etcdPid = Number(process.env.KEYMESH_BENCH_ETCD_PID);
    if (!etcdAddr || !etcdPid) throw new Error("KEYMESH_BENCH_ETCD is not set: scripts/bench.sh starts etcd (scripts/etcd.sh) and sets it");
    process.stderr.write("the lease cycle beside etcd's\n");
    return vsEtcd({ postgresUrl: postgresUrl!, etcdAddr, etcdPid, seconds: P.etcdSec, warmupSeconds: P.etcdWarmupSec, pairs: etcdPairs ?? P.etcdPairs, limitedMaxConcurrency: LIMITED, cellFilter: etcdCells });
  });
  if (etcd) {
    result.vs_etcd = etcd.cells;
    result.vs_etcd_setup = etcd.setup;
  }
  result.ends = await section("ends", () => {
    process.stderr.write("durable lease ends in the journal\n");
    return ends({ postgresUrl: postgresUrl!, seconds: P.endsSec, runs: P.endsRuns });
  });
  result.scale = await section("scale", async () => {
    process.stderr.write(`scale: ${P.scaleKeys} keys, ${P.scaleLeases} live leases, real Postgres … `);
    const s = await scale({ postgresUrl: postgresUrl!, keys: P.scaleKeys, leases: P.scaleLeases, probes: P.scaleProbes, callers: 16, pacedRate: SCALE_PACED_RATE, snapshots: P.scaleSnapshots, endedLeases: P.scaleEnded });
    process.stderr.write(`done\n`);
    return s;
  });
  result.replicas = await section("replicas", () => {
    process.stderr.write("replicas: several server processes on one Postgres\n");
    return replicasBench({ postgresUrl: postgresUrl!, failovers: quick ? 2 : 5, seconds: P.unarySec / 2, warmupSeconds: P.warmupSec, pools: 6 });
  });
  result.sections = sections;
  result.duration_seconds = (Date.now() - started) / 1000;

  const summary = printReport(result);
  const out = { ...summary, ...result };
  const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), "results");
  await mkdir(dir, { recursive: true });
  // latest.json holds the last full run, the one the README's figures come from: a quick or partial run leaves it be.
  const file = path.join(dir, only ? "partial.json.tmp" : quick ? "quick.json.tmp" : "latest.json");
  await writeFile(file, `${JSON.stringify(out, null, 2)}\n`);
  process.stderr.write(`wrote ${path.relative(process.cwd(), file)}\n`);
}

await main();
