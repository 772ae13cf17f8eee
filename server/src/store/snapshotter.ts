// Write-behind of runtime state: every interval, if the engine changed, export what changed and write it.
// Off the hot path: the engine only pays for the synchronous export, of what changed unless the store needs
// everything (first snapshot, after a failure). Failures retry with backoff.
import { systemClock } from "../domain/system-clock.js";
import type { Clock, RuntimeChanges, RuntimeSnapshot, TimerHandle } from "../domain/types.js";
import { StoreUnavailable } from "./errors.js";
import type { StoreLog } from "./log.js";

/** What the engine offers: its runtime state, what changed since the last export, and whether anything did. */
export interface SnapshotSource {
  exportRuntime(): RuntimeSnapshot;
  /** Undefined when only a full export is right. */
  exportChanges(): RuntimeChanges | undefined;
  readonly dirty: boolean;
  markClean(): void;
}

export interface SnapshotStore {
  readonly needsFullSnapshot: boolean;
  writeSnapshot(s: RuntimeSnapshot): Promise<void>;
  writeChanges(c: RuntimeChanges): Promise<void>;
}

export interface SnapshotterOptions {
  store: SnapshotStore;
  source: SnapshotSource;
  log: StoreLog;
  clock?: Clock;
  /** Default 1000 ms. */
  intervalMs?: number;
  /** Longest wait between retries after failures (default 10 s). */
  maxBackoffMs?: number;
  /** After each committed snapshot: export+write time and the snapshot's instant. */
  onSnapshot?: (durationMs: number, takenAt: number) => void;
  /** After each write that failed (it is retried). */
  onFailure?: () => void;
}

export class Snapshotter {
  readonly #store: SnapshotterOptions["store"];
  readonly #source: SnapshotSource;
  readonly #log: StoreLog;
  readonly #clock: Clock;
  readonly #intervalMs: number;
  readonly #maxBackoffMs: number;
  readonly #onSnapshot?: SnapshotterOptions["onSnapshot"];
  readonly #onFailure?: SnapshotterOptions["onFailure"];

  #timer: TimerHandle | undefined;
  #running = false;
  #writing: Promise<void> | undefined;
  /** Consecutive failed writes; the state they carried is still unwritten. */
  #failures = 0;
  /** When the state being written (or waiting after a failure) was first exported; undefined when all is written. */
  #unwrittenSince: number | undefined;

  constructor(options: SnapshotterOptions) {
    this.#store = options.store;
    this.#source = options.source;
    this.#log = options.log;
    this.#clock = options.clock ?? systemClock;
    this.#intervalMs = options.intervalMs ?? 1000;
    this.#maxBackoffMs = options.maxBackoffMs ?? 10_000;
    this.#onSnapshot = options.onSnapshot;
    this.#onFailure = options.onFailure;
  }

  /**
   * Since when runtime state has waited to be written (epoch ms): from the export of the oldest state not
   * yet committed; undefined when everything is. Changes are noticed at the next interval.
   */
  get unwrittenSince(): number | undefined {
    return this.#unwrittenSince;
  }

  /** Consecutive failed attempts so far (0 after a success). */
  get failures(): number {
    return this.#failures;
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#schedule(this.#intervalMs);
  }

  /** Writes now if anything is unwritten or the store needs a full snapshot; rejects when the write fails (it is retried on schedule). */
  async flush(): Promise<void> {
    while (this.#writing) await this.#writing.catch(() => undefined);
    // A full snapshot is due on a process's first and to repair the tables after an outage, changed or not.
    if (!this.#source.dirty && this.#failures === 0 && !this.#store.needsFullSnapshot) return;
    const started = this.#clock.now();
    this.#unwrittenSince ??= started;
    const takenAt = this.#startWrite();
    try {
      await this.#writing;
    } catch (err) {
      this.#failures += 1;
      this.#reportFailure(err);
      this.#onFailure?.();
      throw err;
    } finally {
      this.#writing = undefined;
    }
    this.#failures = 0;
    this.#unwrittenSince = undefined;
    this.#onSnapshot?.(this.#clock.now() - started, takenAt);
  }

  /** Exports what changed (everything when the store needs it) and starts writing it; returns the export's instant. */
  #startWrite(): number {
    // Export and write in one tick: the store takes its grant mark when the write starts.
    const changes = this.#store.needsFullSnapshot ? undefined : this.#source.exportChanges();
    if (changes) {
      this.#source.markClean();
      this.#writing = this.#store.writeChanges(changes);
      return changes.takenAt;
    }
    const snapshot = this.#source.exportRuntime();
    this.#source.markClean();
    this.#writing = this.#store.writeSnapshot(snapshot);
    return snapshot.takenAt;
  }

  /** Stops the loop and writes a final snapshot if anything changed (graceful shutdown); never throws. */
  async stop(): Promise<void> {
    this.#running = false;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    try {
      await this.flush();
    } catch {
      this.#log.error({ failures: this.#failures }, "final snapshot not written: runtime state since the last snapshot is lost");
    }
  }

  /** The wait before the next attempt: the interval, or after n failures interval·2^n capped at maxBackoff. */
  nextDelayMs(): number {
    if (this.#failures === 0) return this.#intervalMs;
    return Math.min(this.#intervalMs * 2 ** this.#failures, this.#maxBackoffMs);
  }

  #schedule(delayMs: number): void {
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      void this.#tick();
    }, delayMs);
  }

  async #tick(): Promise<void> {
    try {
      await this.flush();
    } catch {
      // Reported by flush; the next attempt comes after the backoff below.
    }
    if (this.#running) this.#schedule(this.nextDelayMs());
  }

  #reportFailure(err: unknown): void {
    const unavailable = err instanceof StoreUnavailable;
    // Only the error's class and code: a driver message could quote row values.
    this.#log.warn(
      {
        err: err instanceof Error ? err.name : typeof err,
        code: (err as { code?: string; cause?: { code?: string } }).cause?.code ?? (err as { code?: string }).code,
        failures: this.#failures,
        retryInMs: this.nextDelayMs(),
      },
      unavailable ? "snapshot not written: database unreachable" : "snapshot not written",
    );
  }
}
