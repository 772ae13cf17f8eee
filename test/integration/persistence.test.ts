// Restart without loss, end to end: a graceful restart keeps leases, cooldowns, breaker state and
// health; kill -9 between snapshots keeps max_concurrency and lets pre-crash leases be released; a
// Postgres outage keeps Acquire working and loses no committed change; the raw secret is nowhere on
// disk or in the logs.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { readdir, readFile, stat } from "node:fs/promises";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import postgres from "postgres";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CircuitState } from "../../server/src/gen/keymesh/v1/admin_pb.js";
import { ErrorReason } from "../../server/src/gen/keymesh/v1/common_pb.js";
import { FailureReason, KeyPoolService } from "../../server/src/gen/keymesh/v1/pool_pb.js";
import { DATABASE_HEALTH_SERVICE } from "../../server/src/transport/listeners.js";
import { reasonOf, rejection } from "../support/errors.js";
import { healthStatus } from "../support/health.js";
import { listening, spawnServer } from "../support/process.js";
import { freshDatabase, startTestServer, type TestServer } from "../support/server.js";

const SECRET_A = "sk-persist-AAAAAAAAAAAAAAAAAAAAAAAA";
const SECRET_B = "sk-persist-BBBBBBBBBBBBBBBBBBBBBBBB";

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(full)));
    else if (entry.isFile()) out.push(full);
  }
  return out;
}

describe("graceful restart on the embedded database", () => {
  let first: TestServer;
  let second: TestServer | undefined;

  afterAll(async () => {
    await second?.stop();
  });

  it("keeps the lease, the 300 s cooldown, an open circuit and health; nothing secret reaches disk or logs", async () => {
    first = await startTestServer({ DATABASE_URL: "", KEYMESH_MASTER_KEY: "" });
    const { admin, pool } = first;
    await admin.createPool({ pool: { name: "demo", circuitBreaker: { failureThreshold: 1 } } });
    await admin.addKey({ pool: "demo", key: { id: "a", maxConcurrency: 1 }, secret: SECRET_A });
    await admin.addKey({ pool: "demo", key: { id: "b", maxConcurrency: 1 }, secret: SECRET_B });
    const held = await pool.acquire({ pool: "demo", leaseTtl: durationFromMs(600_000) });
    const other = await pool.acquire({ pool: "demo" });
    expect(new Set([held.keyId, other.keyId])).toEqual(new Set(["a", "b"]));
    await pool.markRateLimited({ leaseId: other.leaseId, retryAfter: durationFromMs(300_000) });

    await admin.createPool({ pool: { name: "breaker", circuitBreaker: { failureThreshold: 1 } } });
    await admin.addKey({ pool: "breaker", key: { id: "c" }, secret: "sk-persist-CCCCCCCCCCCCCCCCCCCC" });
    const failing = await pool.acquire({ pool: "breaker" });
    await pool.markFailed({ leaseId: failing.leaseId, reason: FailureReason.TRANSIENT, latency: durationFromMs(400) });
    const before = (await admin.getPoolStats({ pool: "breaker" })).stats!.keys[0];
    expect(before.circuitState).toBe(CircuitState.OPEN);

    await first.stop({ keepData: true });
    second = await startTestServer({ DATABASE_URL: "", KEYMESH_MASTER_KEY: "" }, { dataDir: first.dataDir });

    const none = await rejection(second.pool.acquire({ pool: "demo" }));
    expect(none.code).toBe(Code.ResourceExhausted);
    expect(reasonOf(none)).toBe(ErrorReason.NO_KEY_AVAILABLE);
    const stats = (await second.admin.getPoolStats({ pool: "demo" })).stats!;
    const cooled = stats.keys.find((k) => k.keyId === other.keyId)!;
    expect(Number(cooled.cooldownRemaining!.seconds)).toBeGreaterThan(290);
    const after = (await second.admin.getPoolStats({ pool: "breaker" })).stats!.keys[0];
    expect(after.circuitState).toBe(CircuitState.OPEN);
    expect(after.circuitOpenUntil).toEqual(before.circuitOpenUntil);
    expect(after.emaLatency).toEqual(before.emaLatency);
    expect(after.consecutiveFailures).toBe(1);

    await second.pool.release({ leaseId: held.leaseId });
    const again = await second.pool.acquire({ pool: "demo" });
    expect(again.keyId).toBe(held.keyId);
    await second.pool.release({ leaseId: again.leaseId });

    const raw = [SECRET_A, SECRET_B].map((s) => Buffer.from(s));
    for (const file of await filesUnder(first.dataDir)) {
      const bytes = await readFile(file);
      for (const secret of raw) expect(bytes.includes(secret), `${file} contains a raw secret`).toBe(false);
    }
    expect((await stat(path.join(first.dataDir, "master.key"))).mode & 0o777).toBe(0o600);
    for (const logs of [first.logs(), second.logs()]) {
      expect(logs).not.toContain(SECRET_A);
      expect(logs).not.toContain(SECRET_B);
    }
  }, 120_000);
});

