// The engine's rules through the real server and a real gRPC client: waiting and waking, timeouts
// with retry-after, cancellation, the circuit breaker, automatic vs manual disable, quota groups,
// weighted proportions and exclusions. (Exhaustive rule tests with a fake clock live in
// server/test/domain; these show the same behaviour survives the wire.)
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { durationFromMs, durationMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { CircuitState, KeyState, Strategy } from "../../server/src/gen/keymesh/v1/admin_pb.js";
import { ErrorReason } from "../../server/src/gen/keymesh/v1/common_pb.js";
import { FailureReason } from "../../server/src/gen/keymesh/v1/pool_pb.js";
import { reasonOf, rejection } from "../support/errors.js";
import { startTestServer, uniqueName, type TestServer } from "../support/server.js";

let ts: TestServer;

beforeAll(async () => {
  ts = await startTestServer();
});

afterAll(async () => {
  await ts?.stop();
});

/** Resolves once the pool has `n` queued Acquires. */
async function waiters(name: string, n: number): Promise<void> {
  await expect.poll(async () => (await ts.admin.getPoolStats({ pool: name })).stats!.waiters, { timeout: 10_000 }).toBe(n);
}

async function pool(keys: Array<{ id: string; maxConcurrency?: number; weight?: number; quotaGroup?: string }>, extra: object = {}) {
  const name = uniqueName("eng");
  await ts.admin.createPool({ pool: { name, ...extra } });
  for (const k of keys) await ts.admin.addKey({ pool: name, key: k, secret: `sk-engine-${k.id}-000000000000` });
  return name;
}

describe("waiting", () => {
  it("serves waiters first in first out, each woken by a release", async () => {
    const name = await pool([{ id: "only", maxConcurrency: 1 }]);
    const held = await ts.pool.acquire({ pool: name });
    const order: string[] = [];
    const queued: Array<Promise<{ leaseId: string }>> = [];
    // Each waiter is queued before the next one calls.
    for (const holder of ["first", "second"]) {
      queued.push(
        ts.pool.acquire({ pool: name, holder, waitTimeout: durationFromMs(10_000) }).then((lease) => {
          order.push(holder);
          return lease;
        }),
      );
      await waiters(name, queued.length);
    }
    expect((await ts.admin.getPoolStats({ pool: name })).stats!.waiters).toBe(2);
    await ts.pool.release({ leaseId: held.leaseId });
    const first = await queued[0];
    await ts.pool.release({ leaseId: first.leaseId });
    const second = await queued[1];
    await ts.pool.release({ leaseId: second.leaseId });
    expect(order).toEqual(["first", "second"]);
  });

  it("times out with RESOURCE_EXHAUSTED and a retry-after hint; a cancelled caller leaves the queue", async () => {
    const name = await pool([{ id: "only", maxConcurrency: 1 }]);
    const held = await ts.pool.acquire({ pool: name, leaseTtl: durationFromMs(30_000) });
    const timedOut = await rejection(ts.pool.acquire({ pool: name, waitTimeout: durationFromMs(150) }));
    expect(timedOut.code).toBe(Code.ResourceExhausted);
    expect(reasonOf(timedOut)).toBe(ErrorReason.NO_KEY_AVAILABLE);
    const { ErrorDetailSchema } = await import("../../server/src/gen/keymesh/v1/common_pb.js");
    const retryAfter = timedOut.findDetails(ErrorDetailSchema)[0].retryAfter!;
    expect(durationMs(retryAfter)).toBeGreaterThan(20_000);

    const abort = new AbortController();
    const cancelled = ts.pool.acquire({ pool: name, waitTimeout: durationFromMs(30_000) }, { signal: abort.signal }).catch(() => "cancelled");
    await waiters(name, 1);
    expect((await ts.admin.getPoolStats({ pool: name })).stats!.waiters).toBe(1);
    abort.abort();
    expect(await cancelled).toBe("cancelled");
    await waiters(name, 0);
    expect((await ts.admin.getPoolStats({ pool: name })).stats!.waiters).toBe(0);
    await ts.pool.release({ leaseId: held.leaseId });
  });

  it("never waits past the RPC deadline", async () => {
    const name = await pool([{ id: "only", maxConcurrency: 1 }]);
    const held = await ts.pool.acquire({ pool: name });
    const started = Date.now();
    const err = await rejection(ts.pool.acquire({ pool: name, waitTimeout: durationFromMs(60_000) }, { timeoutMs: 300 }));
    expect(Date.now() - started).toBeLessThan(5_000);
    // The server ends the wait a margin before the deadline, so the caller hears why rather than a timeout.
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(reasonOf(err)).toBe(ErrorReason.NO_KEY_AVAILABLE);
    await ts.pool.release({ leaseId: held.leaseId });
  });
});

describe("health and outcomes", () => {
  it("opens the circuit after failure_threshold transient failures, and OVERLOADED costs nothing", async () => {
    const name = await pool([{ id: "k" }], { circuitBreaker: { failureThreshold: 2 } });
    for (const reason of [FailureReason.OVERLOADED, FailureReason.CLIENT_ERROR, FailureReason.TRANSIENT]) {
      const lease = await ts.pool.acquire({ pool: name });
      await ts.pool.markFailed({ leaseId: lease.leaseId, reason });
    }
    let stats = (await ts.admin.getPoolStats({ pool: name })).stats!.keys[0];
    expect(stats.consecutiveFailures).toBe(1);
    expect(stats.circuitState).toBe(CircuitState.CLOSED);
    const lease = await ts.pool.acquire({ pool: name });
    const applied = await ts.pool.markFailed({ leaseId: lease.leaseId, httpStatus: 502 });
    expect(applied.classifiedAs).toBe(FailureReason.TRANSIENT);
    stats = (await ts.admin.getPoolStats({ pool: name })).stats!.keys[0];
    expect(stats.circuitState).toBe(CircuitState.OPEN);
    expect(stats.eligible).toBe(false);
    expect(reasonOf(await rejection(ts.pool.acquire({ pool: name })))).toBe(ErrorReason.NO_KEY_AVAILABLE);
  });

  it("auto-disables on AUTH, shown apart from a manual disable, until an operator enables it", async () => {
    const name = await pool([{ id: "bad" }, { id: "off" }]);
    await ts.admin.disableKey({ pool: name, keyId: "off", reason: "rotation" });
    const lease = await ts.pool.acquire({ pool: name });
    expect(lease.keyId).toBe("bad");
    await ts.pool.markFailed({ leaseId: lease.leaseId, httpStatus: 401, message: "invalid key sk-engine-bad-000000000000" });
    const keys = Object.fromEntries((await ts.admin.listKeys({ pool: name })).keys.map((k) => [k.id, k]));
    expect(keys.bad.state).toBe(KeyState.AUTO_DISABLED_AUTH);
    expect(keys.bad.stateReason).not.toContain("sk-engine-bad-000000000000");
    expect(keys.off.state).toBe(KeyState.DISABLED);
    expect(keys.off.stateReason).toBe("rotation");
    await ts.admin.enableKey({ pool: name, keyId: "bad" });
    const again = await ts.pool.acquire({ pool: name });
    expect(again.keyId).toBe("bad");
    await ts.pool.release({ leaseId: again.leaseId });
  });

  it("cools a whole quota group on a 429", async () => {
    const name = await pool([
      { id: "a", quotaGroup: "org" },
      { id: "b", quotaGroup: "org" },
      { id: "c" },
    ]);
    const lease = await ts.pool.acquire({ pool: name, excludeKeyIds: ["b", "c"] });
    expect(lease.keyId).toBe("a");
    await ts.pool.markRateLimited({ leaseId: lease.leaseId, retryAfter: durationFromMs(60_000) });
    const stats = (await ts.admin.getPoolStats({ pool: name })).stats!.keys;
    for (const id of ["a", "b"]) expect(durationMs(stats.find((k) => k.keyId === id)!.cooldownRemaining!)).toBeGreaterThan(55_000);
    expect(reasonOf(await rejection(ts.pool.acquire({ pool: name, excludeKeyIds: ["c"] })))).toBe(ErrorReason.NO_KEY_AVAILABLE);
    const other = await ts.pool.acquire({ pool: name });
    expect(other.keyId).toBe("c");
    await ts.pool.release({ leaseId: other.leaseId });
  });

  it("keeps the later deadline when a shorter retry-after follows a longer one", async () => {
    const name = await pool([{ id: "k" }]);
    const first = await ts.pool.acquire({ pool: name });
    const second = await ts.pool.acquire({ pool: name });
    const long = await ts.pool.markRateLimited({ leaseId: first.leaseId, retryAfter: durationFromMs(60_000) });
    const short = await ts.pool.markRateLimited({ leaseId: second.leaseId, retryAfter: durationFromMs(1_000) });
    expect(short.cooldownUntil).toEqual(long.cooldownUntil);
  });
});

describe("strategies over the wire", () => {
  it("weighted lends in exact proportion; exclusions are honoured", async () => {
    const name = await pool(
      [
        { id: "heavy", weight: 3 },
        { id: "light", weight: 1 },
      ],
      { strategy: Strategy.WEIGHTED },
    );
    const counts: Record<string, number> = {};
    for (let i = 0; i < 40; i++) {
      const lease = await ts.pool.acquire({ pool: name });
      counts[lease.keyId] = (counts[lease.keyId] ?? 0) + 1;
      await ts.pool.release({ leaseId: lease.leaseId });
    }
    expect(counts).toEqual({ heavy: 30, light: 10 });
    const excluded = await ts.pool.acquire({ pool: name, excludeKeyIds: ["heavy"] });
    expect(excluded.keyId).toBe("light");
    await ts.pool.release({ leaseId: excluded.leaseId });
  });
});

describe("listing", () => {
  it("pages through 2,100 live leases: each exactly once, oldest first; a token is refused on another pool", async () => {
    const name = await pool([{ id: "a" }, { id: "b" }]);
    const granted: string[] = [];
    for (let i = 0; i < 2100; i += 100) {
      const batch = await Promise.all(Array.from({ length: 100 }, () => ts.pool.acquire({ pool: name, leaseTtl: durationFromMs(60_000) })));
      granted.push(...batch.map((l) => l.leaseId));
    }
    const seen: Array<{ id: string; at: bigint }> = [];
    const sizes: number[] = [];
    let pageToken = "";
    do {
      const res = await ts.admin.listLeases({ pool: name, pageToken });
      sizes.push(res.leases.length);
      seen.push(...res.leases.map((l) => ({ id: l.leaseId, at: l.acquireTime!.seconds * 1000n + BigInt(l.acquireTime!.nanos / 1e6) })));
      pageToken = res.nextPageToken;
    } while (pageToken !== "");
    expect(sizes).toEqual([1000, 1000, 100]);
    expect(new Set(seen.map((l) => l.id))).toEqual(new Set(granted));
    expect(seen.map((l) => l.at)).toEqual([...seen.map((l) => l.at)].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)));

    const small = await ts.admin.listLeases({ pool: name, keyId: "a", pageSize: 5 });
    expect(small.leases).toHaveLength(5);
    const wrongScope = await rejection(ts.admin.listLeases({ pool: name, pageToken: small.nextPageToken }));
    expect(wrongScope.code).toBe(Code.InvalidArgument);
    expect(wrongScope.rawMessage).toBe("page_token: belongs to a request with other filters");
    const keys = await ts.admin.listKeys({ pool: name, pageSize: 1 });
    expect(keys.keys.map((k) => k.id)).toEqual(["a"]);
    expect((await ts.admin.listKeys({ pool: name, pageSize: 1, pageToken: keys.nextPageToken })).keys.map((k) => k.id)).toEqual(["b"]);
    for (const leaseId of granted) await ts.pool.release({ leaseId });
  }, 60_000);
});
