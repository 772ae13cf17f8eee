// The process as an operator runs it: SIGTERM ends open streams cleanly and exits 0 within 5 s, a
// port already in use is one line on stderr and a non-zero exit, so is an embedded data directory in use,
// and a bad variable names itself.
import { describe, expect, it } from "vitest";
import { mkdtemp } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { PoolAdminService } from "../../server/src/gen/keymesh/v1/admin_pb.js";
import { listening, spawnServer } from "../support/process.js";

async function startProcess(env: NodeJS.ProcessEnv) {
  const dataDir = await mkdtemp(path.join(tmpdir(), "keymesh-life-"));
  return spawnServer({ DATABASE_URL: "", KEYMESH_DATA_DIR: dataDir, ...env });
}

describe("process lifecycle", () => {
  it("on SIGTERM ends an open WatchEvents stream with a clean status and exits 0 within 5 s", async () => {
    const p = await startProcess({});
    const { grpcPort } = await listening(p);
    const admin = createClient(PoolAdminService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${grpcPort}` }));
    const events = admin.watchEvents({})[Symbol.asyncIterator]();
    // The stream is open on the server once it delivers an event: make them until one arrives.
    const first = events.next();
    let delivered = false;
    void first.then(() => (delivered = true));
    for (let i = 0; i < 50 && !delivered; i++) {
      await admin.createPool({ pool: { name: `life-${i}` } });
      await Promise.race([first, new Promise((r) => setTimeout(r, 100))]);
    }
    expect((await first).done).toBe(false);
    const sent = Date.now();
    p.child.kill("SIGTERM");
    // Events already sent (each change is POOL_CREATED and ADMIN_CHANGE) come first, then the clean end.
    let result = await events.next();
    while (!result.done) result = await events.next();
    expect(await p.exited).toBe(0);
    expect(Date.now() - sent).toBeLessThan(5000);
    expect(p.stdout()).toContain('"msg":"stopped"');
  }, 30_000);

  it("refuses a port in use with one line and a non-zero exit", async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", r));
    const port = (blocker.address() as { port: number }).port;
    try {
      const p = await startProcess({ KEYMESH_GRPC_PORT: String(port) });
      expect(await p.exited).toBe(1);
      expect(p.stderr().trim()).toBe(`keymesh: cannot listen on 127.0.0.1:${port}: address already in use`);
    } finally {
      blocker.close();
    }
  }, 30_000);

  it("refuses an embedded data directory another server is using, and takes it over once that server is killed", async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), "keymesh-life-"));
    const env = { DATABASE_URL: "", KEYMESH_DATA_DIR: dataDir };
    const first = spawnServer(env);
    await listening(first);
    const second = spawnServer(env);
    expect(await second.exited).toBe(1);
    expect(second.stderr().trim()).toBe(
      `keymesh: data directory ${dataDir} is in use by another KeyMesh server (pid ${first.child.pid}); stop it or choose another KEYMESH_DATA_DIR`,
    );
    first.child.kill("SIGKILL");
    await first.exited;
    const third = spawnServer(env);
    await listening(third);
    third.child.kill("SIGTERM");
    expect(await third.exited).toBe(0);
  }, 60_000);

  it("names a bad variable", async () => {
    const p = await startProcess({ KEYMESH_SNAPSHOT_INTERVAL: "soon" });
    expect(await p.exited).toBe(1);
    expect(p.stderr().trim()).toBe('keymesh: KEYMESH_SNAPSHOT_INTERVAL: "soon" is not a positive duration (e.g. 500ms, 1s, 2m)');
  }, 30_000);
});
