// The grant journal: leases as granted, group-committed (every grant that arrives while one statement is in
// flight goes into the next), so a restart or a takeover knows which slots were taken. Each statement is
// fenced: it writes only the grants of pools this replica still holds under the term it granted them in.
// While the database is down it keeps grants in memory (bounded) and writes them when it returns.
import type postgres from "postgres";
import type { Clock, LeaseRecord, TimerHandle } from "../domain/types.js";
import { systemClock } from "../domain/system-clock.js";
import type { Availability } from "./availability.js";
import { sqlState, StoreUnavailable } from "./errors.js";
import { OwnershipLost, type Fence } from "./fence.js";
import type { StoreLog } from "./log.js";
import type { HeldTerm } from "./sql/pool-owners.js";
import { insertJournaledLeases } from "./sql/leases.js";

/** A lease as granted, with the epoch and per-epoch sequence number its id carries. */
export type JournaledGrant = LeaseRecord & { epoch: number; seq: number };

/** A point in the grant sequence: grants of `epoch` up to `seq`. */
export interface GrantMark {
  epoch: number;
  seq: number;
}

/** What lending needs of the journal. Call both in grant order, synchronously at grant time. */
export interface GrantJournal {
  /**
   * Resolves once the grant is durable; rejects with OwnershipLost when its pool is no longer this replica's.
   * While the database is down: at once, the grant kept to write later, when lending from memory is allowed;
   * otherwise it rejects with StoreUnavailable.
   */
  record(grant: JournaledGrant): Promise<void>;
  /** Writes the grant soon, with nobody waiting. */
  recordBehind(grant: JournaledGrant): void;
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
}

export interface JournalOptions {
  /** This server start's epoch: the mark counts its grants. */
  epoch: number;
  /** Whether a lease is still live; a grant whose lease ended before its statement is not written. */
  isLive: (leaseId: string) => boolean;
  /** The terms each grant's pool is held under, checked by each statement. */
  fence: Fence;
  /**
   * Whether a grant that must be durable may go ahead from memory while the database is down. Not with
   * several replicas: another replica taking the pool over would not know the slot is taken.
   */
  lendFromMemory: boolean;
  clock?: Clock;
  /** Most grants written by one statement (default 2000). */
  maxBatch?: number;
  /** Most grants held in memory while the database is down (default 100,000); the oldest are dropped beyond it. */
  maxPending?: number;
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
  readonly #committed: Array<(grants: readonly JournaledGrant[]) => void> = [];

