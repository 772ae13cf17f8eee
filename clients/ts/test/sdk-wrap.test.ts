// wrap() with each real SDK it names (openai, @anthropic-ai/sdk, @google/genai) against the fake
// provider on loopback: with the pool in memory (fake-pool.ts), so every report that ends a lease is
// seen as sent, and against a real server (KEYMESH_ADDR), for what the server makes of those reports
// (wrap.test.ts does the same for openai). The SDK clients are made with a key and base URL nobody
// answers: only the lease's key and its base_url metadata can reach the provider.
import { randomBytes } from "node:crypto";
import Anthropic from "@anthropic-ai/sdk";
import { ApiError, GoogleGenAI } from "@google/genai";
import OpenAI from "openai";
import { afterAll, afterEach, beforeAll, describe, expect, expectTypeOf, it } from "vitest";
import { type FakeProvider, startFakeProvider } from "../../../test/fake-provider/provider.js";
import { durationFromMs, msFromDuration } from "../src/duration.js";
import { KeyState } from "../src/gen/keymesh/v1/admin_pb.js";
import { FailureReason } from "../src/gen/keymesh/v1/pool_pb.js";
import { createKeyMeshClient } from "../src/index.js";
import { type Ended, FakePool } from "./fake-pool.js";

/** A FakePool whose leases carry the provider's address as base_url metadata. */
class ProviderPool extends FakePool {
  constructor(
    keys: string[],
    readonly baseUrl: string,
  ) {
    super(keys);
  }

  override impl(): ReturnType<FakePool["impl"]> {
    const impl = super.impl();
    return {
      ...impl,
      acquire: async (req, ctx) => ({ ...(await impl.acquire(req, ctx)), keyMetadata: { base_url: this.baseUrl } }),
    };
  }
}

interface Sdk<C extends object> {
  name: string;
  /** The client as an application makes it (its own key and address are never used). */
  create(): C;
  /** The key's base_url metadata for this provider. */
  baseUrl(providerUrl: string): string;
  /** One call, in the SDK's own signature; the answer's text. */
  ask(client: C, text: string): Promise<string>;
  /** The header that carries the key (@anthropic-ai/sdk 1.x sends an apiKey as a bearer token, not x-api-key). */
  via: string;
  /** The status the provider refuses a revoked key with. */
  revokedStatus: number;
  /** The provider's overload status. */
  overloadStatus: number;
  /** Whether the error is the SDK's own rate-limit error. */
  isRateLimitError(error: unknown): boolean;
}

const DEAD = "http://127.0.0.1:1";

const openai: Sdk<OpenAI> = {
  name: "openai",
  create: () => new OpenAI({ apiKey: "not-a-key", baseURL: `${DEAD}/v1` }),
  baseUrl: (url) => `${url}/v1`,
  ask: async (c, text) => (await c.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: text }] })).choices[0]?.message.content ?? "",
  via: "authorization",
  revokedStatus: 401,
  overloadStatus: 529,
  isRateLimitError: (e) => e instanceof OpenAI.RateLimitError,
};

const anthropic: Sdk<Anthropic> = {
  name: "@anthropic-ai/sdk",
  create: () => new Anthropic({ apiKey: "not-a-key", baseURL: DEAD }),
  baseUrl: (url) => url,
  ask: async (c, text) => {
    const message = await c.messages.create({ model: "claude-sonnet-4-5", max_tokens: 64, messages: [{ role: "user", content: text }] });
    return message.content[0]?.type === "text" ? message.content[0].text : "";
  },
  via: "authorization",
  revokedStatus: 401,
  overloadStatus: 529,
  isRateLimitError: (e) => e instanceof Anthropic.RateLimitError,
};

const gemini: Sdk<GoogleGenAI> = {
  name: "@google/genai",
  create: () => new GoogleGenAI({ apiKey: "not-a-key", httpOptions: { baseUrl: DEAD, retryOptions: { attempts: 5 } } }),
  baseUrl: (url) => url,
  ask: async (c, text) => (await c.models.generateContent({ model: "gemini-2.5-flash", contents: text })).text ?? "",
  via: "x-goog-api-key",
  // Gemini refuses a revoked (leaked) key with 403 PERMISSION_DENIED.
  revokedStatus: 403,
  overloadStatus: 503,
  isRateLimitError: (e) => e instanceof ApiError && e.status === 429,
};

let provider: FakeProvider;
beforeAll(async () => {
  provider = await startFakeProvider({ port: 0, limits: { requestsPerWindow: 1_000, windowMs: 1_000 } });
});
afterAll(() => provider.close());

