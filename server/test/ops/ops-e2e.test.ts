// Operating a real server: the auth matrix on both listeners, /metrics after real traffic, an event
// of every kind on WatchEvents, and no raw secret anywhere in the logs of the whole run.
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventType, PoolAdminService, Strategy, type Event } from "../../src/gen/keymesh/v1/admin_pb.js";
import { ErrorDetailSchema, ErrorReason } from "../../src/gen/keymesh/v1/common_pb.js";
import { KeyPoolService } from "../../src/gen/keymesh/v1/pool_pb.js";
import { startTestServer, uniqueName, type TestServer } from "../../../test/support/server.js";

const ADMIN = "ops-admin-token-0123456789";
const USER_A = "ops-user-a-token-012345678";
const USER_B = "ops-user-b-token-012345678";
const USER_ALL = "ops-user-all-token-0123456";
const SECRET_A = "sk-ops-raw-secret-aaaaaaaaaaaa0001";
const SECRET_B = "sk-ops-raw-secret-bbbbbbbbbbbb0002";
const SECRET_M1 = "sk-ops-raw-secret-metrics-000003";
const SECRET_M2 = "sk-ops-raw-secret-metrics-000004";
const SECRET_EV = "sk-ops-raw-secret-events-0000005";
const ALL_SECRETS = [SECRET_A, SECRET_B, SECRET_M1, SECRET_M2, SECRET_EV];

let ts: TestServer;
const poolA = uniqueName("auth-a");
const poolB = uniqueName("auth-b");
const poolM = uniqueName("metrics");

function bearer(token: string | undefined): Interceptor[] {
  if (!token) return [];
  return [
    (next) => (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    },
  ];
}

type Listener = "grpc" | "connect";

function transport(listener: Listener, token?: string): Transport {
  return listener === "grpc"
    ? createGrpcTransport({ baseUrl: `http://${ts.grpcAddr}`, interceptors: bearer(token) })
    : createConnectTransport({ baseUrl: ts.httpUrl, httpVersion: "1.1", interceptors: bearer(token) });
}

const clients = (listener: Listener, token?: string) => {
  const t = transport(listener, token);
  return { pool: createClient(KeyPoolService, t), admin: createClient(PoolAdminService, t) };
};

async function failure(call: Promise<unknown>): Promise<{ code: Code; reason: ErrorReason | undefined; message: string }> {
  try {
    await call;
  } catch (err) {
    const ce = ConnectError.from(err);
    return { code: ce.code, reason: ce.findDetails(ErrorDetailSchema)[0]?.reason, message: ce.rawMessage };
  }
  throw new Error("expected the call to fail");
}

