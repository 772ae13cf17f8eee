import { randomBytes } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { PoolRuntime, RuntimeChanges, RuntimeSnapshot } from "../../src/domain/types.js";
import { migrate } from "../../src/store/migrate.js";
import type { JournaledGrant } from "../../src/store/journal.js";
import { PostgresConfigStore } from "../../src/store/config-store.js";
import { StoreRefused } from "../../src/store/errors.js";
import { SecretBox } from "../../src/store/secrets.js";
import {
  embedded,
  FakeClock,
  freshSchema,
  journalCommits,
  sameSchema,
  keyConfig,
  keyRuntime,
  leaseRecord,
  openStore,
  poolConfig,
  type TestDb,
  type TestStore,
} from "./helpers.js";

const box = new SecretBox(randomBytes(32));
const uniq = (prefix: string) => `${prefix}-${randomBytes(3).toString("hex")}`;

/** Every file under `dir` whose bytes contain `needle`. */
async function filesContaining(dir: string, needle: string): Promise<string[]> {
  const bytes = Buffer.from(needle, "utf8");
  const hits: string[] = [];
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const file = path.join(entry.parentPath, entry.name);
    const content = await readFile(file).catch(() => Buffer.alloc(0));
    if (content.includes(bytes)) hits.push(file);
  }
  return hits;
}

