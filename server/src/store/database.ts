// One storage path for two databases: a Postgres at DATABASE_URL, or an embedded Postgres (PGlite) whose
// files live in the data directory, served on a loopback socket so the same driver and SQL reach both.
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { PGLiteSocketServer } from "@electric-sql/pglite-socket";
import postgres from "postgres";
import { lockDataDir } from "./data-dir-lock.js";
import type { StoreLog } from "./log.js";

export interface Database {
  sql: postgres.Sql;
  /** True when this process runs the database itself (PGlite). */
  embedded: boolean;
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  /** A Postgres connection string; without it, the embedded database in `dataDir` is used. */
  databaseUrl?: string;
  dataDir: string;
  log: StoreLog;
  /** Pool size for a real Postgres (default 10). */
  maxConnections?: number;
  /**
   * A real Postgres cancels any statement that runs longer (its statement_timeout; 0: none). The embedded
   * database runs one statement at a time on this process's event loop and has no such timer.
   */
  statementTimeoutMs?: number;
}

export const DEFAULT_STATEMENT_TIMEOUT_MS = 30_000;

/** Driver settings shared by both paths: no notice chatter, bounded connect wait, bigint as JS number. */
export function driverOptions(max: number): postgres.Options<{}> {
  return {
    max,
    connect_timeout: 5,
    onnotice: () => {},
    connection: { application_name: "keymesh" },
    types: {
      // Milliseconds since 1970 stay below 2^53 for the next 280,000 years, so bigint columns read as numbers.
      bigint: { to: 20, from: [20], serialize: (v: number) => String(v), parse: (v: string) => Number(v) },
    },
  };
}

const IDLE_IN_TRANSACTION_MS = 2000;

export async function openDatabase(options: OpenDatabaseOptions): Promise<Database> {
  if (options.databaseUrl) {
    const opts = driverOptions(options.maxConnections ?? 10);
    // A process paused or cut off inside a transaction would keep the ownership rows it locked (fence.ts) for good,
    // and no other replica could claim its pools: the server ends such a transaction.
    opts.connection = {
      ...opts.connection,
      statement_timeout: options.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS,
      idle_in_transaction_session_timeout: IDLE_IN_TRANSACTION_MS,
    };
    const sql = postgres(options.databaseUrl, opts);
    return { sql, embedded: false, close: () => sql.end({ timeout: 5 }) };
  }
  return openEmbedded(options.dataDir, options.log);
}

async function openEmbedded(dataDir: string, log: StoreLog): Promise<Database> {
  const pgdata = path.join(dataDir, "pgdata");
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const unlock = await lockDataDir(dataDir);
  let db: PGlite | undefined;
  try {
    db = await PGlite.create(pgdata);
    // PGlite is one backend that runs one transaction at a time, so the driver keeps a single connection;
    // the server admits a second so a reconnect is not refused while the old socket is still closing.
    const server = new PGLiteSocketServer({ db, host: "127.0.0.1", port: 0, maxConnections: 2 });
    await server.start();
    const address = server.getServerConn();
    const port = Number(address.slice(address.lastIndexOf(":") + 1));
    const sql = postgres({
      ...driverOptions(1),
      host: "127.0.0.1",
      port,
      database: "postgres",
      username: "postgres",
    });
    log.info({ dataDir: pgdata }, "embedded database started");
    const opened = db;
    return {
      sql,
      embedded: true,
      close: async () => {
        await sql.end({ timeout: 5 });
        await server.stop();
        await opened.close();
        await unlock();
      },
    };
  } catch (e) {
    await db?.close().catch(() => undefined);
    await unlock();
    throw e;
  }
}
