// `npm run migrate`: applies pending migrations to DATABASE_URL, or to the embedded database in
// KEYMESH_DATA_DIR (default ./.keymesh), and exits non-zero with the reason when it cannot.
import { createLogger } from "./ops/logger.js";
import { openDatabase } from "./store/database.js";
import { migrate } from "./store/migrate.js";

const log = createLogger();
const db = await openDatabase({
  databaseUrl: process.env.DATABASE_URL || undefined,
  dataDir: process.env.KEYMESH_DATA_DIR || ".keymesh",
  log,
});
try {
  const { applied, current } = await migrate(db.sql, { log });
  log.info({ applied, current }, applied.length > 0 ? "migrations applied" : "database is up to date");
} catch (err) {
  log.error({ err: (err as Error).message }, "migration failed");
  process.exitCode = 1;
} finally {
  await db.close();
}
