// The canary: a key whose secret is shaped like no provider's key (so the logger's shape-based scrubbing
// cannot catch it), quoted in every free-text field a caller can send — pool description, key label, quota
// group and metadata, holder, MarkFailed message, disable and revoke reasons. Afterwards the secret appears in no log
// line, event, listing, metric scrape, error message, file under the data directory (embedded) or dump of
// the database (Postgres, pg_dump): the Acquire answer is the one place it belongs.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { mask } from "../../server/src/domain/mask.js";
import { startTestServer, uniqueName } from "../support/server.js";

const json = (v: unknown) => JSON.stringify(v, (_k, x: unknown) => (typeof x === "bigint" ? x.toString() : x));

async function filesContaining(dir: string, needle: string): Promise<string[]> {
  const bytes = Buffer.from(needle, "utf8");
  const hits: string[] = [];
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const file = path.join(entry.parentPath, entry.name);
    if ((await readFile(file).catch(() => Buffer.alloc(0))).includes(bytes)) hits.push(file);
  }
  return hits;
}

describe.each(["embedded", "postgres"] as const)("the canary secret on %s", (kind) => {
  it("appears only in the Acquire answer", async () => {
    // Letters and digits only, no provider prefix: nothing but the server's knowledge of it can mask it.
    const CANARY = `canary${randomBytes(12).toString("hex")}Q`;
    const quoted = (what: string) => `${what} quotes ${CANARY} here`;
    if (kind === "postgres") expect(process.env.DATABASE_URL, "DATABASE_URL must point at the test Postgres").toBeDefined();
    const ts = await startTestServer(kind === "embedded" ? { DATABASE_URL: "" } : {});
    const seen: string[] = [];
    const errors: string[] = [];
    const expectError = async (call: Promise<unknown>) => {
      const err = await call.then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      expect(err).toBeDefined();
      errors.push(json({ message: err!.rawMessage, details: err!.details, metadata: [...err!.metadata] }));
    };
    try {
      const name = uniqueName("canary");
      const watch = new AbortController();
      const events: string[] = [];
      const watching = (async () => {
        try {
          for await (const e of ts.admin.watchEvents({ includeLeaseEvents: true }, { signal: watch.signal })) events.push(json(e));
        } catch {
          // Aborted at the end.
        }
      })();
      // The stream is open once it delivers an event.
      for (let i = 0; events.length === 0; i++) {
        await ts.admin.createPool({ pool: { name: `${name}-${i}` } });
        await expect.poll(() => events.length, { timeout: 500 }).toBeGreaterThan(0).catch(() => undefined);
      }
      await ts.admin.createPool({ pool: { name } });
      const added = await ts.admin.addKey({
        pool: name,
        key: { id: "k1", label: quoted("label"), quotaGroup: `g-${CANARY}`, maxConcurrency: 2, metadata: { note: quoted("metadata"), [`n-${CANARY}`]: "name" } },
        secret: CANARY,
      });
      seen.push(json(added));
      await ts.admin.addKey({ pool: name, key: { id: "k2", label: quoted("other key's label") }, secret: `other${randomBytes(12).toString("hex")}` });
      seen.push(json(await ts.admin.updatePool({ pool: { name, description: quoted("description") }, updateMask: { paths: ["description"] } })));

      const lease = await ts.pool.acquire({ pool: name, holder: quoted("holder"), excludeKeyIds: ["k2"], leaseTtl: durationFromMs(60_000) });
      expect(lease.key).toBe(CANARY);
      seen.push(json(await ts.admin.listLeases({ pool: name })));
      const failed = await ts.pool.markFailed({ leaseId: lease.leaseId, httpStatus: 401, message: `401 Incorrect API key provided: ${CANARY}` });
      seen.push(json(failed));
      seen.push(json(await ts.admin.getKey({ pool: name, keyId: "k1" })));
      await ts.admin.enableKey({ pool: name, keyId: "k1" });

      const second = await ts.pool.acquire({ pool: name, holder: quoted("second holder"), excludeKeyIds: ["k2"] });
      expect(second.key).toBe(CANARY);
      await ts.admin.revokeLease({ leaseId: second.leaseId, reason: quoted("revoke reason") });
      await expectError(ts.pool.renewLease({ leaseId: second.leaseId }));
      seen.push(json(await ts.admin.disableKey({ pool: name, keyId: "k1", reason: quoted("disable reason") })));
      seen.push(json(await ts.admin.updateKey({ key: { id: "k1", pool: name, label: quoted("new label"), metadata: { again: quoted("metadata") } }, updateMask: { paths: ["label", "metadata"] } })));
      await ts.admin.enableKey({ pool: name, keyId: "k1" });
      const third = await ts.pool.acquire({ pool: name, holder: quoted("third holder"), excludeKeyIds: ["k2"] });
      await ts.pool.markRateLimited({ leaseId: third.leaseId, retryAfter: durationFromMs(1) });
      await expectError(ts.pool.markFailed({ leaseId: third.leaseId, httpStatus: 401, message: quoted("late report") }));
      await expectError(ts.admin.addKey({ pool: name, key: { id: "k1", label: quoted("duplicate") }, secret: CANARY }));

      for (const list of [
        ts.admin.listPools({}),
        ts.admin.getPool({ name }),
        ts.admin.listKeys({ pool: name }),
        ts.admin.listLeases({ pool: name }),
        ts.admin.getPoolStats({ pool: name }),
      ]) {
        seen.push(json(await list));
      }
      const metrics = await (await fetch(`${ts.httpUrl}/metrics`)).text();
      watch.abort();
      await watching;
      expect(events.length).toBeGreaterThan(5);
      // The redacted form is what was stored and shown instead.
      expect(seen.join("\n")).toContain(mask(CANARY));
      await ts.stop({ keepData: true });

      const outside = { logs: ts.logs(), events: events.join("\n"), listings: seen.join("\n"), metrics, errors: errors.join("\n") };
      for (const [where, text] of Object.entries(outside)) expect(text.includes(CANARY), `the secret in ${where}`).toBe(false);
      if (kind === "embedded") expect(await filesContaining(ts.dataDir, CANARY)).toEqual([]);
      else {
        const dump = execFileSync("pg_dump", ["--no-owner", ts.databaseUrl!], { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
        expect(dump).toContain("canary");
        expect(dump.includes(CANARY), "the secret in pg_dump of the database").toBe(false);
      }
    } finally {
      await ts.stop();
    }
  }, 60_000);
});
