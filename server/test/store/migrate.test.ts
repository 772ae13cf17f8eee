import { copyFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { migrate, MIGRATIONS_DIR, readMigrations } from "../../src/store/migrate.js";
import { embedded, freshSchema, sameSchema, type TestDb } from "./helpers.js";

const tables = ["audit_log", "key_runtime", "keys", "leases", "master_key_check", "pool_owners", "pool_runtime", "pools", "replicas", "schema_migrations", "server_epochs", "snapshot_meta"];

async function migrationDir(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "keymesh-migrations-"));
  for (const [name, sql] of Object.entries(files)) await writeFile(path.join(dir, name), sql);
  return dir;
}

describe("migrations on Postgres", () => {
  const opened: Array<{ close(): Promise<void> }> = [];
  const dirs: string[] = [];
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((d) => d.close()));
    await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  });

  it("applies each migration once and records it", async () => {
    const db = await freshSchema();
    opened.push(db);
    expect(await migrate(db.sql)).toEqual({ applied: [1, 2, 3, 4, 5, 6], current: 6 });
    expect(await migrate(db.sql)).toEqual({ applied: [], current: 6 });
    const recorded = await db.sql`select version, name, applied_at from schema_migrations order by version`;
    expect(recorded.map((r) => [r.version, r.name])).toEqual([
      [1, "init"],
      [2, "fillfactor"],
      [3, "leases_without_key_fk"],
      [4, "audit_log"],
      [5, "budgets"],
      [6, "replicas"],
    ]);
    expect(recorded[0].applied_at).toBeGreaterThan(0);
    const present = await db.sql<{ table_name: string }[]>`
      select table_name from information_schema.tables where table_schema = ${db.schema} order by table_name`;
    expect(present.map((r) => r.table_name)).toEqual(tables);
    const options = await db.sql<{ relname: string; reloptions: string[] }[]>`
      select c.relname, c.reloptions from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = ${db.schema} and c.relname in ('key_runtime', 'leases') order by c.relname`;
    expect(options.map((r) => [r.relname, r.reloptions])).toEqual([
      ["key_runtime", ["fillfactor=50"]],
      ["leases", ["fillfactor=70"]],
    ]);
    // The lease journal's rows are not checked against keys (0003); key_runtime's still are.
    const foreignKeys = await db.sql<{ relname: string }[]>`
      select c.relname from pg_constraint k join pg_class c on c.oid = k.conrelid join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = ${db.schema} and k.contype = 'f' order by c.relname`;
    expect(foreignKeys.map((r) => r.relname)).toEqual(["key_runtime", "keys", "pool_runtime"]);
  });

  it("runs a migration longer than the statement timeout the server's statements have", async () => {
    const db = await freshSchema();
    opened.push(db);
    const bounded = sameSchema(db, 1, { statement_timeout: 200 });
    opened.push({ close: () => bounded.end() });
    await expect(bounded`select pg_sleep(0.5)`).rejects.toMatchObject({ code: "57014" });
    const dir = await migrationDir({ "0001_slow.sql": "select pg_sleep(0.5); create table slow (x int);" });
    dirs.push(dir);
    expect(await migrate(bounded, { dir })).toEqual({ applied: [1], current: 1 });
    await expect(bounded`select pg_sleep(0.5)`).rejects.toMatchObject({ code: "57014" });
  });

  it("lets two servers migrate one database at once and applies each migration exactly once", async () => {
    const db = await freshSchema();
    opened.push(db);
    const other = sameSchema(db);
    opened.push({ close: () => other.end() });
    // A second migration whose effect would show if it ran twice.
    const dir = await migrationDir({ "0002_counter.sql": "create table runs (n int); insert into runs values (1);" });
    dirs.push(dir);
    await copyFile(path.join(MIGRATIONS_DIR, "0001_init.sql"), path.join(dir, "0001_init.sql"));
    const [a, b] = await Promise.all([migrate(db.sql, { dir }), migrate(other, { dir })]);
    expect([...a.applied, ...b.applied].sort()).toEqual([1, 2]);
    expect(a.current).toBe(2);
    expect(b.current).toBe(2);
    expect((await db.sql`select count(*)::int as n from runs`)[0].n).toBe(1);
    expect((await db.sql`select count(*)::int as n from schema_migrations`)[0].n).toBe(2);
  });

  it("refuses a database newer than the code, naming the versions, and changes nothing", async () => {
    const db = await freshSchema();
    opened.push(db);
    const dir = await migrationDir({ "0001_a.sql": "create table a (x int);", "0002_b.sql": "create table b (x int);" });
    dirs.push(dir);
    await migrate(db.sql, { dir });
    const older = await migrationDir({ "0001_a.sql": "create table a (x int);" });
    dirs.push(older);
    await expect(migrate(db.sql, { dir: older })).rejects.toThrow(/newer than this build.*0002.*newest migration here is 0001/);
  });

  it("refuses a database with a gap in its applied migrations", async () => {
    const db = await freshSchema();
    opened.push(db);
    const dir = await migrationDir({
      "0001_a.sql": "create table a (x int);",
      "0002_b.sql": "create table b (x int);",
      "0003_c.sql": "create table c (x int);",
    });
    dirs.push(dir);
    await migrate(db.sql, { dir });
    await db.sql`delete from schema_migrations where version = 2`;
    await expect(migrate(db.sql, { dir })).rejects.toThrow(/gap in its migrations: 0002 not applied but 0003 is/);
  });

  it("refuses migration files with a gap in their numbering, before touching the database", async () => {
    const dir = await migrationDir({ "0001_a.sql": "select 1;", "0003_c.sql": "select 1;" });
    dirs.push(dir);
    await expect(readMigrations(dir)).rejects.toThrow(/gap in numbering: 0002 is missing before 0003_c\.sql/);
  });

  it("rolls back a failing migration entirely", async () => {
    const db = await freshSchema();
    opened.push(db);
    const dir = await migrationDir({ "0001_a.sql": "create table a (x int); select * from no_such_table;" });
    dirs.push(dir);
    await expect(migrate(db.sql, { dir })).rejects.toThrow(/no_such_table/);
    expect((await db.sql`select to_regclass('a') as t`)[0].t).toBeNull();
    await writeFile(path.join(dir, "0001_a.sql"), "create table a (x int);");
    expect(await migrate(db.sql, { dir })).toEqual({ applied: [1], current: 1 });
  });
});

describe("migrations on the embedded database", () => {
  let db: TestDb;
  let dataDir: string;
  beforeAll(async () => {
    db = await embedded(undefined, true);
    dataDir = db.dataDir!;
  }, 60_000);
  afterAll(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  it("applies once, and a restarted embedded database is already migrated", async () => {
    expect(await migrate(db.sql)).toEqual({ applied: [1, 2, 3, 4, 5, 6], current: 6 });
    const [first, second] = await Promise.all([migrate(db.sql), migrate(db.sql)]);
    expect(first.applied).toEqual([]);
    expect(second.applied).toEqual([]);
    await db.close();
    db = await embedded(dataDir, true);
    expect(await migrate(db.sql)).toEqual({ applied: [], current: 6 });
    expect((await db.sql`select count(*)::int as n from schema_migrations`)[0].n).toBe(6);
    await db.close();
  }, 60_000);
});