describe.each(["postgres", "embedded"] as const)("Store on %s", (kind) => {
  let db: TestDb;
  let store: TestStore;
  let config: PostgresConfigStore;

  beforeAll(async () => {
    db = kind === "postgres" ? await freshSchema() : await embedded(undefined, true);
    await migrate(db.sql);
    store = await openStore(db.sql, box);
    config = store.config;
  }, 60_000);
  afterAll(async () => {
    store?.availability.close();
    await db?.close();
  });

  it("round-trips pools and keys through write-through insert, update and delete", async () => {
    const name = uniq("pool");
    const pool = poolConfig(name, { strategy: "weighted", description: "primary", maxTtlMs: 900_000 });
    const k1 = keyConfig(name, "k1", { metadata: { base_url: "https://api.example" }, quotaGroup: "org-1", weight: 3 });
    const k2 = keyConfig(name, "k2", { disabled: true, disabledReason: "rotating" });
    await config.insertPool(pool);
    await config.insertKey(k1);
    await config.insertKey(k2);

    let loaded = await store.loadAll();
    expect(loaded.pools.find((p) => p.name === name)).toEqual(pool);
    expect(loaded.keys.filter((k) => k.pool === name)).toEqual([k1, k2]);

    const pool2 = { ...pool, strategy: "least_busy" as const, failureThreshold: 5, updatedAt: pool.updatedAt + 1 };
    const k1b = { ...k1, secret: "sk-rotated-0123456789abcdef", label: "renamed", maxConcurrency: 7, updatedAt: k1.updatedAt + 1 };
    await config.updatePool(pool2);
    await config.updateKey(k1b);
    await config.deleteKey(name, "k2");
    loaded = await store.loadAll();
    expect(loaded.pools.find((p) => p.name === name)).toEqual(pool2);
    expect(loaded.keys.filter((k) => k.pool === name)).toEqual([k1b]);

    await config.deletePool(name);
    loaded = await store.loadAll();
    expect(loaded.pools.some((p) => p.name === name)).toBe(false);
    expect(loaded.keys.some((k) => k.pool === name)).toBe(false);
  });

  it("refuses a duplicate pool (pool_exists) or key (StoreConflict), and a write for a pool this replica does not hold (OwnershipLost)", async () => {
    const name = uniq("pool");
    await config.insertPool(poolConfig(name));
    await expect(config.insertPool(poolConfig(name))).rejects.toMatchObject({ name: "DomainError", code: "pool_exists" });
    await config.insertKey(keyConfig(name, "k1"));
    await expect(config.insertKey(keyConfig(name, "k1"))).rejects.toMatchObject({ name: "StoreConflict", constraint: "keys_pkey" });
    await expect(config.insertKey(keyConfig(uniq("missing"), "k1"))).rejects.toMatchObject({ name: "OwnershipLost" });
  });

  it("stores secrets only as ciphertext with a masked hint, never in the table or the data files", async () => {
    const name = uniq("pool");
    const key = keyConfig(name, "secret-key", { label: `label-${randomBytes(6).toString("hex")}` });
    await config.insertPool(poolConfig(name));
    await config.insertKey(key);
    const [row] = await db.sql`select k::text as whole, secret_hint from keys k where pool = ${name}`;
    expect(row.whole).not.toContain(key.secret);
    expect(row.whole).not.toContain(Buffer.from(key.secret).toString("hex"));
    expect(row.secret_hint).toBe(`sk-…${key.secret.slice(-4)}`);

    await db.sql`checkpoint`;
    const dataDir = kind === "postgres" ? process.env.KEYMESH_TEST_PG_DATA : db.dataDir;
    expect(dataDir, "KEYMESH_TEST_PG_DATA (exported by scripts/pg.sh) locates the cluster's files").toBeTruthy();
    // On the shared cluster, this database's files and the WAL: the other tests' databases make a whole-cluster scan slow.
    const [{ oid }] = await db.sql<{ oid: number }[]>`select oid from pg_database where datname = current_database()`;
    const dirs = kind === "postgres" ? [path.join(dataDir!, "base", String(oid)), path.join(dataDir!, "pg_wal")] : [dataDir!];
    const containing = async (needle: string) => (await Promise.all(dirs.map((d) => filesContaining(d, needle)))).flat();
    // The label is stored in clear: finding it proves the scan reaches the rows on disk.
    expect((await containing(key.label)).length).toBeGreaterThan(0);
    expect(await containing(key.secret)).toEqual([]);
    expect((await store.loadAll()).keys.find((k) => k.pool === name)?.secret).toBe(key.secret);
  }, 30_000);

  it("refuses to start with a master key other than the one the database was created with", async () => {
    await expect(openStore(db.sql, new SecretBox(randomBytes(32)))).rejects.toThrow(
      "master key does not match the one this database was created with",
    );
    await expect(new PostgresConfigStore(db.sql, box, store.availability, new FakeClock(), store.fence, 60_000).verifyMasterKey()).resolves.toBeUndefined();
  });

  it("group-commits concurrent grants into few statements, durable when each call resolves", async () => {
    const name = uniq("pool");
    await config.insertPool(poolConfig(name));
    await config.insertKey(keyConfig(name, "k1"));
    const { epoch, journal } = await store.beginEpoch();
    const stats = journalCommits(journal);
    const grants: JournaledGrant[] = Array.from({ length: 300 }, (_, i) => ({
      ...leaseRecord(name, "k1", `${name}-lease-${i}`),
      epoch,
      seq: i + 1,
    }));
    await Promise.all(grants.map((g) => journal.record(g)));
    expect(stats.grants).toBe(300);
    expect(stats.batches).toBeLessThanOrEqual(2);

    // Arriving while a statement is in flight: the stragglers share the next one.
    const more = grants.map((g, i) => ({ ...g, leaseId: `${g.leaseId}-b`, seq: 301 + i }));
    const first = journal.record(more[0]);
    await Promise.resolve();
    const rest = more.slice(1).map((g) => journal.record(g));
    await Promise.all([first, ...rest]);
    expect(stats.batches).toBeLessThanOrEqual(4);

    const [{ n }] = await db.sql`select count(*)::int as n from leases where pool = ${name}`;
    expect(n).toBe(600);
    const loaded = await store.loadAll();
    expect(loaded.grantHighWater[epoch]).toBe(600);
    expect(loaded.runtime?.leases.find((l) => l.leaseId === `${name}-lease-0`)).toEqual(leaseRecord(name, "k1", `${name}-lease-0`));
  });

  /** A store of its own on a fake clock, with a pool of one key and `n` grants of a new epoch to journal. */
  async function journalOnFakeClock(n: number, isLive?: (leaseId: string) => boolean) {
    const clock = new FakeClock();
    const own = await openStore(db.sql, box, { clock });
    const name = uniq("pool");
    await own.config.insertPool(poolConfig(name));
    await own.config.insertKey(keyConfig(name, "k1"));
    const { epoch, journal: behind } = await own.beginEpoch(isLive);
    const grants: JournaledGrant[] = Array.from({ length: n }, (_, i) => ({ ...leaseRecord(name, "k1", `${name}-${i}`), epoch, seq: i + 1 }));
    return { clock, behind, name, epoch, grants, loadAll: own.loadAll };
  }

  it("lets grants nobody waits for linger for company, and sends them with the next grant that is waited for", async () => {
    const { clock, behind, name, grants } = await journalOnFakeClock(7);
    const stats = journalCommits(behind);
    const written = () => [stats.batches, stats.grants];
    for (const g of grants.slice(0, 3)) behind.recordBehind(g);
    await new Promise((resolve) => setImmediate(resolve));
    expect(stats.batches).toBe(0);
    expect(clock.deadlines()).toEqual([clock.now() + 100]);

    await behind.record(grants[3]!);
    expect(written()).toEqual([1, 4]);
    expect(clock.deadlines()).toEqual([]);

    // Without one, they go when the first one's linger ends.
    behind.recordBehind(grants[4]!);
    await clock.advanceAsync(50);
    behind.recordBehind(grants[5]!);
    await clock.advanceAsync(49);
    expect(written()).toEqual([1, 4]);
    await clock.advanceAsync(1);
    await vi.waitFor(() => expect(written()).toEqual([2, 6]));
    expect(clock.deadlines()).toEqual([]);

    // One lingering when the store closes is written before close returns.
    behind.recordBehind(grants[6]!);
    await behind.close();
    const [{ n }] = await db.sql`select count(*)::int as n from leases where pool = ${name}`;
    expect(n).toBe(7);
  });

  it("does not write a grant whose lease ended before its statement, and still counts it in the high-water mark", async () => {
    const ended = new Set<string>();
    const { clock, behind, name, epoch, grants, loadAll } = await journalOnFakeClock(4, (leaseId) => !ended.has(leaseId));
    ended.add(grants[1]!.leaseId).add(grants[3]!.leaseId);
    const stats = journalCommits(behind);
    for (const g of grants) behind.recordBehind(g);
    await clock.advanceAsync(100);
    await vi.waitFor(() => expect(stats.batches).toBe(1));
    expect(stats.grants).toBe(2);

    const rows = await db.sql<{ lease_id: string }[]>`select lease_id from leases where pool = ${name} order by seq`;
    expect(rows.map((r) => r.lease_id)).toEqual([grants[0]!.leaseId, grants[2]!.leaseId]);
    // The last grant ended unwritten, yet a restart must read its id as ended, not as one to re-adopt.
    expect((await loadAll()).grantHighWater[epoch]).toBe(4);

    // Nothing but ended grants: the statement still raises the mark.
    const later = { ...leaseRecord(name, "k1", `${name}-4`), epoch, seq: 5 };
    ended.add(later.leaseId);
    behind.recordBehind(later);
    await clock.advanceAsync(100);
    await vi.waitFor(() => expect(stats.batches).toBe(2));
    expect((await loadAll()).grantHighWater[epoch]).toBe(5);
    await behind.close();
  });

  it("writes an end with the next statement or within 10 ms, and nothing for a grant that ends while it lingers", async () => {
    const ended = new Set<string>();
    const { clock, behind: journal, name, epoch, grants, loadAll } = await journalOnFakeClock(4, (leaseId) => !ended.has(leaseId));
    const stats = journalCommits(journal);
    const rows = async () => (await db.sql<{ lease_id: string }[]>`select lease_id from leases where pool = ${name} order by seq`).map((r) => r.lease_id);
    const end = (i: number) => {
      ended.add(grants[i]!.leaseId);
      journal.recordEnd(grants[i]!.leaseId, name, epoch, i + 1);
    };
    await journal.record(grants[0]!);
    end(0);
    await new Promise((resolve) => setImmediate(resolve));
    expect(clock.deadlines()).toEqual([clock.now() + 10]);
    expect(await rows()).toEqual([grants[0]!.leaseId]);

    // A grant's statement takes the queued end along.
    await journal.record(grants[1]!);
    expect(stats.batches).toBe(2);
    expect(await rows()).toEqual([grants[1]!.leaseId]);
    expect(clock.deadlines()).toEqual([]);

    // Alone, it goes when its 10 ms are up.
    end(1);
    await clock.advanceAsync(9);
    expect(await rows()).toEqual([grants[1]!.leaseId]);
    await clock.advanceAsync(1);
    await vi.waitFor(async () => expect(await rows()).toEqual([]));

    // A grant nobody waits for that ends while it lingers: neither the grant nor its end is written, the mark counts it.
    journal.recordBehind(grants[2]!);
    end(2);
    expect(clock.deadlines()).toEqual([clock.now() + 100]);
    await clock.advanceAsync(100);
    await vi.waitFor(() => expect(stats.batches).toBe(4));
    expect(await rows()).toEqual([]);
    expect((await loadAll()).grantHighWater[epoch]).toBe(3);
    await journal.close();
  });

  it("answers only the grant whose row the database refuses, and writes the rest of its statement", async () => {
    const ended = new Set<string>();
    const { behind: journal, name, epoch, grants, loadAll } = await journalOnFakeClock(4, (leaseId) => !ended.has(leaseId));
    await journal.record(grants[0]!);
    const refusedHolder = `refuse-${name}`;
    await db.sql.unsafe(`
      create function km_refuse_holder() returns trigger language plpgsql as $$ begin raise exception 'refused row' using errcode = '22P05'; end $$;
      create trigger km_refuse_holder before insert on leases for each row when (new.holder = '${refusedHolder}') execute function km_refuse_holder();`);
    try {
      // One statement: an end, a good grant, the refused one, another good one.
      ended.add(grants[0]!.leaseId);
      journal.recordEnd(grants[0]!.leaseId, name, epoch, 1);
      const results = await Promise.allSettled([
        journal.record(grants[1]!),
        journal.record({ ...grants[2]!, holder: refusedHolder }),
        journal.record(grants[3]!),
      ]);
      expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
      expect((results[1] as PromiseRejectedResult).reason).toBeInstanceOf(StoreRefused);
      const rows = await db.sql<{ lease_id: string }[]>`select lease_id from leases where pool = ${name} order by seq`;
      expect(rows.map((r) => r.lease_id)).toEqual([grants[1]!.leaseId, grants[3]!.leaseId]);
      expect((await loadAll()).grantHighWater[epoch]).toBe(4);
    } finally {
      await db.sql.unsafe(`drop trigger km_refuse_holder on leases; drop function km_refuse_holder();`);
      await journal.close();
    }
  });

  it("fences grants, ends and a snapshot's lease rows by the owner's term, a refused row still failing alone", async () => {
    const [a, b] = [uniq("taken"), uniq("kept")];
    for (const name of [a, b]) {
      await config.insertPool(poolConfig(name));
      await config.insertKey(keyConfig(name, "k1"));
    }
    const ended = new Set<string>();
    const { epoch, journal } = await store.beginEpoch((leaseId) => !ended.has(leaseId));
    const grant = (pool: string, id: string, seq: number, holder = "worker-1") => ({ ...leaseRecord(pool, "k1", `${pool}-${id}`, { holder }), epoch, seq });
    const [a1, b1] = [grant(a, "1", 1), grant(b, "1", 2)];
    await Promise.all([journal.record(a1), journal.record(b1)]);
    const aTerm = store.fence.termOf(a)!;
    // Another replica takes pool a over; this one has not heard of it yet.
    await db.sql`update pool_owners set owner = 'other-replica', term = term + 1 where pool = ${a}`;
    const refusedHolder = `refuse-${b}`;
    await db.sql.unsafe(`
      create function km_refuse_holder() returns trigger language plpgsql as $$ begin raise exception 'refused row' using errcode = '22P05'; end $$;
      create trigger km_refuse_holder before insert on leases for each row when (new.holder = '${refusedHolder}') execute function km_refuse_holder();`);
    try {
      // One statement: both ends, a grant of the pool taken over, a refused grant and a good one of the pool kept.
      for (const g of [a1, b1]) ended.add(g.leaseId);
      const ends = [journal.recordEnd(a1.leaseId, a, epoch, 1), journal.recordEnd(b1.leaseId, b, epoch, 2)];
      const results = await Promise.allSettled([
        journal.record(grant(a, "2", 3)),
        journal.record(grant(b, "2", 4, refusedHolder)),
        journal.record(grant(b, "3", 5)),
        ...ends.map((ticket) => journal.endDurable(ticket)),
      ]);
      expect(results.map((r) => (r.status === "rejected" ? (r.reason as Error).name : r.status))).toEqual([
        "OwnershipLost",
        "StoreRefused",
        "fulfilled",
        "OwnershipLost",
        "fulfilled",
      ]);
      expect(store.fence.lostPools).toContain(a);
      expect(store.fence.termOf(a)).toBeUndefined();
      const rows = await db.sql<{ lease_id: string }[]>`select lease_id from leases where pool in (${a}, ${b}) order by seq`;
      // The end of a1 was not this replica's to write any more: the new owner has its row, and ends the lease.
      expect(rows.map((r) => r.lease_id)).toEqual([a1.leaseId, `${b}-3`]);
      // A snapshot's rows for the pool under the term it was exported with: not written, and the snapshot fails.
      await expect(journal.upsert([leaseRecord(a, "k1", `${a}-snapshot`)], [{ pool: a, term: aTerm }])).rejects.toMatchObject({ name: "OwnershipLost" });
      expect((await db.sql`select count(*)::int as n from leases where lease_id = ${`${a}-snapshot`}`)[0].n).toBe(0);
    } finally {
      await db.sql.unsafe(`drop trigger km_refuse_holder on leases; drop function km_refuse_holder();`);
      await journal.close();
    }
  });

  it("vacuums the leases table every vacuumEvery ends, so a steady flow of leases keeps it bounded", async () => {
    const name = uniq("pool");
    await config.insertPool(poolConfig(name));
    await config.insertKey(keyConfig(name, "k1"));
    const own = await openStore(db.sql, box, { vacuumEvery: 1000, fence: store.fence });
    const { epoch, journal } = await own.beginEpoch();
    const size = async () => (await db.sql`select pg_relation_size('leases')::int as n`)[0].n as number;
    const sizes: number[] = [];
    for (let round = 0; round < 8; round++) {
      const grants = Array.from({ length: 1000 }, (_, i) => ({ ...leaseRecord(name, "k1", `${name}-${round}-${i}-${"x".repeat(40)}`), epoch, seq: round * 1000 + i + 1 }));
      await Promise.all(grants.map((g) => journal.record(g)));
      for (const g of grants) journal.recordEnd(g.leaseId, g.pool, g.epoch, g.seq);
      await journal.endDurable();
      sizes.push(await size());
    }
    // Without the vacuums it grows by a round's rows every round; with them it reuses the same pages.
    expect(sizes[7]).toBeLessThanOrEqual(sizes[1]! * 1.5);
    await journal.close();
    own.availability.close();
  });

  it("writes the grant of a key removed meanwhile without failing its batch, and deleting a key or a pool deletes its leases' rows", async () => {
    const name = uniq("pool");
    await config.insertPool(poolConfig(name));
    await config.insertKey(keyConfig(name, "k1"));
    await config.insertKey(keyConfig(name, "k2"));
    const { epoch, journal } = await store.beginEpoch();
    await Promise.all([
      journal.record({ ...leaseRecord(name, "k1", `${name}-k1`), epoch, seq: 1 }),
      journal.record({ ...leaseRecord(name, "gone", `${name}-gone`), epoch, seq: 2 }),
      journal.record({ ...leaseRecord(name, "k2", `${name}-k2`), epoch, seq: 3 }),
    ]);
    const leaseIds = async () => (await db.sql<{ lease_id: string }[]>`select lease_id from leases where pool = ${name} order by seq`).map((r) => r.lease_id);
    expect(await leaseIds()).toEqual([`${name}-k1`, `${name}-gone`, `${name}-k2`]);
    // A start leaves out the lease of the unknown key (engine.load); its end deletes the row.
    await journal.endDurable(journal.recordEnd(`${name}-gone`, name, epoch, 2));
    expect(await leaseIds()).toEqual([`${name}-k1`, `${name}-k2`]);
    await config.deleteKey(name, "k1");
    expect(await leaseIds()).toEqual([`${name}-k2`]);
    await config.deletePool(name);
    expect(await leaseIds()).toEqual([]);
    await journal.close();
  });

  it("round-trips a runtime snapshot with its deadlines, and reconciles leases on the next one", async () => {
    const name = uniq("pool");
    await config.insertPool(poolConfig(name));
    await config.insertKey(keyConfig(name, "k1"));
    await config.insertKey(keyConfig(name, "k2"));
    const { epoch, journal, snapshots } = await store.beginEpoch();
    const t = Date.UTC(2026, 0, 1, 12);
    const k1 = keyRuntime(name, "k1", {
      cooldownUntil: t + 300_000,
      rateLimitStreak: 2,
      rateLimitStreakStart: t - 1000,
      circuitState: "open",
      circuitOpenUntil: t + 30_000,
      circuitOpenCount: 1,
      consecutiveFailures: 3,
      emaLatencyMs: 123.5,
      outcomes: { gaps: [t - 10, 5], failed: [1] },
      grantsPerSecond: { until: Math.floor(t / 1000), counts: [2, 1] },
      budget: { requestsRemaining: 0, requestsLimit: 60, requestsResetAt: t + 1000, tokensRemaining: 5, tokensLimit: 100 },
      totalLeases: 42,
      inputTokens: 1000,
      outputTokens: 2000,
    });
    const k2 = keyRuntime(name, "k2", { autoDisabled: { cause: "auth", message: "401 from provider", at: t }, draining: { remove: true } });
    const live = leaseRecord(name, "k1", `${name}-live`, { expiresAt: t + 60_000 });
    const ended = leaseRecord(name, "k2", `${name}-ended`);
    await journal.record({ ...live, epoch, seq: 1 });
    await journal.record({ ...ended, epoch, seq: 2 });

    const first: RuntimeSnapshot = { takenAt: t, keys: [k1, k2], leases: [live] };
    await snapshots.writeSnapshot(first);
    let loaded = await store.loadAll();
    expect(loaded.runtime?.takenAt).toBe(t);
    expect(loaded.runtime?.keys.filter((k) => k.pool === name)).toEqual([k1, k2]);
    expect(loaded.runtime?.leases.filter((l) => l.pool === name)).toEqual([live]);
    expect(loaded.grantHighWater[epoch]).toBe(2);
    // The windows' number lists are strings in the row: jsonb keeps those as they are.
    const [row] = await db.sql`select state from key_runtime where pool = ${name} and key_id = 'k1'`;
    expect(row!.state).toMatchObject({
      outcomes: { gaps: `${t - 10},5`, failed: "1" },
      grantsPerSecond: { until: Math.floor(t / 1000), counts: "2,1" },
    });

    // Renewed in memory, then a grant journaled after the export: the snapshot must not delete it.
    const renewed = { ...live, expiresAt: t + 120_000 };
    const second: RuntimeSnapshot = { takenAt: t + 1000, keys: [k1, k2], leases: [renewed] };
    const late = leaseRecord(name, "k2", `${name}-late`);
    // On Postgres, hold the snapshot at its first statement so the late grant commits before its lease cleanup.
    const blocker = kind === "postgres" ? await db.sql.reserve() : undefined;
    if (blocker) await blocker`begin`.then(() => blocker`lock table key_runtime in exclusive mode`);
    const write = snapshots.writeSnapshot(second);
    await journal.record({ ...late, epoch, seq: 3 });
    if (blocker) await blocker`commit`.then(() => blocker.release());
    await write;
    loaded = await store.loadAll();
    expect(loaded.runtime?.leases.filter((l) => l.pool === name).sort((a, b) => a.leaseId.localeCompare(b.leaseId))).toEqual([late, renewed]);
    expect(loaded.runtime?.takenAt).toBe(t + 1000);

    // Changes: an unchanged key and a lease as journaled are not rewritten; removed keys' runtime goes, and the
    // journal wrote the end.
    expect(snapshots.needsFullSnapshot).toBe(false);
    journal.recordEnd(renewed.leaseId, renewed.pool, epoch, 1);
    await journal.endDurable();
    const versions = async () => [
      (await db.sql`select xmin::text as x from key_runtime where pool = ${name} and key_id = 'k1'`)[0].x,
      (await db.sql`select xmin::text as x from leases where lease_id = ${late.leaseId}`)[0].x,
    ];
    const before = await versions();
    const third: RuntimeChanges = { takenAt: t + 2000, keys: [], removedKeys: [{ pool: name, keyId: "k2" }], leases: [late], endedLeases: [renewed.leaseId] };
    await snapshots.writeChanges(third);
    expect(await versions()).toEqual(before);
    loaded = await store.loadAll();
    expect(loaded.runtime?.takenAt).toBe(t + 2000);
    expect(loaded.runtime?.keys.filter((k) => k.pool === name)).toEqual([k1]);
    expect(loaded.runtime?.leases.filter((l) => l.pool === name)).toEqual([late]);
  });

  it("round-trips declared budgets: key limits and priority, quota groups, the default estimate, and each pool's runtime row", async () => {
    const name = uniq("pool");
    const pool = poolConfig(name, { quotaGroups: { org: { requestsPerMinute: 0, tokensPerMinute: 90_000, requestsPerDay: 5_000 } }, defaultEstimatedTokens: 700 });
    const k1 = keyConfig(name, "k1", { quotaGroup: "org", limits: { requestsPerMinute: 500, tokensPerMinute: 0, requestsPerDay: 0 }, priority: 2 });
    await config.insertPool(pool);
    await config.insertKey(k1);
    let loaded = await store.loadAll();
    expect(loaded.pools.find((p) => p.name === name)).toEqual(pool);
    expect(loaded.keys.filter((k) => k.pool === name)).toEqual([k1]);

    const { snapshots } = await store.beginEpoch();
    const t = Date.UTC(2026, 0, 1, 12);
    const usage = { requests: 9, inputTokens: 100, outputTokens: 50, successes: 7, rateLimited: 1, failures: 0, unreported: 1 };
    const runtime = keyRuntime(name, "k1", {
      declared: { requestsPerMinute: { level: 12.5, at: t - 100 } },
      outcomeCounts: { successes: 7, rateLimited: 1, failures: 0, unreported: 1 },
    });
    const poolRuntime: PoolRuntime = {
      pool: name,
      usage,
      groups: [{ name: "org", declared: { tokensPerMinute: { level: -300, at: t } }, usage }],
      affinities: [["conversation-1", "k1"]],
    };
    await snapshots.writeSnapshot({ takenAt: t, keys: [runtime], leases: [], pools: [poolRuntime] });
    loaded = await store.loadAll();
    expect(loaded.runtime?.keys.filter((k) => k.pool === name)).toEqual([runtime]);
    expect(loaded.runtime?.pools?.filter((p) => p.pool === name)).toEqual([poolRuntime]);

    const later = { ...poolRuntime, affinities: [] as Array<[string, string]>, usage: { ...usage, requests: 10 } };
    await snapshots.writeChanges({ takenAt: t + 1000, keys: [], removedKeys: [], leases: [], endedLeases: [], pools: [later] });
    loaded = await store.loadAll();
    expect(loaded.runtime?.pools?.filter((p) => p.pool === name)).toEqual([later]);
    await config.deletePool(name);
    expect((await store.loadAll()).runtime?.pools?.some((p) => p.pool === name)).toBe(false);
  });

  it("writes snapshots larger than one statement slice, in full and as changes", async () => {
    const name = uniq("pool");
    await config.insertPool(poolConfig(name));
    await config.insertKey(keyConfig(name, "k1"));
    const leases = Array.from({ length: 12_000 }, (_, i) => leaseRecord(name, "k1", `${name}-${i}`, { expiresAt: 1_000_000 + i }));
    const { journal, snapshots } = await store.beginEpoch();
    await snapshots.writeSnapshot({ takenAt: 1, keys: [keyRuntime(name, "k1")], leases });
    const count = async () => (await db.sql`select count(*)::int as n, max(expires_at) as m from leases where pool = ${name}`)[0];
    expect(await count()).toEqual({ n: 12_000, m: 1_011_999 });
    const kept = leases.slice(6000).map((l) => ({ ...l, expiresAt: l.expiresAt + 5000 }));
    const endedLeases = leases.slice(0, 6000).map((l) => l.leaseId);
    for (const leaseId of endedLeases) journal.recordEnd(leaseId, name, 0, 0);
    await snapshots.writeChanges({ takenAt: 2, keys: [keyRuntime(name, "k1")], removedKeys: [], leases: kept, endedLeases });
    await journal.endDurable();
    expect(await count()).toEqual({ n: 6000, m: 1_016_999 });
  });

  it("numbers epochs upwards from one start to the next", async () => {
    const a = (await store.beginEpoch()).epoch;
    const b = (await store.beginEpoch()).epoch;
    expect(b).toBeGreaterThan(a);
  });

  it("answers ping and reports up while the database is reachable", async () => {
    expect(await store.availability.ping()).toBe(true);
    expect(store.availability.up).toBe(true);
  });
});

