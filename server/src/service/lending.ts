// Lending: the lease write paths. Acquire is engine grant -> durability decision -> journal -> reply, and
// this file is the one place that decides which grants must be durable before the reply: the guarantee
// that after kill -9 no key is lent beyond its max_concurrency. Ends, renewals and the removal of a drained
// key once its last lease ended go through here too.
import type { PoolEngine } from "../domain/engine.js";
import { DomainError } from "../domain/errors.js";
import type {
  AcquireInput,
  DomainEvent,
  FailureClass,
  FailureReport,
  Grant,
  LeaseGoneReason,
  RateLimitedReport,
  Renewal,
  SuccessReport,
} from "../domain/types.js";
import type { AcquireResult } from "../ops/metrics.js";
import type { ConfigStore } from "../store/config-store.js";
import type { GrantJournal, JournaledGrant } from "../store/journal.js";

type MaybePromise<T> = T | Promise<T>;

/** Hot-path instrumentation (metrics); counters only, nothing that waits. */
export interface LendingObserver {
  /** One finished Acquire: total duration, and when it queued for a key, the time it waited. */
  observeAcquire(pool: string, result: AcquireResult, durationMs: number, waitedMs?: number): void;
}

export interface LendingDeps {
  engine: PoolEngine;
  journal: GrantJournal;
  /** Where a drained key is deleted once its last lease has ended. */
  config: Pick<ConfigStore, "deleteKey">;
  observer: LendingObserver;
  log: { warn(obj: object, msg?: string): void };
}

/** Why an Acquire failed; `waited` tells a wait that timed out from a refusal at once (wait_timeout 0). */
function acquireResult(err: unknown, waited: boolean): Exclude<AcquireResult, "granted"> {
  if (!(err instanceof DomainError)) return "error";
  if (err.code === "no_key_available" || err.code === "pool_empty") return waited ? "timeout" : "no_key";
  if (err.code === "pool_not_found") return "pool_not_found";
  if (err.code === "cancelled") return "cancelled";
  return "error";
}

/**
 * Only a limited key can be over-lent after a crash, so only its grant must be durable before the reply.
 * Batches commit in grant order, so an unlimited key's grant that is lost in a crash lies above the
 * high-water mark and its lease is re-adopted from its id.
 */
const mustBeDurable = (grant: Grant): boolean => grant.maxConcurrency > 0;

export class Lending {
  readonly #engine: PoolEngine;
  readonly #journal: GrantJournal;
  readonly #config: LendingDeps["config"];
  readonly #observer: LendingObserver;
  readonly #log: LendingDeps["log"];
  /** The journal ticket of the last end the engine call in progress made (0: none to write). */
  #endTicket = 0;

  constructor(deps: LendingDeps) {
    this.#engine = deps.engine;
    this.#journal = deps.journal;
    this.#config = deps.config;
    this.#observer = deps.observer;
    this.#log = deps.log;
  }

  /**
   * A Grant, synchronously, when a key is free and its grant need not be durable first: a promise and its
   * microtask cost a tenth of a cycle's throughput (bench floor), so only a wait or a journal commit makes one.
   * `cancellation` is only called when the caller must queue.
   */
  acquire(input: AcquireInput, cancellation?: () => AbortSignal): Grant | Promise<Grant> {
    const started = performance.now();
    let granted: Grant | Promise<Grant>;
    try {
      granted = this.#engine.acquire(input, cancellation);
    } catch (e) {
      this.#observer.observeAcquire(input.pool, acquireResult(e, false), performance.now() - started);
      throw e;
    }
    if (granted instanceof Promise) return this.#waited(input, granted, started);
    return this.#lend(input, granted, started, undefined);
  }

  /** Ends the lease; answers once its end is durable (a promise only when there is an end to write). */
  release(leaseId: string, report: SuccessReport): void | Promise<void> {
    this.#endTicket = 0;
    this.#engine.release(leaseId, report);
    return this.#once(undefined);
  }

