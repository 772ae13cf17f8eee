// The clients' own cost (issue 22 items 3 and 4): each client's CPU per scoped lease against two bare unary
// calls of the same client stack, in a process of its own (TypeScript: bench/clients/ts-driver.ts; Go: the
// load generator's client-cpu mode), and the rate-limited goodput scenario through the TypeScript client
// with its CPU per request. Figures only.
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Strategy } from "../../server/src/gen/keymesh/v1/admin_pb.js";
import { startFakeProvider } from "../../test/fake-provider/provider.js";
import { type GoodputResult, runJsonProcess, runLoadgen } from "./loadgen.js";
import { benchKeys, type BenchServer, createPool } from "./server.js";

interface CpuRounds {
  n: number;
  rounds: { scoped_us: number; bare_us: number }[];
}

interface ClientCpu {
  cpu_per_scoped_lease_us: number;
  cpu_per_bare_pair_us: number;
  /** Median of the rounds' scoped ÷ bare (target ≤ 1.2). */
  ratio: number;
  leases: number;
  pairs: number;
  rounds: CpuRounds["rounds"];
  load_avg: number[];
}

interface ClientGoodput extends GoodputResult {
  goodput_pct: number;
  failed_pct: number;
  client_cpu_us_per_request: number;
  provider_429s: number;
  load_avg: number[];
}

export type GoodputScenario = ClientBenchOptions["goodput"];

/** The goodput section's scenario for one client stack: its own least_busy pool of fake keys and a fresh fake provider. */
export async function goodputTarget(bs: BenchServer, g: GoodputScenario, stack: string) {
  const keys = Array.from({ length: g.keys }, (_, i) => `sk-fake-goodput-${stack}-${i}-0123456789`);
  const pool = `goodput-${stack}-client`;
  await createPool(bs.admin, { name: pool, keys: keys.map((secret, i) => ({ id: `${stack}${i}`, secret })), strategy: Strategy.LEAST_BUSY, defaultCooldownMs: 1000 });
  const provider = await startFakeProvider({ port: 0, keys, limits: { requestsPerWindow: g.perKeyPerWindow, windowMs: g.windowMs }, latencyMs: g.latencyMs });
  return { pool, provider, aggregate: (g.perKeyPerWindow * 1000 * g.keys) / g.windowMs };
}

export interface ClientBenchOptions {
  quick: boolean;
  goodputSec: number;
  goodputWarmupSec: number;
  /** The goodput section's scenario (bench/run.ts), run here through the TypeScript client. */
  goodput: { keys: number; perKeyPerWindow: number; windowMs: number; latencyMs: number; budgetMs: number };
}

export interface ClientFigures {
  clients: Record<string, ClientCpu>;
  goodput_clients: Record<string, ClientGoodput>;
}

const root = fileURLToPath(new URL("../../", import.meta.url));
const tsDriver = path.join(root, "bench/clients/ts-driver.ts");

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const r2 = (x: number) => Math.round(x * 100) / 100;
const loadAvg = () => os.loadavg().map(r2);

function cpuFigures(r: CpuRounds): ClientCpu {
  return {
    cpu_per_scoped_lease_us: r2(median(r.rounds.map((x) => x.scoped_us))),
    cpu_per_bare_pair_us: r2(median(r.rounds.map((x) => x.bare_us))),
    ratio: r2(median(r.rounds.map((x) => x.scoped_us / x.bare_us))),
    leases: r.n * r.rounds.length,
    pairs: r.n * r.rounds.length,
    rounds: r.rounds,
    load_avg: loadAvg(),
  };
}

/** Runs the TypeScript driver; `limitMs` bounds it (killed past it). */
function runTsDriver<T>(args: Record<string, string | number>, limitMs: number): Promise<T> {
  const flags = Object.entries(args).map(([k, v]) => `--${k}=${v}`);
  return runJsonProcess<T>(`ts-driver ${flags.join(" ")}`, process.execPath, ["--import", "tsx", tsDriver, ...flags], limitMs, root);
}

export async function clientBench(bs: BenchServer, opts: ClientBenchOptions): Promise<ClientFigures> {
  const pool = "clients-cpu";
  await createPool(bs.admin, { name: pool, keys: benchKeys(8, "c") });
  // Short rounds, many of them, the order alternating: the machine's load drifts less within a pair of them.
  const ops = opts.quick ? 200 : 500;
  const rounds = opts.quick ? 6 : 20;
  const limitMs = (opts.quick ? 60 : 300) * 1000;
  const clients: Record<string, ClientCpu> = {};

  process.stderr.write("  TypeScript client: scoped lease vs bare pair … ");
  clients.ts = cpuFigures(await runTsDriver<CpuRounds>({ mode: "cpu", addr: bs.addr, pool, n: ops, rounds, warmup: Math.round(ops / 4) }, limitMs));
  process.stderr.write(`${clients.ts.cpu_per_scoped_lease_us} vs ${clients.ts.cpu_per_bare_pair_us} µs CPU, ratio ${clients.ts.ratio}\n`);

  process.stderr.write("  Go client: scoped lease vs bare pair … ");
  clients.go = cpuFigures(await runLoadgen<CpuRounds>({ mode: "client-cpu", addr: bs.addr, pool, ops, rounds }, limitMs));
  process.stderr.write(`${clients.go.cpu_per_scoped_lease_us} vs ${clients.go.cpu_per_bare_pair_us} µs CPU, ratio ${clients.go.ratio}\n`);

  return { clients, goodput_clients: { ts: await tsGoodput(bs, opts) } };
}

async function tsGoodput(bs: BenchServer, opts: ClientBenchOptions): Promise<ClientGoodput> {
  const g = opts.goodput;
  const { pool, aggregate, provider } = await goodputTarget(bs, g, "ts");
  try {
    process.stderr.write("  goodput through the TypeScript client … ");
    const r = await runTsDriver<GoodputResult & { client_cpu_us_per_request: number; event_loop_delay_p99_ms: number }>(
      { mode: "goodput", addr: bs.addr, pool, provider: provider.url, rate: aggregate, seconds: opts.goodputSec, "warmup-seconds": opts.goodputWarmupSec, "budget-ms": g.budgetMs },
      (opts.goodputSec + opts.goodputWarmupSec + g.budgetMs / 1000 + 60) * 1000,
    );
    const out: ClientGoodput = {
      ...r,
      goodput_pct: r2((100 * r.success_per_sec) / aggregate),
      failed_pct: Math.round((100_000 * r.failed) / Math.max(1, r.requests)) / 1000,
      client_cpu_us_per_request: r2(r.client_cpu_us_per_request),
      provider_429s: Object.values(provider.stats().keys).reduce((n, k) => n + k.rateLimited, 0),
      load_avg: loadAvg(),
    };
    process.stderr.write(
      `${out.goodput_pct}% of the limit, ${r.failed}/${r.requests} failed, ${out.client_cpu_us_per_request} µs client CPU/request, event loop delay p99 ${r2(r.event_loop_delay_p99_ms)} ms\n`,
    );
    return out;
  } finally {
    await provider.close();
  }
}

/** Adds a client section's figures to the bench result beside other clients' (another section may fill the same keys). */
export function addClientFigures(result: Record<string, unknown>, figures: { clients: object; goodput_clients: object } | undefined): void {
  if (!figures) return;
  for (const key of ["clients", "goodput_clients"] as const) result[key] = { ...(result[key] as object | undefined), ...figures[key] };
}
