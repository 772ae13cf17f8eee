// The keymesh CLI as a user runs it (node bin/keymesh.mjs, a child process) against a real server
// with auth on: exit codes, tables, JSON, one-line errors, timeouts, imports, watch until Ctrl-C and
// across a restart of the server.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
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

function keymesh(args: string[], options: { stdin?: string; env?: NodeJS.ProcessEnv; addr?: string } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, "--addr", options.addr ?? ts.grpcAddr, ...args], {
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
    expect(stats.stdout).toMatch(/^k1\s+k1\s+enabled\s+yes\s+1\/2\s+-\s+100\.0%\s+-\s+closed\s+0\s+-\s+-\s+-\s+0\s+1\s+0\/0$/m);

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

  it("prints the package's version", async () => {
    const { version } = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8"));
    expect(await keymesh(["--version"])).toEqual({ code: 0, stdout: `${version}\n`, stderr: "" });
  });

  it("gets one pool and one key; -o yaml", async () => {
    const got = await keymesh(["pools", "get", pool]);
    expect(got.code).toBe(0);
    expect(got.stdout).toMatch(new RegExp(`^name: +${pool}$`, "m"));
    const key = await keymesh(["keys", "get", pool, "k1", "-o", "yaml"]);
    expect(key.code).toBe(0);
    expect(key.stdout).toMatch(/^ {2}id: k1$/m);
    expect(key.stdout).toMatch(/^ {2}secretHint: sk-…0042$/m);
    expect(key.stdout).not.toContain(SECRET);
  });

  it("imports keys from a file, one secret per line, and never prints them", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "keymesh-import-"));
    const file = path.join(dir, "keys.txt");
    const secrets = ["sk-import-e2e-000000000000000001", "sk-import-e2e-000000000000000002"];
    writeFileSync(file, `${secrets[0]}\n# spare\n${secrets[1]}\n`);
    const run = await keymesh(["keys", "import", pool, file, "--id-prefix", "bulk", "--quota-group", "org-b"]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^bulk-1 .*sk-…0001 .*org-b/m);
    expect(run.stdout).toMatch(/^bulk-2 .*sk-…0002 .*org-b/m);
    const again = await keymesh(["keys", "import", pool, file, "--id-prefix", "bulk"]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`error: ${file}:1: already_exists:`);
    expect(again.stderr).toContain("error: 2 of 2 keys not added\n");
    for (const secret of secrets) expect(run.stdout + run.stderr + again.stdout + again.stderr).not.toContain(secret);
    for (const id of ["bulk-1", "bulk-2"]) expect((await keymesh(["keys", "remove", pool, id])).code).toBe(0);
  });

  it("gives up on a port that accepts and never answers after --timeout, naming the address", async () => {
    const silent = net.createServer(() => undefined);
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const addr = `127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
    try {
      const started = performance.now();
      const run = await keymesh(["--timeout", "500ms", "pools", "list"], { addr });
      expect(run.code).toBe(1);
      expect(run.stderr).toBe(`error: deadline_exceeded: no answer from ${addr} within 500ms (--timeout)\n`);
      // Well under the 10 s default: the flag is what bounded the wait.
      expect(performance.now() - started).toBeLessThan(8000);
    } finally {
      silent.close();
    }
  });

  it("validates a config file with no server, listing every problem", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "keymesh-validate-"));
    const good = path.join(dir, "good.yaml");
    writeFileSync(good, "pools:\n  - name: p\n    keys:\n      - id: k\n        secret: ${NOT_SET_HERE}\n");
    const bad = path.join(dir, "bad.yaml");
    writeFileSync(bad, "pools:\n  - name: p\n    default_ttl: 2h\n    keys:\n      - { id: k, secret: sk-validate-0000000001, weight: 0 }\n");
    const nowhere = { addr: "127.0.0.1:1" };
    expect(await keymesh(["config", "validate", good], { ...nowhere, env: { NOT_SET_HERE: "sk-validate-0000000002" } })).toEqual({
      code: 0,
      stdout: `${good}: ok (1 pool, 1 key, 0 tokens)\n`,
      stderr: "",
    });
    expect((await keymesh(["config", "validate", good], nowhere)).stderr).toBe(`error: ${good}:5: pools[0].keys[0].secret: environment variable NOT_SET_HERE is not set\n`);
    expect((await keymesh(["config", "validate", "--no-secrets", good], nowhere)).code).toBe(0);
    const run = await keymesh(["config", "validate", bad], nowhere);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(
      `error: ${bad}:3: pools[0].default_ttl: must not exceed max_ttl (1h unless the file sets it)\n` +
        `error: ${bad}:5: pools[0].keys[0].weight: must be a positive integer\n`,
    );
    expect(run.stderr).not.toContain("sk-validate");
  });

  it("applies a config file through the admin API: only what differs, and nothing the second time", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "keymesh-apply-"));
    const file = path.join(dir, "keymesh.yaml");
    const applied = uniqueName("applied");
    const write = (weight: number, secretB: string) =>
      writeFileSync(
        file,
        `pools:\n  - name: ${applied}\n    strategy: weighted\n    default_ttl: 30s\n    managed: true\n    keys:\n` +
          `      - { id: a, secret: sk-apply-a-00000000000001, weight: ${weight} }\n      - { id: b, secret: ${secretB} }\n`,
      );
    write(1, "sk-apply-b-00000000000001");
    const first = await keymesh(["config", "apply", file]);
    expect(first).toEqual({ code: 0, stdout: `create pool ${applied}\nadd key ${applied}/a\nadd key ${applied}/b\n`, stderr: "" });
    expect(await keymesh(["config", "apply", file])).toEqual({ code: 0, stdout: `${file}: no changes\n`, stderr: "" });
    write(3, "sk-apply-b-00000000000002");
    expect((await keymesh(["config", "apply", file])).stdout).toBe(`update key ${applied}/a (weight)\nupdate key ${applied}/b (secret)\n`);
    expect((await keymesh(["config", "apply", file])).stdout).toBe(`${file}: no changes\n`);
    const keys = JSON.parse((await keymesh(["keys", "list", applied, "--json"])).stdout).keys;
    expect(keys.map((k: { id: string; weight: number; secretHint: string }) => [k.id, k.weight, k.secretHint])).toEqual([
      ["a", 3, "sk-…0001"],
      ["b", 1, "sk-…0002"],
    ]);
    expect((await keymesh(["pools", "delete", applied, "--force"])).code).toBe(0);
  });

  it("updates and deletes a pool", async () => {
    const updated = await keymesh(["pools", "update", pool, "--default-ttl", "30s"]);
    expect(updated.code).toBe(0);
    expect(updated.stdout).toMatch(new RegExp(`^${pool}\\s+least_busy\\s+2\\s+1s/30s/10m`, "m"));
    expect(await keymesh(["pools", "delete", pool, "--force"])).toEqual({ code: 0, stdout: `deleted pool ${pool}\n`, stderr: "" });
    expect((await keymesh(["pools", "list"])).stdout).not.toContain(pool);
  });
});

describe("keymesh watch across a restart of the server", () => {
  it("reconnects with a line saying so, follows the new server, and exits 1 when it gives up", async () => {
    const first = await startTestServer({ KEYMESH_AUTH_TOKENS: `${ADMIN_TOKEN}=admin` });
    const port = first.grpcAddr.split(":")[1];
    const child = spawn(process.execPath, [BIN, "--addr", first.grpcAddr, "watch", "--retry-for", "3s"], {
      env: { PATH: process.env.PATH, KEYMESH_TOKEN: ADMIN_TOKEN },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const closed = new Promise<number | null>((resolve) => child.on("close", resolve));
    const until = async (check: () => boolean) => {
      for (let i = 0; i < 400 && !check(); i++) await new Promise((r) => setTimeout(r, 50));
      expect(check()).toBe(true);
    };
    let second: TestServer | undefined;
    try {
      const auth = { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } };
      // The watch subscribes asynchronously: create pools until one's event shows.
      const createUntilSeen = async (server: TestServer) => {
        const seen = stdout.length;
        for (let i = 0; stdout.length === seen && i < 50; i++) {
          await server.admin.createPool({ pool: { name: uniqueName("watch") } }, auth);
          await new Promise((r) => setTimeout(r, 100));
        }
        expect(stdout).toMatch(/ pool_created pool=watch-/);
        expect(stdout.length).toBeGreaterThan(seen);
      };
      await createUntilSeen(first);
      await first.stop({ keepData: true });
      await until(() => /watch: lost 127\.0\.0\.1:\d+ \(.*\); reconnecting in /.test(stderr));
      second = await startTestServer({ KEYMESH_AUTH_TOKENS: `${ADMIN_TOKEN}=admin`, KEYMESH_GRPC_PORT: port }, { databaseUrl: first.databaseUrl, dataDir: first.dataDir });
      await until(() => stderr.includes(`watch: reconnected to 127.0.0.1:${port}`));
      await createUntilSeen(second);
      await second.stop();
      second = undefined;
      expect(await closed).toBe(1);
      expect(stderr.trimEnd().split("\n").at(-1)).toMatch(new RegExp(`^error: watch: gave up reconnecting to 127\\.0\\.0\\.1:${port} after \\S+: unavailable: `));
    } finally {
      child.kill();
      await second?.stop();
    }
  }, 120_000);
});
