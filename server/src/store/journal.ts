// The lease journal: grants and ends, group-committed (every record that arrives while one statement is in
// flight goes into the next, one statement per batch), so a restart knows which slots are taken, and only
// those. It is the one writer of the leases table: a snapshot's lease rows go through it too, in its order, so
// no row comes back after its lease's end was written. While the database is down it keeps records in memory
// (bounded) and writes them when it returns. Each statement is fenced: it writes only the records of pools this
// replica still holds under the term it made them in, so a takeover replays exactly what a restart would.
import type postgres from "postgres";
import type { Clock, LeaseRecord, TimerHandle } from "../domain/types.js";
import { systemClock } from "../domain/system-clock.js";
import type { Availability } from "./availability.js";
import { sqlState, StoreRefused, StoreUnavailable } from "./errors.js";
import { OwnershipLost, type Fence } from "./fence.js";
import type { StoreLog } from "./log.js";
import { vacuumLeases, writeJournal } from "./sql/leases.js";
import type { HeldTerm } from "./sql/pool-owners.js";

/** A lease as granted, with the epoch and per-epoch sequence number its id carries. */
export type JournaledGrant = LeaseRecord & { epoch: number; seq: number };

/** A point in the grant sequence: grants of `epoch` up to `seq`. */
export interface GrantMark {
  epoch: number;
  seq: number;
}

/** What lending needs of the journal. Call record and recordBehind in grant order, synchronously at grant time. */
export interface GrantJournal {
  /**
   * Resolves once the grant is durable; rejects with StoreRefused when the database refuses its row (only that
   * grant fails, never its batch), and with OwnershipLost when its pool is no longer this replica's. While the
   * database is down: at once, the grant kept to write later, when lending from memory is allowed; otherwise it
   * rejects with StoreUnavailable.
   */
  record(grant: JournaledGrant): Promise<void>;
  /** Writes the grant soon, with nobody waiting. */
  recordBehind(grant: JournaledGrant): void;
  /**
   * The lease ended: its row goes with the next statement, within END_LINGER_MS when nobody waits. Returns the
   * end's ticket for endDurable, or 0 when there is nothing to write: the end of a grant still queued writes
   * nothing, and neither does that grant.
   */
  recordEnd(leaseId: string, pool: string, epoch: number, seq: number): number;
  /**
   * Resolves once the ends up to `ticket` (default: every end recorded so far) are written, sending them now
   * (at once while the database is down: they are kept to write later). Given a ticket, rejects with OwnershipLost
   * when that end was not written because its pool is no longer this replica's (the new owner ends the lease).
   */
  endDurable(ticket?: number): Promise<void>;
}

/**
 * The journal as the snapshot writer sees it: a snapshot exported after a checkpoint accounts for every grant
 * up to the checkpoint's mark (live ones are in it, the rest ended), and the journal hears when it committed.
 */
export interface JournalProgress {
  /** Call in the export's tick: the mark of every grant submitted so far, once all of them have left the journal. */
  checkpoint(): Promise<GrantMark>;
  /** A committed snapshot covers the grants up to `mark`: those still queued need no statement. */
  supersede(mark: GrantMark): void;
  /** Calls `fn` with the grants each journal statement wrote, once it has committed. */
  onCommit(fn: (grants: readonly JournaledGrant[]) => void): void;
  /**
   * Writes a snapshot's lease rows (insert, or update holder and expiry) in the journal's order; a lease that has
   * ended by then is left out, so a snapshot never brings back a row whose end was journaled. A row the database
   * refuses is left out and logged. `scope` is the terms the snapshot's pools were held under: rows of a pool
   * held under another term now are not written, and it rejects with OwnershipLost. Resolves once written.
   */
  upsert(leases: readonly LeaseRecord[], scope: readonly HeldTerm[]): Promise<void>;
}