/** Prometheus text → `name{labels}` → value. */
function parseMetrics(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^(\S+?(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (!match) throw new Error(`unparseable metrics line: ${line}`);
    samples.set(match[1], Number(match[2]));
  }
  return samples;
}

async function scrape(): Promise<{ contentType: string | null; samples: Map<string, number> }> {
  const res = await fetch(`${ts.httpUrl}/metrics`);
  expect(res.status).toBe(200);
  return { contentType: res.headers.get("content-type"), samples: parseMetrics(await res.text()) };
}

beforeAll(async () => {
  ts = await startTestServer({
    KEYMESH_AUTH_TOKENS: `${ADMIN}=admin,name:ops team;${USER_A}=use:${poolA};${USER_B}=use:${poolB};${USER_ALL}=use:*`,
    KEYMESH_LOG_LEVEL: "debug",
  });
  const { admin } = clients("grpc", ADMIN);
  await admin.createPool({ pool: { name: poolA } });
  await admin.createPool({ pool: { name: poolB } });
  await admin.addKey({ pool: poolA, key: { id: "a1" }, secret: SECRET_A });
  await admin.addKey({ pool: poolB, key: { id: "b1" }, secret: SECRET_B });
});

afterAll(async () => {
  await ts?.stop();
});

describe.each(["grpc", "connect"] as const)("auth on the %s listener", (listener) => {
  it("answers UNAUTHENTICATED without a token or with an unknown one", async () => {
    for (const token of [undefined, "not-a-configured-token-0000"]) {
      const { pool, admin } = clients(listener, token);
      expect(await failure(pool.acquire({ pool: poolA }))).toMatchObject({ code: Code.Unauthenticated, reason: ErrorReason.UNAUTHENTICATED });
      expect(await failure(admin.listPools({}))).toMatchObject({ code: Code.Unauthenticated, reason: ErrorReason.UNAUTHENTICATED });
    }
  });

  it("answers PERMISSION_DENIED for a token without the scope", async () => {
    expect(await failure(clients(listener, USER_B).pool.acquire({ pool: poolA }))).toMatchObject({
      code: Code.PermissionDenied,
      reason: ErrorReason.PERMISSION_DENIED,
      message: `keymesh.v1.KeyPoolService/Acquire needs scope use:${poolA}`,
    });
    expect(await failure(clients(listener, ADMIN).pool.acquire({ pool: poolA }))).toMatchObject({ code: Code.PermissionDenied });
    expect(await failure(clients(listener, USER_A).admin.listPools({}))).toMatchObject({
      code: Code.PermissionDenied,
      message: "keymesh.v1.PoolAdminService/ListPools needs scope admin",
    });
  });

  it("lets the right scope through, and guards lease calls by the pool inside the lease id", async () => {
    const mine = clients(listener, USER_A).pool;
    const grant = await mine.acquire({ pool: poolA, holder: "auth-test" });
    expect(grant.keyId).toBe("a1");
    expect(await failure(clients(listener, USER_B).pool.release({ leaseId: grant.leaseId }))).toMatchObject({ code: Code.PermissionDenied });
    await mine.release({ leaseId: grant.leaseId });
    const everyPool = clients(listener, USER_ALL).pool;
    await everyPool.release({ leaseId: (await everyPool.acquire({ pool: poolB })).leaseId });
    expect((await clients(listener, ADMIN).admin.listPools({})).pools.map((p) => p.name)).toEqual(expect.arrayContaining([poolA, poolB]));
  });
});

describe("open endpoints with auth on", () => {
  it("serves /healthz and /metrics without a token", async () => {
    expect((await fetch(`${ts.httpUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${ts.httpUrl}/metrics`)).status).toBe(200);
  });

  it("answers the gRPC health check without a token", async () => {
    const client = new grpc.Client(ts.grpcAddr, grpc.credentials.createInsecure());
    try {
      const response = await new Promise<Buffer>((resolve, reject) =>
        client.makeUnaryRequest(
          "/grpc.health.v1.Health/Check",
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.alloc(0),
          (err, res) => (err ? reject(err) : resolve(res!)),
        ),
      );
      // HealthCheckResponse { status: SERVING (1) }
      expect([...response]).toEqual([0x08, 0x01]);
    } finally {
      client.close();
    }
  });
});

describe("metrics after real traffic", () => {
  const user = () => clients("grpc", USER_ALL).pool;

  beforeAll(async () => {
    const { admin } = clients("grpc", ADMIN);
    await admin.createPool({ pool: { name: poolM, strategy: Strategy.ROUND_ROBIN } });
    await admin.addKey({ pool: poolM, key: { id: "m1", maxConcurrency: 1 }, secret: SECRET_M1 });
    await admin.addKey({ pool: poolM, key: { id: "m2", maxConcurrency: 1 }, secret: SECRET_M2 });
    for (let i = 0; i < 3; i++) {
      const grant = await user().acquire({ pool: poolM });
      await user().release({ leaseId: grant.leaseId, latency: durationFromMs(120) });
    }
    const limited = await user().acquire({ pool: poolM, excludeKeyIds: ["m2"] });
    await user().markRateLimited({ leaseId: limited.leaseId, retryAfter: durationFromMs(120_000) });
    await user().acquire({ pool: poolM, holder: "metrics-holder" });
    await failure(user().acquire({ pool: poolM, waitTimeout: durationFromMs(30) }));
  });

  it("exposes acquire latency, waits, live leases, cooldowns, circuits, waiters and database state", async () => {
    const { contentType, samples } = await scrape();
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(samples.get(`keymesh_acquire_duration_seconds_count{pool="${poolM}",result="granted"}`)).toBe(5);
    expect(samples.get(`keymesh_acquire_duration_seconds_count{pool="${poolM}",result="timeout"}`)).toBe(1);
    expect(samples.get(`keymesh_acquire_wait_seconds_count{pool="${poolM}"}`)).toBeGreaterThanOrEqual(1);
    expect(samples.get(`keymesh_leases_active{pool="${poolM}",key="m2"}`)).toBe(1);
    expect(samples.get(`keymesh_leases_active{pool="${poolM}",key="m1"}`)).toBe(0);
    expect(samples.get(`keymesh_key_cooldown_seconds{pool="${poolM}",key="m1"}`)).toBeGreaterThan(100);
    expect(samples.get(`keymesh_key_cooldown_seconds{pool="${poolM}",key="m2"}`)).toBe(0);
    expect(samples.get(`keymesh_circuit_state{pool="${poolM}",key="m1",state="closed"}`)).toBe(1);
    expect(samples.get(`keymesh_circuit_state{pool="${poolM}",key="m1",state="open"}`)).toBe(0);
    expect(samples.get(`keymesh_waiters{pool="${poolM}"}`)).toBe(0);
    expect(samples.get("keymesh_database_up")).toBe(1);
    expect(samples.has("keymesh_snapshot_age_seconds")).toBe(true);
    expect(samples.has("keymesh_process_resident_memory_bytes")).toBe(true);
  });

  it("counts snapshots once one has been written", async () => {
    let count = 0;
    for (let attempt = 0; attempt < 50 && count === 0; attempt++) {
      count = (await scrape()).samples.get("keymesh_snapshot_duration_seconds_count") ?? 0;
      if (count === 0) await new Promise((r) => setTimeout(r, 100));
    }
    expect(count).toBeGreaterThanOrEqual(1);
  });

  it("counts outcome reports by class, per pool and per key", async () => {
    const { samples } = await scrape();
    expect(samples.get(`keymesh_outcomes_total{pool="${poolM}",outcome="success"}`)).toBe(3);
    expect(samples.get(`keymesh_outcomes_total{pool="${poolM}",outcome="rate_limited"}`)).toBe(1);
    const successes = ["m1", "m2"].map((key) => samples.get(`keymesh_key_outcomes_total{pool="${poolM}",key="${key}",outcome="success"}`) ?? 0);
    expect(successes[0]! + successes[1]!).toBe(3);
    expect(samples.get(`keymesh_key_outcomes_total{pool="${poolM}",key="m1",outcome="rate_limited"}`)).toBe(1);
  });

  it("exposes key state and eligibility, pool counts, usage and the build", async () => {
    const { samples } = await scrape();
    expect(samples.get(`keymesh_key_state{pool="${poolM}",key="m1",state="enabled"}`)).toBe(1);
    // m1 cools down, m2 holds its one lease: neither can be lent.
    expect(samples.get(`keymesh_key_eligible{pool="${poolM}",key="m1"}`)).toBe(0);
    expect(samples.get(`keymesh_key_eligible{pool="${poolM}",key="m2"}`)).toBe(0);
    expect(samples.get(`keymesh_pool_eligible_keys{pool="${poolM}"}`)).toBe(0);
    expect(samples.get(`keymesh_pool_keys{pool="${poolM}",state="enabled"}`)).toBe(2);
    expect(samples.get(`keymesh_pool_keys_cooling_down{pool="${poolM}"}`)).toBe(1);
    expect(samples.get(`keymesh_pool_leases_active{pool="${poolM}"}`)).toBe(1);
    const leases = ["m1", "m2"].map((key) => samples.get(`keymesh_key_leases_total{pool="${poolM}",key="${key}"}`) ?? 0);
    expect(leases[0]! + leases[1]!).toBe(5);
    expect(samples.get(`keymesh_key_ema_latency_seconds{pool="${poolM}",key="m2"}`) ?? samples.get(`keymesh_key_ema_latency_seconds{pool="${poolM}",key="m1"}`)).toBeCloseTo(0.12);
    expect([...samples.keys()].some((k) => k.startsWith("keymesh_build_info{version="))).toBe(true);
  });

  it("counts RPCs by listener, method and status code on both ports", async () => {
    await clients("connect", ADMIN).admin.getPool({ name: poolM });
    await failure(clients("connect").admin.getPool({ name: poolM }));
    const { samples } = await scrape();
    const count = (listener: string, service: string, method: string, code: string) =>
      samples.get(`keymesh_rpc_duration_seconds_count{listener="${listener}",service="keymesh.v1.${service}",method="${method}",code="${code}"}`);
    expect(count("grpc", "KeyPoolService", "Acquire", "OK")).toBeGreaterThanOrEqual(5);
    expect(count("grpc", "KeyPoolService", "Acquire", "RESOURCE_EXHAUSTED")).toBeGreaterThanOrEqual(1);
    expect(count("grpc", "KeyPoolService", "Release", "OK")).toBeGreaterThanOrEqual(3);
    expect(count("http", "PoolAdminService", "GetPool", "OK")).toBeGreaterThanOrEqual(1);
    expect(count("http", "PoolAdminService", "GetPool", "UNAUTHENTICATED")).toBeGreaterThanOrEqual(1);
  });

  it("reports no unwritten state once a snapshot has written it", async () => {
    await expect.poll(async () => (await scrape()).samples.get("keymesh_snapshot_age_seconds"), { timeout: 10_000 }).toBe(0);
  });
});

describe("WatchEvents", () => {
  const seen: Event[] = [];

  beforeAll(async () => {
    const { admin } = clients("grpc", ADMIN);
    const pool = clients("grpc", USER_ALL).pool;
    const name = uniqueName("events");
    const watch = new AbortController();
    const waiters: Array<() => void> = [];
    const consumer = (async () => {
      try {
        for await (const res of admin.watchEvents({ pool: "", includeLeaseEvents: true }, { signal: watch.signal })) {
          if (res.event && (res.event.pool === name || res.event.type === EventType.LAGGED)) seen.push(res.event);
          waiters.splice(0).forEach((wake) => wake());
        }
      } catch (err) {
        if (!watch.signal.aborted) throw err;
      }
    })();
    const has = (type: EventType) => seen.some((e) => e.type === type);
    const waitFor = async (type: EventType, limitMs = 5_000) => {
      const deadline = Date.now() + limitMs;
      while (!has(type)) {
        if (Date.now() > deadline) throw new Error(`no ${EventType[type]} event within ${limitMs}ms; saw ${seen.map((e) => EventType[e.type]).join(", ")}`);
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 50);
        });
      }
    };

    // The subscription starts asynchronously: create and delete until the watch sees it.
    for (let attempt = 0; !has(EventType.POOL_CREATED) && attempt < 40; attempt++) {
      await admin.createPool({
        pool: {
          name,
          minTtl: durationFromMs(50),
          defaultCooldown: durationFromMs(100),
          circuitBreaker: { failureThreshold: 1, openDuration: durationFromMs(150), halfOpenProbes: 1 },
        },
      });
      await waitFor(EventType.POOL_CREATED, 150).catch(() => admin.deletePool({ name }));
    }
    await admin.updatePool({ pool: { name, description: "events" }, updateMask: { paths: ["description"] } });
    await admin.addKey({ pool: name, key: { id: "e1" }, secret: SECRET_EV });
    await admin.updateKey({ key: { pool: name, id: "e1", label: "events key" }, updateMask: { paths: ["label"] } });

    await pool.release({ leaseId: (await pool.acquire({ pool: name })).leaseId });
    await pool.markRateLimited({ leaseId: (await pool.acquire({ pool: name })).leaseId, retryAfter: durationFromMs(100) });
    await waitFor(EventType.COOLDOWN_ENDED);
    const failing = await pool.acquire({ pool: name, waitTimeout: durationFromMs(2_000) });
    await pool.markFailed({ leaseId: failing.leaseId, httpStatus: 500, message: "upstream error" });
    await waitFor(EventType.CIRCUIT_OPENED);
    const probe = await pool.acquire({ pool: name, waitTimeout: durationFromMs(2_000) });
    await pool.release({ leaseId: probe.leaseId });
    await waitFor(EventType.CIRCUIT_CLOSED);

    await pool.acquire({ pool: name, leaseTtl: durationFromMs(50) });
    await waitFor(EventType.LEASE_EXPIRED);
    await admin.revokeLease({ leaseId: (await pool.acquire({ pool: name })).leaseId, reason: "events test" });
    await admin.disableKey({ pool: name, keyId: "e1", reason: "events test" });
    await failure(pool.acquire({ pool: name, waitTimeout: durationFromMs(30) }));
    await admin.enableKey({ pool: name, keyId: "e1" });
    // A backup tier: lent while e1 is out, and the pool back on e1 once it has lent alone for over a second.
    await admin.addKey({ pool: name, key: { id: "e2", priority: 1 }, secret: `${SECRET_EV}-backup` });
    await pool.release({ leaseId: (await pool.acquire({ pool: name, excludeKeyIds: ["e1"] })).leaseId });
    await waitFor(EventType.TIER_FALLBACK);
    for (let i = 0; i < 100 && !has(EventType.TIER_RESTORED); i++) {
      await pool.release({ leaseId: (await pool.acquire({ pool: name })).leaseId });
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await waitFor(EventType.TIER_RESTORED);
    const rejected = await pool.acquire({ pool: name });
    await pool.markFailed({ leaseId: rejected.leaseId, httpStatus: 401, message: `invalid api key ${SECRET_EV}` });
    await admin.removeKey({ pool: name, keyId: "e1" });
    await admin.deletePool({ name, force: true });
    await waitFor(EventType.POOL_DELETED);
    watch.abort();
    await consumer;
  });

  it("streams an event of every kind (ownership changes need several replicas: test/replicas)", () => {
    const kinds = new Set(seen.map((e) => e.type));
    const ownership = new Set([EventType.POOL_CLAIMED, EventType.POOL_HANDED_OVER, EventType.POOL_LOST]);
    const expected = Object.values(EventType).filter(
      (v): v is EventType => typeof v === "number" && v !== EventType.UNSPECIFIED && v !== EventType.LAGGED && !ownership.has(v),
    );
    expect(expected.filter((kind) => !kinds.has(kind)).map((kind) => EventType[kind])).toEqual([]);
  });

  it("carries reasons and deadlines, and never a raw key", () => {
    const reasonOf = (type: EventType) => seen.find((e) => e.type === type)?.reason;
    expect(reasonOf(EventType.KEY_DISABLED)).toBe("events test");
    expect(reasonOf(EventType.KEY_AUTO_DISABLED)).toMatch(/^auth/);
    expect(seen.find((e) => e.type === EventType.COOLDOWN_STARTED)?.until).toBeDefined();
    expect(seen.find((e) => e.type === EventType.CIRCUIT_OPENED)?.until).toBeDefined();
    // A holder may paste the provider's error, key included; watchers must not receive it raw.
    expect(JSON.stringify(seen, (_k, v) => (typeof v === "bigint" ? String(v) : v))).not.toContain(SECRET_EV);
  });
});

