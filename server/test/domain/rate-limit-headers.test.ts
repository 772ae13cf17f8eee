import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parseGoDuration, parseRateLimitHeaders, parseRfc3339 } from "../../src/domain/rate-limit-headers.js";

const NOW = Date.parse("2026-01-01T00:00:00Z");
const vectorsPath = fileURLToPath(new URL("../../../test/vectors/headers.json", import.meta.url));

interface Vector {
  name: string;
  headers: Record<string, string>;
  expect: Record<string, number | null>;
}

describe("rate-limit headers", () => {
  it("parses OpenAI durations exactly, truncating to milliseconds", () => {
    expect(parseGoDuration("1s")).toBe(1_000);
    expect(parseGoDuration("6m0s")).toBe(360_000);
    expect(parseGoDuration("20ms")).toBe(20);
    expect(parseGoDuration("1h2m3.5s")).toBe(3_723_500);
    expect(parseGoDuration("4.35s")).toBe(4_350);
    expect(parseGoDuration("1500us")).toBe(1);
    expect(parseGoDuration("0")).toBe(0);
    expect(parseGoDuration("5")).toBeNull();
    expect(parseGoDuration("-1s")).toBeNull();
  });

  it("parses RFC 3339 instants with offsets and rejects impossible dates", () => {
    expect(parseRfc3339("2026-01-01T01:00:01.25+01:00")).toBe(NOW + 1_250);
    expect(parseRfc3339("2026-02-31T00:00:00Z")).toBeNull();
    expect(parseRfc3339("2026-01-01T24:00:00Z")).toBeNull();
    expect(parseRfc3339("tomorrow")).toBeNull();
    expect(parseRfc3339("2026-01-01T00:00:60Z")).toBeNull();
    expect(parseRfc3339("2026-01-01T00:00:00+24:00")).toBeNull();
  });

  it("reads OpenAI and Anthropic headers case-insensitively, OpenAI first, retry-after-ms over retry-after", () => {
    const parsed = parseRateLimitHeaders(
      {
        "X-RateLimit-Remaining-Requests": "5",
        "anthropic-ratelimit-requests-limit": "10",
        "anthropic-ratelimit-input-tokens-remaining": "1200",
        "anthropic-ratelimit-input-tokens-reset": "2026-01-01T00:00:09Z",
        "retry-after": "2",
        "retry-after-ms": "1500",
      },
      NOW,
    );
    expect(parsed).toEqual({
      requestsRemaining: 5,
      requestsLimit: 10,
      requestsResetMs: null,
      tokensRemaining: 1200,
      tokensLimit: null,
      tokensResetMs: 9_000,
      retryAfterMs: 1_500,
    });
    expect(parseRateLimitHeaders({ "retry-after": "Thu, 01 Jan 2026 00:00:30 GMT" }, NOW).retryAfterMs).toBe(30_000);
  });

  it("passes every conformance vector in test/vectors/headers.json", () => {
    const file = JSON.parse(readFileSync(vectorsPath, "utf8")) as { now: string; cases: Vector[] };
    const now = Date.parse(file.now);
    expect(file.cases.length).toBeGreaterThan(0);
    for (const c of file.cases) {
      const p = parseRateLimitHeaders(c.headers, now);
      const got = {
        requests_remaining: p.requestsRemaining,
        requests_limit: p.requestsLimit,
        requests_reset_ms: p.requestsResetMs,
        tokens_remaining: p.tokensRemaining,
        tokens_limit: p.tokensLimit,
        tokens_reset_ms: p.tokensResetMs,
        retry_after_ms: p.retryAfterMs,
      };
      expect({ name: c.name, ...got }).toEqual({ name: c.name, ...c.expect });
    }
  });
});
