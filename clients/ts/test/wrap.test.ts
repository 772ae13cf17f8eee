// wrap(): the real openai SDK against the fake provider and a real server (KEYMESH_ADDR). Each test
// creates its own pool whose keys the provider knows; the provider's scripted faults decide outcomes.
import { randomBytes } from "node:crypto";
import OpenAI from "openai";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type FakeProvider, startFakeProvider } from "../../../test/fake-provider/provider.js";
import { durationFromMs } from "../src/duration.js";
import { KeyState } from "../src/gen/keymesh/v1/admin_pb.js";
import { createKeyMeshClient } from "../src/index.js";

const addr = process.env.KEYMESH_ADDR;
const token = process.env.KEYMESH_TOKEN || undefined;

describe.skipIf(!addr)("wrap() with the openai SDK (KEYMESH_ADDR)", () => {
  const client = createKeyMeshClient({ baseUrl: `http://${addr}`, token });
  let provider: FakeProvider;
  const cleanups: (() => Promise<unknown>)[] = [];
  beforeAll(async () => {
    provider = await startFakeProvider({ port: 0, limits: { requestsPerWindow: 100, windowMs: 1_000 } });
  });
  afterAll(() => provider.close());
  afterEach(async () => {
    await Promise.allSettled(cleanups.splice(0).map((c) => c()));
  });

  /** A pool with n keys the provider knows; returns its name and the keys' secrets by id. */
  async function newPool(n: number): Promise<{ pool: string; secrets: Record<string, string> }> {
    const pool = `ts-wrap-${randomBytes(5).toString("hex")}`;
    await client.admin.createPool({ pool: { name: pool, minTtl: durationFromMs(1_000) } });
    cleanups.push(() => client.admin.deletePool({ name: pool, force: true }));
    const secrets: Record<string, string> = {};
    for (let i = 0; i < n; i++) {
      const secret = `sk-wrap-${randomBytes(6).toString("hex")}`;
      provider.addKey(secret);
      secrets[`k${i}`] = secret;
      await client.admin.addKey({ pool, key: { id: `k${i}`, metadata: { base_url: `${provider.url}/v1` } }, secret });
    }
    return { pool, secrets };
  }

  const wrapped = (pool: string) =>
    client.wrap(pool, new OpenAI({ apiKey: "not-a-key", baseURL: "http://127.0.0.1:1/v1" }), { budgetMs: 10_000, backoffBaseMs: 10, backoffCapMs: 50 });
  const ask = (openai: OpenAI, content: string) => openai.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content }] });
  const stats = async (pool: string) => Object.fromEntries(((await client.admin.getPoolStats({ pool })).stats?.keys ?? []).map((k) => [k.keyId, k]));
  const fake = (secrets: Record<string, string>) => Object.values(secrets).map((s) => provider.stats().keys[s]!);

  it("keeps the SDK's call signature and answer, with the leased key and its base_url", async () => {
    const { pool, secrets } = await newPool(1);
    const answer = await ask(wrapped(pool), "hello");
    expect(answer.choices[0]?.message.content).toBe("echo: hello");
    expect(fake(secrets)[0]).toMatchObject({ ok: 1 });
    expect((await client.admin.listLeases({ pool })).leases).toHaveLength(0);
  });

  it("moves a 429 to another key at once and cools the limited one for its retry-after", async () => {
    const { pool, secrets } = await newPool(2);
    provider.failNext(secrets.k0!, { status: 429, count: 1, retryAfterS: 30 });
    const openai = wrapped(pool);
    for (const q of ["one", "two"]) expect((await ask(openai, q)).choices[0]?.message.content).toBe(`echo: ${q}`);
    expect(fake(secrets).map((k) => k.rateLimited)).toEqual([1, 0]);
    expect(fake(secrets).reduce((n, k) => n + k.ok, 0)).toBe(2);
    expect(Number((await stats(pool)).k0?.cooldownRemaining?.seconds ?? 0)).toBeGreaterThan(20);
  });

  it("gives up at once, with the SDK's error, when every key cools past the budget", async () => {
    const { pool, secrets } = await newPool(2);
    for (const secret of Object.values(secrets)) provider.failNext(secret, { status: 429, count: 1, retryAfterS: 30 });
    await expect(ask(wrapped(pool), "one")).rejects.toBeInstanceOf(OpenAI.RateLimitError);
    expect(fake(secrets).map((k) => k.rateLimited)).toEqual([1, 1]);
  });

  it("retries a 5xx on another key and a 401 disables the key", async () => {
    const { pool, secrets } = await newPool(3);
    provider.failNext(secrets.k0!, { status: 500, count: 1 });
    provider.revokeKey(secrets.k1!);
    const openai = wrapped(pool);
    for (let i = 0; i < 4; i++) expect((await ask(openai, `q${i}`)).choices[0]?.message.content).toBe(`echo: q${i}`);
    const after = await stats(pool);
    expect(after.k1?.state).toBe(KeyState.AUTO_DISABLED_AUTH);
    expect(fake(secrets).map((k) => [k.failed, k.unauthorized])).toEqual([
      [expect.any(Number), 0],
      [0, 1],
      [0, 0],
    ]);
    expect(fake(secrets).reduce((n, k) => n + k.ok, 0)).toBe(4);
  });

  it("retries an overload on any key after a pause, without penalising the key", async () => {
    const { pool, secrets } = await newPool(1);
    provider.failNext(secrets.k0!, { status: 529, count: 2 });
    expect((await ask(wrapped(pool), "busy")).choices[0]?.message.content).toBe("echo: busy");
    expect(fake(secrets)[0]).toMatchObject({ failed: 2, ok: 1 });
    expect((await stats(pool)).k0?.consecutiveFailures).toBe(0);
  });
});

describe("wrap() with a client of your own (in memory)", () => {
  it("builds the client per lease with keyed and keeps nested calls and plain properties", async () => {
    const { FakePool } = await import("./fake-pool.js");
    const fakePool = new FakePool(["a", "b"]);
    const sdk = (apiKey: string) => ({ region: "eu", models: { get: async (id: string) => `${id} with ${apiKey}` } });
    const wrappedSdk = fakePool.client().wrap("p", sdk("none"), { keyed: (_c, lease) => sdk(lease.key) });
    expect(wrappedSdk.region).toBe("eu");
    expect(await wrappedSdk.models.get("m1")).toBe("m1 with sk-secret-a");
    expect((await fakePool.ended.next()).kind).toBe("release");
  });

  it("says what to do, at once, for a client without withOptions", async () => {
    const { FakePool } = await import("./fake-pool.js");
    expect(() => new FakePool(["a"]).client().wrap("p", { call: async () => "x" })).toThrow(/keyed/);
  });
});
