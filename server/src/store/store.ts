// Postgres access for the server: write-through configuration, the grant journal (group commit) and
// runtime snapshots. Values reach SQL only through porsager/postgres tagged templates.
import type postgres from "postgres";
import { GrantWindow, OutcomeWindow } from "../domain/state.js";
import type { Clock, KeyConfig, KeyRuntime, LeaseRecord, PoolConfig, RuntimeChanges, RuntimeSnapshot, Strategy, TimerHandle } from "../domain/types.js";
import { isConnectionError, MasterKeyMismatch, sqlState, StoreConflict, StoreUnavailable } from "./errors.js";
import type { StoreLog } from "./log.js";
import { mask, type SecretBox } from "./secrets.js";

/** The pool or an open transaction: every statement method runs on whichever the caller passes. */
export type Queryable = postgres.ISql;

/** A lease as granted, with the epoch and per-epoch sequence number its id carries. */
export type JournaledGrant = LeaseRecord & { epoch: number; seq: number };

export interface LoadedState {
  pools: PoolConfig[];
  /** Secrets decrypted. */
  keys: KeyConfig[];
  /** Undefined when nothing was ever snapshotted or journaled. */
  runtime?: RuntimeSnapshot;
  /**
   * Per epoch, the highest grant sequence number known to be reflected in `runtime.leases`: a lease id of
   * that epoch with seq at or below it that is not among the leases has ended; above it, it may have been
   * granted while the database was down and is re-adopted.
   */
  grantHighWater: Record<number, number>;
}

export interface StoreOptions {
  clock?: Clock;
  /** Most grants written by one journal statement (default 2000). */
  maxBatch?: number;
  /** Most rows per snapshot statement (default 500); a snapshot of changes commits each statement on its own. */
  snapshotChunk?: number;
  /** Most grants held in memory while the database is down (default 100,000); the oldest are dropped beyond it. */
  maxPending?: number;
  /** Reconnect probe delay while down: first and cap (default 250 ms, 5 s), doubling in between. */
  probeMinMs?: number;
  probeMaxMs?: number;
}

export interface JournalStats {
  /** Journal statements committed. */
  batches: number;
  /** Grants those statements wrote. */
  grants: number;
  /** Grants whose lease had ended before their statement: counted in the high-water mark, never written. */
  ended: number;
}

interface JournalEntry {
  rec: JournaledGrant;
  ticket: number;
  /** The caller awaiting durability; absent once it was told to go ahead from memory. */
  settle?: { resolve: () => void; reject: (err: unknown) => void };
}

const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

const MASTER_KEY_CHECK = "keymesh master key check v1";
const MASTER_KEY_CHECK_CONTEXT = "master_key_check";

/** Domain records are plain JSON data; the driver's JSONValue type cannot see that through their interfaces. */
const asJson = (value: object): postgres.JSONValue => value as postgres.JSONValue;

/**
 * Longest that grants nobody waits for gather before their statement (journalGrantBehind). They share
 * statements, and a lease that ends meanwhile is never written, nor deleted by the next snapshot. The crash
 * window it adds is covered by re-adoption from the lease id.
 */
const JOURNAL_LINGER_MS = 100;

/** Synchronous work between yields to the event loop while a snapshot is prepared. */
const SLICE_MS = 1;

/** OID of text: a parameter already encoded as JSON is sent as text and cast, not encoded again. */
const TEXT_OID = 25;

/** Rows per snapshot statement: its JSON is encoded on the event loop and it competes with the journal, so this bounds both. */
const SNAPSHOT_CHUNK = 500;

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

const secretContext = (pool: string, keyId: string): string => `key:${pool}\u0000${keyId}`;

export class Store {
  readonly journalStats: JournalStats = { batches: 0, grants: 0, ended: 0 };

  readonly #sql: postgres.Sql;
  readonly #box: SecretBox;
  readonly #log: StoreLog;
  readonly #clock: Clock;
  readonly #maxBatch: number;
  readonly #snapshotChunk: number;
  readonly #maxPending: number;
  readonly #probeMinMs: number;
  readonly #probeMaxMs: number;

  #up = true;
  #closed = false;
  #epoch = 0;
  #maxSubmittedSeq = 0;
  #tickets = 0;
  #queue: JournalEntry[] = [];
  #inflight: JournalEntry[] = [];
  #flushing = false;
  /** Entries up to this ticket are due now: a caller waits for one of them, or for the journal to drain. */
  #dueTicket = 0;
  /** Pending while grants nobody waits for gather (journalGrantBehind); when it fires, every queued grant is due. */
  #linger: TimerHandle | undefined;
  /** Whether a lease is still live; a grant whose lease ended before its statement is not written. */
  #isLive: (leaseId: string) => boolean = () => true;
  #drainWaiters: Array<{ ticket: number; resolve: () => void }> = [];
  #dropped = 0;
  #probeTimer: TimerHandle | undefined;
  /** Whether the runtime tables are known to hold the last snapshot written and the journal since (false: next is full). */
  #reconciled = false;
  /** Lease rows as this store last wrote them (journal or snapshot): one it never wrote needs no delete, nor an unchanged one a rewrite. */
  #leaseRows = new Map<string, LeaseRecord>();
  /** The highest grant seq of this epoch that a snapshot written (or being written) accounts for. */
  #coveredSeq = 0;
  #availabilityListeners: Array<(up: boolean) => void> = [];
  #probeDelay: number;

