// KeyMesh's lease cycle beside etcd's (issue 22): the same Go load generator and the same cycle shape on
// both servers — grant, optionally one keep-alive sent and answered, release — at 1, 16 and 64 callers,
// for unlimited and limited keys, on Postgres (fsync on) and on the embedded database; interleaved pairs
// per cell, with each server's CPU per cycle read from /proc.
import postgres from "postgres";
import { runLoadgen, type UnaryResult } from "./loadgen.js";
import { postmasterPid, treeCpuUs } from "./proc.js";
import { benchKeys, createPool, startBenchServer, type BenchServer } from "./server.js";

type EtcdCycle = "grant_revoke" | "grant_keepalive_revoke";

/** One load run of one side. CPU counts the whole run, warm-up included, divided by every cycle it completed. */
interface VsEtcdRun {
  cycles_per_sec: number;
  cpu_us_per_cycle: number;
  /** KeyMesh on Postgres: the server's own process and its Postgres (postmaster, backends, WAL writer…). */
  cpu_us_per_cycle_node?: number;
  cpu_us_per_cycle_postgres?: number;
  cycle_p50_ms: number;
  cycle_p99_ms: number;
  grant_p99_ms: number;
  errors: number;
  first_error?: string;
}

interface VsEtcdSide {
  /** Medians over the cell's runs. */
  cycles_per_sec: number;
  cpu_us_per_cycle: number;
  cycle_p99_ms: number;
}

export interface VsEtcdCell {
  cycle: EtcdCycle;
  keys: "unlimited" | "limited";
  database: "postgres" | "embedded";
  callers: number;
  /** KeyMesh cycles/s ÷ etcd's, the median of the pairs; the lowest and highest pair beside it. */
  ratio: number;
  ratio_range: [number, number];
  /** KeyMesh's server CPU per cycle (with its Postgres) ÷ etcd's, the median of the pairs: below 1, KeyMesh spends less. */
  cpu_ratio: number;
  keymesh: VsEtcdSide;
  etcd: VsEtcdSide;
  pairs: Array<{ keymesh: VsEtcdRun; etcd: VsEtcdRun; ratio: number; cpu_ratio: number }>;
}

export interface VsEtcdOptions {
  postgresUrl: string;
  etcdAddr: string;
  etcdPid: number;
  seconds: number;
  warmupSeconds: number;
  pairs: number;
  /** Keys with a max_concurrency never reached: their grants are journaled before Acquire answers. */
  limitedMaxConcurrency: number;
  /** Runs only the cells whose cycle, keys, database and callers (`c=16`) include every one of these words. */
  cellFilter?: string[];
}

export interface VsEtcdResult {
  setup: {
    seconds: number;
    warmup_seconds: number;
    pairs: number;
    limited_max_concurrency: number;
    etcd_version: string;
    etcd_lease_ttl_seconds: number;
    postgres_settings: Record<string, string>;
  };
  cells: VsEtcdCell[];
}

const CALLERS = [1, 16, 64];
const CYCLES: EtcdCycle[] = ["grant_revoke", "grant_keepalive_revoke"];
/** bench/loadgen's etcdLeaseTTL. */
const ETCD_LEASE_TTL_SECONDS = 60;
const POOLS = { unlimited: "vs-etcd-unlimited", limited: "vs-etcd-limited" } as const;

