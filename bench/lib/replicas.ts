// Replicas (issue 19): several server processes on one Postgres. Failover time after kill -9 and after
// SIGTERM of a pool's owner, the lease cycle through a non-owner (forwarded) beside the same cycle on the
// owner, and aggregate cycle throughput over many pools with 1, 2 and 3 replicas with each server's CPU
// per cycle. Figures only; the servers are real processes (test/support/process.ts).
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import postgres from "postgres";
import { PoolAdminService } from "../../server/src/gen/keymesh/v1/admin_pb.js";
import { KeyPoolService } from "../../server/src/gen/keymesh/v1/pool_pb.js";
import { scratchDatabase } from "../../test/support/database.js";
import { listening, spawnServer, type ServerProcess } from "../../test/support/process.js";
import { runLoadgen, type UnaryResult } from "./loadgen.js";
import { treeCpuUs } from "./proc.js";

export interface ReplicasOptions {
  postgresUrl: string;
  /** Failovers measured of each kind. */
  failovers: number;
  seconds: number;
  warmupSeconds: number;
  /** Pools the throughput runs spread over the replicas. */
  pools: number;
}

export interface Replica {
  p: ServerProcess;
  addr: string;
  httpPort: number;
  pool: Client<typeof KeyPoolService>;
  admin: Client<typeof PoolAdminService>;
}

const MASTER_KEY = Buffer.alloc(32, 19).toString("base64");
const FORWARDED = { headers: { "keymesh-forwarded": "1" } };
const sec = (s: number) => `${Math.round(s * 1000)}ms`;

export async function start(databaseUrl: string): Promise<Replica> {
  const p = spawnServer({ DATABASE_URL: databaseUrl, KEYMESH_MASTER_KEY: MASTER_KEY, KEYMESH_LOG_LEVEL: "info" });
  const { grpcPort, httpPort } = await listening(p);
  const addr = `127.0.0.1:${grpcPort}`;
  const transport = createGrpcTransport({ baseUrl: `http://${addr}` });
  return { p, addr, httpPort, pool: createClient(KeyPoolService, transport), admin: createClient(PoolAdminService, transport) };
}

export async function stop(replicas: Replica[]): Promise<void> {
  for (const r of replicas) {
    if (r.p.child.exitCode === null && r.p.child.signalCode === null) r.p.child.kill("SIGKILL");
    await r.p.exited;
  }
}

export async function until<T>(fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error("replicas bench: condition not reached");
    await new Promise((r) => setTimeout(r, 10));
  }
}

export async function ownerOf(sql: postgres.Sql, pool: string): Promise<string | undefined> {
  const [row] = await sql<{ address: string }[]>`
    select r.address from pool_owners o join replicas r on r.id = o.owner where o.pool = ${pool} and o.expires_at > now()`;
  return row?.address;
}

/**
 * The pools' owners once placement has settled (a pool starts on the replica that created it and moves to the one
 * it hashes to): the same on two looks a renewal period and a half apart.
 */
export async function settled(sql: postgres.Sql, pools: string[]): Promise<string[]> {
  return until(async () => {
    const first = await Promise.all(pools.map((p) => ownerOf(sql, p)));
    await new Promise((r) => setTimeout(r, 1500));
    const second = await Promise.all(pools.map((p) => ownerOf(sql, p)));
    return first.every((o, i) => o !== undefined && o === second[i]) ? (second as string[]) : undefined;
  });
}

/** One failover: two fresh replicas, a pool with one limited key, the owner stopped with `signal`; ms until the survivor serves it. */
async function failover(databaseUrl: string, sql: postgres.Sql, signal: "SIGKILL" | "SIGTERM", n: number): Promise<number> {
  const replicas = [await start(databaseUrl), await start(databaseUrl)];
  try {
    const name = `failover-${signal.toLowerCase()}-${n}`;
    await replicas[0]!.admin.createPool({ pool: { name } });
    await until(async () => (await replicas[0]!.admin.addKey({ pool: name, key: { id: "k", maxConcurrency: 1 }, secret: `sk-bench-failover-${n}-0123456789` })) && true);
    // The pool on the replica it hashes to, so the hand-over after creation is not measured.
    const [owner] = await settled(sql, [name]);
    const [victim, survivor] = owner === replicas[0]!.addr ? [replicas[0]!, replicas[1]!] : [replicas[1]!, replicas[0]!];
    const t0 = performance.now();
    victim.p.child.kill(signal);
    await until(async () => {
      try {
        const lease = await survivor.pool.acquire({ pool: name, leaseTtl: durationFromMs(60_000) }, FORWARDED);
        await survivor.pool.release({ leaseId: lease.leaseId });
        return true;
      } catch (e) {
        if (ConnectError.from(e).code === Code.Unavailable) return undefined;
        throw e;
      }
    });
    return performance.now() - t0;
  } finally {
    await stop(replicas);
  }
}

