// Recovery after kill -9: real server processes, 24 concurrent callers on 5 keys of max_concurrency 3,
// repeated SIGKILLs at seeded random moments, on the embedded database and on Postgres. After each restart,
// from the server's own listing and the callers' records: no key holds more than its limit, no lease whose
// end (release, MarkFailed, MarkRateLimited, revocation) was answered before the crash is live again (an
// end answers once it is durable, so not even those of the last 50 ms), every lease the callers still
// hold is releasable, and the keys' capacity is back at once.
// The seed is printed; KEYMESH_RECOVERY_SEED replays a run.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, describe, expect, it } from "vitest";
import { PoolAdminService } from "../../server/src/gen/keymesh/v1/admin_pb.js";
import { KeyPoolService } from "../../server/src/gen/keymesh/v1/pool_pb.js";
import { scratchDatabase, type ScratchDatabase } from "../support/database.js";
import { listening, spawnServer, type ServerProcess } from "../support/process.js";
import { seededRandom } from "../support/random.js";

const SEED = Number(process.env.KEYMESH_RECOVERY_SEED ?? randomBytes(4).readUInt32LE());
const CRASHES = 4;
const CALLERS = 24;
const KEYS = 5;
const MAX_CONCURRENCY = 3;
/** Ends answered this close to the crash are counted apart: they would be the ones lost if ends were answered before their commit. */
const LAST_MS = 50;
const POOL = "recovery";

interface LeaseRecord {
  leaseId: string;
  keyId: string;
  /** When the end's answer arrived (performance.now()), if it did. */
  endedAt?: number;
  /** An end was sent and its answer never came (the crash cut it off): the lease may or may not have ended. */
  inDoubt?: boolean;
}

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
}, 60_000);

type Clients = { pool: Client<typeof KeyPoolService>; admin: Client<typeof PoolAdminService> };

function clientsOf(grpcPort: number): Clients {
  const transport = createGrpcTransport({ baseUrl: `http://127.0.0.1:${grpcPort}` });
  return { pool: createClient(KeyPoolService, transport), admin: createClient(PoolAdminService, transport) };
}

async function start(env: NodeJS.ProcessEnv): Promise<{ proc: ServerProcess; clients: Clients; startedMs: number }> {
  const t0 = performance.now();
  const proc = spawnServer(env);
  cleanups.push(async () => {
    if (proc.child.exitCode === null && proc.child.signalCode === null) proc.child.kill("SIGKILL");
    await proc.exited;
  });
  const { grpcPort } = await listening(proc);
  return { proc, clients: clientsOf(grpcPort), startedMs: performance.now() - t0 };
}

async function listLeases(admin: Client<typeof PoolAdminService>): Promise<Array<{ leaseId: string; keyId: string }>> {
  const out: Array<{ leaseId: string; keyId: string }> = [];
  let pageToken = "";
  do {
    const page = await admin.listLeases({ pool: POOL, pageToken });
    for (const l of page.leases) out.push({ leaseId: l.leaseId, keyId: l.keyId });
    pageToken = page.nextPageToken;
  } while (pageToken);
  return out;
}

/** Concurrent callers that acquire, hold a few ms, then end by one of the three reports, or keep the lease; and an operator revoking now and then. */
function load(clients: Clients, random: () => number, records: LeaseRecord[]) {
  let running = true;
  const held: LeaseRecord[] = [];
  const caller = async () => {
    while (running) {
      let lease: LeaseRecord;
      try {
        const r = await clients.pool.acquire({ pool: POOL, holder: "recovery-test", waitTimeout: durationFromMs(2000), leaseTtl: durationFromMs(60_000) });
        lease = { leaseId: r.leaseId, keyId: r.keyId };
      } catch {
        if (running) await new Promise((r) => setTimeout(r, 5));
        continue;
      }
      records.push(lease);
      await new Promise((r) => setTimeout(r, Math.floor(random() * 15)));
      const choice = random();
      if (choice < 0.04 && held.length < KEYS) {
        held.push(lease);
        continue;
      }
      if (!running) return;
      try {
        if (choice < 0.7) await clients.pool.release({ leaseId: lease.leaseId });
        else if (choice < 0.85) await clients.pool.markFailed({ leaseId: lease.leaseId, httpStatus: 400, message: "bad request" });
        else await clients.pool.markRateLimited({ leaseId: lease.leaseId, retryAfter: durationFromMs(1) });
        lease.endedAt = performance.now();
      } catch (err) {
        if (ConnectError.from(err).code === Code.NotFound) lease.endedAt = performance.now();
        else lease.inDoubt = true;
      }
    }
  };
  const operator = async () => {
    while (running) {
      await new Promise((r) => setTimeout(r, 20 + Math.floor(random() * 40)));
      const lease = held.shift();
      if (!lease || !running) continue;
      try {
        await clients.admin.revokeLease({ leaseId: lease.leaseId, reason: "recovery test" });
        lease.endedAt = performance.now();
      } catch {
        lease.inDoubt = true;
      }
    }
  };
  const done = Promise.all([...Array.from({ length: CALLERS }, caller), operator()]);
  return {
    stop: () => {
      running = false;
      return done;
    },
  };
}