describe("audit trail", () => {
  it("lists the changes made over either port with the token's name, and logs each", async () => {
    const name = uniqueName("audit");
    await clients("grpc", ADMIN).admin.createPool({ pool: { name } });
    await clients("connect", ADMIN).admin.addKey({ pool: name, key: { id: "a1" }, secret: SECRET_A });
    const { entries } = await clients("connect", ADMIN).admin.listAuditEntries({ pool: name });
    expect(entries.map((e) => [e.action, e.actor, e.keyId])).toEqual([
      ["add_key", "ops team", "a1"],
      ["create_pool", "ops team", ""],
    ]);
    expect(entries[0]!.after).toMatchObject({ id: "a1", secretHint: "sk-…0001" });
    expect(entries[0]!.replica).toMatch(/:\d+$/);
    const logged = ts.logs().split("\n").filter((line) => line.includes('"admin change"') && line.includes(name));
    expect(logged).toHaveLength(2);
    expect(JSON.parse(logged[1]!).audit).toMatchObject({ action: "add_key", actor: "ops team", pool: name });
    expect((await failure(clients("grpc", USER_ALL).admin.listAuditEntries({}))).code).toBe(Code.PermissionDenied);
  });

  it("counted the WatchEvents stream the client ended, when it ended", async () => {
    const { samples } = await scrape();
    expect(samples.get('keymesh_rpc_duration_seconds_count{listener="grpc",service="keymesh.v1.PoolAdminService",method="WatchEvents",code="CANCELLED"}')).toBeGreaterThanOrEqual(1);
  });
});

describe("logs", () => {
  it("never contain a raw secret over the whole run", async () => {
    const grant = await clients("grpc", USER_A).pool.acquire({ pool: poolA, holder: `holder quoting ${SECRET_A}` });
    await clients("grpc", USER_A).pool.markFailed({ leaseId: grant.leaseId, httpStatus: 401, message: `Incorrect API key provided: ${SECRET_A}` });
    const logs = ts.logs();
    expect(logs.length).toBeGreaterThan(0);
    for (const secret of [...ALL_SECRETS, ADMIN, USER_A, USER_B, USER_ALL]) expect(logs).not.toContain(secret);
  });
});
