// A database outage on a real Postgres of its own (killed and restarted here, so other suites are unaffected).
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { RuntimeSnapshot } from "../../src/domain/types.js";
import { migrate } from "../../src/store/migrate.js";
import { SecretBox } from "../../src/store/secrets.js";
import type { JournaledGrant } from "../../src/store/journal.js";
import { Snapshotter, type SnapshotSource } from "../../src/store/snapshotter.js";
import { captureLog, FakeClock, freshSchema, keyConfig, keyRuntime, leaseRecord, openStore, pgScript, poolConfig, settle, type TestDb } from "./helpers.js";

const CLUSTER = "pg-outage";

describe("database outage", () => {
  let db: TestDb;

  beforeAll(async () => {
    db = await freshSchema(pgScript("pg_start", CLUSTER).url);
    await migrate(db.sql);
  }, 60_000);
  afterAll(async () => {
    pgScript("pg_restart", CLUSTER);
    await db?.close();
    pgScript("pg_stop", CLUSTER);
  }, 60_000);

  it("fails writes as StoreUnavailable, lends from memory, and catches up when Postgres returns", async () => {
    const clock = new FakeClock(Date.now());
    const { log, lines } = captureLog();
    const store = await openStore(db.sql, new SecretBox(randomBytes(32)), { log, clock });
    const availability: boolean[] = [];
    store.availability.onAvailability((up) => availability.push(up));
    await store.config.insertPool(poolConfig("p"));
    const key = keyConfig("p", "k1");
    await store.config.insertKey(key);
    const { epoch, journal, snapshots } = await store.beginEpoch();
    const grant = (seq: number): JournaledGrant => ({ ...leaseRecord("p", "k1", `lease-${seq}`), epoch, seq });
    await journal.record(grant(1));

    const live = [leaseRecord("p", "k1", "lease-1")];
    let changed = false;
    const source: SnapshotSource = {
      get dirty() {
        return changed;
      },
      exportRuntime: (): RuntimeSnapshot => ({ takenAt: clock.now(), keys: [keyRuntime("p", "k1", { cooldownUntil: clock.now() + 300_000 })], leases: [...live] }),
      // A new store, and one back from an outage, reconcile whole tables: only full exports are asked for.
      exportChanges: () => {
        throw new Error("changes exported while a full snapshot is due");
      },
      markClean: () => {
        changed = false;
      },
    };
    const snapshotter = new Snapshotter({ store: snapshots, source, log, clock, intervalMs: 1000 });
    snapshotter.start();

    pgScript("pg_kill", CLUSTER);

    // The store does not know yet: this grant's statement fails, and the caller goes ahead from memory.
    expect(store.availability.up).toBe(true);
    await journal.record(grant(2));
    expect(store.availability.up).toBe(false);
    expect(availability).toEqual([false]);
    expect(journal.pending).toBe(1);

    await expect(store.config.insertPool(poolConfig("during-outage"))).rejects.toMatchObject({ name: "StoreUnavailable" });
    await expect(store.config.updateKey({ ...key, label: "changed" })).rejects.toMatchObject({ name: "StoreUnavailable" });

    // Known down: a grant resolves at once and waits in the journal.
    let resolved = false;
    void journal.record(grant(3)).then(() => (resolved = true));
    await settle();
    expect(resolved).toBe(true);
    expect(journal.pending).toBe(2);
    live.push(leaseRecord("p", "k1", "lease-2"), leaseRecord("p", "k1", "lease-3"));

    changed = true;
    await clock.advanceAsync(1000);
    await vi.waitFor(() => expect(snapshotter.failures).toBe(1), { timeout: 5000 });
    expect(lines.some((l) => l.level === "warn" && l.msg === "snapshot not written: database unreachable")).toBe(true);

    pgScript("pg_restart", CLUSTER);

    // The store's probe notices, then flushes the journal; the snapshot retry lands after its backoff.
    await clock.advanceAsync(5000);
    await vi.waitFor(() => expect(store.availability.up).toBe(true), { timeout: 10_000 });
    await vi.waitFor(() => expect(journal.pending).toBe(0), { timeout: 5000 });
    expect(availability).toEqual([false, true]);
    await clock.advanceAsync(2000);
    await vi.waitFor(() => expect(snapshotter.failures).toBe(0), { timeout: 10_000 });

    const leases = await db.sql`select lease_id from leases order by lease_id`;
    expect(leases.map((r) => r.lease_id)).toEqual(["lease-1", "lease-2", "lease-3"]);
    const loaded = await store.loadAll();
    expect(loaded.grantHighWater[epoch]).toBe(3);
    expect(loaded.pools.map((p) => p.name)).toEqual(["p"]);
    expect(loaded.keys[0].label).toBe(key.label);
    expect(loaded.runtime?.keys[0].cooldownUntil).toBeGreaterThan(clock.now());
    expect(JSON.stringify(lines)).not.toContain(key.secret);

    await snapshotter.stop();
    await journal.close();
    store.availability.close();
  }, 40_000);
});
