// KeyMesh benchmark (issue 7): transport ceiling vs the Acquire+Release hot path, latency, wake-up,
// KeepAlive renewals, scale (10k keys, 100k leases, snapshots) and goodput against a rate-limited
// fake provider. Figures only, never assertions. Run it with `npm run bench` (scripts/bench.sh).
import os from "node:os";
import { execFileSync } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Strategy } from "../server/src/gen/keymesh/v1/admin_pb.js";
import { startFakeProvider } from "../test/fake-provider/provider.js";
import { engineWake, scale } from "./lib/inprocess.js";
import { runLoadgen, type GoodputResult, type RenewResult, type UnaryResult, type WakeResult } from "./lib/loadgen.js";
import { createPool, startBenchServer, type BenchServer } from "./lib/server.js";
import { printReport } from "./lib/report.js";

const quick = process.argv.includes("--quick");
const only = process.argv.find((a) => a.startsWith("--only="))?.slice("--only=".length).split(",");
const postgresUrl = process.env.DATABASE_URL;
if (!postgresUrl) throw new Error("DATABASE_URL is not set: scripts/bench.sh starts Postgres (scripts/pg.sh) and sets it");

const P = quick
  ? { unarySec: 2, warmupSec: 0.5, embeddedSec: 2, renewSec: 2, wakeSamples: 300, engineWakeSamples: 5000, scaleKeys: 1000, scaleLeases: 10_000, scaleProbes: 2000, scaleSnapshots: 2, goodputSec: 4, goodputWarmupSec: 1 }
  : { unarySec: 10, warmupSec: 2, embeddedSec: 5, renewSec: 8, wakeSamples: 2000, engineWakeSamples: 20_000, scaleKeys: 10_000, scaleLeases: 100_000, scaleProbes: 20_000, scaleSnapshots: 3, goodputSec: 20, goodputWarmupSec: 2 };
const CONCURRENCY = [1, 16, 64];
const want = (part: string) => !only || only.includes(part);
const sec = (s: number) => `${Math.round(s * 1000)}ms`;
const limit = (s: number) => (s + 60) * 1000;

const benchKeys = (n: number, prefix: string) => Array.from({ length: n }, (_, i) => ({ id: `${prefix}${i}`, secret: `sk-bench-${prefix}${i}-0123456789` }));

async function unary(addr: string, mode: "echo" | "cycle", c: number, seconds = P.unarySec): Promise<UnaryResult> {
  process.stderr.write(`  ${mode} c=${c} … `);
  const r = await runLoadgen<UnaryResult>({ mode, addr, pool: "bench", c, duration: sec(seconds), warmup: sec(P.warmupSec) }, limit(seconds));
  process.stderr.write(`${Math.round(r.rps)} rpc/s${r.errors ? ` (${r.errors} errors: ${r.first_error})` : ""}\n`);
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
  return { echo, cycle };
}

async function embeddedCycle() {
  process.stderr.write("server on the embedded database (PGlite)\n");
  const bs = await startBenchServer({});
  try {
    await createPool(bs.admin, { name: "bench", keys: benchKeys(8, "b") });
    const out: Record<number, UnaryResult> = {};
    for (const c of [1, 64]) out[c] = await unary(bs.addr, "cycle", c, P.embeddedSec);
    return out;
  } finally {
    await bs.stop();
  }
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

async function goodput(bs: BenchServer) {
  const keys = Array.from({ length: GOODPUT.keys }, (_, i) => `sk-fake-goodput-${i}-0123456789`);
  const perKeyRps = (GOODPUT.perKeyPerWindow * 1000) / GOODPUT.windowMs;
  const aggregate = perKeyRps * GOODPUT.keys;
  const offered = aggregate;
  await createPool(bs.admin, {
    name: "goodput",
    keys: keys.map((secret, i) => ({ id: `g${i}`, secret })),
    strategy: Strategy.ROUND_ROBIN,
    defaultCooldownMs: 1000,
  });
  const out: Record<string, GoodputResult & { provider_429s: number }> = {};
  for (const scenario of ["one", "rr", "keymesh"] as const) {
    // A fresh provider per scenario: every run starts with full buckets.
    const provider = await startFakeProvider({ port: 0, keys, limits: { requestsPerWindow: GOODPUT.perKeyPerWindow, windowMs: GOODPUT.windowMs }, latencyMs: GOODPUT.latencyMs });
    try {
      process.stderr.write(`  goodput ${scenario} … `);
      const r = await runLoadgen<GoodputResult>(
        {
          mode: "goodput",
          scenario,
          addr: bs.addr,
          pool: "goodput",
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
      out[scenario] = { ...r, provider_429s: Object.values(stats.keys).reduce((n, k) => n + k.rateLimited, 0) };
      process.stderr.write(`${r.success_per_sec.toFixed(1)} ok/s, ${r.failed}/${r.requests} failed\n`);
    } finally {
      await provider.close();
    }
  }
  return { setup: { ...GOODPUT, per_key_rps: perKeyRps, aggregate_rps: aggregate, offered_rps: offered }, scenarios: out };
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
  const bs = await startBenchServer({ postgresUrl });
  try {
    if (want("hot")) result.hot = await hotPath(bs);
    if (want("renew")) result.renew = await renewals(bs);
    if (want("wake")) result.wake = await wake(bs);
    if (want("goodput")) result.goodput = await goodput(bs);
  } finally {
    await bs.stop();
  }
  if (want("embedded")) result.embedded_cycle = await embeddedCycle();
  if (want("scale")) {
    process.stderr.write(`scale: ${P.scaleKeys} keys, ${P.scaleLeases} live leases, real Postgres … `);
    const s = await scale({ postgresUrl: postgresUrl!, keys: P.scaleKeys, leases: P.scaleLeases, probes: P.scaleProbes, callers: 16, snapshots: P.scaleSnapshots });
    process.stderr.write(`done\n`);
    result.scale = s;
  }
  result.duration_seconds = (Date.now() - started) / 1000;

  const summary = printReport(result);
  const out = { ...summary, ...result };
  const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), "results");
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, only ? "partial.json.tmp" : "latest.json");
  await writeFile(file, `${JSON.stringify(out, null, 2)}\n`);
  process.stderr.write(`wrote ${path.relative(process.cwd(), file)}\n`);
}

await main();