describe.each(["postgres", "embedded"] as const)("Snapshots in chunks on %s", (kind) => {
  let db: TestDb;
  let store: TestStore;
  let runtime: Awaited<ReturnType<TestStore["beginEpoch"]>>;
  const pool = "chunked";
  const keyIds = Array.from({ length: 20 }, (_, i) => `k${String(i).padStart(2, "0")}`);
  let epoch: number;

  beforeAll(async () => {
    db = kind === "postgres" ? await freshSchema() : await embedded();
    await migrate(db.sql);
    store = await openStore(db.sql, box, { snapshotChunk: 2 });
    await store.config.insertPool(poolConfig(pool));
    for (const id of keyIds) await store.config.insertKey(keyConfig(pool, id));
    runtime = await store.beginEpoch();
    epoch = runtime.epoch;
  }, 60_000);
  afterAll(async () => {
    await runtime?.journal.close();
    store?.availability.close();
    await db?.close();
  });

  /** Calls `fn` once, when the driver first sends a statement containing `text` (the driver's debug hook). */
  const onStatement = (sql: TestDb["sql"], text: string, fn: () => void) => {
    // The driver reads its parsed options on every statement, so the hook can be set on a live client.
    const options = sql.options;
    options.debug = (_connection, query) => {
      if (!query.includes(text)) return;
      options.debug = false;
      fn();
    };
  };

  const grant = (leaseId: string, seq: number, keyId = "k00"): JournaledGrant => ({ ...leaseRecord(pool, keyId, leaseId), epoch, seq });

  it("commits a grant sent after a snapshot of changes began before that snapshot finishes, even on one connection", async () => {
    // One connection, as the embedded database has: the grant can only go between two of the snapshot's statements.
    const sql = kind === "postgres" ? sameSchema(db as TestDb & { url: string; schema: string }, 1) : db.sql;
    const singleStore = await openStore(sql, box, { snapshotChunk: 2, fence: store.fence });
    const single = await singleStore.beginEpoch();
    await single.snapshots.writeSnapshot({ takenAt: 1, keys: keyIds.map((id) => keyRuntime(pool, id)), leases: [] });
    const changed = keyIds.map((id) => keyRuntime(pool, id, { totalLeases: 1, grantsPerSecond: { until: 5, counts: [1] } }));
    const order: string[] = [];
    let journaled: Promise<void> | undefined;
    // Ten runtime chunks: the grant arrives once the first has been sent.
    onStatement(sql, "insert into key_runtime", () => {
      journaled = single.journal.record({ ...leaseRecord(pool, "k00", "during"), epoch: single.epoch, seq: 1 }).then(() => void order.push("journal"));
    });
    await single.snapshots.writeChanges({ takenAt: 2, keys: changed, removedKeys: [], leases: [], endedLeases: [] }).then(() => order.push("snapshot"));
    await journaled;
    expect(order).toEqual(["journal", "snapshot"]);
    const loaded = await singleStore.loadAll();
    expect(loaded.runtime?.takenAt).toBe(2);
    expect(loaded.runtime?.keys).toEqual(changed);
    expect(loaded.runtime?.leases.map((l) => l.leaseId)).toEqual(["during"]);
    await single.journal.close();
    singleStore.availability.close();
    if (sql !== db.sql) await sql.end();
  });

  it("keeps the last mark and later grants when a snapshot fails between chunks, and reconciles on the next", async () => {
    const { journal, snapshots } = runtime;
    await snapshots.writeSnapshot({ takenAt: 2, keys: keyIds.map((id) => keyRuntime(pool, id)), leases: [] });
    const leases = Array.from({ length: 6 }, (_, i) => grant(`l${i + 1}`, 10 + i, keyIds[i]));
    await Promise.all(leases.map((g) => journal.record(g)));
    await snapshots.writeChanges({ takenAt: 3, keys: [], removedKeys: [], leases: [...leases], endedLeases: [] });
    await db.sql.unsafe(`
      create function km_refuse_update() returns trigger language plpgsql as $$ begin raise exception 'refused'; end $$;
      create trigger km_refuse_update before update on key_runtime for each row when (old.key_id = 'k04') execute function km_refuse_update();`);
    // l1..l5 ended before this export, their ends journaled; l7 is granted after it. Keys go two per statement: the third fails.
    for (const l of leases.slice(0, 5)) journal.recordEnd(l.leaseId, l.pool, l.epoch, l.seq);
    const ended = { takenAt: 4, keys: keyIds.map((id) => keyRuntime(pool, id, { totalLeases: 2 })), removedKeys: [], leases: [], endedLeases: leases.slice(0, 5).map((l) => l.leaseId) };
    const write = snapshots.writeChanges(ended);
    const late = grant("l7", 16);
    await journal.record(late);
    await expect(write).rejects.toThrow(/refused/);
    await journal.endDurable();

    const ids = async () => (await db.sql`select lease_id from leases order by lease_id`).map((r) => r.lease_id);
    expect(await ids()).toEqual(["l6", "l7"]);
    const [meta] = await db.sql`select taken_at, seq_mark from snapshot_meta`;
    expect(meta).toEqual({ taken_at: 3, seq_mark: 15 });
    const loaded = await store.loadAll();
    expect(loaded.grantHighWater[epoch]).toBe(16);
    expect(snapshots.needsFullSnapshot).toBe(true);

    await db.sql.unsafe(`drop trigger km_refuse_update on key_runtime; drop function km_refuse_update();`);
    await snapshots.writeSnapshot({ takenAt: 5, keys: ended.keys, leases: [leases[5], late] });
    expect(await ids()).toEqual(["l6", "l7"]);
    expect((await store.loadAll()).runtime?.takenAt).toBe(5);
  });

  it("keeps a grant journaled while changes are written, and deletes it once its end is journaled", async () => {
    const fresh = await store.beginEpoch();
    const freshEpoch = fresh.epoch;
    await fresh.snapshots.writeSnapshot({ takenAt: 7, keys: keyIds.map((id) => keyRuntime(pool, id)), leases: [] });
    const during = { ...leaseRecord(pool, "k02", "between-exports"), epoch: freshEpoch, seq: 1 };
    let journaled: Promise<void> | undefined;
    // Granted after the export of these changes (seq above their mark), journaled while they are written.
    onStatement(db.sql, "insert into key_runtime", () => {
      journaled = fresh.journal.record(during);
    });
    await fresh.snapshots.writeChanges({ takenAt: 8, keys: keyIds.map((id) => keyRuntime(pool, id, { totalLeases: 4 })), removedKeys: [], leases: [], endedLeases: [] });
    await journaled;
    expect((await store.loadAll()).runtime?.leases.map((l) => l.leaseId)).toEqual(["between-exports"]);
    fresh.journal.recordEnd(during.leaseId, during.pool, during.epoch, during.seq);
    await fresh.snapshots.writeChanges({ takenAt: 9, keys: [], removedKeys: [], leases: [], endedLeases: [during.leaseId] });
    await fresh.journal.endDurable();
    const loaded = await store.loadAll();
    expect({ takenAt: loaded.runtime?.takenAt, leases: loaded.runtime?.leases }).toEqual({ takenAt: 9, leases: [] });
    await fresh.journal.close();
  });

  it("deletes an ended lease that only a snapshot wrote (re-adopted, never journaled) when its end is journaled", async () => {
    const fresh = await store.beginEpoch();
    await fresh.snapshots.writeSnapshot({ takenAt: 13, keys: keyIds.map((id) => keyRuntime(pool, id)), leases: [] });
    const adopted = leaseRecord(pool, "k04", "adopted");
    await fresh.snapshots.writeChanges({ takenAt: 14, keys: [], removedKeys: [], leases: [adopted], endedLeases: [] });
    expect((await store.loadAll()).runtime?.leases).toEqual([adopted]);
    fresh.journal.recordEnd(adopted.leaseId, adopted.pool, fresh.epoch - 1, 3);
    await fresh.journal.endDurable();
    expect((await store.loadAll()).runtime?.leases).toEqual([]);
    await fresh.journal.close();
  });

  it("never brings back, from a snapshot's rows, a lease whose end the journal wrote", async () => {
    const ended = new Set<string>();
    const fresh = await store.beginEpoch((leaseId) => !ended.has(leaseId));
    await fresh.snapshots.writeSnapshot({ takenAt: 16, keys: keyIds.map((id) => keyRuntime(pool, id)), leases: [] });
    const g = grant("renewed-then-ended", 1, "k05");
    const rec = { ...g, epoch: fresh.epoch };
    await fresh.journal.record(rec);
    // Exported renewed, then ended (and its end journaled) before the snapshot's rows are written.
    const exported = { ...leaseRecord(pool, "k05", rec.leaseId), expiresAt: rec.expiresAt + 5000 };
    ended.add(rec.leaseId);
    fresh.journal.recordEnd(rec.leaseId, rec.pool, rec.epoch, rec.seq);
    await fresh.journal.endDurable();
    await fresh.snapshots.writeChanges({ takenAt: 17, keys: [], removedKeys: [], leases: [exported], endedLeases: [] });
    expect((await store.loadAll()).runtime?.leases).toEqual([]);
    await fresh.journal.close();
  });

  it("after an outage, asks for a full snapshot when a grant it already accounted for reaches the table late", async () => {
    const own = await openStore(db.sql, box, { clock: new FakeClock(Date.now()), fence: store.fence });
    const fresh = await own.beginEpoch();
    const freshEpoch = fresh.epoch;
    await fresh.snapshots.writeSnapshot({ takenAt: 10, keys: keyIds.map((id) => keyRuntime(pool, id)), leases: [] });
    // The store finds the database gone (a statement fails as a dropped connection does): the grant waits in
    // memory, and the lease ends before the snapshot.
    await db.sql.unsafe(`
      create function km_drop_connection() returns trigger language plpgsql as $$ begin raise exception 'gone' using errcode = '08006'; end $$;
      create trigger km_drop_connection before insert on leases for each row when (new.lease_id = 'stray') execute function km_drop_connection();`);
    const stray = { ...leaseRecord(pool, "k03", "stray"), epoch: freshEpoch, seq: 1 };
    await fresh.journal.record(stray);
    expect(own.availability.up).toBe(false);
    await db.sql.unsafe(`drop trigger km_drop_connection on leases; drop function km_drop_connection();`);
    expect(fresh.snapshots.needsFullSnapshot).toBe(true);
    // The reconciling snapshot finds the database back (deleting no row yet), which then takes the late grant.
    await fresh.snapshots.writeSnapshot({ takenAt: 11, keys: keyIds.map((id) => keyRuntime(pool, id)), leases: [] });
    expect(await own.availability.ping()).toBe(true);
    await fresh.journal.checkpoint();
    expect((await own.loadAll()).runtime?.leases.map((l) => l.leaseId)).toEqual(["stray"]);
    expect(fresh.snapshots.needsFullSnapshot).toBe(true);
    await fresh.snapshots.writeSnapshot({ takenAt: 12, keys: keyIds.map((id) => keyRuntime(pool, id)), leases: [] });
    expect(fresh.snapshots.needsFullSnapshot).toBe(false);
    expect((await own.loadAll()).runtime?.leases).toEqual([]);
    await fresh.journal.close();
    own.availability.close();
  });

  it.skipIf(kind === "embedded")("commits a grant while a snapshot transaction holding its row locks is open", async () => {
    // A new store's first snapshot reconciles whole tables in one transaction; hold it at its last statement.
    const fresh = await store.beginEpoch();
    const blocker = await db.sql.reserve();
    await blocker`begin`.then(() => blocker`lock table snapshot_meta in exclusive mode`);
    let snapshotDone = false;
    const write = fresh.snapshots
      .writeSnapshot({ takenAt: 6, keys: keyIds.map((id) => keyRuntime(pool, id, { totalLeases: 3 })), leases: [] })
      .then(() => void (snapshotDone = true));
    const waiting = async () =>
      (await db.sql`select count(*)::int as n from pg_stat_activity where wait_event_type = 'Lock' and query like '%snapshot_meta%'`)[0].n;
    await expect.poll(waiting, { timeout: 10_000 }).toBe(1);
    await fresh.journal.record({ ...leaseRecord(pool, "k01", "while-open"), epoch: fresh.epoch, seq: 1 });
    const [{ n }] = await db.sql`select count(*)::int as n from leases where lease_id = 'while-open'`;
    expect({ n, snapshotDone }).toEqual({ n: 1, snapshotDone: false });
    await blocker`commit`.then(() => blocker.release());
    await write;
    expect((await store.loadAll()).runtime?.leases.map((l) => l.leaseId)).toEqual(["while-open"]);
    await fresh.journal.close();
  });
});
