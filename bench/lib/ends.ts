// What durable lease ends cost the journal (issue 18): the durable cycle (a limited key's grant, awaited,
// then its end) in this process on the real store, with the end awaited as Release awaits it, with the end
// recorded but not awaited, and with no end at all (the grants alone: the journal's work before ends were
// journaled). Interleaved runs per cell; cycles a second, journal statements per cycle, and the CPU of this
// process and of Postgres per cycle.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type postgres from "postgres";
import { Availability } from "../../server/src/store/availability.js";
import { PostgresConfigStore } from "../../server/src/store/config-store.js";
import { openDatabase } from "../../server/src/store/database.js";
import { PostgresGrantJournal } from "../../server/src/store/journal.js";
import { migrate } from "../../server/src/store/migrate.js";
import { beginEpoch } from "../../server/src/store/restore.js";
import { SecretBox } from "../../server/src/store/secrets.js";
import { systemClock } from "../../server/src/domain/system-clock.js";
import { scratchDatabase } from "../../test/support/database.js";
import { postmasterPid, treeCpuUs } from "./proc.js";
import { durablePostgres } from "./vs-etcd.js";

const quietLog = { info() {}, warn() {}, error() {} };
const MODES = ["end_awaited", "end_behind", "no_end"] as const;
type Mode = (typeof MODES)[number];

interface Run {
  cycles_per_sec: number;
  statements_per_cycle: number;
  node_cpu_us_per_cycle: number;
  postgres_cpu_us_per_cycle?: number;
}

export interface EndsCell {
  database: "postgres" | "embedded";
  callers: number;
  /** Medians over the runs, per mode. */
  modes: Record<Mode, Run>;
  /** end_awaited's cycles/s ÷ end_behind's, and ÷ no_end's. */
  awaited_vs_behind: number;
  awaited_vs_no_end: number;
}

