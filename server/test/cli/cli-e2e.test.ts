// The keymesh CLI as a user runs it (node bin/keymesh.mjs, a child process) against a real server
// with auth on: exit codes, tables, JSON, one-line errors, watch until Ctrl-C.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KeyPoolService } from "../../src/gen/keymesh/v1/pool_pb.js";
import { startTestServer, uniqueName, type TestServer } from "../../../test/support/server.js";

const BIN = fileURLToPath(new URL("../../../bin/keymesh.mjs", import.meta.url));
const ADMIN_TOKEN = "cli-admin-token-0123456789";
const USER_TOKEN = "cli-user-token-0123456789";
const SECRET = "sk-cli-e2e-raw-secret-000000000042";

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function keymesh(args: string[], options: { stdin?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, "--addr", ts.grpcAddr, ...args], {
      env: { PATH: process.env.PATH, KEYMESH_TOKEN: ADMIN_TOKEN, ...options.env },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(options.stdin ?? "");
  });
}

let ts: TestServer;
let pool: string;

beforeAll(async () => {
  ts = await startTestServer({ KEYMESH_AUTH_TOKENS: `${ADMIN_TOKEN}=admin;${USER_TOKEN}=use:*` });
  pool = uniqueName("cli");
});

afterAll(async () => {
  await ts?.stop();
});

function leaseClient() {
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${USER_TOKEN}`);
    return next(req);
  };
  return createClient(KeyPoolService, createGrpcTransport({ baseUrl: `http://${ts.grpcAddr}`, interceptors: [auth] }));
}