export interface JournalOptions {
  /** This server start's epoch: the mark counts its grants. */
  epoch: number;
  /** Whether a lease is still live; a row whose lease ended before its statement is not written. */
  isLive: (leaseId: string) => boolean;
  /** The terms each record's pool is held under, checked by each statement. */
  fence: Fence;
  /**
   * Whether a grant that must be durable may go ahead from memory while the database is down. Not with
   * several replicas: another replica taking the pool over would not know the slot is taken.
   */
  lendFromMemory: boolean;
  clock?: Clock;
  /** Most grants (and, apart, most ends and most snapshot rows) written by one statement (default 2000). */
  maxBatch?: number;
  /** Most grants, and apart most ends, held in memory while the database is down (default 100,000); the oldest are dropped beyond it. */
  maxPending?: number;
  /**
   * Vacuum the leases table after this many ends (a statement of the journal's own), so a database without
   * autovacuum (the embedded one) reuses their space and the table stays bounded; default never.
   */
  vacuumEvery?: number;
}

interface JournalEntry {
  rec: JournaledGrant;
  /** The term the pool was held under when the grant was made; undefined when it was not held. */
  term: number | undefined;
  ticket: number;
  /** The caller awaiting durability; absent once it was told to go ahead from memory. */
  settle?: { resolve: () => void; reject: (err: unknown) => void };
}

/**
 * Longest that grants nobody waits for gather before their statement (recordBehind). They share statements,
 * and a lease that ends meanwhile is never written, nor deleted by the next snapshot. The crash window it
 * adds is covered by re-adoption from the lease id.
 */
const JOURNAL_LINGER_MS = 100;

/**
 * Longest an end nobody waits for (an expiry's) waits for company: a grant's statement, which takes every
 * queued end along. An end that is waited for (a Release's) goes with the next statement at once.
 */
const END_LINGER_MS = 10;

/** A lease's end, with the term its pool was held under when it ended (undefined: not held) and its ticket. */
interface EndEntry {
  leaseId: string;
  pool: string;
  term: number | undefined;
  ticket: number;
}

interface UpsertEntry {
  rows: readonly LeaseRecord[];
  scope: readonly HeldTerm[];
  resolve: () => void;
  reject: (err: unknown) => void;
}

export class PostgresGrantJournal implements GrantJournal, JournalProgress {
  readonly #sql: postgres.Sql;
  readonly #availability: Availability;
  readonly #log: StoreLog;
  readonly #clock: Clock;
  readonly #epoch: number;
  readonly #isLive: (leaseId: string) => boolean;
  readonly #fence: Fence;
  readonly #lendFromMemory: boolean;
  readonly #maxBatch: number;
  readonly #maxPending: number;
  readonly #vacuumEvery: number;
  readonly #committed: Array<(grants: readonly JournaledGrant[]) => void> = [];

  #closed = false;
  #maxSubmittedSeq = 0;
  /** This epoch's grants up to this seq have left the queue (sent, superseded or dropped): their ends must be written. */
  #sentSeq = 0;
  #tickets = 0;
  #queue: JournalEntry[] = [];
  #inflight: JournalEntry[] = [];
  /** Ends whose rows go with the next statement. */
  #ends: EndEntry[] = [];
  #upserts: UpsertEntry[] = [];
  #flushing = false;
  /** Entries up to this ticket are due now: a caller waits for one of them, or for the journal to drain. */
  #dueTicket = 0;
  /** Pending while grants nobody waits for gather (recordBehind); when it fires, every queued grant is due. */
  #linger: TimerHandle | undefined;
  /** Pending while queued ends wait for company; when it fires, they are due. */
  #endLinger: TimerHandle | undefined;
  #endsDue = false;
  #drainWaiters: Array<{ ticket: number; resolve: () => void }> = [];
  /** Ends recorded, and ends written or dropped, since the start: ends leave the journal in the order they came. */
  #endsQueued = 0;
  #endsDone = 0;
  /** `ofOne`: waits for the end of one call, which fails if that end was left unwritten as its pool's was lost. */
  #endWaiters: Array<{ upTo: number; ofOne: boolean; resolve: () => void; reject: (err: unknown) => void }> = [];
  /** Tickets of ends left unwritten because their pool moved to another replica, until their waiter hears it. */
  #lostEnds = new Map<number, string>();
  #dropped = 0;
  #droppedEnds = 0;
  /** Ends written since the last vacuum. */
  #unvacuumed = 0;