  constructor(sql: postgres.Sql, secretBox: SecretBox, log: StoreLog, options: StoreOptions = {}) {
    this.#sql = sql;
    this.#box = secretBox;
    this.#log = log;
    this.#clock = options.clock ?? systemClock;
    this.#maxBatch = options.maxBatch ?? 2000;
    this.#snapshotChunk = options.snapshotChunk ?? SNAPSHOT_CHUNK;
    this.#maxPending = options.maxPending ?? 100_000;
    this.#probeMinMs = options.probeMinMs ?? 250;
    this.#probeMaxMs = options.probeMaxMs ?? 5000;
    this.#probeDelay = this.#probeMinMs;
  }

  /** A store whose master key has been checked against the database (first start: recorded). */
  static async open(sql: postgres.Sql, secretBox: SecretBox, log: StoreLog, options: StoreOptions = {}): Promise<Store> {
    const store = new Store(sql, secretBox, log, options);
    await store.verifyMasterKey();
    return store;
  }

  /** False while the database is known to be unreachable; the store probes until it returns. */
  get up(): boolean {
    return this.#up;
  }

  set up(value: boolean) {
    if (value) this.#markUp();
    else this.#markDown();
  }

  /** Calls `listener` whenever the database becomes unreachable (false) or reachable again (true). */
  onAvailability(listener: (up: boolean) => void): void {
    this.#availabilityListeners.push(listener);
  }

  /** Tells the journal which leases are still live: a grant whose lease has ended by its statement is not written. */
  skipEndedLeases(isLive: (leaseId: string) => boolean): void {
    this.#isLive = isLive;
  }

  /** Grants waiting to be journaled (held in memory while the database is down). */
  get pendingGrants(): number {
    return this.#queue.length + this.#inflight.length;
  }

  /** The current server epoch (0 before beginEpoch). */
  get epoch(): number {
    return this.#epoch;
  }

