// The audit trail on both databases: an entry commits with the change it records or not at all, reads back
// newest first with its filters, and pruning deletes only what is past retention.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AuditChange } from "../../src/domain/audit.js";
import { AuditRetention, PostgresAuditTrail } from "../../src/store/audit-trail.js";
import { migrate } from "../../src/store/migrate.js";
import { SecretBox } from "../../src/store/secrets.js";
import { captureLog, embedded, FakeClock, freshSchema, openStore, poolConfig, settle, type TestDb, type TestStore } from "./helpers.js";

const box = new SecretBox(randomBytes(32));
const uniq = (prefix: string) => `${prefix}-${randomBytes(3).toString("hex")}`;

const change = (pool: string, at: number, overrides: Partial<AuditChange> = {}): AuditChange => ({
  at,
  actor: "alice",
  action: "create_pool",
  pool,
  replica: "host-1:42",
  after: { name: pool, description: "d" },
  ...overrides,
});

describe.each(["postgres", "embedded"] as const)("Audit trail on %s", (kind) => {
  let db: TestDb;
  let store: TestStore;
  let trail: PostgresAuditTrail;

  beforeAll(async () => {
    db = kind === "postgres" ? await freshSchema() : await embedded();
    await migrate(db.sql);
    store = await openStore(db.sql, box);
    trail = new PostgresAuditTrail(db.sql, store.availability);
  }, 60_000);
  afterAll(async () => {
    store?.availability.close();
    await db?.close();
  });

  it("commits an entry with the change it records, and neither when the transaction fails", async () => {
    const name = uniq("pool");
    const entry = await store.config.transaction(async (tx) => {
      await store.config.insertPool(poolConfig(name), tx);
      return trail.append(change(name, 1000), tx);
    });
    expect(entry).toMatchObject({ pool: name, actor: "alice" });
    expect((await trail.list({ pool: name, limit: 10 })).map((e) => e.id)).toEqual([entry.id]);

    // The pool exists, so a second insert fails: the entry appended before it must not remain.
    await expect(
      store.config.transaction(async (tx) => {
        await trail.append(change(name, 2000, { actor: "bob" }), tx);
        await store.config.insertPool(poolConfig(name), tx);
      }),
    ).rejects.toThrow(/already exists/);
    expect((await trail.list({ pool: name, limit: 10 })).map((e) => e.actor)).toEqual(["alice"]);
  });

  it("reads back every field, newest first, by pool, since and page", async () => {
    const a = uniq("a");
    const b = uniq("b");
    const first = await trail.append(change(a, 10_000));
    const second = await trail.append(
      change(a, 11_000, { action: "update_key", keyId: "k", before: { label: "x", metadata: { org: "o" } }, after: { label: "y" }, reason: "why" }),
    );
    const third = await trail.append(change(b, 12_000, { action: "revoke_lease", leaseId: "lease-1", after: undefined }));

    const read = await trail.list({ pool: a, limit: 10 });
    expect(read).toEqual([second, first]);
    expect(read[0]).toEqual({
      id: second.id, at: 11_000, actor: "alice", action: "update_key", pool: a, keyId: "k", replica: "host-1:42",
      before: { label: "x", metadata: { org: "o" } }, after: { label: "y" }, reason: "why",
    });
    expect(await trail.list({ pool: b, limit: 10 })).toEqual([third]);
    expect((await trail.list({ pool: a, since: 11_000, limit: 10 })).map((e) => e.id)).toEqual([second.id]);
    expect((await trail.list({ pool: a, beforeId: second.id, limit: 10 })).map((e) => e.id)).toEqual([first.id]);
    const all = await trail.list({ pool: "", limit: 2 });
    expect(all.map((e) => e.id)).toEqual([third.id, second.id]);
  });

  it("prunes entries older than the retention, at start and each interval", async () => {
    const pool = uniq("old");
    const clock = new FakeClock(1_000_000);
    await trail.append(change(pool, 100_000));
    await trail.append(change(pool, 400_000));
    await trail.append(change(pool, 900_000));
    const { log, lines } = captureLog();
    const retention = new AuditRetention({ trail, retentionMs: 500_000, clock, log, intervalMs: 500_000 });
    retention.start();
    await expect.poll(() => lines.length).toBeGreaterThan(0);
    expect((await trail.list({ pool, limit: 10 })).map((e) => e.at)).toEqual([900_000]);

    clock.advance(500_000);
    await settle();
    await expect.poll(async () => (await trail.list({ pool, limit: 10 })).length).toBe(0);
    await retention.stop();
  });
});