/** The member's own answer at /version, e.g. 3.4.23. */
async function etcdVersion(addr: string): Promise<string> {
  try {
    const v = (await (await fetch(`http://${addr}/version`)).json()) as { etcdserver?: string };
    return v.etcdserver ?? "unknown";
  } catch {
    return "unknown";
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const round = (n: number, digits: number) => Math.round(n * 10 ** digits) / 10 ** digits;

/**
 * Postgres as a production server runs it: fsync and full-page writes on (scripts/pg.sh turns both off
 * for tests), for the duration of `run`; the bench cluster is its own, so nothing else sees the change.
 */
export async function durablePostgres<T>(url: string, run: (settings: Record<string, string>) => Promise<T>): Promise<T> {
  const admin = postgres(url, { max: 1, onnotice: () => {} });
  const settings = ["fsync", "full_page_writes", "synchronous_commit", "wal_sync_method"];
  try {
    await admin.unsafe("alter system set fsync = on");
    await admin.unsafe("alter system set full_page_writes = on");
    await admin.unsafe("select pg_reload_conf()");
    // The reload reaches the backends on their next command; a fresh session shows the new values.
    const shown: Record<string, string> = {};
    for (let tries = 0; tries < 50; tries++) {
      await new Promise((r) => setTimeout(r, 100));
      const rows = await admin<Array<{ name: string; setting: string }>>`select name, setting from pg_settings where name in ${admin(settings)}`;
      for (const r of rows) shown[r.name] = r.setting;
      if (shown.fsync === "on" && shown.full_page_writes === "on") break;
    }
    if (shown.fsync !== "on") throw new Error(`Postgres still runs with fsync=${shown.fsync}`);
    return await run(shown);
  } finally {
    // Back to pg.sh's settings (postgresql.auto.conf says fsync = off, full_page_writes = off).
    await admin.unsafe("alter system set fsync = off").catch(() => undefined);
    await admin.unsafe("alter system set full_page_writes = off").catch(() => undefined);
    await admin.unsafe("select pg_reload_conf()").catch(() => undefined);
    await admin.end();
  }
}

function runOf(r: UnaryResult, cpuUs: number, parts?: { node: number; postgres: number }): VsEtcdRun {
  const cycles = Math.max(1, r.ops_all);
  return {
    cycles_per_sec: round(r.ops_per_sec, 1),
    cpu_us_per_cycle: round(cpuUs / cycles, 1),
    ...(parts ? { cpu_us_per_cycle_node: round(parts.node / cycles, 1), cpu_us_per_cycle_postgres: round(parts.postgres / cycles, 1) } : {}),
    cycle_p50_ms: round(r.latency.p50_ms, 3),
    cycle_p99_ms: round(r.latency.p99_ms, 3),
    grant_p99_ms: round(r.acquire?.p99_ms ?? 0, 3),
    errors: r.errors,
    ...(r.first_error ? { first_error: r.first_error } : {}),
  };
}

export async function vsEtcd(o: VsEtcdOptions): Promise<VsEtcdResult> {
  const load = (mode: "cycle" | "etcd", addr: string, cycle: EtcdCycle, c: number, pool: string) =>
    runLoadgen<UnaryResult>(
      {
        mode,
        addr,
        pool,
        c,
        duration: `${Math.round(o.seconds * 1000)}ms`,
        warmup: `${Math.round(o.warmupSeconds * 1000)}ms`,
        keepalive: String(cycle === "grant_keepalive_revoke"),
      },
      (o.seconds + o.warmupSeconds + 60) * 1000,
    );

  const keymeshRun = async (bs: BenchServer, cycle: EtcdCycle, c: number, pool: string, pgPid: number | undefined) => {
    // The server runs in this process, idle but for it while the load generator runs.
    const node0 = process.cpuUsage();
    const pg0 = pgPid === undefined ? 0 : treeCpuUs(pgPid);
    const r = await load("cycle", bs.addr, cycle, c, pool);
    const node = process.cpuUsage(node0);
    const parts = { node: node.user + node.system, postgres: pgPid === undefined ? 0 : treeCpuUs(pgPid) - pg0 };
    return runOf(r, parts.node + parts.postgres, pgPid === undefined ? undefined : parts);
  };
  const etcdRun = async (cycle: EtcdCycle, c: number) => {
    const cpu0 = treeCpuUs(o.etcdPid);
    const r = await load("etcd", o.etcdAddr, cycle, c, "");
    return runOf(r, treeCpuUs(o.etcdPid) - cpu0);
  };

  const cells: VsEtcdCell[] = [];
  const wanted = (...words: string[]) => (o.cellFilter ?? []).every((w) => words.includes(w));
  const onDatabase = async (database: VsEtcdCell["database"]) => {
    if (!CYCLES.some((cycle) => CALLERS.some((c) => Object.keys(POOLS).some((keys) => wanted(cycle, keys, database, `c=${c}`))))) return;
    process.stderr.write(`  KeyMesh on ${database === "postgres" ? "Postgres (fsync on)" : "the embedded database"} vs etcd\n`);
    const bs = await startBenchServer(database === "postgres" ? { postgresUrl: o.postgresUrl } : {});
    const pgPid = database === "postgres" ? postmasterPid() : undefined;
    try {
      for (const [keys, pool] of Object.entries(POOLS) as Array<[VsEtcdCell["keys"], string]>) {
        const maxConcurrency = keys === "limited" ? o.limitedMaxConcurrency : 0;
        await createPool(bs.admin, { name: pool, keys: benchKeys(8, `etcd-${keys}-`, maxConcurrency) });
        for (const cycle of CYCLES) {
          for (const c of CALLERS) {
            if (!wanted(cycle, keys, database, `c=${c}`)) continue;
            process.stderr.write(`    ${cycle}, ${keys} keys, c=${c}: `);
            const pairs: VsEtcdCell["pairs"] = [];
            for (let i = 0; i < o.pairs; i++) {
              // Alternate which side goes first, so a drift in the machine's load favours neither.
              let keymesh: VsEtcdRun, etcd: VsEtcdRun;
              if (i % 2 === 0) {
                keymesh = await keymeshRun(bs, cycle, c, pool, pgPid);
                etcd = await etcdRun(cycle, c);
              } else {
                etcd = await etcdRun(cycle, c);
                keymesh = await keymeshRun(bs, cycle, c, pool, pgPid);
              }
              const ratio = keymesh.cycles_per_sec / Math.max(1e-9, etcd.cycles_per_sec);
              pairs.push({ keymesh, etcd, ratio: round(ratio, 3), cpu_ratio: round(keymesh.cpu_us_per_cycle / Math.max(1e-9, etcd.cpu_us_per_cycle), 3) });
              process.stderr.write(`${Math.round(keymesh.cycles_per_sec)}/${Math.round(etcd.cycles_per_sec)} `);
            }
            const side = (pick: (p: VsEtcdCell["pairs"][number]) => VsEtcdRun): VsEtcdSide => ({
              cycles_per_sec: round(median(pairs.map((p) => pick(p).cycles_per_sec)), 1),
              cpu_us_per_cycle: round(median(pairs.map((p) => pick(p).cpu_us_per_cycle)), 1),
              cycle_p99_ms: round(median(pairs.map((p) => pick(p).cycle_p99_ms)), 3),
            });
            const ratios = pairs.map((p) => p.ratio);
            const cell: VsEtcdCell = {
              cycle,
              keys,
              database,
              callers: c,
              ratio: round(median(ratios), 3),
              ratio_range: [Math.min(...ratios), Math.max(...ratios)],
              cpu_ratio: round(median(pairs.map((p) => p.cpu_ratio)), 3),
              keymesh: side((p) => p.keymesh),
              etcd: side((p) => p.etcd),
              pairs,
            };
            cells.push(cell);
            process.stderr.write(`cycles/s; ratio ${cell.ratio}, CPU ratio ${cell.cpu_ratio}\n`);
          }
        }
      }
    } finally {
      await bs.stop();
    }
  };

  const postgresSettings = await durablePostgres(o.postgresUrl, async (settings) => {
    await onDatabase("postgres");
    return settings;
  });
  await onDatabase("embedded");
  return {
    setup: {
      seconds: o.seconds,
      warmup_seconds: o.warmupSeconds,
      pairs: o.pairs,
      limited_max_concurrency: o.limitedMaxConcurrency,
      etcd_version: await etcdVersion(o.etcdAddr),
      etcd_lease_ttl_seconds: ETCD_LEASE_TTL_SECONDS,
      postgres_settings: postgresSettings,
    },
    cells,
  };
}