  /** Returns the outcome class applied (given, or derived from the HTTP status), once the lease's end is durable. */
  markFailed(leaseId: string, report: FailureReport): MaybePromise<FailureClass | "rate_limited"> {
    this.#endTicket = 0;
    return this.#once(this.#engine.markFailed(leaseId, report));
  }

  markRateLimited(leaseId: string, report: RateLimitedReport): MaybePromise<{ cooldownUntil: number }> {
    this.#endTicket = 0;
    return this.#once(this.#engine.markRateLimited(leaseId, report));
  }

  /** Resolves once every lease end so far is durable: what an admin change that revoked leases answers after. */
  endsDurable(): Promise<void> {
    return this.#journal.endDurable();
  }

  renew(leaseId: string, ttlMs: number | undefined): Renewal {
    return this.#engine.renew(leaseId, ttlMs);
  }

  /** Calls `fn` once if the lease is revoked; returns the unsubscribe function. Throws like renew for an ended lease. */
  watchLease(leaseId: string, fn: (reason: LeaseGoneReason, message: string) => void): () => void {
    return this.#engine.watchLease(leaseId, fn);
  }

  /**
   * Every end of a lease (release, outcome report, expiry, revocation) goes to the journal, so a restart does
   * not bring the lease back; the call that ended it answers once it is durable (see #once).
   */
  leaseEnded(leaseId: string, pool: string, epoch: number, seq: number): void {
    const ticket = this.#journal.recordEnd(leaseId, pool, epoch, seq);
    if (ticket > this.#endTicket) this.#endTicket = ticket;
  }

  /**
   * `value` once the ends the current call made are durable: an answered end never comes back after a crash.
   * Synchronous when it made none to write (an unlimited key's lease ended before its grant was written).
   */
  #once<T>(value: T): MaybePromise<T> {
    const ticket = this.#endTicket;
    this.#endTicket = 0;
    return ticket === 0 ? value : this.#journal.endDurable(ticket).then(() => value);
  }

  /** The engine's events that end a lending write path: a drained key leaves the database with its last lease. */
  onEngineEvent(e: DomainEvent): void {
    if (e.type !== "key_removed") return;
    // Deleting twice is harmless: a key removed at once was deleted by the admin write already.
    this.#config.deleteKey(e.pool, e.keyId!).catch((err: unknown) => this.#log.warn({ err, pool: e.pool, keyId: e.keyId }, "could not delete drained key"));
  }

  /** A grant the journal could not record: nobody will hear of its lease, so its slot is freed at once (if its pool is still here). */
  #unlend(grant: Grant): void {
    try {
      this.#engine.revokeLease(grant.leaseId, "its record could not be written");
    } catch {
      // Ended meanwhile (revoked with its key, say), or dropped with its pool (another replica owns it now): nothing is held.
    }
  }

  async #waited(input: AcquireInput, granted: Promise<Grant>, started: number): Promise<Grant> {
    let grant: Grant;
    try {
      grant = await granted;
    } catch (e) {
      this.#observer.observeAcquire(input.pool, acquireResult(e, true), performance.now() - started, performance.now() - started);
      throw e;
    }
    return this.#lend(input, grant, started, performance.now() - started);
  }

  #lend(input: AcquireInput, grant: Grant, started: number, waitedMs: number | undefined): Grant | Promise<Grant> {
    const record = journalRecord(grant);
    if (mustBeDurable(grant)) {
      return this.#journal.record(record).then(
        () => {
          this.#observer.observeAcquire(input.pool, "granted", performance.now() - started, waitedMs);
          return grant;
        },
        (err: unknown) => {
          this.#unlend(grant);
          this.#observer.observeAcquire(input.pool, "error", performance.now() - started, waitedMs);
          throw err;
        },
      );
    }
    this.#journal.recordBehind(record);
    this.#observer.observeAcquire(input.pool, "granted", performance.now() - started, waitedMs);
    return grant;
  }
}

/** The journal's record of a grant: the lease as granted, with its epoch and seq. */
function journalRecord(grant: Grant): JournaledGrant {
  return { ...grant.record, epoch: grant.epoch, seq: grant.seq };
}
