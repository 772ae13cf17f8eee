// Runtime snapshots into Postgres: the whole state of the pools this replica holds (reconciling their rows in
// one transaction) or what changed (each chunk its own transaction). Every transaction first checks the terms
// the pools are held under (fence.ts), and so does the journal for the lease rows. It coordinates with the
// lease journal only through JournalProgress:
// a checkpoint when a write starts, its lease rows written through the journal (in the journal's order, so
// none comes back after its end), supersede once it committed, and the rows each journal statement wrote.
import type postgres from "postgres";
import type { Clock, KeyRuntime, LeaseRecord, PoolRuntime, RuntimeChanges, RuntimeSnapshot } from "../domain/types.js";
import { systemClock } from "../domain/system-clock.js";
import type { Availability } from "./availability.js";
import { checkTerms, type Fence } from "./fence.js";
import type { GrantMark, JournaledGrant, JournalProgress } from "./journal.js";
import type { SnapshotStore } from "./snapshotter.js";
import { deleteRuntimeExcept, deleteRuntimeOf, encodeRuntime, upsertRuntime, type EncodedRuntime } from "./sql/key-runtime.js";
import { deleteLeasesExcept } from "./sql/leases.js";
import { upsertPoolRuntime } from "./sql/pool-runtime.js";
import type { HeldTerm } from "./sql/pool-owners.js";
import type { Queryable } from "./sql/queryable.js";
import { upsertSnapshotMeta, type SnapshotMeta } from "./sql/snapshot-meta.js";

export interface SnapshotWriterOptions {
  clock?: Clock;
  /** Most rows per snapshot statement (default 500); a snapshot of changes commits each statement on its own. */
  snapshotChunk?: number;
}

/** Synchronous work between yields to the event loop while a snapshot is prepared. */
const SLICE_MS = 1;

/** Rows per snapshot statement: its JSON is encoded on the event loop and it competes with the journal, so this bounds both. */
const SNAPSHOT_CHUNK = 500;
/** Pools per statement: a pool's row holds up to 10,000 affinities. */
const POOL_CHUNK = 8;

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Splits a long loop into slices of about SLICE_MS: `if (pace.due()) await pace.pause()` once per row. */
class Pacer {
  #since = performance.now();
  #rows = 0;

  due(): boolean {
    return ++this.#rows % 64 === 0 && performance.now() - this.#since >= SLICE_MS;
  }

  async pause(): Promise<void> {
    await yieldToEventLoop();
    this.#since = performance.now();
  }
}

export class PostgresSnapshotStore implements SnapshotStore {
  readonly #sql: postgres.Sql;
  readonly #availability: Availability;
  readonly #journal: JournalProgress;
  readonly #fence: Fence;
  readonly #clock: Clock;
  readonly #snapshotChunk: number;

  /** Whether the runtime tables are known to hold the last snapshot written and the journal since (false: next is full). */
  #reconciled = false;
  /** Lease rows as last written here or by the journal: one never written needs no delete, nor an unchanged one a rewrite. */
  #leaseRows = new Map<string, LeaseRecord>();
  /** The grants that a snapshot written (or being written) accounts for. */
  #covered: GrantMark = { epoch: 0, seq: 0 };

