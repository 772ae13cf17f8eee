import { inspect } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { FailureReason } from "../src/gen/keymesh/v1/pool_pb.js";
import { keymeshErrorReason, keymeshRetryAfterMs, LeaseGoneError, ProviderCallError } from "../src/index.js";
import { durationFromMs } from "../src/duration.js";
import { msFromDuration } from "../src/duration.js";
import { FakePool } from "./fake-pool.js";
import { AnthropicAPIError, GeminiApiError, OpenAIAPIError } from "./sdk-errors.js";

describe("withKey", () => {
  it("releases with the measured latency and usage", async () => {
    const fake = new FakePool(["a"]);
    const client = fake.client();
    const value = await client.withKey(
      "openai",
      async (lease) => {
        expect([lease.key, lease.keyId, lease.keyLabel, lease.metadata.base_url]).toEqual(["sk-secret-a", "a", "label-a", "http://127.0.0.1:1/v1"]);
        lease.setUsage(12, 34);
        await fake.awaitRenewals(lease.leaseId, 1);
        return "answer";
      },
      { holder: "worker-1", waitMs: 2_000, ttlMs: 30_000 },
    );
    expect(value).toBe("answer");
    const ended = await fake.ended.next();
    expect(ended.kind).toBe("release");
    if (ended.kind !== "release") return;
    expect(ended.req.usage).toMatchObject({ inputTokens: 12n, outputTokens: 34n });
    expect(msFromDuration(ended.req.latency) + (ended.req.latency?.nanos ?? 0)).toBeGreaterThan(0);
    expect(fake.acquires[0]).toMatchObject({ holder: "worker-1", waitTimeout: durationFromMs(2_000), leaseTtl: durationFromMs(30_000) });
  });

  it("renews over KeepAlive and extends the expiry", async () => {
    const fake = new FakePool(["a"]);
    fake.ttlMs = 3_600_000;
    await fake.client().withKey("p", async (lease) => {
      const before = lease.expiresAt.getTime();
      await fake.awaitRenewals(lease.leaseId, 3);
      expect(lease.expiresAt.getTime()).toBeGreaterThanOrEqual(before);
      expect(lease.signal.aborted).toBe(false);
    });
    expect((await fake.ended.next()).kind).toBe("release");
  });

  it("aborts lease.signal when the server pushes a revocation, and reports no verdict on the key", async () => {
    const fake = new FakePool(["a"]);
    const thrown = await fake
      .client()
      .withKey("p", async (lease) => {
        await fake.awaitRenewals(lease.leaseId, 1);
        fake.revoke(lease.leaseId);
        await aborted(lease.signal);
        expect(lease.revoked).toBe(true);
        expect(lease.signal.reason).toBeInstanceOf(LeaseGoneError);
        expect((lease.signal.reason as LeaseGoneError).reason).toBe("LEASE_REVOKED");
        throw lease.signal.reason;
      })
      .catch((e: unknown) => e);
    expect(thrown).toBeInstanceOf(LeaseGoneError);
    const ended = await fake.ended.next();
    expect(ended.kind === "markFailed" && ended.req.reason).toBe(FailureReason.CLIENT_ERROR);
  });

  it("ends the lease when renewal is refused for good", async () => {
    const fake = new FakePool(["a"]);
    fake.refuse = true;
    await fake.client().withKey("p", async (lease) => {
      await aborted(lease.signal);
      expect(lease.gone?.reason).toBe("LEASE_EXPIRED");
    });
    await fake.ended.next();
  });

  it("ends the lease when no stream renews it before its expiry", async () => {
    const fake = new FakePool(["a"]);
    fake.ttlMs = 200;
    fake.keepAliveError = new ConnectError("down", Code.Unavailable);
    await fake.client().withKey("p", async (lease) => {
      await aborted(lease.signal);
      expect(lease.gone?.reason).toBe("LEASE_EXPIRED");
      expect(Date.now()).toBeGreaterThanOrEqual(lease.expiresAt.getTime());
    });
    await fake.ended.next();
  });

  it("renews every lease of a client over one stream", async () => {
    const fake = new FakePool(["a"]);
    const client = fake.client();
    let release!: () => void;
    const done = new Promise<void>((resolve) => (release = resolve));
    const ids: string[] = [];
    const running = [1, 2, 3].map(() =>
      client.withKey("p", async (lease) => {
        ids.push(lease.leaseId);
        await done;
      }),
    );
    const renewed = new Set<string>();
    while (renewed.size < 3) {
      const id = await fake.renewals.next();
      if (ids.includes(id)) renewed.add(id);
    }
    release();
    await Promise.all(running);
    expect(fake.streams).toBe(1);
  });

  const failures: [string, unknown, (e: Awaited<ReturnType<FakePool["ended"]["next"]>>) => void][] = [
    [
      "openai 429 → MarkRateLimited with retry-after and budget",
      new OpenAIAPIError(429, { "retry-after": "20", "x-ratelimit-remaining-requests": "0" }, "rate_limit_exceeded", "requests", "slow down"),
      (e) => {
        expect(e.kind).toBe("markRateLimited");
        if (e.kind !== "markRateLimited") return;
        expect(msFromDuration(e.req.retryAfter)).toBe(20_000);
        expect(e.req.rateLimit?.requestsRemaining).toBe(0n);
      },
    ],
    ["openai insufficient_quota", new OpenAIAPIError(429, undefined, "insufficient_quota", "insufficient_quota", "quota"), failed(FailureReason.QUOTA_EXHAUSTED, 429)],
    ["anthropic 529", new AnthropicAPIError(529, undefined, { type: "overloaded_error", message: "Overloaded" }), failed(FailureReason.OVERLOADED, 529)],
    ["gemini 403", new GeminiApiError(403, "PERMISSION_DENIED", "denied"), failed(FailureReason.AUTH, 403)],
    ["fetch failure", new TypeError("fetch failed", { cause: Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }) }), failed(FailureReason.TRANSIENT, 0)],
    ["timeout", new DOMException("The operation was aborted due to timeout", "TimeoutError"), failed(FailureReason.TRANSIENT, 0)],
  ];
  it.each(failures)("classifies and reports a thrown %s, then rethrows it", async (_name, error, check) => {
    const fake = new FakePool(["a"]);
    const thrown = await fake
      .client()
      .withKey("p", async () => {
        throw error;
      })
      .catch((e: unknown) => e);
    expect(thrown).toBe(error);
    check(await fake.ended.next());
  });

  it("never sends the key in a failure message", async () => {
    const fake = new FakePool(["a"]);
    await fake
      .client()
      .withKey("p", async (lease) => {
        throw new OpenAIAPIError(401, undefined, "invalid_api_key", "invalid_request_error", `Incorrect API key provided: ${lease.key}`);
      })
      .catch(() => {});
    const ended = await fake.ended.next();
    expect(ended.kind === "markFailed" && ended.req.message).toBe("Incorrect API key provided: [key]");
  });

  it("lets lease.report() set the outcome, and throws ProviderCallError for a reported failure", async () => {
    const fake = new FakePool(["a"]);
    const thrown = await fake
      .client()
      .withKey("p", async (lease) => {
        lease.report(429, new Headers({ "retry-after": "3" }));
        return "ignored";
      })
      .catch((e: unknown) => e);
    expect(thrown).toBeInstanceOf(ProviderCallError);
    expect((thrown as ProviderCallError).outcome.kind).toBe("rate_limited");
    const ended = await fake.ended.next();
    expect(ended.kind === "markRateLimited" && msFromDuration(ended.req.retryAfter)).toBe(3_000);
  });

  it("ends the lease when the caller's signal aborts", async () => {
    const fake = new FakePool(["a"]);
    const caller = new AbortController();
    const thrown = await fake
      .client()
      .withKey(
        "p",
        async (lease) => {
          await fake.awaitRenewals(lease.leaseId, 1);
          caller.abort(new Error("user went away"));
          expect(lease.signal.aborted).toBe(true);
          throw lease.signal.reason;
        },
        { signal: caller.signal },
      )
      .catch((e: unknown) => e);
    expect((thrown as Error).message).toBe("user went away");
    const ended = await fake.ended.next();
    expect(ended.kind === "markFailed" && ended.req.reason).toBe(FailureReason.CLIENT_ERROR);
  });

  it("reports a caller's timeout as transient, not as an abandoned call", async () => {
    const fake = new FakePool(["a"]);
    const thrown = await fake
      .client()
      .withKey(
        "p",
        async (lease) => {
          await aborted(lease.signal);
          throw lease.signal.reason;
        },
        { signal: AbortSignal.timeout(50) },
      )
      .catch((e: unknown) => e);
    expect((thrown as Error).name).toBe("TimeoutError");
    const ended = await fake.ended.next();
    expect(ended.kind === "markFailed" && ended.req.reason).toBe(FailureReason.TRANSIENT);
  });

  it("rejects with the server's reason when no key is free, without running fn", async () => {
    const fake = new FakePool([]);
    let ran = false;
    const thrown = await fake
      .client()
      .withKey("p", async () => {
        ran = true;
      }, { waitMs: 0 })
      .catch((e: unknown) => e);
    expect(ran).toBe(false);
    expect(keymeshErrorReason(thrown)).toBe("NO_KEY_AVAILABLE");
    expect(keymeshRetryAfterMs(thrown)).toBe(1_000);
  });

  it("carries the provider's budget from a reported success to Release", async () => {
    const fake = new FakePool(["a"]);
    await fake.client().withKey("p", async (lease) => {
      lease.report(200, new Headers({ "x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-tokens": "6m0s" }));
    });
    const ended = await fake.ended.next();
    expect(ended.kind).toBe("release");
    if (ended.kind !== "release") return;
    expect(ended.req.rateLimit?.requestsRemaining).toBe(5n);
    expect(msFromDuration(ended.req.rateLimit?.tokensReset)).toBe(360_000);
  });

  it("logs, and does not throw, when the final release fails after the work is done", async () => {
    const fake = new FakePool(["a"]);
    fake.releaseError = new ConnectError("database down", Code.Unavailable);
    await expect(fake.client().withKey("p", async () => "done")).resolves.toBe("done");
    await fake.ended.next();
    expect(fake.warnings).toHaveLength(1);
    expect(fake.warnings[0]).toContain("could not end lease of key a");
    expect(fake.warnings[0]).not.toContain("sk-secret");
  });

  it("keeps the key out of console.log and JSON", async () => {
    const fake = new FakePool(["a"]);
    await fake.client().withKey("p", async (lease) => {
      expect(inspect(lease)).not.toContain("sk-secret");
      expect(JSON.stringify(lease)).not.toContain("sk-secret");
      expect(inspect(lease)).toContain("label-a");
    });
  });
});

function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return resolve();
    signal.addEventListener("abort", () => resolve());
    setTimeout(() => reject(new Error("lease signal never aborted")), 5_000);
  });
}

function failed(reason: FailureReason, httpStatus: number) {
  return (e: Awaited<ReturnType<FakePool["ended"]["next"]>>) => {
    expect(e.kind).toBe("markFailed");
    if (e.kind !== "markFailed") return;
    expect([e.req.reason, e.req.httpStatus]).toEqual([reason, httpStatus]);
  };
}
