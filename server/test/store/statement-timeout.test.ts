// KEYMESH_STATEMENT_TIMEOUT on a real Postgres: a statement that outlives it is cancelled and counts as the
// database being unavailable (the journal and snapshots hold and retry, admin calls answer UNAVAILABLE).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Availability } from "../../src/store/availability.js";
import { openDatabase, type Database } from "../../src/store/database.js";
import { StoreUnavailable } from "../../src/store/errors.js";
import { captureLog, freshSchema, type TestDb } from "./helpers.js";

describe("statement timeout on Postgres", () => {
  let schema: TestDb & { url: string };
  let db: Database;

  beforeAll(async () => {
    schema = await freshSchema();
    db = await openDatabase({ databaseUrl: schema.url, dataDir: "", log: captureLog().log, statementTimeoutMs: 300 });
  }, 60_000);
  afterAll(async () => {
    await db?.close();
    await schema?.close();
  });

  it("cancels a statement that runs longer, as the database being unavailable, until one answers again", async () => {
    const { log } = captureLog();
    const availability = new Availability(db.sql, log, { probeMinMs: 60_000 });
    const started = Date.now();
    await expect(availability.run(() => db.sql`select pg_sleep(5)`)).rejects.toBeInstanceOf(StoreUnavailable);
    expect(Date.now() - started).toBeLessThan(4000);
    expect(availability.up).toBe(false);
    expect(await availability.ping()).toBe(true);
    expect(availability.up).toBe(true);
    availability.close();
  });
});
