// Against two replicas on one Postgres database (DATABASE_URL, as scripts/test.sh sets it): a scoped
// lease held across the kill -9 of its pool's owner, and callers that see no error while the owner
// stops gracefully. Real server processes on loopback, polling for conditions.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { scratchDatabase, type ScratchDatabase } from "../../../test/support/database.js";
import { createKeyMeshClient, type KeyMeshClient } from "../src/index.js";
import { type KeyMeshProcess, startKeyMesh } from "./keymesh-process.js";

const base = process.env.DATABASE_URL;
const LEASE_TTL_MS = 20_000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what: string, cond: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe.skipIf(!base)("against replicas on one Postgres", { timeout: 180_000 }, () => {
  let db: ScratchDatabase;
  let replicas: KeyMeshProcess[] = [];
  beforeAll(async () => {
    db = await scratchDatabase(base!, "keymesh_client_replicas");
    const masterKey = randomBytes(32).toString("base64");
    const start = () => startKeyMesh({ databaseUrl: db.url, masterKey, env: { KEYMESH_OWNERSHIP_TTL: "3000ms", KEYMESH_SNAPSHOT_INTERVAL: "200ms" } });
    replicas = [await start(), await start()];
    const admin = createKeyMeshClient({ baseUrl: `http://${replicas[0]!.addr}` }).admin;
    await admin.createPool({ pool: { name: "rp" } });
    for (const id of ["k1", "k2"]) await admin.addKey({ pool: "rp", key: { id, maxConcurrency: 1 }, secret: `sk-rp-${id}` });
  }, 180_000);
  afterAll(async () => {
    await Promise.all(replicas.map((r) => r.dispose()));
    await db?.drop();
  });

  const client = (warnings: string[]): KeyMeshClient =>
    createKeyMeshClient({ endpoints: replicas.map((r) => `http://${r.addr}`), logger: { warn: (m: string) => warnings.push(m) } });

  /** The replica that owns rp, from the keymesh-owner header; undefined when the server has no replicas. */
  async function owner(): Promise<KeyMeshProcess | undefined> {
    let named: string | null = null;
    const c = createKeyMeshClient({ baseUrl: `http://${replicas[0]!.addr}` });
    await c.admin.getPoolStats({ pool: "rp" }, { onHeader: (h) => (named = h.get("keymesh-owner")) });
    return replicas.find((r) => r.addr === named);
  }

  it("a scoped lease survives the kill -9 of its pool's owner without noticing", async (ctx) => {
    const victim = await owner();
    if (!victim) return ctx.skip("the server names no owner: it runs without replicas");
    const warnings: string[] = [];
    const c = client(warnings);
    onTestFinished(() => victim.restart());
    await c.withKey(
      "rp",
      async (lease) => {
        await victim.kill("SIGKILL");
        const killedAt = Date.now();
        // Renewed after the crash: through the survivor, once it took the pool over.
        await until("a renewal after the crash", () => lease.expiresAt.getTime() > killedAt + LEASE_TTL_MS, 60_000);
        expect(lease.signal.aborted).toBe(false);
      },
      { ttlMs: LEASE_TTL_MS },
    );
    expect(await c.withKey("rp", async (l) => l.keyId)).toMatch(/^k[12]$/);
    expect(warnings).toEqual([]);
    const left = (await c.admin.listLeases({ pool: "rp" })).leases;
    expect(left.map((l) => [l.leaseId.slice(0, 12), l.keyId, l.holder])).toEqual([]);
  });

  it("callers see no error while the owner stops gracefully (SIGTERM)", async (ctx) => {
    const victim = await owner();
    if (!victim) return ctx.skip("the server names no owner: it runs without replicas");
    const warnings: string[] = [];
    const c = client(warnings);
    onTestFinished(() => victim.restart());
    const errors: unknown[] = [];
    let done = 0;
    let stop = false;
    const callers = Array.from({ length: 2 }, async () => {
      while (!stop) {
        try {
          await c.withKey("rp", () => sleep(5));
          done++;
        } catch (e) {
          errors.push(e);
        }
      }
    });
    await until("calls before the stop", () => done >= 10);
    await victim.kill("SIGTERM");
    const atStop = done;
    await until("calls after the stop", () => done >= atStop + 20 || errors.length > 0, 60_000);
    stop = true;
    await Promise.all(callers);
    expect(errors).toEqual([]);
    expect(warnings).toEqual([]);
  });
});
