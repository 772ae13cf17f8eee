// Runs every case of the shared conformance vectors (test/vectors/README.md).
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { classify } from "../src/classify.js";
import { parseRateLimitHeaders } from "../src/ratelimit.js";
import { APIConnectionError, APIConnectionTimeoutError, AnthropicAPIError, GeminiApiError, OpenAIAPIError } from "./sdk-errors.js";

const vectors = new URL("../../../test/vectors/", import.meta.url);
const load = (name: string) => JSON.parse(readFileSync(new URL(name, vectors), "utf8"));

interface HeaderCase {
  name: string;
  headers: Record<string, string>;
  expect: Record<string, number | null>;
}

interface ErrorShape {
  shape: string;
  status?: number | string;
  code?: string | number | null;
  type?: string | null;
  message?: string;
  headers?: Record<string, string>;
  error?: { type: string; message: string };
  details?: unknown[];
}

interface ClassificationCase {
  name: string;
  input: { status: number | null; headers: Record<string, string> | null; error: ErrorShape | null };
  expect: { outcome: string; retry_after_ms: number | null };
}

const headerVectors: { now: string; cases: HeaderCase[] } = load("headers.json");
const classificationVectors: { now: string; cases: ClassificationCase[] } = load("classification.json");

describe("headers.json", () => {
  it("has cases", () => expect(headerVectors.cases.length).toBeGreaterThan(0));
  it.each(headerVectors.cases.map((c) => [c.name, c] as const))("%s", (_name, c) => {
    const rl = parseRateLimitHeaders(c.headers, new Date(headerVectors.now));
    expect({
      requests_remaining: rl.requestsRemaining,
      requests_limit: rl.requestsLimit,
      requests_reset_ms: rl.requestsResetMs,
      tokens_remaining: rl.tokensRemaining,
      tokens_limit: rl.tokensLimit,
      tokens_reset_ms: rl.tokensResetMs,
      retry_after_ms: rl.retryAfterMs,
    }).toEqual(c.expect);
  });
  it("reads fetch Headers as well as plain objects", () => {
    const rl = parseRateLimitHeaders(new Headers({ "X-RateLimit-Remaining-Requests": "7", "retry-after": "2" }));
    expect([rl.requestsRemaining, rl.retryAfterMs]).toEqual([7, 2000]);
  });
});

describe("classification.json", () => {
  it("has cases", () => expect(classificationVectors.cases.length).toBeGreaterThan(0));
  it.each(classificationVectors.cases.map((c) => [c.name, c] as const))("%s", (_name, c) => {
    const o = classify(
      { status: c.input.status, headers: c.input.headers, error: nativeError(c.input.error) },
      new Date(classificationVectors.now),
    );
    expect({ outcome: o.kind, retry_after_ms: o.retryAfterMs }).toEqual(c.expect);
  });
});

describe("classify beyond the vectors", () => {
  it("follows cause to an SDK error", () => {
    const o = classify({ error: new Error("while answering", { cause: new OpenAIAPIError(401, undefined, "invalid_api_key", null, "bad key") }) });
    expect([o.kind, o.httpStatus]).toEqual(["auth", 401]);
  });
  it("treats a caller's abort as no verdict on the key, and a timeout as transient", () => {
    expect(classify({ error: new DOMException("aborted", "AbortError") }).kind).toBe("client_error");
    expect(classify({ error: new DOMException("timed out", "TimeoutError") }).kind).toBe("transient");
  });
  it("does not take a non-HTTP numeric status for one", () => {
    expect(classify({ error: Object.assign(new Error("rpc"), { status: 5 }) })).toMatchObject({ kind: "transient", httpStatus: 0 });
  });
});

function nativeError(e: ErrorShape | null): unknown {
  if (e === null) return null;
  switch (e.shape) {
    case "openai":
      return new OpenAIAPIError(e.status as number, e.headers, e.code as string | null, e.type ?? null, e.message ?? "");
    case "anthropic":
      return new AnthropicAPIError(e.status as number, e.headers, e.error!);
    case "gemini":
      return new GeminiApiError(e.code as number, e.status as string, e.message ?? "", e.details);
    case "timeout":
      return new APIConnectionTimeoutError();
    case "connection":
      return new APIConnectionError();
  }
  throw new Error(`unknown error shape ${e.shape}`);
}