async function cycle(addr: string, pool: string, c: number, o: ReplicasOptions): Promise<UnaryResult> {
  return runLoadgen<UnaryResult>({ mode: "cycle", addr, pool, c, duration: sec(o.seconds), warmup: sec(o.warmupSeconds), rate: 0 }, (o.seconds + 60) * 1000);
}

async function createPools(admin: Client<typeof PoolAdminService>, names: string[]): Promise<void> {
  for (const name of names) {
    await admin.createPool({ pool: { name } });
    for (let i = 0; i < 4; i++) await until(async () => (await admin.addKey({ pool: name, key: { id: `k${i}` }, secret: `sk-bench-${name}-${i}-0123456789` })) && true);
  }
}

/** Every pool driven at its owner at once, one load generator per pool; each server's CPU per cycle. */
async function aggregate(databaseUrl: string, sql: postgres.Sql, n: number, o: ReplicasOptions) {
  const replicas: Replica[] = [];
  try {
    for (let i = 0; i < n; i++) replicas.push(await start(databaseUrl));
    const names = Array.from({ length: o.pools }, (_, i) => `agg${n}-${i}`);
    await createPools(replicas[0]!.admin, names);
    const owners = await settled(sql, names);
    const cpu0 = replicas.map((r) => treeCpuUs(r.p.child.pid!));
    const runs = await Promise.all(names.map((name, i) => cycle(owners[i]!, name, 8, o)));
    const cpu = replicas.map((r, i) => treeCpuUs(r.p.child.pid!) - cpu0[i]!);
    const cycles = runs.reduce((s, r) => s + r.ops_all, 0);
    return {
      replicas: n,
      pools_per_replica: replicas.map((r) => owners.filter((a) => a === r.addr).length),
      cycles_per_sec: Math.round(runs.reduce((s, r) => s + r.ops_per_sec, 0)),
      errors: runs.reduce((s, r) => s + r.errors, 0),
      server_cpu_us_per_cycle: Math.round(cpu.reduce((s, x) => s + x, 0) / cycles),
    };
  } finally {
    await stop(replicas);
  }
}

export async function replicasBench(o: ReplicasOptions) {
  const db = await scratchDatabase(o.postgresUrl, "keymesh_replicas");
  const sql = postgres(db.url, { max: 2, onnotice: () => {} });
  try {
    const kill: number[] = [];
    const term: number[] = [];
    for (let i = 0; i < o.failovers; i++) {
      process.stderr.write(`  failover ${i + 1}/${o.failovers}: kill -9 … `);
      kill.push(await failover(db.url, sql, "SIGKILL", i));
      process.stderr.write(`${Math.round(kill.at(-1)!)} ms, SIGTERM … `);
      term.push(await failover(db.url, sql, "SIGTERM", i));
      process.stderr.write(`${Math.round(term.at(-1)!)} ms\n`);
    }
    const figures = (ms: number[]) => {
      const sorted = [...ms].sort((a, b) => a - b);
      return { count: ms.length, min: Math.round(sorted[0]!), median: Math.round(sorted[Math.floor((sorted.length - 1) / 2)]!), max: Math.round(sorted.at(-1)!) };
    };

    process.stderr.write("  the cycle on the owner and through a non-owner … ");
    const pair = [await start(db.url), await start(db.url)];
    let forwarding;
    try {
      await createPools(pair[0]!.admin, ["fwd"]);
      const [owner] = await settled(sql, ["fwd"]);
      const other = pair.find((r) => r.addr !== owner)!.addr;
      const onOwner = await cycle(owner, "fwd", 16, o);
      const forwarded = await cycle(other, "fwd", 16, o);
      forwarding = {
        concurrency: 16,
        owner_cycles_per_sec: Math.round(onOwner.ops_per_sec),
        forwarded_cycles_per_sec: Math.round(forwarded.ops_per_sec),
        ratio: Math.round((forwarded.ops_per_sec / onOwner.ops_per_sec) * 100) / 100,
        owner_cycle_p50_ms: onOwner.latency.p50_ms,
        forwarded_cycle_p50_ms: forwarded.latency.p50_ms,
        errors: onOwner.errors + forwarded.errors,
        first_error: onOwner.first_error ?? forwarded.first_error,
      };
      process.stderr.write(`${forwarding.owner_cycles_per_sec} vs ${forwarding.forwarded_cycles_per_sec} cycles/s\n`);
    } finally {
      await stop(pair);
    }

    const throughput = [];
    for (const n of [1, 2, 3]) {
      process.stderr.write(`  ${o.pools} pools over ${n} replica(s) … `);
      throughput.push(await aggregate(db.url, sql, n, o));
      process.stderr.write(`${throughput.at(-1)!.cycles_per_sec} cycles/s, ${throughput.at(-1)!.server_cpu_us_per_cycle} µs server CPU/cycle\n`);
    }
    return { failover_kill9_ms: figures(kill), failover_sigterm_ms: figures(term), ownership_ttl_ms: 5000, forwarding, throughput };
  } finally {
    await sql.end();
    await db.drop();
  }
}
