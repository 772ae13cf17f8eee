// The audit trail in the database: each admin change appended in the transaction of the change itself,
// read back newest first, and pruned once older than the retention (KEYMESH_AUDIT_RETENTION).
import type postgres from "postgres";
import type { AuditChange, AuditEntry } from "../domain/audit.js";
import type { Clock, TimerHandle } from "../domain/types.js";
import type { Availability } from "./availability.js";
import type { StoreLog } from "./log.js";
import { deleteAuditEntriesBefore, insertAuditEntry, selectAuditEntries, type AuditQuery } from "./sql/audit-log.js";
import type { Queryable } from "./sql/queryable.js";

export type { AuditQuery } from "./sql/audit-log.js";

/** What the admin service records and the admin API reads. */
export interface AuditTrail {
  /** Appends `change` on `db` when given (the change's own transaction, so both commit or neither does). */
  append(change: AuditChange, db?: Queryable): Promise<AuditEntry>;
  /** Newest first. */
  list(query: AuditQuery): Promise<AuditEntry[]>;
}

/** Rows deleted per statement while pruning, so one prune never holds a long lock. */
const PRUNE_BATCH = 5000;

export class PostgresAuditTrail implements AuditTrail {
  readonly #sql: postgres.Sql;
  readonly #availability: Availability;

  constructor(sql: postgres.Sql, availability: Availability) {
    this.#sql = sql;
    this.#availability = availability;
  }

  async append(change: AuditChange, db: Queryable = this.#sql): Promise<AuditEntry> {
    const id = await this.#availability.run(() => insertAuditEntry(db, change));
    return { id, ...change };
  }

  list(query: AuditQuery): Promise<AuditEntry[]> {
    return this.#availability.run(() => selectAuditEntries(this.#sql, query));
  }

  /** Deletes every entry recorded before `cutoff`, a batch at a time; returns how many. */
  async prune(cutoff: number): Promise<number> {
    let total = 0;
    for (;;) {
      const deleted = await this.#availability.run(() => deleteAuditEntriesBefore(this.#sql, cutoff, PRUNE_BATCH));
      total += deleted;
      if (deleted < PRUNE_BATCH) return total;
    }
  }
}

export interface AuditRetentionOptions {
  trail: Pick<PostgresAuditTrail, "prune">;
  /** Entries older than this are deleted. */
  retentionMs: number;
  clock: Clock;
  log: StoreLog;
  /** Between prunes (default 1 h); the first runs at start. */
  intervalMs?: number;
}

/** Prunes the trail at start and then every interval; a failed prune is logged and tried again next time. */
export class AuditRetention {
  readonly #opts: AuditRetentionOptions;
  readonly #intervalMs: number;
  #timer: TimerHandle | undefined;
  #running: Promise<void> | undefined;
  #stopped = false;

  constructor(opts: AuditRetentionOptions) {
    this.#opts = opts;
    this.#intervalMs = opts.intervalMs ?? 3_600_000;
  }

  start(): void {
    this.#prune();
  }

  /** Waits for a prune in progress. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== undefined) this.#opts.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }

  #prune(): void {
    const { trail, retentionMs, clock, log } = this.#opts;
    this.#running = trail.prune(clock.now() - retentionMs).then(
      (deleted) => {
        if (deleted > 0) log.info({ deleted, retentionMs }, "audit entries past retention deleted");
      },
      (err: unknown) => log.warn({ err: (err as Error).name, code: (err as { code?: string }).code }, "audit entries not pruned; retrying later"),
    ).finally(() => {
      this.#running = undefined;
      if (!this.#stopped) this.#timer = clock.setTimeout(() => this.#prune(), this.#intervalMs);
    });
  }
}