const opts = { budgetMs: 10_000, backoffBaseMs: 1, backoffCapMs: 5 };

describe.each([openai, anthropic, gemini] as Sdk<object>[])("wrap() with the real $name client", (sdk) => {
  /** A pool of keys a and b (secrets sk-secret-a, sk-secret-b, fresh in the provider) and the wrapped client. */
  function setup() {
    const pool = new ProviderPool(["a", "b"], sdk.baseUrl(provider.url));
    const secrets = { a: "sk-secret-a", b: "sk-secret-b" };
    for (const secret of Object.values(secrets)) provider.addKey(secret);
    const before = provider.stats().unknownKey;
    return {
      pool,
      wrapped: pool.client().wrap("p", sdk.create(), opts),
      fake: (id: "a" | "b") => provider.stats().keys[secrets[id]]!,
      strangers: () => provider.stats().unknownKey - before,
    };
  }
  const ended = async (pool: FakePool, n: number) => {
    const out: Ended[] = [];
    for (let i = 0; i < n; i++) out.push(await pool.ended.next());
    return out.map((e) => ({ kind: e.kind, leaseId: e.req.leaseId, ...detail(e) }));
  };

  it("keeps the SDK's call signature and answer; the call carries the leased key, in the SDK's header, to the key's base_url", async () => {
    const { pool, wrapped, fake, strangers } = setup();
    expect(await sdk.ask(wrapped, "hello")).toBe("echo: hello");
    expect([fake("a").ok, fake("b").ok, strangers()]).toEqual([1, 0, 0]);
    expect(fake("a").via).toEqual({ [sdk.via]: 1 });
    expect(await ended(pool, 1)).toEqual([{ kind: "release", leaseId: "lease-1" }]);
  });

  it("rotates a 429 with a retry-after to another key and reports it as MarkRateLimited", async () => {
    const { pool, wrapped, fake } = setup();
    provider.failNext("sk-secret-a", { status: 429, count: 1, retryAfterS: 30 });
    expect(await sdk.ask(wrapped, "again")).toBe("echo: again");
    expect(await ended(pool, 2)).toEqual([
      { kind: "markRateLimited", leaseId: "lease-1", retryAfterMs: 30_000 },
      { kind: "release", leaseId: "lease-2" },
    ]);
    expect(pool.acquires.map((a) => a.excludeKeyIds)).toEqual([[], ["a"]]);
    expect([fake("a").rateLimited, fake("b").ok]).toEqual([1, 1]);
  });

  it("reports a 401 as an auth failure and answers from another key", async () => {
    const { pool, wrapped } = setup();
    provider.failNext("sk-secret-a", { status: 401, count: 1 });
    expect(await sdk.ask(wrapped, "who")).toBe("echo: who");
    expect(await ended(pool, 2)).toEqual([
      { kind: "markFailed", leaseId: "lease-1", reason: FailureReason.AUTH, httpStatus: 401 },
      { kind: "release", leaseId: "lease-2" },
    ]);
  });

  it("reports a key the provider has revoked as an auth failure", async () => {
    const { pool, wrapped, fake } = setup();
    provider.revokeKey("sk-secret-a");
    expect(await sdk.ask(wrapped, "still")).toBe("echo: still");
    expect(await ended(pool, 2)).toEqual([
      { kind: "markFailed", leaseId: "lease-1", reason: FailureReason.AUTH, httpStatus: sdk.revokedStatus },
      { kind: "release", leaseId: "lease-2" },
    ]);
    expect(fake("a").unauthorized).toBe(1);
  });

  it("reports an overload as such and retries it after a pause on any key, the SDK's own retries off", async () => {
    const { pool, wrapped, fake } = setup();
    provider.failNext("sk-secret-a", { status: sdk.overloadStatus, count: 1 });
    expect(await sdk.ask(wrapped, "busy")).toBe("echo: busy");
    expect(await ended(pool, 2)).toEqual([
      { kind: "markFailed", leaseId: "lease-1", reason: FailureReason.OVERLOADED, httpStatus: sdk.overloadStatus },
      { kind: "release", leaseId: "lease-2" },
    ]);
    expect(pool.acquires.map((a) => a.excludeKeyIds)).toEqual([[], []]);
    expect([fake("a").failed, fake("a").ok]).toEqual([1, 1]);
  });

  it("gives up at once with the SDK's own error when every key cools past the budget", async () => {
    const { pool, wrapped } = setup();
    for (const secret of ["sk-secret-a", "sk-secret-b"]) provider.failNext(secret, { status: 429, count: 1, retryAfterS: 30 });
    const failure = await sdk.ask(wrapped, "no").catch((e: unknown) => e);
    expect(sdk.isRateLimitError(failure)).toBe(true);
    expect((await ended(pool, 2)).map((e) => e.kind)).toEqual(["markRateLimited", "markRateLimited"]);
  });
});