describe("graceful restart keeps declared budgets, usage and affinities (embedded database)", () => {
  let second: TestServer | undefined;
  afterAll(async () => {
    await second?.stop();
  });

  it("a spent requests_per_day stays spent, usage counts on, an affinity keeps its key", async () => {
    const first = await startTestServer({ DATABASE_URL: "", KEYMESH_MASTER_KEY: "" });
    const { admin, pool } = first;
    await admin.createPool({ pool: { name: "budgets", quotaGroups: { org: { tokensPerMinute: 10_000n } } } });
    await admin.addKey({ pool: "budgets", key: { id: "a", limits: { requestsPerDay: 2n }, quotaGroup: "org" }, secret: SECRET_A });
    await admin.addKey({ pool: "budgets", key: { id: "b", priority: 1 }, secret: SECRET_B });
    for (let i = 0; i < 2; i++) {
      const lease = await pool.acquire({ pool: "budgets", estimatedTokens: 1_000n, affinity: "conv-1" });
      expect(lease.keyId).toBe("a");
      await pool.release({ leaseId: lease.leaseId, usage: { inputTokens: 300n, outputTokens: 200n } });
    }
    // a's day budget is spent: the backup tier lends, and the affinity moves to it.
    expect((await pool.acquire({ pool: "budgets", affinity: "conv-1" })).keyId).toBe("b");

    await first.stop({ keepData: true });
    second = await startTestServer({ DATABASE_URL: "", KEYMESH_MASTER_KEY: "" }, { dataDir: first.dataDir });
    const stats = (await second.admin.getPoolStats({ pool: "budgets" })).stats!;
    const a = stats.keys.find((k) => k.keyId === "a")!;
    expect([a.remaining?.requestsPerDay, a.usage?.requests, a.usage?.inputTokens, a.eligible]).toEqual([0n, 2n, 600n, false]);
    expect(stats.quotaGroups.map((g) => [g.name, g.usage?.requests, g.usage?.outputTokens])).toEqual([["org", 2n, 400n]]);
    expect([stats.usage?.requests, stats.affinities, stats.servingPriority]).toEqual([3n, 1, 1]);
    expect((await second.admin.getKey({ pool: "budgets", keyId: "a" })).key!.limits!.requestsPerDay).toBe(2n);
    expect((await second.pool.acquire({ pool: "budgets", affinity: "conv-1" })).keyId).toBe("b");
  }, 120_000);
});

describe("kill -9 between snapshots (real Postgres)", () => {
  it("keeps the key held after the crash and lets the pre-crash lease release", async () => {
    const databaseUrl = await freshDatabase();
    expect(databaseUrl, "DATABASE_URL must point at the test Postgres").toBeDefined();
    const dataDir = await mkdtemp(path.join(tmpdir(), "keymesh-crash-"));
    // No snapshot will run: only the grant journal can know about the lease.
    // A restart after kill -9 is a takeover: the new process claims the pools once the dead one's term expires.
    const env = { DATABASE_URL: databaseUrl, KEYMESH_DATA_DIR: dataDir, KEYMESH_MASTER_KEY: Buffer.alloc(32, 9).toString("base64"), KEYMESH_SNAPSHOT_INTERVAL: "1h", KEYMESH_OWNERSHIP_TTL: "2s" };
    const crashed = spawnServer(env);
    const { grpcPort } = await listening(crashed);
    const transport = createGrpcTransport({ baseUrl: `http://127.0.0.1:${grpcPort}` });
    const { PoolAdminService } = await import("../../server/src/gen/keymesh/v1/admin_pb.js");
    const admin = createClient(PoolAdminService, transport);
    const pool = createClient(KeyPoolService, transport);
    await admin.createPool({ pool: { name: "crash" } });
    await admin.addKey({ pool: "crash", key: { id: "only", maxConcurrency: 1 }, secret: SECRET_A });
    const lease = await pool.acquire({ pool: "crash", leaseTtl: durationFromMs(600_000) });
    // An unlimited key's grant is not awaited by Acquire; after the crash its lease must still be usable.
    await admin.addKey({ pool: "crash", key: { id: "open" }, secret: SECRET_B });
    const open = await pool.acquire({ pool: "crash", leaseTtl: durationFromMs(600_000) });
    expect(open.keyId).toBe("open");
    crashed.child.kill("SIGKILL");
    await crashed.exited;

    const restarted = spawnServer(env);
    try {
      const ports = await listening(restarted);
      const t2 = createGrpcTransport({ baseUrl: `http://127.0.0.1:${ports.grpcPort}` });
      const pool2 = createClient(KeyPoolService, t2);
      let held = await rejection(pool2.acquire({ pool: "crash", excludeKeyIds: ["open"] }));
      for (let i = 0; i < 200 && held.code === Code.Unavailable; i++) {
        await new Promise((r) => setTimeout(r, 50));
        held = await rejection(pool2.acquire({ pool: "crash", excludeKeyIds: ["open"] }));
      }
      expect(held.code).toBe(Code.ResourceExhausted);
      await pool2.renewLease({ leaseId: open.leaseId });
      await pool2.release({ leaseId: open.leaseId });
      await pool2.release({ leaseId: lease.leaseId });
      const next = await pool2.acquire({ pool: "crash", excludeKeyIds: ["open"] });
      expect(next.keyId).toBe("only");
      expect(restarted.stdout() + crashed.stdout()).not.toContain(SECRET_A);
    } finally {
      restarted.child.kill("SIGTERM");
      await restarted.exited;
    }
  }, 120_000);
});

