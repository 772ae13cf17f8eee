// Whether the database is reachable, as the store last found it. Every statement of the store runs through
// run(): a connection failure marks the database down, a success marks it up again, and while it is down a
// probe retries with backoff. The journal and the snapshot writer react to both; so do the listeners.
import type postgres from "postgres";
import type { Clock, TimerHandle } from "../domain/types.js";
import { systemClock } from "../domain/system-clock.js";
import { isConnectionError, StoreUnavailable, translateStatementError } from "./errors.js";
import type { StoreLog } from "./log.js";

export interface AvailabilityOptions {
  clock?: Clock;
  /** Reconnect probe delay while down: first and cap (default 250 ms, 5 s), doubling in between. */
  probeMinMs?: number;
  probeMaxMs?: number;
}

/** What a store component does when the database goes away and comes back. */
export interface AvailabilityObserver {
  /** Every connection failure, also while already down: a write cut off mid-commit may or may not have landed. */
  lost(): void;
  /** The database answers again after being down. */
  reached(): void;
}

export class Availability {
  readonly #sql: postgres.Sql;
  readonly #log: StoreLog;
  readonly #clock: Clock;
  readonly #probeMinMs: number;
  readonly #probeMaxMs: number;
  readonly #observers: AvailabilityObserver[] = [];
  readonly #listeners: Array<(up: boolean) => void> = [];
  #up = true;
  #closed = false;
  #probeTimer: TimerHandle | undefined;
  #probeDelay: number;
  #heartbeatTimer: TimerHandle | undefined;

  constructor(sql: postgres.Sql, log: StoreLog, options: AvailabilityOptions = {}) {
    this.#sql = sql;
    this.#log = log;
    this.#clock = options.clock ?? systemClock;
    this.#probeMinMs = options.probeMinMs ?? 250;
    this.#probeMaxMs = options.probeMaxMs ?? 5000;
    this.#probeDelay = this.#probeMinMs;
  }

  /** False while the database is known to be unreachable; a probe runs until it returns. */
  get up(): boolean {
    return this.#up;
  }

  /** For the store's own components, which react before the listeners hear of it. */
  observe(observer: AvailabilityObserver): void {
    this.#observers.push(observer);
  }

  /** Calls `listener` whenever the database becomes unreachable (false) or reachable again (true). */
  onAvailability(listener: (up: boolean) => void): void {
    this.#listeners.push(listener);
  }

  /**
   * Runs one store operation: a connection failure becomes StoreUnavailable (and the database down), a
   * constraint violation a StoreConflict; success means the database is up.
   */
  async run<T>(op: () => Promise<T>): Promise<T> {
    let result: T;
    try {
      result = await op();
    } catch (err) {
      if (!isConnectionError(err)) throw translateStatementError(err);
      this.#lost(err);
      throw new StoreUnavailable("database unavailable", { cause: err });
    }
    this.#reached();
    return result;
  }

  /** Whether the database answers now. */
  async ping(): Promise<boolean> {
    try {
      await this.run(() => this.#sql`select 1`);
    } catch (err) {
      if (err instanceof StoreUnavailable) return false;
      throw err;
    }
    return true;
  }

  /**
   * Pings the database every `intervalMs` while it is up, so an outage is noticed (and reported to the
   * listeners) even when nothing else runs a statement; while it is down the probe does that.
   */
  startHeartbeat(intervalMs: number): void {
    const beat = () => {
      this.#heartbeatTimer = undefined;
      if (this.#closed) return;
      const next = () => {
        if (!this.#closed) this.#heartbeatTimer = this.#clock.setTimeout(beat, intervalMs);
      };
      if (!this.#up) return next();
      void this.ping().then(next, (err: unknown) => {
        this.#log.error({ err: (err as Error).message }, "database heartbeat failed");
        next();
      });
    };
    this.#heartbeatTimer = this.#clock.setTimeout(beat, intervalMs);
  }

  /** Stops probing and the heartbeat. */
  close(): void {
    this.#closed = true;
    if (this.#probeTimer !== undefined) this.#clock.clearTimeout(this.#probeTimer);
    this.#probeTimer = undefined;
    if (this.#heartbeatTimer !== undefined) this.#clock.clearTimeout(this.#heartbeatTimer);
    this.#heartbeatTimer = undefined;
  }

  #reached(): void {
    if (this.#up) return;
    this.#up = true;
    this.#probeDelay = this.#probeMinMs;
    if (this.#probeTimer !== undefined) this.#clock.clearTimeout(this.#probeTimer);
    this.#probeTimer = undefined;
    this.#log.info({}, "database reachable again");
    for (const observer of this.#observers) observer.reached();
    for (const listener of this.#listeners) listener(true);
  }

  #lost(err: unknown): void {
    const wasUp = this.#up;
    this.#up = false;
    if (wasUp) this.#log.warn({ code: (err as { code?: string }).code }, "database unreachable: lending from memory");
    for (const observer of this.#observers) observer.lost();
    if (wasUp) for (const listener of this.#listeners) listener(false);
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
}
