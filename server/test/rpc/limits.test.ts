import { describe, expect, it } from "vitest";
import { create, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { DomainError } from "../../src/domain/errors.js";
import { AddKeyRequestSchema, CreatePoolRequestSchema, PoolAdminService, UpdatePoolRequestSchema } from "../../src/gen/keymesh/v1/admin_pb.js";
import { AcquireRequestSchema, KeyPoolService, MarkFailedRequestSchema, ReleaseRequestSchema, RenewLeaseRequestSchema } from "../../src/gen/keymesh/v1/pool_pb.js";
import { NAME_MAX } from "../../src/domain/config.js";
import { boundedMessage, checkRequest, ERROR_MESSAGE_MAX } from "../../src/rpc/limits.js";

/** The field and message checkRequest refuses `init` with, or undefined when it accepts it. */
function refusal<T extends DescMessage>(schema: T, init: MessageInitShape<T>): { field?: string; message: string } | undefined {
  try {
    checkRequest(schema, create(schema, init));
  } catch (e) {
    expect(e).toBeInstanceOf(DomainError);
    const err = e as DomainError;
    expect(err.code).toBe("invalid_argument");
    return { field: err.details.field, message: err.message };
  }
  return undefined;
}

const acquire = (init: MessageInitShape<typeof AcquireRequestSchema>) => refusal(AcquireRequestSchema, { pool: "p", ...init });

describe("checkRequest", () => {
  it("has a rule for every field of every request of both services", () => {
    for (const method of [...KeyPoolService.methods, ...PoolAdminService.methods]) {
      expect(() => checkRequest(method.input, create(method.input)), method.name).not.toThrow();
    }
  });

  it("takes durations as protobuf defines them: seconds within ±315,576,000,000, nanos within ±999,999,999 of the same sign", () => {
    expect(acquire({ waitTimeout: { seconds: 1n, nanos: 999_999_999 } })).toBeUndefined();
    expect(acquire({ waitTimeout: { seconds: 0n, nanos: 0 } })).toBeUndefined();
    for (const bad of [
      { seconds: 1n, nanos: 1_000_000_000 },
      { seconds: 0n, nanos: -1_000_000_000 },
      { seconds: 1n, nanos: -5 },
      { seconds: -1n, nanos: 5 },
      { seconds: 315_576_000_001n, nanos: 0 },
      { seconds: -315_576_000_001n, nanos: 0 },
    ]) {
      expect(acquire({ waitTimeout: bad }), JSON.stringify(bad, (_, v) => (typeof v === "bigint" ? String(v) : v))).toEqual({
        field: "wait_timeout",
        message: expect.stringMatching(/^wait_timeout: is not a valid Duration/),
      });
    }
  });

  it("refuses negative durations, zero TTLs and anything over 100 years, naming the field", () => {
    expect(acquire({ leaseTtl: { seconds: 0n, nanos: -1 } })).toEqual({ field: "lease_ttl", message: "lease_ttl: must not be negative" });
    expect(acquire({ leaseTtl: { seconds: -1n } })?.field).toBe("lease_ttl");
    expect(acquire({ leaseTtl: { seconds: 0n, nanos: 0 } })).toEqual({ field: "lease_ttl", message: expect.stringContaining("must be positive") });
    expect(acquire({ leaseTtl: { nanos: 1 } })).toBeUndefined();
    expect(acquire({ leaseTtl: { seconds: 3_155_760_000n } })).toBeUndefined();
    expect(acquire({ leaseTtl: { seconds: 3_155_760_000n, nanos: 1 } })).toEqual({ field: "lease_ttl", message: "lease_ttl: must be at most 100 years" });
    expect(refusal(RenewLeaseRequestSchema, { leaseId: "x", ttl: { seconds: 0n } })?.field).toBe("ttl");
    expect(refusal(CreatePoolRequestSchema, { pool: { name: "p", maxTtl: { seconds: 315_576_000_001n } } })?.field).toBe("pool.max_ttl");
    expect(refusal(CreatePoolRequestSchema, { pool: { name: "p", circuitBreaker: { openDuration: { seconds: -3n } } } })?.field).toBe(
      "pool.circuit_breaker.open_duration",
    );
    // A zero open duration means the default (the proto says so), a zero cooldown is for the domain to refuse.
    expect(refusal(CreatePoolRequestSchema, { pool: { name: "p", circuitBreaker: { openDuration: {} }, defaultCooldown: {} } })).toBeUndefined();
    expect(refusal(ReleaseRequestSchema, { leaseId: "x", rateLimit: { requestsReset: { seconds: 1n, nanos: -1 } } })?.field).toBe("rate_limit.requests_reset");
  });

  it("takes timestamps only within 0001-01-01 and 9999-12-31", () => {
    expect(refusal(CreatePoolRequestSchema, { pool: { name: "p", createTime: { seconds: 253_402_300_799n } } })).toBeUndefined();
    expect(refusal(CreatePoolRequestSchema, { pool: { name: "p", createTime: { seconds: 253_402_300_800n } } })?.field).toBe("pool.create_time");
    expect(refusal(CreatePoolRequestSchema, { pool: { name: "p", updateTime: { nanos: -1 } } })?.field).toBe("pool.update_time");
  });

  it("refuses NUL, unpaired surrogates and strings over their bound, naming the field", () => {
    expect(acquire({ holder: "h\u0000" })).toEqual({ field: "holder", message: "holder: must not contain NUL (U+0000)" });
    expect(acquire({ holder: "h\ud800" })).toEqual({ field: "holder", message: expect.stringContaining("valid Unicode") });
    expect(acquire({ holder: "😀".repeat(128) })).toBeUndefined();
    expect(acquire({ holder: "h".repeat(257) })).toEqual({ field: "holder", message: "holder: must be at most 256 characters" });
    expect(acquire({ pool: "p".repeat(NAME_MAX) })).toBeUndefined();
    expect(acquire({ pool: "p".repeat(NAME_MAX + 1) })?.field).toBe("pool");
    expect(refusal(MarkFailedRequestSchema, { leaseId: "x", message: "m".repeat(1025) })?.field).toBe("message");
    expect(refusal(AddKeyRequestSchema, { pool: "p", key: { label: "a\u0000b" } })?.field).toBe("key.label");
  });

  it("bounds lists and maps, their entries, keys and values", () => {
    expect(acquire({ excludeKeyIds: Array.from({ length: 1024 }, (_, i) => `k${i}`) })).toBeUndefined();
    expect(acquire({ excludeKeyIds: Array.from({ length: 1025 }, (_, i) => `k${i}`) })).toEqual({
      field: "exclude_key_ids",
      message: "exclude_key_ids: must have at most 1024 entries",
    });
    expect(acquire({ excludeKeyIds: ["ok", "bad\u0000"] })).toEqual({ field: "exclude_key_ids", message: "exclude_key_ids: entries must not contain NUL (U+0000)" });
    const metadata = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, "v"]));
    expect(refusal(AddKeyRequestSchema, { pool: "p", key: { metadata: metadata(64) } })).toBeUndefined();
    expect(refusal(AddKeyRequestSchema, { pool: "p", key: { metadata: metadata(65) } })?.field).toBe("key.metadata");
    expect(refusal(AddKeyRequestSchema, { pool: "p", key: { metadata: { "b\u0000": "v" } } })).toEqual({
      field: "key.metadata",
      message: "key.metadata: keys must not contain NUL (U+0000)",
    });
    expect(refusal(AddKeyRequestSchema, { pool: "p", key: { metadata: { base_url: "v".repeat(1025) } } })?.message).toBe(
      "key.metadata: values must be at most 1024 characters",
    );
    expect(refusal(ReleaseRequestSchema, { leaseId: "x", rateLimit: { headers: { "retry-after": "1\u0000" } } })?.field).toBe("rate_limit.headers");
    expect(refusal(UpdatePoolRequestSchema, { pool: { name: "p" }, updateMask: { paths: Array.from({ length: 33 }, () => "strategy") } })?.field).toBe(
      "update_mask.paths",
    );
    const groups = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`g${i}`, { tokensPerMinute: 1n }]));
    expect(refusal(CreatePoolRequestSchema, { pool: { name: "p", quotaGroups: groups(1000) } })).toBeUndefined();
    expect(refusal(CreatePoolRequestSchema, { pool: { name: "p", quotaGroups: groups(1001) } })?.field).toBe("pool.quota_groups");
    expect(refusal(CreatePoolRequestSchema, { pool: { name: "p", quotaGroups: { ["g".repeat(129)]: {} } } })?.message).toBe(
      "pool.quota_groups: keys must be at most 128 characters",
    );
    expect(refusal(CreatePoolRequestSchema, { pool: { name: "p", quotaGroups: { org: { requestsPerDay: -1n } } } })?.field).toBe("pool.quota_groups.requests_per_day");
    expect(acquire({ affinity: "a".repeat(257) })?.field).toBe("affinity");
  });

  it("bounds counts to 0-10^12 and uint32 fields to what a Postgres integer holds", () => {
    expect(acquire({ estimatedTokens: -1n })).toEqual({ field: "estimated_tokens", message: "estimated_tokens: must not be negative" });
    expect(acquire({ estimatedTokens: 1_000_000_000_000n })).toBeUndefined();
    expect(acquire({ estimatedTokens: 1_000_000_000_001n })?.field).toBe("estimated_tokens");
    expect(refusal(ReleaseRequestSchema, { leaseId: "x", usage: { outputTokens: 2n ** 62n } })?.field).toBe("usage.output_tokens");
    expect(refusal(ReleaseRequestSchema, { leaseId: "x", rateLimit: { tokensLimit: -1n } })?.field).toBe("rate_limit.tokens_limit");
    expect(refusal(AddKeyRequestSchema, { pool: "p", key: { maxConcurrency: 2_147_483_647 } })).toBeUndefined();
    expect(refusal(AddKeyRequestSchema, { pool: "p", key: { maxConcurrency: 2_147_483_648 } })?.field).toBe("key.max_concurrency");
    expect(refusal(AddKeyRequestSchema, { pool: "p", key: { limits: { tokensPerMinute: 1_000_000_000_001n } } })?.field).toBe("key.limits.tokens_per_minute");
    expect(refusal(CreatePoolRequestSchema, { pool: { name: "p", circuitBreaker: { halfOpenProbes: 4_000_000_000 } } })?.field).toBe(
      "pool.circuit_breaker.half_open_probes",
    );
  });
});

describe("boundedMessage", () => {
  it("keeps short messages, cuts long ones at a character boundary and mends unpaired surrogates", () => {
    expect(boundedMessage("pool \"a\" not found")).toBe("pool \"a\" not found");
    const cut = boundedMessage(`x${"😀".repeat(ERROR_MESSAGE_MAX)}`);
    expect(cut.length).toBeLessThanOrEqual(ERROR_MESSAGE_MAX);
    expect(cut.endsWith("…")).toBe(true);
    expect((cut as string & { isWellFormed(): boolean }).isWellFormed()).toBe(true);
    expect(boundedMessage("a\ud800b")).toBe("a\ufffdb");
  });
});