const addr = process.env.KEYMESH_ADDR;

describe.skipIf(!addr).each([anthropic, gemini] as Sdk<object>[])("wrap() with the real $name client and a real server (KEYMESH_ADDR)", (sdk) => {
  const client = createKeyMeshClient({ baseUrl: `http://${addr}`, token: process.env.KEYMESH_TOKEN || undefined });

  /** A pool of keys k0..k(n-1) the provider knows, deleted after the test; their secrets by id. */
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    await Promise.allSettled(cleanups.splice(0).map((c) => c()));
  });

  async function newPool(n: number) {
    const pool = `ts-sdk-${randomBytes(5).toString("hex")}`;
    await client.admin.createPool({ pool: { name: pool, minTtl: durationFromMs(1_000) } });
    cleanups.push(() => client.admin.deletePool({ name: pool, force: true }));
    const secrets: string[] = [];
    for (let i = 0; i < n; i++) {
      const secret = `sk-sdk-${randomBytes(6).toString("hex")}`;
      provider.addKey(secret);
      secrets.push(secret);
      await client.admin.addKey({ pool, key: { id: `k${i}`, metadata: { base_url: sdk.baseUrl(provider.url) } }, secret });
    }
    return { pool, secrets, wrapped: client.wrap(pool, sdk.create(), opts) };
  }
  const stats = async (pool: string) => Object.fromEntries(((await client.admin.getPoolStats({ pool })).stats?.keys ?? []).map((k) => [k.keyId, k]));

  it("gives up with the SDK's error when every key cools past the budget, each cooling on the server for its retry-after", async () => {
    const { pool, secrets, wrapped } = await newPool(2);
    for (const secret of secrets) provider.failNext(secret, { status: 429, count: 1, retryAfterS: 30 });
    expect(sdk.isRateLimitError(await sdk.ask(wrapped, "one").catch((e: unknown) => e))).toBe(true);
    const after = await stats(pool);
    for (const id of ["k0", "k1"]) expect(Number(after[id]?.cooldownRemaining?.seconds ?? 0)).toBeGreaterThan(20);
    expect((await client.admin.listLeases({ pool })).leases).toHaveLength(0);
  });

  it("moves past a rate-limited key and disables a revoked one", async () => {
    const { pool, secrets, wrapped } = await newPool(3);
    provider.failNext(secrets[0]!, { status: 429, count: 1, retryAfterS: 30 });
    provider.revokeKey(secrets[1]!);
    for (let i = 0; i < 4; i++) expect(await sdk.ask(wrapped, `q${i}`)).toBe(`echo: q${i}`);
    const after = await stats(pool);
    expect(after.k0?.cooldownRemaining?.seconds).toBeGreaterThan(20n);
    expect(after.k1?.state).toBe(KeyState.AUTO_DISABLED_AUTH);
    expect(after.k2?.state).toBe(KeyState.ENABLED);
    expect(secrets.map((s) => provider.stats().keys[s]!).map((k) => [k.rateLimited, k.unauthorized])).toEqual([
      [1, 0],
      [0, 1],
      [0, 0],
    ]);
    expect((await client.admin.listLeases({ pool })).leases).toHaveLength(0);
  });
});

describe("wrap() keeps each SDK's types", () => {
  it("returns the client's own type", () => {
    const pool = new FakePool(["a"]).client();
    expectTypeOf(pool.wrap("p", anthropic.create())).toEqualTypeOf<Anthropic>();
    expectTypeOf(pool.wrap("p", gemini.create()).models.generateContent).toEqualTypeOf<GoogleGenAI["models"]["generateContent"]>();
    expectTypeOf(pool.wrap("p", openai.create()).chat.completions.create).toEqualTypeOf<OpenAI["chat"]["completions"]["create"]>();
  });
});

function detail(e: Ended): Record<string, unknown> {
  switch (e.kind) {
    case "release":
      return {};
    case "markRateLimited":
      return { retryAfterMs: e.req.retryAfter ? msFromDuration(e.req.retryAfter) : null };
    case "markFailed":
      return { reason: e.req.reason, httpStatus: e.req.httpStatus };
  }
}