  constructor(sql: postgres.Sql, availability: Availability, journal: JournalProgress, fence: Fence, options: SnapshotWriterOptions = {}) {
    this.#sql = sql;
    this.#availability = availability;
    this.#journal = journal;
    this.#fence = fence;
    this.#clock = options.clock ?? systemClock;
    this.#snapshotChunk = options.snapshotChunk ?? SNAPSHOT_CHUNK;
    // A write cut off mid-commit may or may not have landed: reconcile whole tables next time.
    availability.observe({ lost: () => (this.#reconciled = false), reached: () => {} });
    journal.onCommit((grants) => this.#journaled(grants));
  }

  /**
   * Whether the next snapshot must be a full one (writeSnapshot) rather than changes (writeChanges): the first
   * of a process, and the first after an outage or a failed snapshot, whose chunks may have partly committed.
   */
  get needsFullSnapshot(): boolean {
    return !this.#reconciled;
  }

  /** Pools were loaded (a takeover): the next snapshot reconciles their rows, which this writer has not seen. */
  reconcileNext(): void {
    this.#reconciled = false;
  }

  /**
   * Writes the whole runtime state, reconciling whole tables in one transaction. Call it (and writeChanges) in
   * the same tick as the engine's export: grants journaled up to that moment are then either live in `s` or
   * ended, so leases journaled before it and absent from `s` are deleted, and later grants are kept. The
   * pools held then are the ones `s` covers: only their rows are reconciled.
   */
  async writeSnapshot(s: RuntimeSnapshot): Promise<void> {
    const scope = this.#fence.held();
    const mark = await this.#journal.checkpoint();
    // Set first: an outage noticed while this writes must still force the next snapshot to reconcile.
    this.#reconciled = true;
    this.#cover(mark);
    // Rows of `s` are recorded once written; grants journaled from here on are recorded as they commit.
    const leaseRows = new Map<string, LeaseRecord>();
    this.#leaseRows = leaseRows;
    const inScope = new Set(scope.map((h) => h.pool));
    const runtime = (await encodeAll(s.keys)).filter((r) => inScope.has(r.pool));
    const leases = s.leases.filter((l) => inScope.has(l.pool));
    const poolRuntime = (s.pools ?? []).filter((p) => inScope.has(p.pool));
    const meta = { taken_at: s.takenAt, written_at: this.#clock.now(), epoch: mark.epoch, seq_mark: mark.seq };
    try {
      // The leases first, so that a crash before the transaction commits leaves the last mark with every row it needs.
      for (const chunk of chunks(leases, this.#snapshotChunk)) await this.#journal.upsert(chunk, scope);
      await this.#availability.run(() => this.#sql.begin((tx) => this.#writeFull(tx, scope, runtime, leases, poolRuntime, mark, meta)));
    } catch (err) {
      this.#reconciled = false;
      throw err;
    }
    this.#journal.supersede(mark);
    const pace = new Pacer();
    for (const lease of leases) {
      if (!leaseRows.has(lease.leaseId)) leaseRows.set(lease.leaseId, lease);
      if (pace.due()) await pace.pause();
    }
  }

  /**
   * Writes what changed since the previous snapshot, each statement of at most `snapshotChunk` rows committing
   * on its own, so a journal commit never waits behind a long transaction (nor, on the embedded database's one
   * connection, behind more than one chunk). A crash between chunks leaves each row either as before or as in
   * `c`, which is safe row by row: the journal wrote the ends, the lease rows go through it (leaving out leases
   * ended by then), and the mark is recorded last, once every chunk has committed. Between statements it leaves the database to the journal for as long as
   * the last one took: on a busy server, grants commit faster while a snapshot is written, which takes longer.
   * Written when a full snapshot is due too (an outage noticed meanwhile): it is right row by row, and the
   * next snapshot still reconciles.
   */
  async writeChanges(c: RuntimeChanges): Promise<void> {
    const scope = this.#fence.held();
    const mark = await this.#journal.checkpoint();
    this.#cover(mark);
    const runtime = await encodeAll(c.keys);
    const rows = this.#leaseRows;
    const leases: LeaseRecord[] = [];
    const pace = new Pacer();
    for (const lease of c.leases) {
      const row = rows.get(lease.leaseId);
      if (!row || row.expiresAt !== lease.expiresAt || row.ttlMs !== lease.ttlMs || row.holder !== lease.holder) leases.push(lease);
      if (pace.due()) await pace.pause();
    }
    const meta = { taken_at: c.takenAt, written_at: this.#clock.now(), epoch: mark.epoch, seq_mark: mark.seq };
    try {
      await this.#writeChanges(scope, runtime, c.removedKeys, leases, c.pools ?? [], meta);
    } catch (err) {
      // Some chunks may have committed: the next snapshot reconciles whole tables.
      this.#reconciled = false;
      throw err;
    }
    // The journal wrote the ends: their rows are gone.
    for (const leaseId of c.endedLeases) {
      rows.delete(leaseId);
      if (pace.due()) await pace.pause();
    }
    for (const lease of leases) rows.set(lease.leaseId, lease);
    this.#journal.supersede(mark);
  }

  #cover(mark: GrantMark): void {
    this.#covered = { epoch: mark.epoch, seq: Math.max(this.#covered.epoch === mark.epoch ? this.#covered.seq : 0, mark.seq) };
  }

  #journaled(grants: readonly JournaledGrant[]): void {
    for (const rec of grants) this.#leaseRows.set(rec.leaseId, rec);
    // Only after an outage (the checkpoint before a snapshot lets no such grant through): a grant that a snapshot
    // already accounted for may have ended, and its row is then a stray that only a full snapshot removes.
    const covered = this.#covered;
    if (grants.some((rec) => rec.epoch === covered.epoch && rec.seq <= covered.seq)) this.#reconciled = false;
  }

  /** `runtime`, `leases` and `poolRuntime` are of the pools of `scope` only. */
  async #writeFull(tx: Queryable, scope: HeldTerm[], runtime: EncodedRuntime[], leases: LeaseRecord[], poolRuntime: PoolRuntime[], mark: GrantMark, meta: SnapshotMeta): Promise<void> {
    await checkTerms(tx, this.#fence, scope);
    const pools = scope.map((h) => h.pool);
    // Each batch travels as one jsonb parameter: one statement per purpose and chunk, whatever the row count.
    await deleteRuntimeExcept(tx, pools, runtime);
    await deleteLeasesExcept(tx, pools, leases.map((lease) => lease.leaseId), mark);
    for (const chunk of chunks(runtime, this.#snapshotChunk)) await upsertRuntime(tx, chunk);
    for (const chunk of chunks(poolRuntime, POOL_CHUNK)) await upsertPoolRuntime(tx, chunk);
    await upsertSnapshotMeta(tx, meta);
  }

  async #writeChanges(scope: HeldTerm[], runtime: EncodedRuntime[], removedKeys: RuntimeChanges["removedKeys"], leases: LeaseRecord[], poolRuntime: PoolRuntime[], meta: SnapshotMeta): Promise<void> {
    const inScope = new Set(scope.map((h) => h.pool));
    let rest = 0;
    const paced = async (statement: () => Promise<unknown>): Promise<void> => {
      if (rest > 0) await new Promise<void>((resolve) => this.#clock.setTimeout(resolve, rest));
      const started = this.#clock.now();
      await statement();
      rest = this.#clock.now() - started;
    };
    const fenced = (statement: (tx: Queryable) => Promise<unknown>) => () =>
      this.#availability.run(() =>
        this.#sql.begin(async (tx) => {
          await checkTerms(tx, this.#fence, scope);
          await statement(tx);
        }),
      );
    // Rows of a pool no longer held (dropped since the export) are not this replica's to write.
    const held = <T extends { pool: string }>(rows: T[]) => rows.filter((r) => inScope.has(r.pool));
    // Removals first: a key removed and added again since has its new state among `runtime`.
    for (const chunk of chunks(held(removedKeys), this.#snapshotChunk)) await paced(fenced((tx) => deleteRuntimeOf(tx, chunk)));
    for (const chunk of chunks(held(runtime), this.#snapshotChunk)) await paced(fenced((tx) => upsertRuntime(tx, chunk)));
    for (const chunk of chunks(held(leases), this.#snapshotChunk)) await paced(() => this.#journal.upsert(chunk, scope));
    for (const chunk of chunks(held(poolRuntime), POOL_CHUNK)) await paced(fenced((tx) => upsertPoolRuntime(tx, chunk)));
    await paced(fenced((tx) => upsertSnapshotMeta(tx, meta)));
  }
}

function* chunks<T>(rows: T[], size: number): Generator<T[]> {
  for (let i = 0; i < rows.length; i += size) yield rows.slice(i, i + size);
}

/** Encodes each key's state in slices, so Acquire never waits behind the whole encoding. */
async function encodeAll(keys: Iterable<KeyRuntime>): Promise<EncodedRuntime[]> {
  const out: EncodedRuntime[] = [];
  const pace = new Pacer();
  for (const key of keys) {
    out.push(encodeRuntime(key));
    if (pace.due()) await pace.pause();
  }
  return out;
}
