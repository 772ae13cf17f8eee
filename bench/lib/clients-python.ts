// The Python client's own cost (issue 22 items 3 and 4), measured by bench/python/clients_bench.py in a
// process of its own with the project's venv (scripts/bench.sh installs the client there): CPU per scoped
// lease against two bare unary calls of grpcio, sync and asyncio, and the rate-limited goodput scenario
// through AsyncClient.call_with_retry with its CPU per request. Figures only.
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { goodputTarget, type GoodputScenario } from "./clients.js";
import { runJsonProcess } from "./loadgen.js";
import { benchKeys, type BenchServer, createPool } from "./server.js";

interface PythonCpu {
  cpu_per_scoped_lease_us: number;
  cpu_per_bare_pair_us: number;
  /** Median of the rounds' scoped ÷ bare (target ≤ 1.2). */
  ratio: number;
  ratio_range: [number, number];
  rounds: { scoped_us: number; bare_us: number }[];
  leases: number;
  pairs: number;
  load_avg: number[];
}

interface PythonGoodput {
  offered_rps: number;
  seconds: number;
  requests: number;
  succeeded: number;
  failed: number;
  failed_by: Record<string, number>;
  provider_calls: number;
  rate_limited_answers: number;
  success_per_sec: number;
  client_cpu_us_per_request: number;
  goodput_pct: number;
  failed_pct: number;
  provider_429s: number;
  load_avg: number[];
}

export interface PythonClientOptions {
  quick: boolean;
  goodputSec: number;
  goodputWarmupSec: number;
  /** The goodput section's scenario (bench/run.ts), run here through the asyncio client. */
  goodput: GoodputScenario;
}

const root = fileURLToPath(new URL("../../", import.meta.url));
const driver = path.join(root, "bench/python/clients_bench.py");
const r2 = (x: number) => Math.round(x * 100) / 100;

function python(): string {
  const bin = process.env.KEYMESH_BENCH_PYTHON;
  if (!bin) throw new Error("KEYMESH_BENCH_PYTHON is not set: run the bench with `npm run bench` (scripts/bench.sh installs the Python client in the venv)");
  return bin;
}

/** Runs the driver with `args`; killed past `limitMs`. */
function runDriver<T>(args: (string | number)[], limitMs: number): Promise<T> {
  return runJsonProcess<T>(`clients_bench.py ${args.join(" ")}`, python(), [driver, ...args.map(String)], limitMs, root);
}

export interface PythonClientFigures {
  clients: Record<string, PythonCpu>;
  goodput_clients: Record<string, PythonGoodput>;
}

export async function pythonClientBench(bs: BenchServer, opts: PythonClientOptions): Promise<PythonClientFigures> {
  const pool = "clients-cpu-python";
  await createPool(bs.admin, { name: pool, keys: benchKeys(8, "p") });
  const ops = opts.quick ? 300 : 2000;
  const rounds = opts.quick ? 3 : 5;
  const limitMs = (opts.quick ? 60 : 300) * 1000;
  const clients: Record<string, PythonCpu> = {};
  for (const stack of ["sync", "asyncio"] as const) {
    process.stderr.write(`  Python client (${stack}): scoped lease vs bare pair … `);
    const r = await runDriver<PythonCpu>(["overhead", "--addr", bs.addr, "--pool", pool, "--stack", stack, "--ops", ops, "--rounds", rounds, "--warmup", Math.round(ops / 4)], limitMs);
    clients[`python_${stack}`] = r;
    process.stderr.write(`${r.cpu_per_scoped_lease_us} vs ${r.cpu_per_bare_pair_us} µs CPU, ratio ${r.ratio}\n`);
  }
  return { clients, goodput_clients: { python_asyncio: await pythonGoodput(bs, opts) } };
}

async function pythonGoodput(bs: BenchServer, opts: PythonClientOptions): Promise<PythonGoodput> {
  const g = opts.goodput;
  const { pool, aggregate, provider } = await goodputTarget(bs, g, "py");
  try {
    process.stderr.write("  goodput through the Python (asyncio) client … ");
    const r = await runDriver<Omit<PythonGoodput, "provider_429s">>(
      ["goodput", "--addr", bs.addr, "--pool", pool, "--provider", provider.url, "--rate", aggregate, "--seconds", opts.goodputSec, "--warmup-seconds", opts.goodputWarmupSec, "--budget", g.budgetMs / 1000],
      (opts.goodputSec + opts.goodputWarmupSec + g.budgetMs / 1000 + 60) * 1000,
    );
    const out: PythonGoodput = {
      ...r,
      // As the goodput section counts it: successes per second against the provider's aggregate limit.
      goodput_pct: r2((100 * r.success_per_sec) / aggregate),
      provider_429s: Object.values(provider.stats().keys).reduce((n, k) => n + k.rateLimited, 0),
      load_avg: os.loadavg().map(r2),
    };
    process.stderr.write(`${out.goodput_pct}% of the limit, ${r.failed}/${r.requests} failed, ${out.client_cpu_us_per_request} µs client CPU/request\n`);
    return out;
  } finally {
    await provider.close();
  }
}