  #closed = false;
  #maxSubmittedSeq = 0;
  #tickets = 0;
  #queue: JournalEntry[] = [];
  #inflight: JournalEntry[] = [];
  #flushing = false;
  /** Entries up to this ticket are due now: a caller waits for one of them, or for the journal to drain. */
  #dueTicket = 0;
  /** Pending while grants nobody waits for gather (recordBehind); when it fires, every queued grant is due. */
  #linger: TimerHandle | undefined;
  #drainWaiters: Array<{ ticket: number; resolve: () => void }> = [];
  #dropped = 0;

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
    availability.observe({ lost: () => this.#lost(), reached: () => this.#reached() });
  }

  /** Grants waiting to be journaled (held in memory while the database is down). */
  get pending(): number {
    return this.#queue.length + this.#inflight.length;
  }

  /**
   * Makes a grant durable before Acquire answers. Grants arriving while a statement is in flight are
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
    if (this.#queue.length !== before) this.#notifyDrained();
  }

  onCommit(fn: (grants: readonly JournaledGrant[]) => void): void {
    this.#committed.push(fn);
  }

  /** Writes what the journal still holds (when the database is up); later grants are only kept in memory. */
  async close(): Promise<void> {
    if (this.#availability.up) await this.#drained(this.#tickets);
    this.#closed = true;
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

  /** Callers waiting for a write that cannot happen now go ahead from memory (or fail, when that is not allowed); their grants stay queued. */
  #lost(): void {
    for (const entry of this.#queue) this.#unsettle(entry);
    this.#boundPending();
    this.#notifyDrained();
  }

  /** What queued during the outage goes now. */
  #reached(): void {
    if (this.pending > 0) this.#log.info({ pendingGrants: this.pending }, "writing the grants kept while the database was unreachable");
    this.#dueTicket = this.#tickets;
    this.#kick();
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
    if (this.#flushing || !this.#availability.up || !this.#due()) return;
    this.#flushing = true;
    // Let every grant of the current tick join the first statement.
    queueMicrotask(() => void this.#flush());
  }

  /** Whether the oldest queued grant is due (grants go in ticket order, so a due one takes all before it along). */
  #due(): boolean {
    return this.#queue.length > 0 && this.#queue[0]!.ticket <= this.#dueTicket;
  }

  async #flush(): Promise<void> {
    while (this.#availability.up && this.#due()) {
      let n = 1;
      while (n < this.#queue.length && n < this.#maxBatch && this.#queue[n]!.ticket <= this.#dueTicket) n++;
      const batch = this.#queue.splice(0, n);
      this.#inflight = batch;
      const recs = batch.map((e) => e.rec).filter((rec) => this.#isLive(rec.leaseId));
      try {
        const kept = new Set(await this.#write(heldTerms(batch), recs, highWater(batch)));
        this.#inflight = [];
        const lost = new Set<string>();
        for (const entry of batch) if (!kept.has(entry.rec.pool)) lost.add(entry.rec.pool);
        const written = lost.size === 0 ? recs : recs.filter((rec) => kept.has(rec.pool));
        for (const fn of this.#committed) fn(written);
        for (const entry of batch) {
          if (!lost.has(entry.rec.pool)) entry.settle?.resolve();
          else entry.settle?.reject(new OwnershipLost([entry.rec.pool]));
        }
        if (lost.size > 0) this.#fence.lost([...lost]);
      } catch (err) {
        this.#inflight = [];
        if (err instanceof StoreUnavailable) {
          // The database went down (Availability has told #lost): the batch waits with the rest.
          for (const entry of batch) this.#unsettle(entry);
          this.#queue.unshift(...batch);
        } else {
          this.#log.error({ err: (err as Error).message, grants: batch.length }, "grant journal write failed");
          for (const entry of batch) entry.settle?.reject(err);
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

  /**
   * Writes the `recs` of pools still held under `terms` and raises each epoch's high-water mark to `marks`,
   * which also covers grants left out as ended. Resolves to the pools still held.
   */
  #write(terms: HeldTerm[], recs: JournaledGrant[], marks: GrantMark[]): Promise<string[]> {
    const owner = this.#fence.owner;
    return this.#availability.run(async () => {
      try {
        return await insertJournaledLeases(this.#sql, owner, terms, recs, marks);
      } catch (err) {
        // A key removed between the probe and the insert: the retry's probe leaves its grant out.
        if (sqlState(err) !== "23503") throw err;
        return insertJournaledLeases(this.#sql, owner, terms, recs, marks);
      }
    });
  }

  /** A caller waiting for a write that cannot happen now goes ahead from memory, or fails when that is not allowed. */
  #unsettle(entry: JournalEntry): void {
    if (this.#lendFromMemory) entry.settle?.resolve();
    else entry.settle?.reject(new StoreUnavailable("database unavailable: a grant that must be durable cannot be made"));
    entry.settle = undefined;
  }

  /** Resolves once every grant up to `ticket` has left the journal (written, or the database went down). */
  #drained(ticket: number): Promise<void> {
    if (!this.#availability.up || this.#oldestTicket() > ticket) return Promise.resolve();
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
      if (this.#availability.up && w.ticket >= oldest) return true;
      w.resolve();
      return false;
    });
  }
}

/** Each pool of `batch` with the term its grants were made under (a pool not held then has none, and is lost). */
function heldTerms(batch: JournalEntry[]): HeldTerm[] {
  const terms = new Map<string, number>();
  for (const { rec, term } of batch) if (term !== undefined) terms.set(rec.pool, term);
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
