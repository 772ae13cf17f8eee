// Failover against real server processes: a scoped lease held across its server's kill -9 and restart
// on the same port (lease ids survive a restart), an Acquire issued while the server is down, and a
// second server taking the calls when the first is gone.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { durationFromMs } from "../src/duration.js";
import { createKeyMeshClient, keymeshErrorReason, type KeyMeshClient } from "../src/index.js";
import { type KeyMeshProcess, startKeyMesh } from "./keymesh-process.js";

const TTL_MS = 30_000;

describe("failover against real servers", { timeout: 120_000 }, () => {
  let a: KeyMeshProcess;
  let b: KeyMeshProcess;
  beforeAll(async () => {
    [a, b] = await Promise.all([startKeyMesh(), startKeyMesh()]);
    for (const s of [a, b]) {
      const admin = createKeyMeshClient({ baseUrl: `http://${s.addr}` }).admin;
      await admin.createPool({ pool: { name: "fo", minTtl: durationFromMs(1_000) } });
      await admin.addKey({ pool: "fo", key: { id: "k1", maxConcurrency: 1 }, secret: `sk-fo-${s.addr}` });
      await admin.createPool({ pool: { name: "fo-other" } });
      await admin.addKey({ pool: "fo-other", key: { id: "k2" }, secret: "sk-fo-other" });
    }
  }, 120_000);
  afterAll(async () => {
    await Promise.all([a?.dispose(), b?.dispose()]);
  });

  const quietClient = (endpoints: string[], warnings: string[]): KeyMeshClient =>
    createKeyMeshClient({ endpoints: endpoints.map((e) => `http://${e}`), logger: { warn: (m: string) => warnings.push(m) } });

  it("a scoped lease survives its server's kill -9 and restart without noticing, and an Acquire made meanwhile waits it out", async () => {
    const warnings: string[] = [];
    const client = quietClient([a.addr], warnings);
    let leaseId = "";
    let duringOutage: Promise<string> | undefined;
    await client.withKey(
      "fo",
      async (lease) => {
        leaseId = lease.leaseId;
        await a.kill("SIGKILL");
        duringOutage = client.withKey("fo-other", async (l) => l.keyId);
        await a.restart();
        const restartedAt = Date.now();
        // Renewed by the new process: the stream reopened and re-sent the lease.
        while (lease.expiresAt.getTime() < restartedAt + TTL_MS) await new Promise((r) => setTimeout(r, 100));
        expect(lease.signal.aborted).toBe(false);
      },
      { ttlMs: TTL_MS },
    );
    expect(await duringOutage).toBe("k2");
    expect(warnings).toEqual([]);
    const again = await client.pool.release({ leaseId }).catch((e: unknown) => e);
    expect(keymeshErrorReason(again)).toBe("LEASE_RELEASED");
    expect((await client.admin.listLeases({ pool: "fo" })).leases).toHaveLength(0);
  });

  it("a second server takes the calls when the first is gone", async () => {
    const warnings: string[] = [];
    const client = quietClient([a.addr, b.addr], warnings);
    expect(await client.withKey("fo", async (l) => l.key)).toBe(`sk-fo-${a.addr}`);
    await a.kill("SIGKILL");
    expect(await client.withKey("fo", async (l) => l.key)).toBe(`sk-fo-${b.addr}`);
    expect(await client.withKey("fo", async (l) => l.key)).toBe(`sk-fo-${b.addr}`);
    expect(warnings).toEqual([]);
  });
});
