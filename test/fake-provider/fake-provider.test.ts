import { afterEach, describe, expect, it } from "vitest";
import { formatDuration } from "./dialects.js";
import { startFakeProvider, type FakeProvider } from "./provider.js";

let provider: FakeProvider | undefined;
afterEach(async () => {
  await provider?.close();
  provider = undefined;
});

function chat(url: string, key: string | undefined, body: unknown = { model: "m", messages: [{ role: "user", content: "hello there" }] }) {
  return fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(key === undefined ? {} : { authorization: `Bearer ${key}` }) },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

describe("formatDuration", () => {
  it("writes Go-style durations as OpenAI sends them", () => {
    expect(formatDuration(20)).toBe("20ms");
    expect(formatDuration(1000)).toBe("1s");
    expect(formatDuration(1500)).toBe("1.5s");
    expect(formatDuration(360_000)).toBe("6m0s");
    expect(formatDuration(3_723_500)).toBe("1h2m3.5s");
    expect(formatDuration(0)).toBe("0ms");
  });
});

describe("fake provider", () => {
  it("answers scripted faults before the key's normal answers", async () => {
    provider = await startFakeProvider({ keys: ["sk-a"] });
    provider.failNext("sk-a", { status: 503, count: 2 });
    const scripted = await fetch(`${provider.url}/_fake/faults`, { method: "POST", body: JSON.stringify({ key: "sk-a", status: 429, count: 1, retryAfterS: 7 }) });
    expect(scripted.status).toBe(201);
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 4; i++) {
      const res = await chat(provider.url, "sk-a");
      statuses.push(res.status);
      if (res.status === 429) retryAfter = res.headers.get("retry-after");
      if (res.status === 503) expect((await res.json()).error.message).toMatch(/overloaded/);
    }
    expect([statuses, retryAfter]).toEqual([[503, 503, 429, 200], "7"]);
    expect(provider.stats().keys["sk-a"]).toMatchObject({ ok: 1, failed: 2, rateLimited: 1 });
    const refused = await fetch(`${provider.url}/_fake/faults`, { method: "POST", body: JSON.stringify({ key: "sk-unknown", status: 500, count: 1 }) });
    expect(refused.status).toBe(400);
  });

  it("answers a known key with a chat completion and x-ratelimit headers", async () => {
    provider = await startFakeProvider({ keys: ["sk-a"], limits: { requestsPerWindow: 4, windowMs: 60_000 }, now: () => 1_000_000 });
    const res = await chat(provider.url, "sk-a");
    expect(res.status).toBe(200);
    expect(res.headers.get("x-ratelimit-limit-requests")).toBe("4");
    expect(res.headers.get("x-ratelimit-remaining-requests")).toBe("3");
    expect(res.headers.get("x-ratelimit-reset-requests")).toBe("15s");
    const body = await res.json();
    expect(body.object).toBe("chat.completion");
    expect(body.choices[0].message).toEqual({ role: "assistant", content: "echo: hello there" });
    expect(body.usage.total_tokens).toBeGreaterThan(0);
  });

  it("rejects a missing or unknown key with OpenAI's 401 body and never echoes the key", async () => {
    provider = await startFakeProvider({ keys: ["sk-a"] });
    const missing = await chat(provider.url, undefined);
    expect(missing.status).toBe(401);
    expect((await missing.json()).error.code).toBeNull();
    const unknown = await chat(provider.url, "sk-unknown-secret-1234");
    expect(unknown.status).toBe(401);
    const text = await unknown.text();
    expect(JSON.parse(text).error).toMatchObject({ type: "invalid_request_error", code: "invalid_api_key" });
    expect(text).not.toContain("sk-unknown-secret-1234");
    expect(provider.stats().unknownKey).toBe(2);
  });

  it("answers 429 with retry-after once a key's bucket is empty, and refills over the window", async () => {
    let t = 5_000_000;
    provider = await startFakeProvider({ keys: ["sk-a", "sk-b"], limits: { requestsPerWindow: 2, windowMs: 10_000 }, now: () => t });
    expect((await chat(provider.url, "sk-a")).status).toBe(200);
    expect((await chat(provider.url, "sk-a")).status).toBe(200);
    const limited = await chat(provider.url, "sk-a");
    expect(limited.status).toBe(429);
    expect(limited.headers.get("retry-after-ms")).toBe("5000");
    expect(limited.headers.get("retry-after")).toBe("5");
    expect(limited.headers.get("x-ratelimit-remaining-requests")).toBe("0");
    expect(limited.headers.get("x-ratelimit-reset-requests")).toBe("10s");
    expect((await limited.json()).error).toMatchObject({ type: "requests", code: "rate_limit_exceeded" });

    // Another key has its own bucket.
    expect((await chat(provider.url, "sk-b")).status).toBe(200);

    t += 4_999;
    expect((await chat(provider.url, "sk-a")).status).toBe(429);
    t += 1;
    expect((await chat(provider.url, "sk-a")).status).toBe(200);

    expect(provider.stats().keys["sk-a"]).toMatchObject({ ok: 3, rateLimited: 2, unauthorized: 0 });
    expect(provider.stats().keys["sk-b"]).toMatchObject({ ok: 1, rateLimited: 0 });
  });

  it("answers 401 for a key revoked upstream and counts it per key", async () => {
    provider = await startFakeProvider({ keys: ["sk-a"] });
    provider.revokeKey("sk-a");
    expect((await chat(provider.url, "sk-a")).status).toBe(401);
    expect(provider.stats().keys["sk-a"]).toMatchObject({ ok: 0, unauthorized: 1 });
  });

  it("registers keys over HTTP with their own limits and serves stats over HTTP", async () => {
    provider = await startFakeProvider({ now: () => 0 });
    const added = await fetch(`${provider.url}/_fake/keys`, {
      method: "POST",
      body: JSON.stringify({ key: "sk-new", limits: { requestsPerWindow: 1 } }),
    });
    expect(added.status).toBe(201);
    const bad = await fetch(`${provider.url}/_fake/keys`, { method: "POST", body: JSON.stringify({ key: "x", limits: { windowMs: -1 } }) });
    expect(bad.status).toBe(400);
    expect((await chat(provider.url, "sk-new")).status).toBe(200);
    expect((await chat(provider.url, "sk-new")).status).toBe(429);
    const stats = await (await fetch(`${provider.url}/_fake/stats`)).json();
    expect(stats.keys["sk-new"]).toMatchObject({ ok: 1, rateLimited: 1 });
    expect(stats.keys.x).toBeUndefined();
  });

  it("answers 400 to a body that is not a JSON object and 404 to other routes", async () => {
    provider = await startFakeProvider({ keys: ["sk-a"] });
    expect((await chat(provider.url, "sk-a", "{not json")).status).toBe(400);
    const other = await fetch(`${provider.url}/v1/models`);
    expect(other.status).toBe(404);
    expect((await other.json()).error.message).toBe("Invalid URL (GET /v1/models)");
  });

  it("tracks how many requests a key has in flight at once", async () => {
    provider = await startFakeProvider({ keys: ["sk-a"], latencyMs: 300, limits: { requestsPerWindow: 100 } });
    const url = provider.url;
    const results = await Promise.all([chat(url, "sk-a"), chat(url, "sk-a"), chat(url, "sk-a")]);
    expect(results.map((r) => r.status)).toEqual([200, 200, 200]);
    await Promise.all(results.map((r) => r.text()));
    expect(provider.stats().keys["sk-a"]).toMatchObject({ ok: 3, maxInFlight: 3 });
  });

  it("speaks Anthropic's Messages API with the key in x-api-key", async () => {
    provider = await startFakeProvider({ keys: ["sk-ant-a"], limits: { requestsPerWindow: 2, windowMs: 10_000 }, now: () => Date.parse("2026-01-01T00:00:00Z") });
    const messages = (key?: string) =>
      fetch(`${provider!.url}/v1/messages`, {
        method: "POST",
        headers: { "content-type": "application/json", ...(key === undefined ? {} : { "x-api-key": key }) },
        body: JSON.stringify({ model: "claude-x", max_tokens: 16, messages: [{ role: "user", content: [{ type: "text", text: "hi" }] }] }),
      });
    const ok = await messages("sk-ant-a");
    expect(ok.status).toBe(200);
    expect(await ok.json()).toMatchObject({ type: "message", model: "claude-x", content: [{ type: "text", text: "echo: hi" }], usage: { input_tokens: 1 } });
    expect([ok.headers.get("anthropic-ratelimit-requests-remaining"), ok.headers.get("anthropic-ratelimit-requests-reset")]).toEqual(["1", "2026-01-01T00:00:05Z"]);
    await messages("sk-ant-a");
    const limited = await messages("sk-ant-a");
    expect([limited.status, limited.headers.get("retry-after")]).toEqual([429, "5"]);
    expect(await limited.json()).toMatchObject({ type: "error", error: { type: "rate_limit_error" } });
    provider.failNext("sk-ant-a", { status: 529, count: 1 });
    const busy = await messages("sk-ant-a");
    expect([busy.status, (await busy.json()).error.type]).toEqual([529, "overloaded_error"]);
    for (const key of [undefined, "sk-ant-unknown"]) {
      const refused = await messages(key);
      expect([refused.status, (await refused.json()).error.type]).toEqual([401, "authentication_error"]);
    }
    expect(provider.stats().keys["sk-ant-a"]).toMatchObject({ ok: 2, rateLimited: 1, failed: 1, via: { "x-api-key": 4 } });
    const bearer = await fetch(`${provider.url}/v1/messages`, { method: "POST", headers: { authorization: "Bearer sk-ant-a" }, body: "{}" });
    expect(bearer.status).toBe(429);
    expect(provider.stats().keys["sk-ant-a"]?.via).toEqual({ "x-api-key": 4, authorization: 1 });
  });

  it("speaks Gemini's generateContent with the key in x-goog-api-key or ?key=, and its error bodies", async () => {
    provider = await startFakeProvider({ keys: ["gk-a", "gk-b"], limits: { requestsPerWindow: 1, windowMs: 10_000 }, now: () => 0 });
    const generate = (auth: { header?: string; query?: string }) =>
      fetch(`${provider!.url}/v1beta/models/gemini-x:generateContent${auth.query === undefined ? "" : `?key=${auth.query}`}`, {
        method: "POST",
        headers: { "content-type": "application/json", ...(auth.header === undefined ? {} : { "x-goog-api-key": auth.header }) },
        body: JSON.stringify({ contents: [{ role: "user", parts: [{ text: "hello" }] }] }),
      });
    const ok = await generate({ header: "gk-a" });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toMatchObject({ candidates: [{ content: { role: "model", parts: [{ text: "echo: hello" }] } }], modelVersion: "gemini-x" });
    expect((await generate({ query: "gk-b" })).status).toBe(200);
    const limited = await generate({ header: "gk-a" });
    expect(limited.status).toBe(429);
    expect((await limited.json()).error).toMatchObject({
      code: 429,
      status: "RESOURCE_EXHAUSTED",
      details: expect.arrayContaining([{ "@type": "type.googleapis.com/google.rpc.RetryInfo", retryDelay: "10s" }]),
    });
    const unknown = await generate({ header: "gk-unknown" });
    expect([unknown.status, (await unknown.json()).error.details[0].reason]).toEqual([400, "API_KEY_INVALID"]);
    provider.revokeKey("gk-b");
    const revoked = await generate({ query: "gk-b" });
    expect([revoked.status, (await revoked.json()).error.status]).toEqual([403, "PERMISSION_DENIED"]);
    provider.addKey("gk-c");
    provider.failNext("gk-c", { status: 503, count: 1 });
    const busy = await generate({ header: "gk-c" });
    expect([busy.status, (await busy.json()).error.message]).toEqual([503, expect.stringMatching(/overloaded/)]);
    expect(provider.stats()).toMatchObject({
      unknownKey: 1,
      keys: { "gk-a": { ok: 1, rateLimited: 1, via: { "x-goog-api-key": 2 } }, "gk-b": { ok: 1, unauthorized: 1, via: { "?key": 2 } }, "gk-c": { failed: 1 } },
    });
  });

  it("listens on loopback only", async () => {
    provider = await startFakeProvider();
    expect(new URL(provider.url).hostname).toBe("127.0.0.1");
  });
});