async function environment(kind: "embedded" | "postgres"): Promise<NodeJS.ProcessEnv> {
  const dataDir = await mkdtemp(path.join(tmpdir(), "keymesh-recovery-"));
  cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
  let db: ScratchDatabase | undefined;
  if (kind === "postgres") {
    expect(process.env.DATABASE_URL, "DATABASE_URL must point at the test Postgres").toBeDefined();
    db = await scratchDatabase(process.env.DATABASE_URL!, "keymesh_recovery");
    cleanups.push(() => db!.drop());
  }
  return {
    KEYMESH_HOST: "127.0.0.1",
    KEYMESH_DATA_DIR: dataDir,
    DATABASE_URL: db?.url ?? "",
    KEYMESH_MASTER_KEY: randomBytes(32).toString("base64"),
    // The default: without journaled ends, every end since the last snapshot would come back.
    KEYMESH_SNAPSHOT_INTERVAL: "1s",
    // On Postgres a restart after kill -9 is a takeover: it waits for the dead process's term to expire.
    KEYMESH_OWNERSHIP_TTL: "2s",
  };
}

/** Once the restarted server serves the pool (on Postgres, once it took the pool over from the killed process). */
async function served(clients: Clients): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      await clients.admin.getPoolStats({ pool: POOL });
      return;
    } catch (e) {
      if (ConnectError.from(e).code !== Code.Unavailable || i > 200) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

describe.each(["embedded", "postgres"] as const)("kill -9 under load on %s", (kind) => {
  it(`restores exactly the live leases, no ended one (seed ${SEED})`, async () => {
    console.log(`recovery on ${kind}: seed ${SEED} (KEYMESH_RECOVERY_SEED=${SEED} replays it)`);
    const random = seededRandom(SEED + (kind === "postgres" ? 1 : 0));
    const env = await environment(kind);
    let server = await start(env);
    await server.clients.admin.createPool({ pool: { name: POOL } });
    for (let i = 0; i < KEYS; i++) {
      await server.clients.admin.addKey({ pool: POOL, key: { id: `k${i}`, maxConcurrency: MAX_CONCURRENCY }, secret: `sk-recovery-${i}-${randomBytes(8).toString("hex")}` });
    }
    const totals = { crashes: 0, leases: 0, ended: 0, endedInLast50ms: 0, ghosts: 0, inDoubt: 0, orphans: 0, restartMs: [] as number[] };
    for (let crash = 0; crash < CRASHES; crash++) {
      const records: LeaseRecord[] = [];
      const running = load(server.clients, random, records);
      await new Promise((r) => setTimeout(r, 300 + Math.floor(random() * 1200)));
      const killedAt = performance.now();
      server.proc.child.kill("SIGKILL");
      await server.proc.exited;
      await running.stop();
      totals.crashes++;

      server = await start(env);
      totals.restartMs.push(Math.round(server.startedMs));
      await served(server.clients);
      const live = await listLeases(server.clients.admin);
      const perKey = new Map<string, number>();
      for (const l of live) perKey.set(l.keyId, (perKey.get(l.keyId) ?? 0) + 1);
      for (const [keyId, n] of perKey) expect(n, `live leases on ${keyId} after crash ${crash + 1}`).toBeLessThanOrEqual(MAX_CONCURRENCY);

      const liveIds = new Set(live.map((l) => l.leaseId));
      const ghosts = records.filter((r) => r.endedAt !== undefined && liveIds.has(r.leaseId));
      totals.leases += records.length;
      totals.ended += records.filter((r) => r.endedAt !== undefined).length;
      totals.endedInLast50ms += records.filter((r) => r.endedAt !== undefined && killedAt - r.endedAt <= LAST_MS).length;
      totals.ghosts += ghosts.length;
      totals.inDoubt += records.filter((r) => r.inDoubt).length;
      expect(ghosts.map((r) => `${r.leaseId} ended ${Math.round(killedAt - r.endedAt!)} ms before`), `leases back after crash ${crash + 1} though their end was answered`).toEqual([]);

      // Every lease the callers hold is releasable; one whose end the crash cut off is released or already ended.
      for (const r of records.filter((rec) => rec.endedAt === undefined)) {
        const answer = await server.clients.pool.release({ leaseId: r.leaseId }).then(
          () => "released",
          (err: unknown) => Code[ConnectError.from(err).code],
        );
        if (!r.inDoubt) expect(answer, `release of held lease ${r.leaseId} after crash ${crash + 1}`).toBe("released");
        else expect(["released", Code[Code.NotFound]]).toContain(answer);
      }
      // Grants whose Acquire the crash cut off after their commit: nobody will end them, so an operator does.
      // There can be no more of them than calls in flight.
      const known = new Set(records.map((r) => r.leaseId));
      const orphans = live.filter((l) => !known.has(l.leaseId));
      expect(orphans.length, `leases granted but never answered at crash ${crash + 1}`).toBeLessThanOrEqual(CALLERS);
      totals.orphans += orphans.length;
      for (const l of orphans) await server.clients.admin.revokeLease({ leaseId: l.leaseId, reason: "nobody holds it" });
      expect(await listLeases(server.clients.admin)).toEqual([]);
      // Capacity is back at once: every slot of every key is lent without waiting.
      const slots = await Promise.all(Array.from({ length: KEYS * MAX_CONCURRENCY }, () => server.clients.pool.acquire({ pool: POOL, waitTimeout: durationFromMs(0) })));
      expect(new Set(slots.map((s) => s.leaseId)).size).toBe(KEYS * MAX_CONCURRENCY);
      for (const s of slots) await server.clients.pool.release({ leaseId: s.leaseId });
    }
    console.log(`recovery on ${kind}: ${JSON.stringify(totals)}`);
    expect(totals.ghosts).toBe(0);
    expect(totals.ended).toBeGreaterThan(CRASHES * 20);
    server.proc.child.kill("SIGTERM");
    await server.proc.exited;
  }, 120_000);
});