describe("keymesh CLI against a real server", () => {
  it("creates a pool, adds a key from stdin, and lists it masked", async () => {
    const created = await keymesh(["pools", "create", pool, "--strategy", "least_busy", "--max-ttl", "10m", "--description", "cli test"]);
    expect(created).toMatchObject({ code: 0, stderr: "" });
    expect(created.stdout).toMatch(new RegExp(`^${pool}\\s+least_busy\\s+0\\s+1s/1m/10m`, "m"));

    const added = await keymesh(["keys", "add", pool, "--id", "k1", "--secret-stdin", "--max-concurrency", "2", "--metadata", "base_url=https://api.example/v1"], {
      stdin: `${SECRET}\n`,
    });
    expect(added).toMatchObject({ code: 0, stderr: "" });
    expect(added.stdout).toContain("sk-…0042");

    const listed = await keymesh(["--json", "keys", "list", pool]);
    expect(listed.code).toBe(0);
    expect(JSON.parse(listed.stdout).keys).toEqual([
      expect.objectContaining({ id: "k1", secretHint: "sk-…0042", maxConcurrency: 2, state: "KEY_STATE_ENABLED", metadata: { base_url: "https://api.example/v1" } }),
    ]);
    for (const run of [created, added, listed]) expect(run.stdout + run.stderr).not.toContain(SECRET);
  });

  it("shows a lease in leases list and stats, revokes it once, then reports it gone", async () => {
    const grant = await leaseClient().acquire({ pool, holder: "cli-e2e", leaseTtl: durationFromMs(60_000) });
    expect(grant.key).toBe(SECRET);

    const leases = await keymesh(["leases", "list", pool]);
    expect(leases.code).toBe(0);
    expect(leases.stdout).toMatch(new RegExp(`^${grant.leaseId.replace(/[.]/g, "\\.")}\\s+k1\\s+cli-e2e\\s`, "m"));

    const stats = await keymesh(["stats", pool]);
    expect(stats.code).toBe(0);
    expect(stats.stdout).toContain(`pool ${pool}: 1 key, 1 eligible, 1 active lease, 0 waiting`);
    expect(stats.stdout).toMatch(/^k1\s+k1\s+enabled\s+yes\s+1\/2\s+-\s+100\.0%\s+-\s+closed\s+1$/m);

    expect(await keymesh(["leases", "revoke", grant.leaseId, "--reason", "cli test"])).toEqual({
      code: 0, stdout: `revoked lease ${grant.leaseId}\n`, stderr: "",
    });
    const again = await keymesh(["leases", "revoke", grant.leaseId]);
    expect(again.code).toBe(1);
    expect(again.stdout).toBe("");
    expect(again.stderr).toMatch(/^error: not_found: .+\n$/);
  });

  it("prints one error line and exits non-zero for a missing pool, a missing token and a wrong scope", async () => {
    const missing = await keymesh(["keys", "list", "no-such-pool"]);
    expect(missing).toEqual({ code: 1, stdout: "", stderr: 'error: not_found: pool "no-such-pool" not found\n' });

    const anonymous = await keymesh(["pools", "list"], { env: { KEYMESH_TOKEN: "" } });
    expect(anonymous.code).toBe(1);
    expect(anonymous.stderr).toMatch(/^error: unauthenticated: missing bearer token[^\n]*\n$/);

    const user = await keymesh(["--token", USER_TOKEN, "pools", "list"]);
    expect(user.code).toBe(1);
    expect(user.stderr).toBe("error: permission_denied: keymesh.v1.PoolAdminService/ListPools needs scope admin\n");
  });

  it("says so in one line when nothing listens at the address", async () => {
    const run = await keymesh(["--addr", "127.0.0.1:1", "pools", "list"]);
    expect(run.code).toBe(1);
    expect(run.stderr.trimEnd().split("\n")).toHaveLength(1);
    expect(run.stderr).toMatch(/^error: unavailable: .*\(is keymesh serving on 127\.0\.0\.1:1\?\)\n$/);
  });

  it("follows events with watch until interrupted, one line each", async () => {
    const child = spawn(process.execPath, [BIN, "--addr", ts.grpcAddr, "watch", pool], {
      env: { PATH: process.env.PATH, KEYMESH_TOKEN: ADMIN_TOKEN },
    });
    let stdout = "";
    const sawLine = (pattern: RegExp) =>
      new Promise<void>((resolve) => {
        const check = () => pattern.test(stdout) && resolve();
        child.stdout.on("data", (d) => {
          stdout += d;
          check();
        });
      });
    const closed = new Promise<number | null>((resolve) => child.on("close", resolve));
    const keyAdded = sawLine(/ key_added pool=\S+ key=k2\n/);
    // The watch subscribes asynchronously; keep adding until its line appears so no fixed sleep is needed.
    for (let attempt = 0; !/key_added/.test(stdout) && attempt < 50; attempt++) {
      await keymesh(["keys", "add", pool, "--id", "k2", "--secret-env", "K2"], { env: { K2: "sk-second-key-000000000000002" } });
      await Promise.race([keyAdded, new Promise((r) => setTimeout(r, 200))]);
      if (!/key_added/.test(stdout)) await keymesh(["keys", "remove", pool, "k2"]);
    }
    await keyAdded;
    const disabled = sawLine(/ key_disabled pool=\S+ key=k2/);
    await keymesh(["keys", "disable", pool, "k2", "--reason", "rotating"]);
    await disabled;
    child.kill("SIGINT");
    expect(await closed).toBe(0);
    expect(stdout).toMatch(new RegExp(`^\\d{4}-\\d\\d-\\d\\dT\\S+Z key_added pool=${pool} key=k2$`, "m"));
    expect(stdout).not.toContain("sk-second-key");
  });

  it("updates and deletes a pool", async () => {
    const updated = await keymesh(["pools", "update", pool, "--default-ttl", "30s"]);
    expect(updated.code).toBe(0);
    expect(updated.stdout).toMatch(new RegExp(`^${pool}\\s+least_busy\\s+2\\s+1s/30s/10m`, "m"));
    expect(await keymesh(["pools", "delete", pool, "--force"])).toEqual({ code: 0, stdout: `deleted pool ${pool}\n`, stderr: "" });
    expect((await keymesh(["pools", "list"])).stdout).not.toContain(pool);
  });
});
