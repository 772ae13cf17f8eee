// The config file against a real server: the operations page's example as printed, re-applying a changed file
// (idempotently, tokens included), refusing a bad one without a change, and checking a file before
// the database is touched.
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { ConnectError } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { startServer } from "../../src/app/app.js";
import { configFromEnv } from "../../src/app/config.js";
import { createLogger } from "../../src/ops/logger.js";
import { startTestServer, type TestServer } from "../../../test/support/server.js";

const OPS_TOKEN = "ops-token-0123456789abcdef";
const BACKEND_TOKEN = "backend-token-0123456789ab";
const auth = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

/** The config file example of docs/operations.md, as printed. */
function documentedExample(): string {
  const page = readFileSync(new URL("../../../docs/operations.md", import.meta.url), "utf8");
  const section = page.slice(page.indexOf("## The config file"));
  const start = section.indexOf("```yaml\n") + "```yaml\n".length;
  return section.slice(start, section.indexOf("```", start));
}

describe("config file on a running server", () => {
  let ts: TestServer | undefined;
  afterEach(async () => {
    await ts?.stop();
    ts = undefined;
  });

  it("the documented example works as printed on a server: the backend token borrows, the admin token administers", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "keymesh-docs-"));
    writeFileSync(path.join(dir, "keymesh.yaml"), documentedExample());
    ts = await startTestServer({
      KEYMESH_CONFIG: path.join(dir, "keymesh.yaml"),
      OPENAI_KEY_1: "sk-readme-first-key-00000000001",
      OPS_TOKEN,
      BACKEND_TOKEN,
    });
    const lease = await ts.pool.acquire({ pool: "openai", holder: "backend" }, auth(BACKEND_TOKEN));
    expect(lease.key).toBe("sk-readme-first-key-00000000001");
    await ts.pool.release({ leaseId: lease.leaseId }, auth(BACKEND_TOKEN));
    expect((await ts.admin.listKeys({ pool: "openai" }, auth(OPS_TOKEN))).keys.map((k) => k.id)).toEqual(["k1"]);
    await expect(ts.admin.listPools({}, auth(BACKEND_TOKEN))).rejects.toThrow(/needs scope admin/);
  }, 90_000);

  it("re-applies a changed file: only what differs, logged; again, nothing; tokens too", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "keymesh-reload-"));
    const file = path.join(dir, "keymesh.yaml");
    const write = (ttl: string, keys: string[], backendScope: string) =>
      writeFileSync(
        file,
        `pools:\n  - name: p\n    default_ttl: ${ttl}\n    managed: true\n    keys:\n` +
          keys.map((id) => `      - { id: ${id}, secret: sk-reload-${id}-000000000000 }\n`).join("") +
          `auth:\n  tokens:\n    - { token: ${OPS_TOKEN}, scopes: [admin] }\n    - { token: ${BACKEND_TOKEN}, scopes: ["${backendScope}"] }\n`,
      );
    write("1m", ["k1"], "use:p");
    ts = await startTestServer({ KEYMESH_CONFIG: file });
    expect(await ts.server.reload()).toEqual({ applied: [] });

    write("2m", ["k2"], "use:other");
    expect(await ts.server.reload()).toEqual({ applied: ["update pool p (defaultTtlMs)", "add key p/k2", "remove key p/k1"] });
    expect(await ts.server.reload()).toEqual({ applied: [] });
    expect(ts.logs()).toMatch(/"source":"[^"]+","changes":3,"msg":"config re-applied"/);
    expect(ts.logs()).toContain('"msg":"update pool p (defaultTtlMs)"');
    expect(ts.logs()).not.toContain("sk-reload-");
    const pool = await ts.admin.getPool({ name: "p" }, auth(OPS_TOKEN));
    expect(Number(pool.pool!.defaultTtl!.seconds)).toBe(120);
    // The backend token's scope moved to another pool.
    await expect(ts.pool.acquire({ pool: "p" }, auth(BACKEND_TOKEN))).rejects.toThrow(/needs scope use:p/);
  }, 90_000);

  it("turns auth on and off on reload, and records the file's changes as made by the config file", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "keymesh-reload-"));
    const file = path.join(dir, "keymesh.yaml");
    const pools = (description: string) => `pools:\n  - name: p\n    description: ${description}\n`;
    writeFileSync(file, pools("first"));
    ts = await startTestServer({ KEYMESH_CONFIG: file });
    expect((await ts.admin.getPool({ name: "p" })).pool!.description).toBe("first");

    writeFileSync(file, `${pools("second")}auth:\n  tokens:\n    - { name: ops team, token: ${OPS_TOKEN}, scopes: [admin] }\n`);
    expect(await ts.server.reload()).toEqual({ applied: ["update pool p (description)"] });
    expect(ts.logs()).toContain('"msg":"auth turned on: every call needs a token from now on"');
    await expect(ts.admin.getPool({ name: "p" })).rejects.toThrow(/missing bearer token/);
    await ts.admin.updatePool({ pool: { name: "p", description: "by hand" }, updateMask: { paths: ["description"] } }, auth(OPS_TOKEN));

    writeFileSync(file, pools("third"));
    expect(await ts.server.reload()).toEqual({ applied: ["update pool p (description)"] });
    expect(ts.logs()).toContain('"msg":"auth turned off: no tokens configured; serving on loopback only"');
    const { entries } = await ts.admin.listAuditEntries({ pool: "p" });
    expect(entries.map((e) => [e.actor, e.action, e.after?.description])).toEqual([
      ["config file", "update_pool", "third"],
      ["ops team", "update_pool", "by hand"],
      ["config file", "update_pool", "second"],
      ["config file", "create_pool", "first"],
    ]);
  }, 90_000);

  it("refuses a file with problems, changing nothing, and lists them all", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "keymesh-reload-"));
    const file = path.join(dir, "keymesh.yaml");
    writeFileSync(file, "pools:\n  - name: p\n    default_ttl: 1m\n");
    ts = await startTestServer({ KEYMESH_CONFIG: file });
    writeFileSync(file, "pools:\n  - name: p\n    default_ttl: 2h\n    strategy: fastest\n");
    const result = await ts.server.reload();
    expect(result).toEqual({
      refused: `${file}:3: pools[0].default_ttl: must not exceed max_ttl (1h unless the file sets it)\n${file}:4: pools[0].strategy: must be one of round_robin, least_busy, weighted, least_used, latency`,
    });
    expect(ts.logs()).toContain('"msg":"config not re-applied"');
    expect(Number((await ts.admin.getPool({ name: "p" })).pool!.defaultTtl!.seconds)).toBe(60);
  }, 90_000);

  it("checks the whole file before it touches the database", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "keymesh-start-"));
    const file = path.join(dir, "keymesh.yaml");
    writeFileSync(file, "pools:\n  - name: p\n    default_ttl: 2h\n  - name: q\n    max_cooldown: 1x\n");
    // Nothing listens there: a server that reached for the database first would fail on it instead.
    const env = { KEYMESH_GRPC_PORT: "0", KEYMESH_HTTP_PORT: "0", KEYMESH_CONFIG: file, DATABASE_URL: "postgres://nobody@127.0.0.1:1/none", KEYMESH_MASTER_KEY: Buffer.alloc(32, 1).toString("base64") };
    const error = await startServer(configFromEnv(env), createLogger("silent"), env).then(
      () => undefined,
      (err: unknown) => err as Error,
    );
    expect(error).toBeDefined();
    expect(error).not.toBeInstanceOf(ConnectError);
    expect(error!.message.split("\n")).toEqual([
      `${file}:3: pools[0].default_ttl: must not exceed max_ttl (1h unless the file sets it)`,
      `${file}:5: pools[1].max_cooldown: must be a positive duration such as "500ms", "30s", "5m", "1h"`,
    ]);
  });
});
