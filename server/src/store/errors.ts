// Typed store failures. Each carries a code; the RPC layer's error mapper switches on it.

export type StoreErrorCode = "unavailable" | "conflict" | "ownership_lost" | "refused";

/** A failure of a store operation that callers can act on. */
export abstract class StoreError extends Error {
  abstract readonly code: StoreErrorCode;
}

/** The database could not be reached; the operation had no effect. Maps to UNAVAILABLE. */
export class StoreUnavailable extends StoreError {
  readonly code = "unavailable";

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StoreUnavailable";
  }
}

/** The database refused one record for its data (the rest of its statement was written without it). */
export class StoreRefused extends StoreError {
  readonly code = "refused";

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StoreRefused";
  }
}

/** A uniqueness or reference constraint refused the change (a concurrent writer got there first). */
class StoreConflict extends StoreError {
  readonly code = "conflict";

  constructor(
    message: string,
    readonly constraint: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "StoreConflict";
  }
}

/** The master key cannot open the secrets this database holds (a start-up failure, never a handler's). */
export class MasterKeyMismatch extends Error {
  constructor() {
    super(
      "master key does not match the one this database was created with " +
        "(check KEYMESH_MASTER_KEY / KEYMESH_MASTER_KEY_FILE, or the data directory's master.key)",
    );
    this.name = "MasterKeyMismatch";
  }
}

const connectionErrorCodes = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
]);

/**
 * True when `err` means "the database is not there" rather than "the statement was wrong":
 * socket errors, postgres.js connection codes, SQLSTATE class 08, shutdown/start-up (57P01-57P03), and a
 * statement cancelled (57014) for outliving KEYMESH_STATEMENT_TIMEOUT: a database that slow is not one to
 * wait on, and a cancelled statement changed nothing.
 */
export function isConnectionError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code !== "string") return false;
  return connectionErrorCodes.has(code) || code.startsWith("08") || /^57P0[123]$/.test(code) || code === "57014";
}

/** SQLSTATE of a Postgres error, if it is one. */
export function sqlState(err: unknown): string | undefined {
  if (err instanceof Error && err.name === "PostgresError") return (err as { code?: string }).code;
  return undefined;
}

/** A constraint violation as a StoreConflict; anything else as it is (connection failures are Availability's). */
export function translateStatementError(err: unknown): unknown {
  const state = sqlState(err);
  if (state === "23505" || state === "23503") {
    const constraint = (err as { constraint_name?: string }).constraint_name ?? "";
    const what = state === "23505" ? "already exists" : "refers to a row that does not exist";
    return new StoreConflict(`conflicting change: ${constraint || "row"} ${what}`, constraint, { cause: err });
  }
  return err;
}