  constructor(sql: postgres.Sql, availability: Availability, log: StoreLog, options: JournalOptions) {
    this.#sql = sql;
    this.#availability = availability;
    this.#log = log;
    this.#clock = options.clock ?? systemClock;
    this.#epoch = options.epoch;
    this.#isLive = options.isLive;
    this.#fence = options.fence;
    this.#lendFromMemory = options.lendFromMemory;
    this.#maxBatch = options.maxBatch ?? 2000;
    this.#maxPending = options.maxPending ?? 100_000;
    this.#vacuumEvery = options.vacuumEvery ?? Number.POSITIVE_INFINITY;
    availability.observe({ lost: () => this.#lost(), reached: () => this.#reached() });
  }

  /** Records waiting to be journaled (held in memory while the database is down). */
  get pending(): number {
    return this.#queue.length + this.#inflight.length + this.#ends.length;
  }

  /**
   * Makes a grant durable before Acquire answers. Records arriving while a statement is in flight are
   * written together by the next one, so the cost per grant falls as load rises.
   */
  record(rec: JournaledGrant): Promise<void> {
    const entry = this.#enqueue(rec);
    if (!entry) {
      if (this.#lendFromMemory) return Promise.resolve();
      return Promise.reject(new StoreUnavailable("database unavailable: a grant that must be durable cannot be made"));
    }
    if (entry.term === undefined) return Promise.reject(new OwnershipLost([rec.pool]));
    this.#dueTicket = entry.ticket;
    return new Promise<void>((resolve, reject) => {
      entry.settle = { resolve, reject };
      this.#kick();
    });
  }

  /**
   * Journals a grant whose reply does not wait for it. It waits up to JOURNAL_LINGER_MS for company, less when
   * a grant that is waited for arrives after it or a snapshot drains the journal; if its lease has ended by
   * then, only the epoch's high-water mark records it. A failed write is logged; the next snapshot covers the lease.
   */
  recordBehind(rec: JournaledGrant): void {
    if (this.#enqueue(rec) && this.#linger === undefined) this.#armLinger();
  }

  recordEnd(leaseId: string, pool: string, epoch: number, seq: number): number {
    // Its grant is still queued: the statement that takes it leaves it out as ended, and there is no row to delete.
    if (epoch === this.#epoch && seq > this.#sentSeq) return 0;
    const ticket = ++this.#endsQueued;
    this.#ends.push({ leaseId, pool, term: this.#fence.termOf(pool), ticket });
    if (!this.#availability.up || this.#closed) {
      this.#boundEnds();
      return ticket;
    }
    if (this.#endsDue) this.#kick();
    else if (this.#endLinger === undefined) {
      this.#endLinger = this.#clock.setTimeout(() => {
        this.#endLinger = undefined;
        this.#endsDue = true;
        this.#kick();
      }, END_LINGER_MS);
    }
    return ticket;
  }

  endDurable(ticket?: number): Promise<void> {
    const upTo = ticket ?? this.#endsQueued;
    if (!this.#availability.up || this.#endsDone >= upTo) return Promise.resolve();
    this.#endsDue = true;
    this.#kick();
    return new Promise((resolve, reject) => this.#endWaiters.push({ upTo, ofOne: ticket !== undefined, resolve, reject }));
  }

  upsert(rows: readonly LeaseRecord[], scope: readonly HeldTerm[]): Promise<void> {
    if (rows.length === 0) return Promise.resolve();
    // While the database is thought down the journal sends nothing, so nothing of it can come between: the
    // snapshot's statement goes at once, and finds out whether the database is back.
    if (!this.#availability.up) return this.#upsertNow(rows, scope);
    return new Promise<void>((resolve, reject) => {
      this.#upserts.push({ rows, scope, resolve, reject });
      this.#kick();
    });
  }

  /** A snapshot's rows in a statement of their own, fenced by its scope. */
  async #upsertNow(leases: readonly LeaseRecord[], scope: readonly HeldTerm[]): Promise<void> {
    const rows = journalRows([], [{ rows: leases, scope, resolve() {}, reject() {} }], (lease, terms) => this.#isLive(lease.leaseId) && this.#holds(lease.pool, terms.get(lease.pool)));
    const terms = currentTerms(rows, (pool) => this.#fence.termOf(pool));
    const kept = new Set(await this.#statement(terms, rows, [], []));
    const lost = terms.filter((t) => !kept.has(t.pool)).map((t) => t.pool);
    if (lost.length > 0) this.#fence.lost(lost);
    const exported = new Map(scope.map((h) => [h.pool, h.term]));
    const gone = [...new Set(leases.map((lease) => lease.pool))].filter((pool) => !this.#holds(pool, exported.get(pool)));
    if (gone.length > 0) throw new OwnershipLost(gone);
  }

  /** Whether the pool is still held under `term` (a record made under it may be written). */
  #holds(pool: string, term: number | undefined): boolean {
    return term !== undefined && term === this.#fence.termOf(pool);
  }

  checkpoint(): Promise<GrantMark> {
    const mark = { epoch: this.#epoch, seq: this.#maxSubmittedSeq };
    // A grant still in flight would otherwise commit after the snapshot deleted it as ended.
    if (!this.#availability.up) return Promise.resolve(mark);
    return this.#drained(this.#tickets).then(() => mark);
  }

  supersede(mark: GrantMark): void {
    const before = this.#queue.length;
    this.#queue = this.#queue.filter((e) => {
      if (e.rec.epoch !== mark.epoch || e.rec.seq > mark.seq) return true;
      e.settle?.resolve();
      return false;
    });
    if (mark.epoch === this.#epoch) this.#sentSeq = Math.max(this.#sentSeq, mark.seq);
    if (this.#queue.length !== before) this.#notifyDrained();
  }

  onCommit(fn: (grants: readonly JournaledGrant[]) => void): void {
    this.#committed.push(fn);
  }

  /** Writes what the journal still holds (when the database is up); later records are only kept in memory. */
  async close(): Promise<void> {
    if (this.#availability.up) await Promise.all([this.#drained(this.#tickets), this.endDurable()]);
    this.#closed = true;
    if (this.#endLinger !== undefined) this.#clock.clearTimeout(this.#endLinger);
    this.#endLinger = undefined;
  }

  /** Queues a grant in seq order; undefined while the database is down or the journal closed (it is kept, bounded). */
  #enqueue(rec: JournaledGrant): JournalEntry | undefined {
    if (rec.epoch === this.#epoch && rec.seq > this.#maxSubmittedSeq) this.#maxSubmittedSeq = rec.seq;
    const entry: JournalEntry = { rec, term: this.#fence.termOf(rec.pool), ticket: ++this.#tickets };
    this.#queue.push(entry);
    if (this.#availability.up && !this.#closed) return entry;
    this.#boundPending();
    return undefined;
  }

  /** Every queued grant goes when JOURNAL_LINGER_MS is up. */
  #armLinger(): void {
    this.#linger = this.#clock.setTimeout(() => {
      this.#linger = undefined;
      this.#dueTicket = this.#tickets;
      this.#kick();
    }, JOURNAL_LINGER_MS);
  }

  /** Callers waiting for a write that cannot happen now go ahead from memory (or fail, when that is not allowed); their records stay queued. */
  #lost(): void {
    for (const entry of this.#queue) this.#unsettle(entry);
    // A snapshot that waits for its rows fails now; the next one after the outage is a full one.
    for (const u of this.#upserts.splice(0)) u.reject(new StoreUnavailable("database unavailable"));
    this.#boundPending();
    this.#boundEnds();
    this.#notifyDrained();
    this.#notifyEnds();
  }

  /** What queued during the outage goes now. */
  #reached(): void {
    if (this.pending > 0) this.#log.info({ pendingGrants: this.#queue.length, pendingEnds: this.#ends.length }, "writing the lease records kept while the database was unreachable");
    this.#dueTicket = this.#tickets;
    this.#endsDue = this.#ends.length > 0;
    this.#kick();
  }

  #boundPending(): void {
    const excess = this.#queue.length - this.#maxPending;
    if (excess <= 0) return;
    for (const e of this.#queue.splice(0, excess)) if (e.rec.epoch === this.#epoch) this.#sentSeq = Math.max(this.#sentSeq, e.rec.seq);
    if (this.#dropped === 0) {
      this.#log.warn({ maxPending: this.#maxPending }, "lease journal holds too many grants while the database is down: dropping the oldest; the next snapshot covers them");
    }
    this.#dropped += excess;
  }

  #boundEnds(): void {
    const excess = this.#ends.length - this.#maxPending;
    if (excess <= 0) return;
    this.#ends.splice(0, excess);
    this.#endsDone += excess;
    if (this.#droppedEnds === 0) {
      this.#log.warn({ maxPending: this.#maxPending }, "lease journal holds too many ends while the database is down: dropping the oldest; the next snapshot (a full one) covers them");
    }
    this.#droppedEnds += excess;
  }

  #kick(): void {
    if (this.#flushing || !this.#availability.up || !this.#due()) return;
    this.#flushing = true;
    // Let every record of the current tick join the first statement.
    queueMicrotask(() => void this.#flush());
  }

  /** Whether a statement is due: a grant is (grants go in ticket order, so a due one takes all before it along), ends are, or a snapshot's rows wait. */
  #due(): boolean {
    return this.#grantsDue() || (this.#endsDue && this.#ends.length > 0) || this.#upserts.length > 0;
  }

  #grantsDue(): boolean {
    return this.#queue.length > 0 && this.#queue[0]!.ticket <= this.#dueTicket;
  }

  async #flush(): Promise<void> {
    while (this.#availability.up && this.#due()) {
      let n = 0;
      if (this.#grantsDue()) {
        n = 1;
        while (n < this.#queue.length && n < this.#maxBatch && this.#queue[n]!.ticket <= this.#dueTicket) n++;
      }
      const batch = this.#queue.splice(0, n);
      for (const { rec } of batch) if (rec.epoch === this.#epoch && rec.seq > this.#sentSeq) this.#sentSeq = rec.seq;
      this.#inflight = batch;
      // Every queued end goes along: an end has no order to keep but after its grant, which has left the queue.
      const ends = this.#ends.splice(0, this.#maxBatch);
      if (this.#ends.length === 0) this.#settleEnds();
      const upserts = this.#takeUpserts();
      // A record made under a term no longer held (its pool was dropped since) is not written: it is lost.
      const held = (pool: string, term: number | undefined) => this.#holds(pool, term);
      const current = new Set<object>();
      for (const e of batch) if (held(e.rec.pool, e.term)) current.add(e);
      for (const e of ends) if (held(e.pool, e.term)) current.add(e);
      const grants = batch.filter((e) => current.has(e) && this.#isLive(e.rec.leaseId)).map((e) => e.rec);
      const endIds = ends.filter((e) => current.has(e)).map((e) => e.leaseId);
      const rows = journalRows(grants, upserts, (lease, scope) => this.#isLive(lease.leaseId) && held(lease.pool, scope.get(lease.pool)));
      const terms = currentTerms([...rows, ...ends.filter((e) => current.has(e))], (pool) => this.#fence.termOf(pool));
      const marks = highWater(batch);
      try {
        const { kept, refused } = await this.#write(terms, rows, endIds, marks);
        this.#inflight = [];
        const lost = new Set(terms.filter((t) => !kept.has(t.pool)).map((t) => t.pool));
        if (lost.size > 0) this.#fence.lost([...lost]);
        const written = grants.filter((rec) => !lost.has(rec.pool) && !refused.has(rec.leaseId));
        for (const fn of this.#committed) fn(written);
        for (const entry of batch) {
          const err = current.has(entry) && !lost.has(entry.rec.pool) ? refused.get(entry.rec.leaseId) : new OwnershipLost([entry.rec.pool]);
          if (err) entry.settle?.reject(err);
          else entry.settle?.resolve();
        }
        for (const u of upserts) {
          const scope = new Map(u.scope.map((h) => [h.pool, h.term]));
          const gone = [...new Set(u.rows.map((lease) => lease.pool))].filter((pool) => lost.has(pool) || !held(pool, scope.get(pool)));
          if (gone.length > 0) u.reject(new OwnershipLost(gone));
          else u.resolve();
        }
        for (const e of ends) if (!current.has(e) || lost.has(e.pool)) this.#lostEnds.set(e.ticket, e.pool);
        this.#endsDone += ends.length;
        this.#notifyEnds();
        this.#unvacuumed += ends.length;
        if (this.#unvacuumed >= this.#vacuumEvery) await this.#vacuum();
      } catch (err) {
        this.#inflight = [];
        if (err instanceof StoreUnavailable) {
          // The database went down (Availability has told #lost): the records wait with the rest.
          for (const entry of batch) this.#unsettle(entry);
          this.#queue.unshift(...batch);
          this.#ends.unshift(...ends);
          for (const u of upserts) u.reject(err);
        } else {
          this.#log.error({ err: (err as Error).name, code: sqlState(err), grants: batch.length, ends: ends.length }, "lease journal write failed");
          for (const entry of batch) entry.settle?.reject(err);
          for (const u of upserts) u.reject(err);
          // Their rows stay until a full snapshot reconciles the table; nobody waits for them for ever.
          this.#endsDone += ends.length;
          this.#notifyEnds();
        }
      }
      this.#notifyDrained();
    }
    this.#flushing = false;
    // A grant left queued waits for its linger, or for the database to return (#reached sends it); none left, no linger.
    if (this.#queue.length === 0 && this.#linger !== undefined) {
      this.#clock.clearTimeout(this.#linger);
      this.#linger = undefined;
    }
    this.#kick();
  }

  /** Between two statements of the journal, so nothing of its own waits behind it for longer than it takes. */
  async #vacuum(): Promise<void> {
    this.#unvacuumed = 0;
    try {
      await this.#availability.run(() => vacuumLeases(this.#sql));
    } catch (err) {
      this.#log.warn({ err: (err as Error).name, code: sqlState(err) }, "leases table not vacuumed");
    }
  }

  /** No end left queued: the end linger has nothing to wait for. */
  #settleEnds(): void {
    this.#endsDue = false;
    if (this.#endLinger !== undefined) this.#clock.clearTimeout(this.#endLinger);
    this.#endLinger = undefined;
  }

  /** The snapshot upserts that fit one statement (at least one, whatever its size). */
  #takeUpserts(): UpsertEntry[] {
    let n = 0;
    let rows = 0;
    while (n < this.#upserts.length && (n === 0 || rows + this.#upserts[n]!.rows.length <= this.#maxBatch)) rows += this.#upserts[n++]!.rows.length;
    return this.#upserts.splice(0, n);
  }

  /**
   * One statement: `rows` inserted (or their holder and expiry updated), the rows of the leases in `ends` deleted,
   * each epoch's high-water mark raised to `marks` (which also covers grants left out as ended), all of it only
   * for the pools still held under `terms`. When the database refuses the statement for its data, each row goes
   * alone, so only a refused row fails. Returns the pools still held, and the refused rows with the error to answer.
   */
  async #write(terms: HeldTerm[], rows: JournaledGrant[], ends: string[], marks: GrantMark[]): Promise<{ kept: Set<string>; refused: Map<string, StoreRefused> }> {
    try {
      return { kept: new Set(await this.#statement(terms, rows, ends, marks)), refused: new Map() };
    } catch (err) {
      if (err instanceof StoreUnavailable || rows.length === 0) throw err;
      this.#log.warn({ code: sqlState(err), rows: rows.length }, "lease journal statement refused: writing its rows one at a time");
    }
    const kept = new Set(terms.map((t) => t.pool));
    const still = async (asked: HeldTerm[], statement: Promise<string[]>) => {
      const held = new Set(await statement);
      for (const t of asked) if (!held.has(t.pool)) kept.delete(t.pool);
    };
    const refused = new Map<string, StoreRefused>();
    // Rows in grant order, each with the mark up to itself, so a crash midway leaves no grant below a mark unwritten.
    for (const row of rows) {
      const own = terms.filter((t) => t.pool === row.pool && kept.has(t.pool));
      if (own.length === 0) continue;
      try {
        await still(own, this.#statement(own, [row], [], row.epoch > 0 ? [{ epoch: row.epoch, seq: row.seq }] : []));
      } catch (err) {
        if (err instanceof StoreUnavailable) throw err;
        this.#log.error({ code: sqlState(err), pool: row.pool, keyId: row.keyId }, "lease journal row refused by the database");
        refused.set(row.leaseId, new StoreRefused("the database refused this lease's record", { cause: err }));
      }
    }
    const rest = terms.filter((t) => kept.has(t.pool));
    await still(rest, this.#statement(rest, [], ends, marks));
    return { kept, refused };
  }

  #statement(terms: HeldTerm[], rows: JournaledGrant[], ends: string[], marks: GrantMark[]): Promise<string[]> {
    const owner = this.#fence.owner;
    return this.#availability.run(() => writeJournal(this.#sql, owner, terms, rows, ends, marks));
  }

  /** A caller waiting for a write that cannot happen now goes ahead from memory, or fails when that is not allowed. */
  #unsettle(entry: JournalEntry): void {
    if (this.#lendFromMemory) entry.settle?.resolve();
    else entry.settle?.reject(new StoreUnavailable("database unavailable: a grant that must be durable cannot be made"));
    entry.settle = undefined;
  }

  /** Resolves once every grant up to `ticket` and every queued end has left the journal (written, or the database went down). */
  #drained(ticket: number): Promise<void> {
    if (!this.#availability.up || this.#oldestTicket() > ticket) return Promise.resolve();
    // Someone waits: lingering grants go now.
    this.#dueTicket = Math.max(this.#dueTicket, ticket);
    this.#kick();
    return new Promise((resolve) => this.#drainWaiters.push({ ticket, resolve }));
  }

  #notifyEnds(): void {
    this.#endWaiters = this.#endWaiters.filter((w) => {
      if (this.#availability.up && w.upTo > this.#endsDone) return true;
      const pool = w.ofOne ? this.#lostEnds.get(w.upTo) : undefined;
      if (pool === undefined) w.resolve();
      else w.reject(new OwnershipLost([pool]));
      return false;
    });
    // Every end left unwritten that a caller waits for was waited for before its statement: the rest is nobody's.
    this.#lostEnds.clear();
  }

  #oldestTicket(): number {
    return this.#inflight[0]?.ticket ?? this.#queue[0]?.ticket ?? Number.POSITIVE_INFINITY;
  }

  #notifyDrained(): void {
    const oldest = this.#oldestTicket();
    this.#drainWaiters = this.#drainWaiters.filter((w) => {
      if (this.#availability.up && w.ticket >= oldest) return true;
      w.resolve();
      return false;
    });
  }
}

/**
 * The rows of one statement: the grants still live, then a snapshot's rows that `keep` (still live, their pool
 * still held under the snapshot's term) as rows of epoch 0 (no journal mark covers them). One row per lease, as
 * one statement cannot insert and then update the same row: a grant that a snapshot row also carries takes that
 * row's holder and expiry.
 */
function journalRows(grants: JournaledGrant[], upserts: UpsertEntry[], keep: (lease: LeaseRecord, scope: ReadonlyMap<string, number>) => boolean): JournaledGrant[] {
  if (upserts.length === 0) return grants;
  const snapshot = new Map<string, LeaseRecord>();
  for (const u of upserts) {
    const scope = new Map(u.scope.map((h) => [h.pool, h.term]));
    for (const lease of u.rows) if (keep(lease, scope)) snapshot.set(lease.leaseId, lease);
  }
  const rows = grants.map((g) => {
    const lease = snapshot.get(g.leaseId);
    if (!lease) return g;
    snapshot.delete(g.leaseId);
    return { ...lease, epoch: g.epoch, seq: g.seq };
  });
  for (const lease of snapshot.values()) rows.push({ ...lease, epoch: 0, seq: 0 });
  return rows;
}

/** Each pool of `records` that is held now, with its term: what a statement is fenced by. */
function currentTerms(records: ReadonlyArray<{ pool: string }>, termOf: (pool: string) => number | undefined): HeldTerm[] {
  const terms = new Map<string, number>();
  for (const { pool } of records) {
    if (terms.has(pool)) continue;
    const term = termOf(pool);
    if (term !== undefined) terms.set(pool, term);
  }
  return [...terms].map(([pool, term]) => ({ pool, term }));
}

/** The highest seq of each epoch among `batch`: what a journal statement accounts for, written or ended. */
function highWater(batch: JournalEntry[]): GrantMark[] {
  const marks: GrantMark[] = [];
  for (const { rec } of batch) {
    const mark = marks.find((m) => m.epoch === rec.epoch);
    if (!mark) marks.push({ epoch: rec.epoch, seq: rec.seq });
    else if (rec.seq > mark.seq) mark.seq = rec.seq;
  }
  return marks;
}
