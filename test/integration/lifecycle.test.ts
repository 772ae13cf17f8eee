// The process as an operator runs it: SIGTERM ends open streams cleanly and exits 0 within 5 s, a
// port already in use is one line on stderr and a non-zero exit, a bad variable names itself.
import { describe, expect, it } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { PoolAdminService } from "../../server/src/gen/keymesh/v1/admin_pb.js";

const tsx = path.resolve("node_modules/.bin/tsx");

interface Proc {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
}

async function spawnServer(env: NodeJS.ProcessEnv): Promise<Proc> {
  const dataDir = await mkdtemp(path.join(tmpdir(), "keymesh-life-"));
  const child = spawn(tsx, ["server/src/main.ts"], {
    env: { ...process.env, DATABASE_URL: "", KEYMESH_DATA_DIR: dataDir, KEYMESH_GRPC_PORT: "0", KEYMESH_HTTP_PORT: "0", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, stdout: () => out, stderr: () => err, exited };
}

async function listening(p: Proc): Promise<{ grpcPort: number; httpPort: number }> {
  for (let i = 0; i < 300; i++) {
    const m = /"grpcPort":(\d+),"httpPort":(\d+)/.exec(p.stdout());
    if (m) return { grpcPort: Number(m[1]), httpPort: Number(m[2]) };
    if (p.child.exitCode !== null) throw new Error(`server exited: ${p.stderr()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("server did not start");
}

describe("process lifecycle", () => {
  it("on SIGTERM ends an open WatchEvents stream with a clean status and exits 0 within 5 s", async () => {
    const p = await spawnServer({});
    const { grpcPort } = await listening(p);
    const admin = createClient(PoolAdminService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${grpcPort}` }));
    const events = admin.watchEvents({});
    const first = events[Symbol.asyncIterator]().next();
    await new Promise((r) => setTimeout(r, 200));
    const sent = Date.now();
    p.child.kill("SIGTERM");
    const result = await first;
    expect(result.done).toBe(true);
    expect(await p.exited).toBe(0);
    expect(Date.now() - sent).toBeLessThan(5000);
    expect(p.stdout()).toContain('"msg":"stopped"');
  }, 30_000);

  it("refuses a port in use with one line and a non-zero exit", async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", r));
    const port = (blocker.address() as { port: number }).port;
    try {
      const p = await spawnServer({ KEYMESH_GRPC_PORT: String(port) });
      expect(await p.exited).toBe(1);
      expect(p.stderr().trim()).toBe(`keymesh: cannot listen on 127.0.0.1:${port}: address already in use`);
    } finally {
      blocker.close();
    }
  }, 30_000);

  it("names a bad variable", async () => {
    const p = await spawnServer({ KEYMESH_SNAPSHOT_INTERVAL: "soon" });
    expect(await p.exited).toBe(1);
    expect(p.stderr().trim()).toBe('keymesh: KEYMESH_SNAPSHOT_INTERVAL: "soon" is not a positive duration (e.g. 500ms, 1s, 2m)');
  }, 30_000);
});
