// Forward-only migrations: migrations/NNNN_name.sql, applied in order, each in one transaction, recorded in
// schema_migrations. Every step holds a transaction-scoped advisory lock, so servers starting together
// against one database apply each migration exactly once, on any connection pool (PGlite's single one too).
import { readdir, readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import path from "node:path";
import type postgres from "postgres";
import type { StoreLog } from "./log.js";
import { insertAppliedMigration, lockMigrations, selectAppliedVersions } from "./sql/schema-migrations.js";

export const MIGRATIONS_DIR = fileURLToPath(new URL("../../../migrations/", import.meta.url));

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export interface MigrateResult {
  /** Versions applied by this call, in order. */
  applied: number[];
  /** The database's version afterwards. */
  current: number;
}

const fileName = /^(\d{4})_([a-z0-9_]+)\.sql$/;

const label = (version: number): string => String(version).padStart(4, "0");

/** Reads the migration files; their numbers must run 1, 2, 3… without gaps or duplicates. */
export async function readMigrations(dir: string = MIGRATIONS_DIR): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith(".sql")).sort();
  const migrations: Migration[] = [];
  for (const file of files) {
    const match = fileName.exec(file);
    if (!match) throw new Error(`migrations: "${file}" is not named NNNN_name.sql`);
    migrations.push({ version: Number(match[1]), name: match[2], sql: await readFile(path.join(dir, file), "utf8") });
  }
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) {
      const expected = label(i + 1);
      throw new Error(
        m.version === i
          ? `migrations: two files are numbered ${label(m.version)}`
          : `migrations: gap in numbering: ${expected} is missing before ${label(m.version)}_${m.name}.sql`,
      );
    }
  });
  return migrations;
}

/** Applies every pending migration; throws (changing nothing) when the database is newer than the files or has a gap. */
export async function migrate(
  sql: postgres.Sql,
  options: { dir?: string; log?: StoreLog; now?: () => number } = {},
): Promise<MigrateResult> {
  const migrations = await readMigrations(options.dir);
  const now = options.now ?? Date.now;
  const applied: number[] = [];
  for (const migration of migrations) {
    const ran = await sql.begin(async (tx) => {
      await lockMigrations(tx);
      const done = await selectAppliedVersions(tx);
      check(done, migrations);
      if (done.includes(migration.version)) return false;
      // The file's SQL is the statement itself: migrations are trusted code shipped with the server.
      await tx.unsafe(migration.sql);
      await insertAppliedMigration(tx, migration.version, migration.name, now());
      return true;
    });
    if (ran) {
      applied.push(migration.version);
      options.log?.info({ version: migration.version, name: migration.name }, "applied migration");
    }
  }
  const current = await sql.begin(async (tx) => {
    await lockMigrations(tx);
    const done = await selectAppliedVersions(tx);
    check(done, migrations);
    return done.length;
  });
  return { applied, current };
}

function check(done: number[], migrations: Migration[]): void {
  const known = migrations.length;
  const unknown = done.filter((v) => v > known);
  if (unknown.length > 0) {
    throw new Error(
      `database is newer than this build: it has migration ${unknown.map(label).join(", ")} applied, ` +
        `but the newest migration here is ${known === 0 ? "none" : label(known)}; run a KeyMesh release that includes it`,
    );
  }
  const missing = done.length === 0 ? [] : migrations.filter((m) => m.version < done[done.length - 1] && !done.includes(m.version));
  if (missing.length > 0) {
    throw new Error(
      `database has a gap in its migrations: ${missing.map((m) => label(m.version)).join(", ")} not applied ` +
        `but ${label(done[done.length - 1])} is`,
    );
  }
}