export interface EndsOptions {
  postgresUrl: string;
  seconds: number;
  runs: number;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const round = (n: number, digits = 1) => Math.round(n * 10 ** digits) / 10 ** digits;

async function onStore(sql: postgres.Sql, embedded: boolean, o: EndsOptions): Promise<Array<Omit<EndsCell, "database">>> {
  await migrate(sql, { log: quietLog });
  const availability = new Availability(sql, quietLog);
  // One process owns the pool: the fence holds the term its creation claimed.
  const terms = new Map<string, number>();
  const fence = { owner: "bench", termOf: (p: string) => terms.get(p), held: () => [...terms].map(([pool, term]) => ({ pool, term })), lost() {} };
  const config = new PostgresConfigStore(sql, new SecretBox(randomBytes(32)), availability, systemClock, fence, 3_600_000);
  await config.verifyMasterKey();
  const now = Date.now();
  terms.set("ends", await config.insertPool({ name: "ends", strategy: "round_robin", minTtlMs: 1000, maxTtlMs: 600_000, defaultTtlMs: 60_000, defaultCooldownMs: 5000, maxCooldownMs: 300_000, failureThreshold: 3, openDurationMs: 30_000, maxOpenDurationMs: 600_000, halfOpenProbes: 1, description: "", quotaGroups: {}, defaultEstimatedTokens: 0, createdAt: now, updatedAt: now }));
  await config.insertKey({ pool: "ends", id: "k", label: "k", secret: "sk-bench-ends-0123456789", weight: 1, maxConcurrency: 10_000, quotaGroup: "", limits: { requestsPerMinute: 0, tokensPerMinute: 0, requestsPerDay: 0 }, priority: 0, metadata: {}, disabled: false, disabledReason: "", createdAt: now, updatedAt: now });
  const epoch = await beginEpoch(sql, availability, now);
  const live = new Set<string>();
  const journal = new PostgresGrantJournal(sql, availability, quietLog, { epoch, isLive: (id) => live.has(id), fence, lendFromMemory: true, vacuumEvery: embedded ? 10_000 : undefined });
  let statements = 0;
  journal.onCommit(() => statements++);
  let seq = 0;
  const pgPid = embedded ? undefined : postmasterPid();

  const run = async (mode: Mode, callers: number): Promise<Run> => {
    let cycles = 0;
    let running = true;
    const caller = async () => {
      while (running) {
        const s = ++seq;
        const leaseId = `lk1.bench-ends-${epoch}-${s}-${"x".repeat(60)}`;
        live.add(leaseId);
        await journal.record({ leaseId, pool: "ends", keyId: "k", holder: "bench", acquiredAt: Date.now(), expiresAt: Date.now() + 60_000, ttlMs: 60_000, epoch, seq: s });
        live.delete(leaseId);
        if (mode !== "no_end") {
          const ticket = journal.recordEnd(leaseId, "ends", epoch, s);
          if (mode === "end_awaited") await journal.endDurable(ticket);
        }
        cycles++;
      }
    };
    const statements0 = statements;
    const cpu0 = process.cpuUsage();
    const pg0 = pgPid ? treeCpuUs(pgPid) : 0;
    const t0 = performance.now();
    const done = Promise.all(Array.from({ length: callers }, caller));
    await new Promise((r) => setTimeout(r, o.seconds * 1000));
    running = false;
    await done;
    const elapsed = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    // The ends a no_end run left out are not part of the next run: they are written apart, now.
    await journal.endDurable();
    return {
      cycles_per_sec: round(cycles / elapsed),
      statements_per_cycle: round((statements - statements0) / cycles, 3),
      node_cpu_us_per_cycle: round((cpu.user + cpu.system) / cycles),
      ...(pgPid ? { postgres_cpu_us_per_cycle: round((treeCpuUs(pgPid) - pg0) / cycles) } : {}),
    };
  };

  const cells: Array<Omit<EndsCell, "database">> = [];
  for (const callers of [1, 16, 64]) {
    const runs: Record<Mode, Run[]> = { end_awaited: [], end_behind: [], no_end: [] };
    for (let i = 0; i < o.runs; i++) for (const mode of MODES) runs[mode].push(await run(mode, callers));
    const modes = Object.fromEntries(
      MODES.map((mode) => {
        const rs = runs[mode];
        const pick = (f: (r: Run) => number | undefined) => median(rs.map((r) => f(r) ?? 0));
        const m: Run = {
          cycles_per_sec: pick((r) => r.cycles_per_sec),
          statements_per_cycle: pick((r) => r.statements_per_cycle),
          node_cpu_us_per_cycle: pick((r) => r.node_cpu_us_per_cycle),
          ...(pgPid ? { postgres_cpu_us_per_cycle: pick((r) => r.postgres_cpu_us_per_cycle) } : {}),
        };
        return [mode, m];
      }),
    ) as Record<Mode, Run>;
    cells.push({
      callers,
      modes,
      awaited_vs_behind: round(modes.end_awaited.cycles_per_sec / modes.end_behind.cycles_per_sec, 3),
      awaited_vs_no_end: round(modes.end_awaited.cycles_per_sec / modes.no_end.cycles_per_sec, 3),
    });
    process.stderr.write(
      `  ends, ${embedded ? "embedded" : "postgres"}, c=${callers}: ${MODES.map((m) => `${m} ${modes[m].cycles_per_sec}/s ${modes[m].statements_per_cycle} stmt/cycle`).join("; ")}\n`,
    );
  }
  await journal.close();
  availability.close();
  return cells;
}

export async function ends(o: EndsOptions): Promise<EndsCell[]> {
  const out: EndsCell[] = [];
  const db = await scratchDatabase(o.postgresUrl, "keymesh_ends");
  const pg = await openDatabase({ databaseUrl: db.url, dataDir: "", log: quietLog as never });
  try {
    // fsync on, as a production server runs: a commit's cost is what an awaited end adds.
    const cells = await durablePostgres(o.postgresUrl, () => onStore(pg.sql, false, o));
    for (const cell of cells) out.push({ database: "postgres", ...cell });
  } finally {
    await pg.close();
    await db.drop();
  }
  const dir = await mkdtemp(path.join(tmpdir(), "keymesh-bench-ends-"));
  const embedded = await openDatabase({ dataDir: dir, log: quietLog as never });
  try {
    for (const cell of await onStore(embedded.sql, true, o)) out.push({ database: "embedded", ...cell });
  } finally {
    await embedded.close();
    await rm(dir, { recursive: true, force: true });
  }
  return out;
}