  async verifyMasterKey(): Promise<void> {
    const sealed = this.#box.seal(MASTER_KEY_CHECK, MASTER_KEY_CHECK_CONTEXT);
    const [row] = await this.#run(async () => {
      await this.#sql`
        insert into master_key_check (ciphertext, nonce, created_at)
        values (${sealed.ciphertext}, ${sealed.nonce}, ${this.#clock.now()})
        on conflict (singleton) do nothing`;
      return this.#sql<{ ciphertext: Buffer; nonce: Buffer }[]>`select ciphertext, nonce from master_key_check`;
    });
    let check: string;
    try {
      check = this.#box.open(row, MASTER_KEY_CHECK_CONTEXT);
    } catch {
      throw new MasterKeyMismatch();
    }
    if (check !== MASTER_KEY_CHECK) throw new MasterKeyMismatch();
  }

  /** Runs `fn` in one transaction; store errors are translated as for single statements. */
  transaction<T>(fn: (tx: postgres.TransactionSql) => Promise<T>): Promise<T> {
    return this.#run(() => this.#sql.begin(fn) as Promise<T>);
  }

  async ping(): Promise<boolean> {
    try {
      await this.#run(() => this.#sql`select 1`);
    } catch (err) {
      if (err instanceof StoreUnavailable) return false;
      throw err;
    }
    await this.#journalDrained(this.#tickets);
    return true;
  }

  /** Records a new server start; grants of this process carry the returned epoch. */
  async beginEpoch(): Promise<number> {
    const [row] = await this.#run(
      () => this.#sql<{ epoch: number }[]>`insert into server_epochs (started_at) values (${this.#clock.now()}) returning epoch`,
    );
    this.#epoch = row.epoch;
    this.#maxSubmittedSeq = 0;
    this.#coveredSeq = 0;
    return row.epoch;
  }

  /** Everything needed to rebuild the engine, read in one consistent snapshot of the database. */
  async loadAll(db: Queryable = this.#sql): Promise<LoadedState> {
    const read = async (tx: Queryable) => {
      const pools = await tx<PoolRow[]>`select * from pools order by created_at, name`;
      const keys = await tx<KeyRow[]>`select * from keys order by pool, created_at, id`;
      const runtime = await tx<{ pool: string; key_id: string; state: StoredRuntimeState }[]>`
        select r.pool, r.key_id, r.state from key_runtime r order by r.pool, r.key_id`;
      const leases = await tx<LeaseRow[]>`select * from leases order by acquired_at, lease_id`;
      const [meta] = await tx<{ taken_at: number; epoch: number; seq_mark: number }[]>`
        select taken_at, epoch, seq_mark from snapshot_meta`;
      const epochs = await tx<{ epoch: number; max_journaled_seq: number }[]>`
        select epoch, max_journaled_seq from server_epochs`;
      return { pools, keys, runtime, leases, meta, epochs };
    };
    const rows = db === this.#sql
      ? await this.#run(() => this.#sql.begin("isolation level repeatable read read only", read) as ReturnType<typeof read>)
      : await this.#run(() => read(db));
    const grantHighWater: Record<number, number> = {};
    for (const e of rows.epochs) grantHighWater[e.epoch] = e.max_journaled_seq;
    if (rows.meta && rows.meta.epoch in grantHighWater) {
      grantHighWater[rows.meta.epoch] = Math.max(grantHighWater[rows.meta.epoch], rows.meta.seq_mark);
    }
    const hasRuntime = rows.meta !== undefined || rows.runtime.length > 0 || rows.leases.length > 0;
    return {
      pools: rows.pools.map(poolFromRow),
      keys: rows.keys.map((r) => this.#keyFromRow(r)),
      runtime: hasRuntime
        ? {
            takenAt: rows.meta?.taken_at ?? 0,
            keys: rows.runtime.map((r) => runtimeFromRow(r.pool, r.key_id, r.state)),
            leases: rows.leases.map(leaseFromRow),
          }
        : undefined,
      grantHighWater,
    };
  }

  async insertPool(pool: PoolConfig, db: Queryable = this.#sql): Promise<void> {
    await this.#run(() => db`insert into pools ${db(poolRow(pool))}`);
  }

  async updatePool(pool: PoolConfig, db: Queryable = this.#sql): Promise<void> {
    const { name, created_at, ...fields } = poolRow(pool);
    await this.#run(() => db`update pools set ${db(fields)} where name = ${name}`);
  }

  /** Removes the pool with its keys, their runtime state and leases. */
  async deletePool(name: string, db: Queryable = this.#sql): Promise<void> {
    await this.#run(() => db`delete from pools where name = ${name}`);
  }

  async insertKey(key: KeyConfig, db: Queryable = this.#sql): Promise<void> {
    await this.#run(() => db`insert into keys ${db(this.#keyRow(key))}`);
  }

  /** Replaces the key's configuration (the secret is sealed afresh). */
  async updateKey(key: KeyConfig, db: Queryable = this.#sql): Promise<void> {
    const { pool, id, created_at, ...fields } = this.#keyRow(key);
    await this.#run(() => db`update keys set ${db(fields)} where pool = ${pool} and id = ${id}`);
  }

  /** Removes the key with its runtime state and leases. */
  async deleteKey(pool: string, keyId: string, db: Queryable = this.#sql): Promise<void> {
    await this.#run(() => db`delete from keys where pool = ${pool} and id = ${keyId}`);
  }

  /**
   * Makes a grant durable before Acquire answers. Grants arriving while a statement is in flight are
   * written together by the next one, so the cost per grant falls as load rises. While the database is
   * down this resolves at once and keeps the grant (bounded) to write when the database returns.
   * Call it in grant order, synchronously at grant time: snapshots rely on seq order (see writeSnapshot).
   */
  journalGrant(rec: JournaledGrant): Promise<void> {
    const entry = this.#enqueue(rec);
    if (!entry) return Promise.resolve();
    this.#dueTicket = entry.ticket;
    return new Promise<void>((resolve, reject) => {
      entry.settle = { resolve, reject };
      this.#kick();
    });
  }

  /** Queues a grant in seq order; undefined while the database is down or the store closed (it is kept, bounded). */
  #enqueue(rec: JournaledGrant): JournalEntry | undefined {
    if (rec.epoch === this.#epoch && rec.seq > this.#maxSubmittedSeq) this.#maxSubmittedSeq = rec.seq;
    const entry: JournalEntry = { rec, ticket: ++this.#tickets };
    this.#queue.push(entry);
    if (this.#up && !this.#closed) return entry;
    this.#boundPending();
    return undefined;
  }

  /**
   * Whether the next snapshot must be a full one (writeSnapshot) rather than changes (writeChanges): the first
   * of a process, and the first after an outage or a failed snapshot, whose chunks may have partly committed.
   */
  get needsFullSnapshot(): boolean {
    return !this.#reconciled;
  }

  /**
   * Journals a grant whose reply does not wait for it: its key has no max_concurrency, so nothing can be
   * over-lent after a crash, and a lease the journal missed is re-adopted from its id. It waits up to
   * JOURNAL_LINGER_MS for company, less when a grant that is waited for arrives after it or a snapshot drains
   * the journal; if its lease has ended by then, only the epoch's high-water mark records it. A failed write
   * is logged; the next snapshot covers the lease.
   */
  journalGrantBehind(rec: JournaledGrant): void {
    if (this.#enqueue(rec) && this.#linger === undefined) this.#armLinger();
  }

  /** Every queued grant goes when JOURNAL_LINGER_MS is up. */
  #armLinger(): void {
    this.#linger = this.#clock.setTimeout(() => {
      this.#linger = undefined;
      this.#dueTicket = this.#tickets;
      this.#kick();
    }, JOURNAL_LINGER_MS);
  }

  /**
   * Writes the whole runtime state, reconciling whole tables in one transaction. Call it (and writeChanges) in
   * the same tick as the engine's export: grants journaled up to that moment are then either live in `s` or
   * ended, so leases journaled before it and absent from `s` are deleted, and later grants are kept.
   */
  async writeSnapshot(s: RuntimeSnapshot): Promise<void> {
    const epoch = this.#epoch;
    const mark = this.#maxSubmittedSeq;
    // A grant still in flight would otherwise commit after this snapshot deleted it as ended.
    if (this.#up) await this.#journalDrained(this.#tickets);
    // Set first: an outage noticed while this writes must still force the next snapshot to reconcile.
    this.#reconciled = true;
    this.#coveredSeq = Math.max(this.#coveredSeq, mark);
    // Rows of `s` are recorded once written; grants journaled from here on are recorded as they commit.
    const leaseRows = new Map<string, LeaseRecord>();
    this.#leaseRows = leaseRows;
    const runtime = await encodeRuntime(s.keys);
    const meta = { taken_at: s.takenAt, written_at: this.#clock.now(), epoch, seq_mark: mark };
    try {
      await this.#run(() => this.#sql.begin((tx) => this.#writeFull(tx, runtime, s.leases, epoch, mark, meta)));
    } catch (err) {
      this.#reconciled = false;
      throw err;
    }
    this.#supersede(epoch, mark);
    const pace = new Pacer();
    for (const lease of s.leases) {
      if (!leaseRows.has(lease.leaseId)) leaseRows.set(lease.leaseId, lease);
      if (pace.due()) await pace.pause();
    }
  }

  /**
   * Writes what changed since the previous snapshot, each statement of at most `snapshotChunk` rows committing
   * on its own, so a journal commit never waits behind a long transaction (nor, on the embedded database's one
   * connection, behind more than one chunk). A crash between chunks leaves each row either as before or as in
   * `c`, which is safe row by row: only leases ended at the export are deleted, and the mark is recorded last,
   * once every chunk has committed. Between statements it leaves the database to the journal for as long as
   * the last one took: on a busy server, grants commit faster while a snapshot is written, which takes longer.
   * Written when a full snapshot is due too (an outage noticed meanwhile): it is right row by row, and the
   * next snapshot still reconciles.
   */
  async writeChanges(c: RuntimeChanges): Promise<void> {
    const epoch = this.#epoch;
    const mark = this.#maxSubmittedSeq;
    if (this.#up) await this.#journalDrained(this.#tickets);
    this.#coveredSeq = Math.max(this.#coveredSeq, mark);
    const runtime = await encodeRuntime(c.keys);
    const rows = this.#leaseRows;
    const leases: LeaseRecord[] = [];
    const ended: string[] = [];
    const pace = new Pacer();
    for (const lease of c.leases) {
      const row = rows.get(lease.leaseId);
      if (!row || row.expiresAt !== lease.expiresAt || row.ttlMs !== lease.ttlMs || row.holder !== lease.holder) leases.push(lease);
      if (pace.due()) await pace.pause();
    }
    for (const leaseId of c.endedLeases) {
      if (rows.has(leaseId)) ended.push(leaseId);
      if (pace.due()) await pace.pause();
    }
    const meta = { taken_at: c.takenAt, written_at: this.#clock.now(), epoch, seq_mark: mark };
    try {
      await this.#writeChanges(runtime, c.removedKeys, leases, ended, epoch, mark, meta);
    } catch (err) {
      // Some chunks may have committed: the next snapshot reconciles whole tables.
      this.#reconciled = false;
      throw err;
    }
    for (const leaseId of ended) {
      rows.delete(leaseId);
      if (pace.due()) await pace.pause();
    }
    for (const lease of leases) rows.set(lease.leaseId, lease);
    this.#supersede(epoch, mark);
  }

  async #writeFull(tx: Queryable, runtime: EncodedRuntime[], leases: LeaseRecord[], epoch: number, mark: number, meta: SnapshotMeta): Promise<void> {
    // Each batch travels as one jsonb parameter: one statement per purpose and chunk, whatever the row count.
    await tx`
      delete from key_runtime r
      where not exists (
        select 1 from jsonb_to_recordset(${tx.json(runtime.map(({ pool, keyId }) => ({ pool, keyId })))}::jsonb) as s(pool text, "keyId" text)
        where s.pool = r.pool and s."keyId" = r.key_id)`;
    await tx`
      delete from leases l
      where not exists (
        select 1 from jsonb_array_elements_text(${tx.json(leases.map((lease) => lease.leaseId))}::jsonb) as s(lease_id)
        where s.lease_id = l.lease_id)
        and not (l.epoch = ${epoch} and l.seq > ${mark})`;
    for (const chunk of chunks(runtime, this.#snapshotChunk)) await upsertRuntime(tx, chunk);
    for (const chunk of chunks(leases, this.#snapshotChunk)) await upsertLeases(tx, chunk);
    await writeMeta(tx, meta);
  }

  async #writeChanges(
    runtime: EncodedRuntime[],
    removedKeys: RuntimeChanges["removedKeys"],
    leases: LeaseRecord[],
    endedLeases: string[],
    epoch: number,
    mark: number,
    meta: SnapshotMeta,
  ): Promise<void> {
    const sql = this.#sql;
    let rest = 0;
    const paced = async (statement: () => Promise<unknown>): Promise<void> => {
      if (rest > 0) await new Promise<void>((resolve) => this.#clock.setTimeout(resolve, rest));
      const started = this.#clock.now();
      await this.#run(statement);
      rest = this.#clock.now() - started;
    };
    // Removals first: a key removed and added again since has its new state among `runtime`.
    for (const chunk of chunks(removedKeys, this.#snapshotChunk)) {
      await paced(() => sql`
        delete from key_runtime r
        using jsonb_to_recordset(${sql.json(asJson(chunk))}::jsonb) as s(pool text, "keyId" text)
        where s.pool = r.pool and s."keyId" = r.key_id`);
    }
    for (const chunk of chunks(runtime, this.#snapshotChunk)) await paced(() => upsertRuntime(sql, chunk));
    for (const chunk of chunks(endedLeases, this.#snapshotChunk)) {
      await paced(() => sql`
        delete from leases l
        where l.lease_id in (select jsonb_array_elements_text(${sql.json(chunk)}::jsonb))
          and not (l.epoch = ${epoch} and l.seq > ${mark})`);
    }
    for (const chunk of chunks(leases, this.#snapshotChunk)) await paced(() => upsertLeases(sql, chunk));
    await paced(() => writeMeta(sql, meta));
  }

  /** Writes what the journal still holds (when the database is up) and stops probing. */
  async close(): Promise<void> {
    if (this.#up) await this.#journalDrained(this.#tickets);
    this.#closed = true;
    if (this.#probeTimer !== undefined) this.#clock.clearTimeout(this.#probeTimer);
    this.#probeTimer = undefined;
  }

  async #run<T>(op: () => Promise<T>): Promise<T> {
    let result: T;
    try {
      result = await op();
    } catch (err) {
      throw this.#translate(err);
    }
    this.#markUp();
    return result;
  }

  #translate(err: unknown): unknown {
    if (isConnectionError(err)) {
      this.#markDown(err);
      return new StoreUnavailable("database unavailable", { cause: err });
    }
    const state = sqlState(err);
    if (state === "23505" || state === "23503") {
      const constraint = (err as { constraint_name?: string }).constraint_name ?? "";
      const what = state === "23505" ? "already exists" : "refers to a row that does not exist";
      return new StoreConflict(`conflicting change: ${constraint || "row"} ${what}`, constraint, { cause: err });
    }
    return err;
  }

  #markUp(): void {
    if (this.#up) return;
    this.#up = true;
    this.#probeDelay = this.#probeMinMs;
    if (this.#probeTimer !== undefined) this.#clock.clearTimeout(this.#probeTimer);
    this.#probeTimer = undefined;
    this.#log.info({ pendingGrants: this.pendingGrants }, "database reachable again");
    for (const listener of this.#availabilityListeners) listener(true);
    // What queued during the outage goes now.
    this.#dueTicket = this.#tickets;
    this.#kick();
  }

  #markDown(err?: unknown): void {
    // A write cut off mid-commit may or may not have landed: reconcile whole tables next time.
    this.#reconciled = false;
    if (this.#up) {
      this.#up = false;
      this.#log.warn({ code: (err as { code?: string } | undefined)?.code }, "database unreachable: lending from memory");
      for (const listener of this.#availabilityListeners) listener(false);
    }
    // Callers waiting for a write that cannot happen now go ahead from memory; their grants stay queued.
    for (const entry of this.#queue) {
      entry.settle?.resolve();
      entry.settle = undefined;
    }
    this.#boundPending();
    this.#notifyDrained();
    this.#scheduleProbe();
  }

  #scheduleProbe(): void {
    if (this.#probeTimer !== undefined || this.#closed) return;
    const delay = this.#probeDelay;
    this.#probeDelay = Math.min(delay * 2, this.#probeMaxMs);
    this.#probeTimer = this.#clock.setTimeout(() => {
      this.#probeTimer = undefined;
      void this.ping().catch((err: unknown) => {
        this.#log.error({ err: (err as Error).message }, "database probe failed");
        this.#scheduleProbe();
      });
    }, delay);
  }

  #boundPending(): void {
    const excess = this.#queue.length - this.#maxPending;
    if (excess <= 0) return;
    this.#queue.splice(0, excess);
    if (this.#dropped === 0) {
      this.#log.warn({ maxPending: this.#maxPending }, "grant journal full while the database is down: dropping the oldest; the next snapshot covers them");
    }
    this.#dropped += excess;
  }

  #kick(): void {
    if (this.#flushing || !this.#up || !this.#due()) return;
    this.#flushing = true;
    // Let every grant of the current tick join the first statement.
    queueMicrotask(() => void this.#flush());
  }

  /** Whether the oldest queued grant is due (grants go in ticket order, so a due one takes all before it along). */
  #due(): boolean {
    return this.#queue.length > 0 && this.#queue[0]!.ticket <= this.#dueTicket;
  }

  async #flush(): Promise<void> {
    while (this.#up && this.#due()) {
      let n = 1;
      while (n < this.#queue.length && n < this.#maxBatch && this.#queue[n]!.ticket <= this.#dueTicket) n++;
      const batch = this.#queue.splice(0, n);
      this.#inflight = batch;
      const recs = batch.map((e) => e.rec).filter((rec) => this.#isLive(rec.leaseId));
      try {
        await this.#writeGrants(recs, highWater(batch));
        this.#inflight = [];
        this.journalStats.batches += 1;
        this.journalStats.grants += recs.length;
        this.journalStats.ended += batch.length - recs.length;
        for (const rec of recs) this.#leaseRows.set(rec.leaseId, rec);
        // Only after an outage (the drain before a snapshot lets no such grant through): a grant that a snapshot
        // already accounted for may have ended, and its row is then a stray that only a full snapshot removes.
        if (recs.some((rec) => rec.epoch === this.#epoch && rec.seq <= this.#coveredSeq)) this.#reconciled = false;
        for (const entry of batch) entry.settle?.resolve();
      } catch (err) {
        this.#inflight = [];
        if (isConnectionError(err)) {
          for (const entry of batch) {
            entry.settle?.resolve();
            entry.settle = undefined;
          }
          this.#queue.unshift(...batch);
          this.#markDown(err);
        } else {
          this.#log.error({ err: (err as Error).message, grants: batch.length }, "grant journal write failed");
          for (const entry of batch) entry.settle?.reject(err);
        }
      }
      this.#notifyDrained();
    }
    this.#flushing = false;
    // A grant left queued waits for its linger, or for the database to return (#markUp sends it); none left, no linger.
    if (this.#queue.length === 0 && this.#linger !== undefined) {
      this.#clock.clearTimeout(this.#linger);
      this.#linger = undefined;
    }
    this.#kick();
  }

  /** Writes `recs` and raises each epoch's high-water mark to `marks`, which also covers grants left out as ended. */
  async #writeGrants(recs: JournaledGrant[], marks: Array<{ epoch: number; seq: number }>): Promise<void> {
    const sql = this.#sql;
    // One statement, hence one transaction: the leases and the epoch's high-water mark commit together.
    const grants = sql.json(asJson(recs));
    const highWaters = sql.json(marks);
    const write = () => sql`
      with g as (
        select * from jsonb_to_recordset(${grants}::jsonb) as g(
          "leaseId" text, pool text, "keyId" text, holder text,
          "acquiredAt" bigint, "expiresAt" bigint, "ttlMs" bigint, epoch bigint, seq bigint)
      ), journaled as (
        insert into leases (lease_id, pool, key_id, holder, acquired_at, expires_at, ttl_ms, epoch, seq)
        select g."leaseId", g.pool, g."keyId", g.holder, g."acquiredAt", g."expiresAt", g."ttlMs", g.epoch, g.seq
        from g
        -- A per-row probe of the key's index: a join would be planned as a scan of every key.
        where (select true from keys k where k.pool = g.pool and k.id = g."keyId")
        on conflict (lease_id) do nothing
      )
      update server_epochs e set max_journaled_seq = greatest(e.max_journaled_seq, m.seq)
      from jsonb_to_recordset(${highWaters}::jsonb) as m(epoch bigint, seq bigint)
      where e.epoch = m.epoch`;
    try {
      await write();
    } catch (err) {
      // A key removed between the join and the insert: the retry's join leaves its grant out.
      if (sqlState(err) !== "23503") throw err;
      await write();
    }
  }

  /** Resolves once every grant up to `ticket` has left the journal (written, or the database went down). */
  #journalDrained(ticket: number): Promise<void> {
    if (!this.#up || this.#oldestTicket() > ticket) return Promise.resolve();
    // Someone waits: lingering grants go now.
    this.#dueTicket = Math.max(this.#dueTicket, ticket);
    this.#kick();
    return new Promise((resolve) => this.#drainWaiters.push({ ticket, resolve }));
  }

  #oldestTicket(): number {
    return this.#inflight[0]?.ticket ?? this.#queue[0]?.ticket ?? Number.POSITIVE_INFINITY;
  }

  #notifyDrained(): void {
    const oldest = this.#oldestTicket();
    this.#drainWaiters = this.#drainWaiters.filter((w) => {
      if (this.#up && w.ticket >= oldest) return true;
      w.resolve();
      return false;
    });
  }

  /** A committed snapshot covers the epoch's grants up to `mark`: live ones are in it, the rest ended. */
  #supersede(epoch: number, mark: number): void {
    const before = this.#queue.length;
    this.#queue = this.#queue.filter((e) => {
      if (e.rec.epoch !== epoch || e.rec.seq > mark) return true;
      e.settle?.resolve();
      return false;
    });
    if (this.#queue.length !== before) this.#notifyDrained();
  }

  #keyRow(key: KeyConfig): KeyRow {
    const sealed = this.#box.seal(key.secret, secretContext(key.pool, key.id));
    return {
      pool: key.pool,
      id: key.id,
      label: key.label,
      secret_ciphertext: sealed.ciphertext,
      secret_nonce: sealed.nonce,
      secret_hint: mask(key.secret),
      weight: key.weight,
      max_concurrency: key.maxConcurrency,
      quota_group: key.quotaGroup,
      metadata: key.metadata,
      disabled: key.disabled,
      disabled_reason: key.disabledReason,
      created_at: key.createdAt,
      updated_at: key.updatedAt,
    };
  }

  #keyFromRow(r: KeyRow): KeyConfig {
    let secret: string;
    try {
      secret = this.#box.open({ ciphertext: r.secret_ciphertext, nonce: r.secret_nonce }, secretContext(r.pool, r.id));
    } catch {
      throw new MasterKeyMismatch();
    }
    return {
      pool: r.pool,
      id: r.id,
      label: r.label,
      secret,
      weight: r.weight,
      maxConcurrency: r.max_concurrency,
      quotaGroup: r.quota_group,
      metadata: r.metadata,
      disabled: r.disabled,
      disabledReason: r.disabled_reason,
      createdAt: r.created_at,
      updatedAt: r.updated_at,
    };
  }
}

type KeyRuntimeState = Omit<KeyRuntime, "pool" | "keyId">;

/**
 * A key's state as its row holds it: the windows' number lists as comma-separated strings, which jsonb keeps
 * as they are where it would convert every number of an array to numeric (500 keys' rows took Postgres about
 * 40% longer to write with arrays).
 */
type RowState = Omit<KeyRuntimeState, "outcomes" | "grantsPerSecond"> & {
  outcomes: { gaps: string; failed: string };
  grantsPerSecond: { until: number; counts: string };
};

/**
 * A row as this or an earlier version wrote it. Earlier versions kept the success-rate window as
 * [instant, 1 | 0] pairs and the least_used window as [second, count] pairs, or before that as instants.
 */
type StoredRuntimeState = Omit<RowState, "outcomes" | "grantsPerSecond"> & {
  outcomes: RowState["outcomes"] | Array<[number, 0 | 1]>;
  grantsPerSecond?: RowState["grantsPerSecond"] | Array<[number, number]>;
  recentGrants?: number[];
};

function encodeState({ outcomes, grantsPerSecond, ...rest }: KeyRuntimeState): string {
  const row: RowState = {
    ...rest,
    outcomes: { gaps: outcomes.gaps.join(","), failed: outcomes.failed.join(",") },
    grantsPerSecond: { until: grantsPerSecond.until, counts: grantsPerSecond.counts.join(",") },
  };
  return JSON.stringify(row);
}

function runtimeFromRow(pool: string, keyId: string, state: StoredRuntimeState): KeyRuntime {
  const { outcomes, grantsPerSecond, recentGrants, ...rest } = state;
  return { ...rest, outcomes: outcomesFromRow(outcomes), grantsPerSecond: grantsFromRow(grantsPerSecond, recentGrants), pool, keyId };
}

const numbers = (list: string): number[] => (list === "" ? [] : list.split(",").map(Number));

function outcomesFromRow(stored: StoredRuntimeState["outcomes"]): KeyRuntime["outcomes"] {
  if (!Array.isArray(stored)) return { gaps: numbers(stored.gaps), failed: numbers(stored.failed) };
  const window = new OutcomeWindow();
  for (const [at, ok] of stored) window.record(at, ok);
  return window.export();
}

function grantsFromRow(stored: StoredRuntimeState["grantsPerSecond"], instants: number[] = []): KeyRuntime["grantsPerSecond"] {
  if (stored !== undefined && !Array.isArray(stored)) return { until: stored.until, counts: numbers(stored.counts) };
  const window = new GrantWindow();
  for (const [second, count] of stored ?? []) window.addCount(second, count);
  for (const at of instants) window.add(at);
  return window.export();
}

/** A key's runtime row, its state already encoded as JSON. */
interface EncodedRuntime {
  pool: string;
  keyId: string;
  image: string;
}

interface SnapshotMeta {
  taken_at: number;
  written_at: number;
  epoch: number;
  seq_mark: number;
}

/** The highest seq of each epoch among `batch`: what a journal statement accounts for, written or ended. */
function highWater(batch: JournalEntry[]): Array<{ epoch: number; seq: number }> {
  const marks: Array<{ epoch: number; seq: number }> = [];
  for (const { rec } of batch) {
    const mark = marks.find((m) => m.epoch === rec.epoch);
    if (!mark) marks.push({ epoch: rec.epoch, seq: rec.seq });
    else if (rec.seq > mark.seq) mark.seq = rec.seq;
  }
  return marks;
}

function* chunks<T>(rows: T[], size: number): Generator<T[]> {
  for (let i = 0; i < rows.length; i += size) yield rows.slice(i, i + size);
}

/** Encodes each key's state in slices, so Acquire never waits behind the whole encoding. */
async function encodeRuntime(keys: Iterable<KeyRuntime>): Promise<EncodedRuntime[]> {
  const out: EncodedRuntime[] = [];
  const pace = new Pacer();
  for (const { pool, keyId, ...state } of keys) {
    out.push({ pool, keyId, image: encodeState(state) });
    if (pace.due()) await pace.pause();
  }
  return out;
}

/** Each state is encoded already; the rows' JSON wraps it instead of encoding it again. */
function upsertRuntime(db: Queryable, rows: EncodedRuntime[]) {
  const json = `[${rows.map((r) => `{"pool":${JSON.stringify(r.pool)},"keyId":${JSON.stringify(r.keyId)},"state":${r.image}}`).join(",")}]`;
  return db`
    insert into key_runtime (pool, key_id, state)
    select s.pool, s."keyId", s.state
    from jsonb_to_recordset(${db.typed(json, TEXT_OID)}::jsonb) as s(pool text, "keyId" text, state jsonb)
    join keys k on k.pool = s.pool and k.id = s."keyId"
    on conflict (pool, key_id) do update set state = excluded.state`;
}

/** Leases known only from memory (restored or re-adopted) carry epoch 0: no journal covers them. */
function upsertLeases(db: Queryable, rows: LeaseRecord[]) {
  return db`
    insert into leases (lease_id, pool, key_id, holder, acquired_at, expires_at, ttl_ms, epoch, seq)
    select s."leaseId", s.pool, s."keyId", s.holder, s."acquiredAt", s."expiresAt", s."ttlMs", 0, 0
    from jsonb_to_recordset(${db.json(asJson(rows))}::jsonb) as s(
      "leaseId" text, pool text, "keyId" text, holder text, "acquiredAt" bigint, "expiresAt" bigint, "ttlMs" bigint)
    join keys k on k.pool = s.pool and k.id = s."keyId"
    on conflict (lease_id) do update
      set holder = excluded.holder, expires_at = excluded.expires_at, ttl_ms = excluded.ttl_ms`;
}

function writeMeta(db: Queryable, meta: SnapshotMeta) {
  return db`
    insert into snapshot_meta ${db(meta)}
    on conflict (singleton) do update
      set taken_at = excluded.taken_at, written_at = excluded.written_at,
          epoch = excluded.epoch, seq_mark = excluded.seq_mark`;
}

interface PoolRow {
  name: string;
  strategy: Strategy;
  min_ttl_ms: number;
  max_ttl_ms: number;
  default_ttl_ms: number;
  default_cooldown_ms: number;
  max_cooldown_ms: number;
  failure_threshold: number;
  open_duration_ms: number;
  max_open_duration_ms: number;
  half_open_probes: number;
  description: string;
  created_at: number;
  updated_at: number;
}

interface KeyRow {
  pool: string;
  id: string;
  label: string;
  secret_ciphertext: Buffer;
  secret_nonce: Buffer;
  secret_hint: string;
  weight: number;
  max_concurrency: number;
  quota_group: string;
  metadata: Record<string, string>;
  disabled: boolean;
  disabled_reason: string;
  created_at: number;
  updated_at: number;
}

interface LeaseRow {
  lease_id: string;
  pool: string;
  key_id: string;
  holder: string;
  acquired_at: number;
  expires_at: number;
  ttl_ms: number;
}

function poolRow(p: PoolConfig): PoolRow {
  return {
    name: p.name,
    strategy: p.strategy,
    min_ttl_ms: p.minTtlMs,
    max_ttl_ms: p.maxTtlMs,
    default_ttl_ms: p.defaultTtlMs,
    default_cooldown_ms: p.defaultCooldownMs,
    max_cooldown_ms: p.maxCooldownMs,
    failure_threshold: p.failureThreshold,
    open_duration_ms: p.openDurationMs,
    max_open_duration_ms: p.maxOpenDurationMs,
    half_open_probes: p.halfOpenProbes,
    description: p.description,
    created_at: p.createdAt,
    updated_at: p.updatedAt,
  };
}

function poolFromRow(r: PoolRow): PoolConfig {
  return {
    name: r.name,
    strategy: r.strategy,
    minTtlMs: r.min_ttl_ms,
    maxTtlMs: r.max_ttl_ms,
    defaultTtlMs: r.default_ttl_ms,
    defaultCooldownMs: r.default_cooldown_ms,
    maxCooldownMs: r.max_cooldown_ms,
    failureThreshold: r.failure_threshold,
    openDurationMs: r.open_duration_ms,
    maxOpenDurationMs: r.max_open_duration_ms,
    halfOpenProbes: r.half_open_probes,
    description: r.description,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

function leaseFromRow(r: LeaseRow): LeaseRecord {
  return {
    leaseId: r.lease_id,
    pool: r.pool,
    keyId: r.key_id,
    holder: r.holder,
    acquiredAt: r.acquired_at,
    expiresAt: r.expires_at,
    ttlMs: r.ttl_ms,
  };
}
