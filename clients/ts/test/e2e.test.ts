// Against a real KeyMesh server at KEYMESH_ADDR (host:port of its gRPC listener; KEYMESH_TOKEN when
// it needs one; KEYMESH_HTTP_ADDR, its Connect listener, adds the Connect transport). Each test
// creates its own pool.
import { randomBytes } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { durationFromMs, msFromDuration } from "../src/duration.js";
import { createKeyMeshClient, keymeshErrorReason, type KeyMeshClient, LeaseGoneError } from "../src/index.js";
import { OpenAIAPIError } from "./sdk-errors.js";

const addr = process.env.KEYMESH_ADDR;
const httpAddr = process.env.KEYMESH_HTTP_ADDR;
const token = process.env.KEYMESH_TOKEN || undefined;

describe.skipIf(!addr)("against a real server (KEYMESH_ADDR)", () => {
  const transports = httpAddr ? (["grpc", "connect"] as const) : (["grpc"] as const);
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    await Promise.allSettled(cleanups.splice(0).map((c) => c()));
  });

  const grpcClient = () => createKeyMeshClient({ baseUrl: `http://${addr}`, token });

  async function newPool(client: KeyMeshClient, ...keyIds: string[]): Promise<string> {
    const name = `ts-e2e-${randomBytes(5).toString("hex")}`;
    await client.admin.createPool({ pool: { name, minTtl: durationFromMs(1_000), defaultTtl: durationFromMs(30_000) } });
    cleanups.push(() => client.admin.deletePool({ name, force: true }));
    for (const id of keyIds) await client.admin.addKey({ pool: name, key: { id, label: `label-${id}` }, secret: `sk-test-${id}` });
    return name;
  }

  async function keyStats(client: KeyMeshClient, pool: string, keyId: string) {
    const { stats } = await client.admin.getPoolStats({ pool });
    const key = stats?.keys.find((k) => k.keyId === keyId);
    if (!key) throw new Error(`no stats for ${keyId}`);
    return key;
  }

  const liveLeases = async (client: KeyMeshClient, pool: string) => (await client.admin.listLeases({ pool })).leases;

  it("a lease outlives its ttl while in use and is released with its latency", async () => {
    const client = grpcClient();
    const pool = await newPool(client, "k1");
    let leaseId = "";
    await client.withKey(
      pool,
      async (lease) => {
        leaseId = lease.leaseId;
        expect([lease.key, lease.keyLabel]).toEqual(["sk-test-k1", "label-k1"]);
        await new Promise((resolve) => setTimeout(resolve, 2_500)); // 2.5 ttls: only renewals keep it alive
        expect(lease.signal.aborted).toBe(false);
        expect(await liveLeases(client, pool)).toHaveLength(1);
      },
      { ttlMs: 1_000 },
    );
    expect(await liveLeases(client, pool)).toHaveLength(0);
    const again = await client.pool.release({ leaseId }).catch((e: unknown) => e);
    expect(keymeshErrorReason(again)).toBe("LEASE_RELEASED");
    expect(msFromDuration((await keyStats(client, pool, "k1")).emaLatency)).toBeGreaterThanOrEqual(2_000);
  });

  it.each(transports)("reports failures and rate limits (%s transport)", async (transport) => {
    const admin = grpcClient();
    const client = transport === "grpc" ? admin : createKeyMeshClient({ baseUrl: `http://${httpAddr}`, transport, token });
    const pool = await newPool(admin, "k1");
    const failure = new OpenAIAPIError(500, undefined, null, "server_error", "boom");
    await expect(client.withKey(pool, async () => Promise.reject(failure))).rejects.toBe(failure);
    const afterFailure = await keyStats(admin, pool, "k1");
    expect([afterFailure.consecutiveFailures, afterFailure.activeLeases]).toEqual([1, 0]);
    await expect(
      client.withKey(pool, async () => Promise.reject(new OpenAIAPIError(429, { "retry-after": "30" }, "rate_limit_exceeded", "requests", "slow"))),
    ).rejects.toBeInstanceOf(OpenAIAPIError);
    const afterLimit = await keyStats(admin, pool, "k1");
    expect(msFromDuration(afterLimit.cooldownRemaining)).toBeGreaterThan(20_000);
    expect(afterLimit.eligible).toBe(false);
  });

  it("ends the lease on a throw and on the caller's abort, without penalising the key for the abort", async () => {
    const client = grpcClient();
    const pool = await newPool(client, "k1");
    await client.withKey(pool, async () => Promise.reject(new OpenAIAPIError(400, undefined, null, "invalid_request_error", "bad"))).catch(() => {});
    expect(await liveLeases(client, pool)).toHaveLength(0);
    const caller = new AbortController();
    const thrown = await client
      .withKey(
        pool,
        async (lease) => {
          caller.abort(new Error("gave up"));
          throw lease.signal.reason;
        },
        { signal: caller.signal },
      )
      .catch((e: unknown) => e);
    expect((thrown as Error).message).toBe("gave up");
    expect(await liveLeases(client, pool)).toHaveLength(0);
    expect((await keyStats(client, pool, "k1")).consecutiveFailures).toBe(0);
  });

  it.each(transports)("aborts lease.signal when the key is disabled (%s transport)", async (transport) => {
    const client = transport === "grpc" ? grpcClient() : createKeyMeshClient({ baseUrl: `http://${httpAddr}`, transport, token });
    const pool = await newPool(client, "k1");
    await client
      .withKey(pool, async (lease) => {
        await client.admin.disableKey({ pool, keyId: lease.keyId, reason: "e2e" });
        await new Promise((resolve, reject) => {
          if (lease.signal.aborted) return resolve(undefined);
          lease.signal.addEventListener("abort", resolve);
          setTimeout(() => reject(new Error("holder not told of the revocation")), 10_000);
        });
        expect(lease.revoked).toBe(true);
        expect((lease.signal.reason as LeaseGoneError).reason).toBe("LEASE_REVOKED");
        throw lease.signal.reason;
      }, { ttlMs: 3_000 }) // a revocation reaches a lease from its first renewal on (ttl/3)
      .catch((e: unknown) => expect(e).toBeInstanceOf(LeaseGoneError));
  });

  it("callWithRetry moves to another key after a rate limit", async () => {
    const client = grpcClient();
    const pool = await newPool(client, "k1", "k2");
    const used: string[] = [];
    await client.callWithRetry(
      pool,
      async (lease) => {
        used.push(lease.keyId);
        if (used.length === 1) throw new OpenAIAPIError(429, { "retry-after": "60" }, "rate_limit_exceeded", "requests", "slow");
      },
      { budgetMs: 10_000 },
    );
    expect(used).toHaveLength(2);
    expect(used[0]).not.toBe(used[1]);
  });
});
