// The CLI as an installed package runs it: `npm pack` (which compiles server/dist), `npm install` of the
// tarball into an empty project with runtime dependencies only (no tsx, no TypeScript sources, the
// patched postgres.js bundled), then the installed `keymesh` against a real server.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { ROOT } from "../../server/test/store/helpers.js";
import { startTestServer, uniqueName, type TestServer } from "../support/server.js";

const run = promisify(execFile);
const TOKEN = "install-admin-token-0123456789";

describe("the installed package", () => {
  let dir: string | undefined;
  let server: TestServer | undefined;
  afterAll(async () => {
    await server?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("runs the compiled CLI, without tsx, against a real server", async () => {
    dir = await mkdtemp(path.join(tmpdir(), "keymesh-install-"));
    const npm = { env: { ...process.env, npm_config_update_notifier: "false", npm_config_fund: "false", npm_config_audit: "false" } };
    const packed = await run("npm", ["pack", "--pack-destination", dir, "--json"], { ...npm, cwd: ROOT, maxBuffer: 64 * 1024 * 1024 });
    const tarball = path.join(dir, JSON.parse(packed.stdout)[0].filename);
    await writeFile(path.join(dir, "package.json"), JSON.stringify({ name: "keymesh-consumer", private: true }));
    await run("npm", ["install", "--prefer-offline", "--omit=dev", "--omit=optional", tarball], { ...npm, cwd: dir });

    const installed = path.join(dir, "node_modules", "keymesh");
    expect(existsSync(path.join(installed, "server", "dist", "cli", "main.js"))).toBe(true);
    expect(existsSync(path.join(installed, "server", "src"))).toBe(false);
    expect(existsSync(path.join(dir, "node_modules", "tsx"))).toBe(false);
    const driver = path.join("node_modules", "postgres", "src", "connection.js");
    expect(await readFile(path.join(installed, driver), "utf8"), "the bundled driver carries patches/").toBe(await readFile(path.join(ROOT, driver), "utf8"));

    const keymesh = (...args: string[]) => run(path.join(dir!, "node_modules", ".bin", "keymesh"), args, { env: { PATH: process.env.PATH, KEYMESH_TOKEN: TOKEN } });
    const { version } = JSON.parse(await readFile(path.join(ROOT, "package.json"), "utf8"));
    expect((await keymesh("--version")).stdout).toBe(`${version}\n`);

    server = await startTestServer({ KEYMESH_AUTH_TOKENS: `${TOKEN}=admin` });
    const pool = uniqueName("installed");
    await keymesh("--addr", server.grpcAddr, "pools", "create", pool);
    expect((await keymesh("--addr", server.grpcAddr, "pools", "get", pool)).stdout).toMatch(new RegExp(`^name: +${pool}$`, "m"));
  }, 300_000);
});
