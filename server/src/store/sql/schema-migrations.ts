// The schema_migrations table, kept by the migrations runner (migrate.ts): which numbered files are applied.
import type postgres from "postgres";

/**
 * Serialises migration runs on this schema until the transaction ends; creates the table on the first run.
 * A migration may take longer than KEYMESH_STATEMENT_TIMEOUT (an index on a large table), so its
 * transaction has none; waiting for the lock is bounded by nothing either, as another server is migrating.
 */
export async function lockMigrations(tx: postgres.TransactionSql): Promise<void> {
  await tx`set local statement_timeout = 0`;
  await tx`select pg_advisory_xact_lock(hashtext('keymesh.migrate:' || current_schema()))`;
  const [{ exists }] = await tx<{ exists: boolean }[]>`select to_regclass('schema_migrations') is not null as exists`;
  if (exists) return;
  await tx`
    create table schema_migrations (
      version     integer primary key,
      name        text   not null,
      applied_at  bigint not null
    )`;
}

export async function selectAppliedVersions(tx: postgres.TransactionSql): Promise<number[]> {
  const rows = await tx<{ version: number }[]>`select version from schema_migrations order by version`;
  return rows.map((r) => r.version);
}

export function insertAppliedMigration(tx: postgres.TransactionSql, version: number, name: string, appliedAt: number) {
  return tx`insert into schema_migrations (version, name, applied_at) values (${version}, ${name}, ${appliedAt})`;
}