describe("fake provider token and daily limits", () => {
  it("needs a request's estimate left in the token bucket, charges what it used, and says which limit bound", async () => {
    let t = 1_000_000;
    provider = await startFakeProvider({ keys: ["sk-t"], limits: { requestsPerWindow: 100, windowMs: 1000, tokensPerWindow: 1000 }, now: () => t });
    const sized = (estimate: number, actual: number) => ({ model: "m", messages: [{ role: "user", content: "x" }], fake_tokens: { estimate, actual } });
    const first = await chat(provider.url, "sk-t", sized(800, 600));
    expect(first.status).toBe(200);
    expect(((await first.json()) as { usage: unknown }).usage).toEqual({ prompt_tokens: 300, completion_tokens: 300, total_tokens: 600 });
    expect(first.headers.get("x-ratelimit-remaining-tokens")).toBe("400");
    const refused = await chat(provider.url, "sk-t", sized(500, 500));
    expect(refused.status).toBe(429);
    const body = (await refused.json()) as { error: { type: string; message: string } };
    expect(body.error.type).toBe("tokens");
    expect(body.error.message).toContain("tokens per min (TPM)");
    // 100 more tokens refill in 100 ms.
    expect(refused.headers.get("retry-after-ms")).toBe("100");
    t += 100;
    expect((await chat(provider.url, "sk-t", sized(500, 500))).status).toBe(200);
    expect(provider.stats().keys["sk-t"]).toMatchObject({ ok: 2, tokens: 1100, rateLimitedBy: { tokens: 1, requests: 0, requests_per_day: 0 } });
  });

  it("enforces requests per day and can answer without rate-limit headers", async () => {
    provider = await startFakeProvider({ keys: ["sk-d"], limits: { requestsPerDay: 2 }, rateLimitHeaders: false });
    const answers = [await chat(provider.url, "sk-d"), await chat(provider.url, "sk-d"), await chat(provider.url, "sk-d")];
    expect(answers.map((r) => r.status)).toEqual([200, 200, 429]);
    expect(answers[0]!.headers.get("x-ratelimit-remaining-requests")).toBeNull();
    expect(((await answers[2]!.json()) as { error: { type: string } }).error.type).toBe("requests_per_day");
    expect(Number(answers[2]!.headers.get("retry-after"))).toBeGreaterThan(40_000);
  });
});