describe("Postgres outage (a cluster of its own)", () => {
  const CLUSTER = "pg-e2e-outage";
  const pg = (fn: string) =>
    execFileSync("bash", ["-c", `source scripts/pg.sh && ${fn} >&2 && echo "$DATABASE_URL"`], {
      env: { ...process.env, KEYMESH_PG_NAME: CLUSTER },
      encoding: "utf8",
    }).trim();
  let ts: TestServer;
  let url: string;

  beforeAll(async () => {
    url = (await freshDatabase(pg("pg_start")))!;
    // The replica keeps its pools through the outage below only while its trust window lasts.
    ts = await startTestServer({ DATABASE_URL: url, KEYMESH_OWNERSHIP_TTL: "60s" });
  }, 60_000);

  afterAll(async () => {
    pg("pg_restart");
    await ts?.stop();
    pg("pg_stop");
  }, 60_000);

  it("keeps lending from memory, reports not ready, refuses admin writes, and catches up afterwards", async () => {
    await ts.admin.createPool({ pool: { name: "outage" } });
    await ts.admin.addKey({ pool: "outage", key: { id: "k" }, secret: SECRET_A });
    pg("pg_kill");

    for (let i = 0; i < 5; i++) {
      const lease = await ts.pool.acquire({ pool: "outage" });
      await ts.pool.release({ leaseId: lease.leaseId, latency: durationFromMs(100) });
    }
    const refused = await rejection(ts.admin.addKey({ pool: "outage", key: { id: "late" }, secret: SECRET_B }));
    expect(refused.code).toBe(Code.Unavailable);
    expect(reasonOf(refused)).toBe(ErrorReason.DATABASE_UNAVAILABLE);
    expect((await ts.admin.listKeys({ pool: "outage" })).keys.map((k) => k.id)).toEqual(["k"]);
    expect((await fetch(`${ts.httpUrl}/readyz`)).status).toBe(503);
    // Health for load balancers: the server lends, so it serves; only the database's own name says otherwise.
    expect(await healthStatus(ts.grpcAddr, "", DATABASE_HEALTH_SERVICE)).toEqual(["SERVING", "NOT_SERVING"]);
    const held = await ts.pool.acquire({ pool: "outage", leaseTtl: durationFromMs(600_000) });

    pg("pg_restart");
    let ready = 503;
    for (let i = 0; i < 100 && ready !== 200; i++) {
      await new Promise((r) => setTimeout(r, 100));
      ready = (await fetch(`${ts.httpUrl}/readyz`)).status;
    }
    expect(ready).toBe(200);
    expect(await healthStatus(ts.grpcAddr, "", DATABASE_HEALTH_SERVICE)).toEqual(["SERVING", "SERVING"]);
    await ts.admin.addKey({ pool: "outage", key: { id: "late" }, secret: SECRET_B });
    expect((await ts.admin.getPoolStats({ pool: "outage" })).stats!.keys.find((k) => k.keyId === "k")!.totalLeases).toBe(6n);

    // What the outage-time snapshot missed is written now: a restart sees the lease granted during it.
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    try {
      await expect.poll(async () => (await sql<{ lease_id: string }[]>`select lease_id from leases`).map((r) => r.lease_id), { timeout: 10_000 }).toContain(held.leaseId);
    } finally {
      await sql.end();
    }
    await ts.stop({ keepData: true });
    ts = await startTestServer({ DATABASE_URL: url, KEYMESH_OWNERSHIP_TTL: "60s" }, { databaseUrl: url, dataDir: ts.dataDir });
    expect((await ts.admin.listLeases({ pool: "outage" })).leases.map((l) => l.leaseId)).toEqual([held.leaseId]);
    await ts.pool.release({ leaseId: held.leaseId });
  }, 120_000);
});
