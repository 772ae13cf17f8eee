// Profiling aid: one server, one load generator run, nothing else, so `node --cpu-prof` sees only the
// hot path. scripts/bench.sh --profile=cycle|floor|echo|renew[:concurrency[:seconds[:postgres|embedded[:wait]]]] runs it and summarizes
// the profile with bench/cpuprofile.ts.
import { rpcsPerOp, runLoadgen } from "./lib/loadgen.js";
import { createPool, startBenchServer } from "./lib/server.js";

const [mode = "cycle", c = "64", seconds = "8", db = "postgres", wait = "1s"] = process.argv.slice(2);
const bs = await startBenchServer({ postgresUrl: db === "embedded" ? undefined : process.env.DATABASE_URL });
try {
  await createPool(bs.admin, { name: "bench", keys: Array.from({ length: 8 }, (_, i) => ({ id: `b${i}`, secret: `sk-bench-b${i}-0123456789` })) });
  const args: Record<string, string | number> =
    mode === "renew"
      ? { mode, addr: bs.addr, pool: "bench", streams: Number(c), window: Math.max(1, Math.floor(64 / Number(c))), leases: 64, duration: `${seconds}s`, warmup: "1s" }
      : { mode, addr: bs.addr, pool: "bench", c, duration: `${seconds}s`, warmup: "1s", wait };
  const cpu0 = process.cpuUsage();
  const r = await runLoadgen<Record<string, unknown>>(args, (Number(seconds) + 60) * 1000);
  const cpu = process.cpuUsage(cpu0);
  const rpcs = Number(r.ops_all ?? 0) * rpcsPerOp(mode);
  console.log(JSON.stringify({ ...r, server_cpu_us_per_rpc: rpcs > 0 ? (cpu.user + cpu.system) / rpcs : undefined }));
} finally {
  await bs.stop();
}
