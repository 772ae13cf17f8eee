// The examples, run as programs against a real server (KEYMESH_ADDR) and the fake provider.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { startFakeProvider } from "../../../test/fake-provider/provider.js";
import { createKeyMeshClient } from "../src/index.js";

const addr = process.env.KEYMESH_ADDR;
const token = process.env.KEYMESH_TOKEN || undefined;
const tsx = fileURLToPath(new URL("../../../node_modules/.bin/tsx", import.meta.url));
// The examples import the package by name; this condition resolves it to src/ (see package.json "exports").
const example = (name: string) => fileURLToPath(new URL(`../examples/${name}`, import.meta.url));
const run = promisify(execFile);

describe.skipIf(!addr)("examples (KEYMESH_ADDR)", () => {
  const client = createKeyMeshClient({ baseUrl: `http://${addr}`, token });
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    await Promise.allSettled(cleanups.splice(0).map((c) => c()));
  });

  async function newPool(keys: { id: string; secret: string; metadata?: Record<string, string> }[]) {
    const name = `ts-example-${randomBytes(5).toString("hex")}`;
    await client.admin.createPool({ pool: { name } });
    cleanups.push(() => client.admin.deletePool({ name, force: true }));
    for (const k of keys) await client.admin.addKey({ pool: name, key: { id: k.id, label: `label-${k.id}`, metadata: k.metadata ?? {} }, secret: k.secret });
    return name;
  }

  it("quickstart prints the leased key's label and exits 0", async () => {
    const pool = await newPool([{ id: "k1", secret: "sk-test-k1" }]);
    const { stdout } = await run(tsx, ["--conditions=keymesh-source", example("quickstart.ts"), pool], { env: { ...process.env, KEYMESH_ADDR: addr } });
    expect(stdout).toBe("leased label-k1\n");
  });

  it("quickstart exits non-zero for an unknown pool", async () => {
    const failed = await run(tsx, ["--conditions=keymesh-source", example("quickstart.ts"), "no-such-pool-for-quickstart"], { env: { ...process.env, KEYMESH_ADDR: addr } }).catch((e: { code: number; stderr: string }) => e);
    expect((failed as { code: number }).code).toBe(1);
    expect((failed as { stderr: string }).stderr).toContain("POOL_NOT_FOUND");
  });

  it("openai-style loses no request while keys rotate through rate limits", async () => {
    const secrets = ["sk-fake-a", "sk-fake-b", "sk-fake-c"];
    const provider = await startFakeProvider({ port: 0, keys: secrets, limits: { requestsPerWindow: 2, windowMs: 1_000 } });
    cleanups.push(() => provider.close());
    const pool = await newPool(secrets.map((secret, i) => ({ id: `k${i}`, secret, metadata: { base_url: `${provider.url}/v1` } })));
    const { stdout } = await run(tsx, ["--conditions=keymesh-source", example("openai-style.ts"), "--addr", addr!, "--pool", pool, "--requests", "12"], { env: process.env });
    expect(stdout).toContain("completed 12 requests");
    const stats = Object.values(provider.stats().keys);
    expect(stats.reduce((n, k) => n + k.ok, 0)).toBe(12);
    expect(stats.reduce((n, k) => n + k.unauthorized, 0)).toBe(0);
    // Each key allows 2 requests a second: 12 in a row only pass by rotating (reported budgets and 429s).
    expect(stats.filter((k) => k.ok > 0).length).toBeGreaterThan(1);
  });
});
