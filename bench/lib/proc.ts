// CPU time of other processes from /proc (Linux): etcd, and Postgres's postmaster with its backends.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

const ticksPerSecond = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

interface Stat {
  ppid: number;
  /** utime + stime, and cutime + cstime (children it has reaped), in clock ticks. */
  own: number;
  reaped: number;
}

function stat(pid: number): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name is in parentheses and may hold spaces: the fields that follow start after the last ')'.
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { ppid: Number(f[1]), own: Number(f[11]) + Number(f[12]), reaped: Number(f[13]) + Number(f[14]) };
}

/**
 * CPU microseconds used so far by a process, the children it has reaped, and its live children: for
 * Postgres's postmaster that is every backend and background worker, those that already exited included.
 */
export function treeCpuUs(pid: number): number {
  const root = stat(pid);
  if (!root) throw new Error(`no process ${pid}`);
  let ticks = root.own + root.reaped;
  for (const entry of readdirSync("/proc")) {
    const child = /^\d+$/.test(entry) ? stat(Number(entry)) : undefined;
    if (child?.ppid === pid) ticks += child.own;
  }
  return (ticks * 1e6) / ticksPerSecond;
}

/** The postmaster's pid of the cluster whose data directory scripts/pg.sh exported (KEYMESH_TEST_PG_DATA). */
export function postmasterPid(): number {
  const data = process.env.KEYMESH_TEST_PG_DATA;
  if (!data) throw new Error("KEYMESH_TEST_PG_DATA is not set: scripts/bench.sh starts Postgres (scripts/pg.sh) and sets it");
  return Number(readFileSync(`${data}/postmaster.pid`, "utf8").split("\n")[0]);
}
