// The TypeScript client under load, in a process of its own so its CPU time is its own (bench/lib/clients.ts
// runs it). Prints one JSON object on stdout.
//   cpu:     interleaved rounds of `n` scoped leases (withKey with an empty body) and `n` bare pairs (the
//            generated client's acquire + release with the same request), back to back, one caller;
//            the process's CPU per operation in each round.
//   goodput: Poisson arrivals against the fake provider, each request through callWithRetry within its
//            budget, the provider's answer reported with lease.report (bench/loadgen/goodput.go's
//            keymesh scenario, through this client).
import { hostname } from "node:os";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { createKeyMeshClient, type KeyMeshClient } from "../../clients/ts/src/index.js";
import { durationFromMs } from "../../clients/ts/src/duration.js";
import { seededRandom } from "../../test/support/random.js";
import { summarize } from "../lib/stats.js";

const { values: o } = parseArgs({
  options: {
    mode: { type: "string" },
    addr: { type: "string" },
    pool: { type: "string" },
    n: { type: "string", default: "1000" },
    rounds: { type: "string", default: "5" },
    warmup: { type: "string", default: "300" },
    provider: { type: "string" },
    rate: { type: "string" },
    seconds: { type: "string" },
    "warmup-seconds": { type: "string" },
    "budget-ms": { type: "string" },
    seed: { type: "string", default: "7" },
  },
});

const cpuUs = (since: NodeJS.CpuUsage) => {
  const c = process.cpuUsage(since);
  return c.user + c.system;
};

async function cpu(client: KeyMeshClient, pool: string) {
  const n = Number(o.n);
  // The request withKey sends: its default holder and wait.
  const request = { pool, holder: `${hostname()}/${process.pid}`, estimatedTokens: 0n, waitTimeout: durationFromMs(30_000) };
  const scoped = async () => {
    for (let i = 0; i < n; i++) await client.withKey(pool, async () => undefined);
  };
  const bare = async () => {
    for (let i = 0; i < n; i++) {
      const lease = await client.pool.acquire(request, { timeoutMs: 40_000 });
      await client.pool.release({ leaseId: lease.leaseId });
    }
  };
  for (let i = 0; i < Number(o.warmup); i++) {
    await client.withKey(pool, async () => undefined);
    const lease = await client.pool.acquire(request);
    await client.pool.release({ leaseId: lease.leaseId });
  }
  const rounds: { scoped_us: number; bare_us: number }[] = [];
  for (let r = 0; r < Number(o.rounds); r++) {
    const measured: Record<string, number> = {};
    // The order alternates, so a drift in the machine's load favours neither.
    for (const [name, run] of r % 2 === 0 ? ([["scoped", scoped], ["bare", bare]] as const) : ([["bare", bare], ["scoped", scoped]] as const)) {
      const t0 = process.cpuUsage();
      await run();
      measured[name] = cpuUs(t0) / n;
    }
    rounds.push({ scoped_us: measured.scoped!, bare_us: measured.bare! });
  }
  return { n, rounds };
}

const BODY = JSON.stringify({ model: "fake-model", messages: [{ role: "user", content: "say hello" }] });

async function goodput(client: KeyMeshClient, pool: string) {
  const rate = Number(o.rate);
  const budgetMs = Number(o["budget-ms"]);
  const url = `${o.provider}/v1/chat/completions`;
  const random = seededRandom(Number(o.seed));
  let providerCalls = 0;
  let rateLimited = 0;
  let succeeded = 0;
  let failed = 0;
  let counted = 0;
  const failedBy: Record<string, number> = {};
  const latencies: number[] = [];
  const start = performance.now();
  const measureFrom = start + Number(o["warmup-seconds"]) * 1000;
  const end = measureFrom + Number(o.seconds) * 1000;
  const cpu0 = process.cpuUsage();
  // How late this process's callbacks ran: a process starved of CPU by the machine shows it here first.
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();

  const request = async (arrival: number) => {
    const deadline = arrival + budgetMs;
    const remaining = Math.max(Math.floor(deadline - performance.now()), 1);
    try {
      await client.callWithRetry(
        pool,
        async (lease) => {
          providerCalls++;
          const res = await fetch(url, { method: "POST", headers: { authorization: `Bearer ${lease.key}`, "content-type": "application/json" }, body: BODY, signal: lease.signal });
          await res.arrayBuffer();
          if (res.status === 429) rateLimited++;
          lease.report(res.status, res.headers);
        },
        { budgetMs: remaining, waitMs: remaining, holder: "bench-goodput", signal: AbortSignal.timeout(remaining) },
      );
      const done = performance.now();
      if (done > deadline) throw new Error("budget_spent");
      succeeded++;
      latencies.push(done - arrival);
      if (done >= measureFrom && done <= end) counted++;
    } catch (e) {
      failed++;
      const cause = e instanceof Error ? (e.name === "TimeoutError" || e.message === "budget_spent" ? "budget_spent" : e.message.slice(0, 80)) : String(e);
      failedBy[cause] = (failedBy[cause] ?? 0) + 1;
    }
  };

  const inflight: Promise<void>[] = [];
  let requests = 0;
  for (let at = start; ; ) {
    at += (-Math.log(1 - random()) / rate) * 1000;
    if (at > end) break;
    const wait = at - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    requests++;
    inflight.push(request(at));
  }
  await Promise.all(inflight);
  const cpuTotal = cpuUs(cpu0);
  loopDelay.disable();
  const measured = Number(o.seconds);
  const lat = summarize(latencies);
  return {
    scenario: "keymesh_ts",
    offered_rps: rate,
    seconds: (end - start) / 1000,
    measured_seconds: measured,
    requests,
    succeeded,
    failed,
    failed_by: failedBy,
    provider_calls: providerCalls,
    rate_limited_answers: rateLimited,
    success_per_sec: counted / measured,
    latency: { count: lat.count, p50_ms: lat.p50, p90_ms: lat.p90, p99_ms: lat.p99, max_ms: lat.max, mean_ms: lat.mean },
    client_cpu_us_per_request: cpuTotal / Math.max(requests, 1),
    event_loop_delay_p99_ms: loopDelay.percentile(99) / 1e6,
  };
}

const client = createKeyMeshClient({ baseUrl: `http://${o.addr}` });
const out = o.mode === "cpu" ? await cpu(client, o.pool!) : o.mode === "goodput" ? await goodput(client, o.pool!) : undefined;
if (!out) throw new Error(`unknown --mode ${o.mode}`);
process.stdout.write(`${JSON.stringify(out)}\n`);
process.exit(0);
