// The RPC classes driven in memory through connect's router transport, with the real services and engine on
// a fake clock: field masks of UpdatePool and UpdateKey, the margin Acquire keeps before the RPC deadline,
// and the KeepAlive stream (renewal, gone, revocation pushed).
import { durationFromMs, durationMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it, vi } from "vitest";
import { ErrorDetailSchema, ErrorReason } from "../../src/gen/keymesh/v1/common_pb.js";
import { KeepAliveRequestSchema, type KeepAliveRequest, type KeepAliveResponse } from "../../src/gen/keymesh/v1/pool_pb.js";
import { FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import { services, settle } from "../service/harness.js";

const mask = (...paths: string[]) => create(FieldMaskSchema, { paths });

async function rejection(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected the call to fail");
}

const reason = (err: ConnectError) => err.findDetails(ErrorDetailSchema)[0]?.reason;

describe("UpdatePool field mask", () => {
  async function setup() {
    const s = services();
    await s.adminClient.createPool({ pool: { name: "p", description: "first", maxTtl: durationFromMs(600_000) } });
    return s;
  }

  it("changes only the masked fields, in proto or JSON spelling", async () => {
    const s = await setup();
    const given = { name: "p", description: "ignored", maxTtl: durationFromMs(900_000), defaultTtl: durationFromMs(120_000) };
    const { pool } = await s.adminClient.updatePool({ pool: given, updateMask: mask("max_ttl", "defaultTtl") });
    expect([durationMs(pool!.maxTtl!), durationMs(pool!.defaultTtl!), pool!.description]).toEqual([900_000, 120_000, "first"]);
    expect(s.config.writes.at(-1)).toMatchObject({ op: "updatePool", value: { maxTtlMs: 900_000, defaultTtlMs: 120_000, description: "first" } });
  });

  it("takes a message path for all its fields and a subfield path for one", async () => {
    const s = await setup();
    const circuitBreaker = { failureThreshold: 9, openDuration: durationFromMs(5000), maxOpenDuration: durationFromMs(50_000), halfOpenProbes: 2 };
    await s.adminClient.updatePool({ pool: { name: "p", circuitBreaker }, updateMask: mask("circuit_breaker.failure_threshold") });
    expect(s.engine.getPool("p")).toMatchObject({ failureThreshold: 9, openDurationMs: 30_000, halfOpenProbes: 1 });
    await s.adminClient.updatePool({ pool: { name: "p", circuitBreaker }, updateMask: mask("circuit_breaker") });
    expect(s.engine.getPool("p")).toMatchObject({ failureThreshold: 9, openDurationMs: 5000, maxOpenDurationMs: 50_000, halfOpenProbes: 2 });
  });

  it("without a mask changes every field the request sets", async () => {
    const s = await setup();
    await s.adminClient.updatePool({ pool: { name: "p", description: "second" } });
    expect(s.engine.getPool("p")).toMatchObject({ description: "second", maxTtlMs: 600_000 });
  });

  it("refuses an unknown or read-only path with INVALID_ARGUMENT on update_mask, writing nothing", async () => {
    const s = await setup();
    const writes = s.config.writes.length;
    for (const path of ["key_count", "name", "nonsense"]) {
      const err = await rejection(s.adminClient.updatePool({ pool: { name: "p", description: "x" }, updateMask: mask(path) }));
      expect([err.code, reason(err), err.findDetails(ErrorDetailSchema)[0]?.field]).toEqual([Code.InvalidArgument, ErrorReason.INVALID_ARGUMENT, "update_mask"]);
      expect(err.rawMessage).toBe(`update_mask: unknown or read-only pool field "${path}"`);
    }
    expect(s.config.writes.length).toBe(writes);
  });
});

describe("UpdateKey field mask", () => {
  async function setup() {
    const s = services();
    await s.adminClient.createPool({ pool: { name: "p" } });
    await s.adminClient.addKey({ pool: "p", key: { id: "k", label: "old", weight: 2, maxConcurrency: 3 }, secret: "sk-first-000000000000" });
    return s;
  }

  it("changes only the masked fields; a masked secret rotates the key", async () => {
    const s = await setup();
    const key = { pool: "p", id: "k", label: "new", weight: 5, maxConcurrency: 0 };
    const { key: updated } = await s.adminClient.updateKey({ key, updateMask: mask("label") });
    expect([updated!.label, updated!.weight, updated!.maxConcurrency]).toEqual(["new", 2, 3]);
    await s.adminClient.updateKey({ key, secret: "sk-rotated-0000000000", updateMask: mask("secret") });
    expect(s.engine.getKeyConfig("p", "k")).toMatchObject({ label: "new", weight: 2, secret: "sk-rotated-0000000000" });
    expect(s.config.writes.at(-1)).toMatchObject({ op: "updateKey", value: { secret: "sk-rotated-0000000000", label: "new" } });
  });

  it("without a mask changes the settable fields but never the secret", async () => {
    const s = await setup();
    await s.adminClient.updateKey({ key: { pool: "p", id: "k", label: "all", weight: 4, maxConcurrency: 1, quotaGroup: "org" }, secret: "sk-ignored-0000000000" });
    expect(s.engine.getKeyConfig("p", "k")).toMatchObject({ label: "all", weight: 4, maxConcurrency: 1, quotaGroup: "org", secret: "sk-first-000000000000" });
  });

  it("refuses a read-only path with INVALID_ARGUMENT on update_mask", async () => {
    const s = await setup();
    const err = await rejection(s.adminClient.updateKey({ key: { pool: "p", id: "k" }, updateMask: mask("state") }));
    expect([err.code, err.rawMessage]).toEqual([Code.InvalidArgument, 'update_mask: unknown or read-only key field "state"']);
  });
});

describe("Acquire and the RPC deadline", () => {
  async function held() {
    const s = services();
    await s.adminClient.createPool({ pool: { name: "p" } });
    await s.adminClient.addKey({ pool: "p", key: { id: "only", maxConcurrency: 1 }, secret: "sk-only-000000000000" });
    await s.pool.acquire({ pool: "p", leaseTtl: durationFromMs(600_000) });
    return s;
  }

  /** Starts a waiting Acquire; `outcome()` is its error once it failed. */
  function waiting(s: ReturnType<typeof services>, timeoutMs?: number) {
    let failed: ConnectError | undefined;
    void s.pool.acquire({ pool: "p", waitTimeout: durationFromMs(60_000) }, { timeoutMs }).catch((e: unknown) => (failed = ConnectError.from(e)));
    return () => failed;
  }

  it("ends the wait 20 ms before the deadline, as RESOURCE_EXHAUSTED with a retry-after", async () => {
    const s = await held();
    const outcome = waiting(s, 10_000);
    await settle();
    // The handler saw at most 10 s left (less the time the call took to reach it): it waits 20 ms less.
    s.clock.advance(9000);
    await settle();
    expect(outcome()).toBeUndefined();
    s.clock.advance(981);
    await vi.waitFor(() => expect(outcome()).toBeDefined());
    expect([outcome()!.code, reason(outcome()!)]).toEqual([Code.ResourceExhausted, ErrorReason.NO_KEY_AVAILABLE]);
    expect(durationMs(outcome()!.findDetails(ErrorDetailSchema)[0]!.retryAfter!)).toBeGreaterThan(500_000);
  });

  it("waits the whole wait_timeout when the call has no deadline", async () => {
    const s = await held();
    const outcome = waiting(s);
    await settle();
    s.clock.advance(59_999);
    await settle();
    expect(outcome()).toBeUndefined();
    s.clock.advance(1);
    await vi.waitFor(() => expect(outcome()?.code).toBe(Code.ResourceExhausted));
  });

  it("does not wait at all when the deadline is closer than the margin", async () => {
    const s = await held();
    const outcome = waiting(s, 15);
    await vi.waitFor(() => expect(outcome()).toBeDefined());
    expect([outcome()!.code, reason(outcome()!)]).toEqual([Code.ResourceExhausted, ErrorReason.NO_KEY_AVAILABLE]);
  });
});

/** A KeepAlive stream: send() queues a request, next() reads the following response. */
function keepAlive(s: ReturnType<typeof services>) {
  const queue: KeepAliveRequest[] = [];
  let wake: (() => void) | undefined;
  let closed = false;
  async function* requests(): AsyncGenerator<KeepAliveRequest> {
    for (;;) {
      while (queue.length > 0) yield queue.shift()!;
      if (closed) return;
      await new Promise<void>((resolve) => (wake = resolve));
    }
  }
  const responses = s.pool.keepAlive(requests())[Symbol.asyncIterator]();
  return {
    send(leaseId: string, ttlMs?: number) {
      queue.push(create(KeepAliveRequestSchema, { leaseId, ttl: ttlMs === undefined ? undefined : durationFromMs(ttlMs) }));
      wake?.();
    },
    async next(): Promise<KeepAliveResponse> {
      const r = await responses.next();
      if (r.done) throw new Error("stream ended");
      return r.value;
    },
    close() {
      closed = true;
      wake?.();
    },
  };
}

describe("KeepAlive", () => {
  async function setup() {
    const s = services();
    await s.adminClient.createPool({ pool: { name: "p" } });
    await s.adminClient.addKey({ pool: "p", key: { id: "k" }, secret: "sk-keep-000000000000" });
    const lease = await s.pool.acquire({ pool: "p", leaseTtl: durationFromMs(30_000) });
    return { s, lease, stream: keepAlive(s) };
  }

  it("renews each lease sent, to the ttl asked for (clamped to the pool's) from the server's now", async () => {
    const { s, lease, stream } = await setup();
    s.clock.advance(10_000);
    stream.send(lease.leaseId, 60_000);
    const r = await stream.next();
    expect(r.leaseId).toBe(lease.leaseId);
    expect(r.result.case).toBe("renewed");
    if (r.result.case !== "renewed") return;
    expect([timestampMs(r.result.value.expiresAt!), durationMs(r.result.value.ttl!), durationMs(r.result.value.renewInterval!)]).toEqual([
      s.clock.now() + 60_000,
      60_000,
      20_000,
    ]);
    stream.send(lease.leaseId, 10 * 3_600_000);
    const clamped = await stream.next();
    expect(clamped.result.case === "renewed" && durationMs(clamped.result.value.ttl!)).toBe(s.engine.getPool("p").maxTtlMs);
    stream.close();
  });

  it("answers gone, with the reason, for a lease released, expired or never granted, and keeps the stream open", async () => {
    const { s, lease, stream } = await setup();
    const other = await s.pool.acquire({ pool: "p", leaseTtl: durationFromMs(5000) });
    await s.pool.release({ leaseId: lease.leaseId });
    s.clock.advance(5000);
    const gone: Array<[string, ErrorReason | undefined]> = [];
    for (const id of [lease.leaseId, other.leaseId, "not-a-lease"]) {
      stream.send(id);
      const r = await stream.next();
      gone.push([r.leaseId, r.result.case === "gone" ? r.result.value.reason : undefined]);
    }
    expect(gone).toEqual([
      [lease.leaseId, ErrorReason.LEASE_RELEASED],
      [other.leaseId, ErrorReason.LEASE_EXPIRED],
      ["not-a-lease", ErrorReason.LEASE_ID_MALFORMED],
    ]);
    const fresh = await s.pool.acquire({ pool: "p" });
    stream.send(fresh.leaseId);
    expect((await stream.next()).result.case).toBe("renewed");
    stream.close();
  });

  it("pushes a revocation of a lease it renewed without waiting for the next renewal", async () => {
    const { s, lease, stream } = await setup();
    stream.send(lease.leaseId);
    expect((await stream.next()).result.case).toBe("renewed");
    await s.adminClient.revokeLease({ leaseId: lease.leaseId, reason: "key compromised" });
    const pushed = await stream.next();
    expect(pushed.leaseId).toBe(lease.leaseId);
    expect(pushed.result.case === "gone" && [pushed.result.value.reason, pushed.result.value.message]).toEqual([
      ErrorReason.LEASE_REVOKED,
      "key compromised",
    ]);
    expect(s.internal).toEqual([]);
    stream.close();
  });
});

describe("declared budgets, tiers and affinity over the admin API and Acquire", () => {
  async function setup() {
    const s = services();
    await s.adminClient.createPool({ pool: { name: "p", quotaGroups: { org: { tokensPerMinute: 5_000n } }, defaultEstimatedTokens: 500n } });
    await s.adminClient.addKey({
      pool: "p",
      key: { id: "k", quotaGroup: "org", limits: { requestsPerMinute: 60n, tokensPerMinute: 4_000n }, priority: 0 },
      secret: "sk-first-000000000000",
    });
    await s.adminClient.addKey({ pool: "p", key: { id: "backup", priority: 1 }, secret: "sk-backup-00000000000" });
    return s;
  }

  it("sets limits, priority, quota groups and the default estimate, and shows them with usage", async () => {
    const s = await setup();
    const { pool } = await s.adminClient.getPool({ name: "p" });
    expect([pool!.quotaGroups.org!.tokensPerMinute, pool!.defaultEstimatedTokens]).toEqual([5_000n, 500n]);
    const lease = await s.pool.acquire({ pool: "p" });
    expect(lease.keyId).toBe("k");
    await s.pool.release({ leaseId: lease.leaseId, usage: { inputTokens: 100n, outputTokens: 50n } });
    const { key } = await s.adminClient.getKey({ pool: "p", keyId: "k" });
    expect([key!.limits!.requestsPerMinute, key!.limits!.tokensPerMinute, key!.priority]).toEqual([60n, 4_000n, 0]);
    expect([key!.usage!.requests, key!.usage!.inputTokens, key!.usage!.outputTokens, key!.usage!.successes]).toEqual([1n, 100n, 50n, 1n]);
    const { stats } = await s.adminClient.getPoolStats({ pool: "p" });
    const k = stats!.keys.find((x) => x.keyId === "k")!;
    // 500 reserved, 150 used: 350 refunded.
    expect([k.remaining!.requestsPerMinute, k.remaining!.tokensPerMinute, k.reservedTokens, k.priority, k.quotaGroup]).toEqual([59n, 3_850n, 0n, 0, "org"]);
    expect(stats!.quotaGroups.map((g) => [g.name, g.remaining!.tokensPerMinute, g.usage!.requests, g.keys])).toEqual([["org", 4_850n, 1n, 1]]);
    expect([stats!.usage!.requests, stats!.servingPriority]).toEqual([1n, 0]);
  });

  it("changes one limit with a limits.* path, all of them with limits, and the tier with priority", async () => {
    const s = await setup();
    await s.adminClient.updateKey({ key: { pool: "p", id: "k", limits: { tokensPerMinute: 9_000n } }, updateMask: mask("limits.tokens_per_minute") });
    expect(s.engine.getKeyConfig("p", "k").limits).toEqual({ requestsPerMinute: 60, tokensPerMinute: 9_000, requestsPerDay: 0 });
    await s.adminClient.updateKey({ key: { pool: "p", id: "k", limits: { requestsPerDay: 1_000n } }, updateMask: mask("limits") });
    expect(s.engine.getKeyConfig("p", "k").limits).toEqual({ requestsPerMinute: 0, tokensPerMinute: 0, requestsPerDay: 1_000 });
    await s.adminClient.updateKey({ key: { pool: "p", id: "k", priority: 2 }, updateMask: mask("priority") });
    expect((await s.pool.acquire({ pool: "p" })).keyId).toBe("backup");
    await s.adminClient.updatePool({ pool: { name: "p", quotaGroups: {} }, updateMask: mask("quota_groups") });
    expect(s.engine.getPool("p").quotaGroups).toEqual({});
  });

  it("refuses a reservation larger than every key's whole tokens_per_minute, naming estimated_tokens", async () => {
    const s = await setup();
    await s.adminClient.removeKey({ pool: "p", keyId: "backup" });
    const err = await rejection(s.pool.acquire({ pool: "p", estimatedTokens: 4_001n, waitTimeout: durationFromMs(10_000) }));
    expect([err.code, reason(err), err.findDetails(ErrorDetailSchema)[0]?.field]).toEqual([Code.InvalidArgument, ErrorReason.INVALID_ARGUMENT, "estimated_tokens"]);
  });

  it("refuses limits out of range with INVALID_ARGUMENT naming the field", async () => {
    const s = await setup();
    const err = await rejection(s.adminClient.updateKey({ key: { pool: "p", id: "k", priority: 5_000 }, updateMask: mask("priority") }));
    expect([err.code, err.findDetails(ErrorDetailSchema)[0]?.field]).toEqual([Code.InvalidArgument, "key.priority"]);
  });

  it("lends the same key for the same affinity", async () => {
    const s = await setup();
    await s.adminClient.addKey({ pool: "p", key: { id: "k2" }, secret: "sk-second-0000000000" });
    const first = await s.pool.acquire({ pool: "p", affinity: "conversation-1" });
    for (let i = 0; i < 3; i++) expect((await s.pool.acquire({ pool: "p", affinity: "conversation-1" })).keyId).toBe(first.keyId);
  });
});
