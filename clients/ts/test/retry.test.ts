import { describe, expect, it } from "vitest";
import { fullJitterMs } from "../src/index.js";
import { msFromDuration } from "../src/duration.js";
import { FakePool } from "./fake-pool.js";
import { AnthropicAPIError, OpenAIAPIError } from "./sdk-errors.js";

const quick = { backoffBaseMs: 1, backoffCapMs: 2 };
/** Any pause would outlast the budget: a retry that succeeds took none. */
const hourlyBackoff = { backoffBaseMs: 3_600_000, backoffCapMs: 3_600_000 };
const rateLimited = (retryAfter: string) => new OpenAIAPIError(429, { "retry-after": retryAfter }, "rate_limit_exceeded", "requests", "slow down");

describe("callWithRetry", () => {
  it("moves to another key after a rate limit without backing off", async () => {
    const fake = new FakePool(["a", "b"]);
    const used: string[] = [];
    const value = await fake.client().callWithRetry(
      "p",
      async (lease) => {
        used.push(lease.keyId);
        if (lease.keyId === "a") throw rateLimited("20");
        return "ok";
      },
      hourlyBackoff,
    );
    expect(value).toBe("ok");
    expect(used).toEqual(["a", "b"]);
    expect(fake.acquires[1]!.excludeKeyIds).toEqual(["a"]);
    expect((await fake.ended.next()).kind).toBe("markRateLimited");
    expect((await fake.ended.next()).kind).toBe("release");
  });

  it("gives up at once when the only key cools down past the budget", async () => {
    const fake = new FakePool(["a"]);
    let runs = 0;
    const started = Date.now();
    const thrown = await fake
      .client()
      .callWithRetry(
        "p",
        async () => {
          runs++;
          throw rateLimited("60");
        },
        { ...quick, budgetMs: 5_000 },
      )
      .catch((e: unknown) => e);
    expect(thrown).toBeInstanceOf(OpenAIAPIError);
    expect(runs).toBe(1);
    expect(Date.now() - started).toBeLessThan(2_000);
    for (const req of fake.acquires.slice(1)) expect(msFromDuration(req.waitTimeout)).toBe(0);
  });

  it("waits for any key when the retry-after fits the budget", async () => {
    const fake = new FakePool(["a"]);
    let runs = 0;
    await fake.client().callWithRetry(
      "p",
      async () => {
        if (++runs === 1) throw rateLimited("1");
      },
      { ...quick, budgetMs: 10_000 },
    );
    const last = fake.acquires.at(-1)!;
    expect(last.excludeKeyIds).toEqual([]);
    expect(msFromDuration(last.waitTimeout)).toBeGreaterThan(0);
  });

  it("retries overloads without excluding the key", async () => {
    const fake = new FakePool(["a"]);
    let runs = 0;
    await fake.client().callWithRetry(
      "p",
      async () => {
        if (++runs < 3) throw new AnthropicAPIError(529, undefined, { type: "overloaded_error", message: "Overloaded" });
      },
      quick,
    );
    expect(runs).toBe(3);
    for (const req of fake.acquires) expect(req.excludeKeyIds).toEqual([]);
  });

  it("does not retry a client error", async () => {
    const fake = new FakePool(["a", "b"]);
    let runs = 0;
    await expect(
      fake.client().callWithRetry(
        "p",
        async () => {
          runs++;
          throw new OpenAIAPIError(400, undefined, "context_length_exceeded", "invalid_request_error", "too long");
        },
        quick,
      ),
    ).rejects.toBeInstanceOf(OpenAIAPIError);
    expect(runs).toBe(1);
  });

  it("keeps full-jitter pauses below their ceiling", () => {
    for (let attempt = 0; attempt < 40; attempt++) {
      for (let i = 0; i < 50; i++) {
        const pause = fullJitterMs(100, 5_000, attempt);
        expect(pause).toBeGreaterThanOrEqual(0);
        expect(pause).toBeLessThan(Math.min(5_000, 100 * 2 ** attempt));
      }
    }
  });
});
