// How the process stops: which signals count, and how long each step of a graceful stop may take.
// The bounds add up to STOP_BOUNDS.totalMs, below docker's and compose's 10 s grace before SIGKILL.

/** Each step of a graceful stop is cut off after its bound; what it could not do is logged. */
export const STOP_BOUNDS = {
  /** Calls in flight finish (waiting Acquires and streams end at once with a clean status). */
  callsMs: 2000,
  /** The final snapshot of runtime state. */
  snapshotMs: 4000,
  /** The lease journal's last batch and the database connections. */
  closeMs: 1000,
  /** The whole stop; past it the process exits 1 (only a step that ignores its own bound gets here). */
  totalMs: 8000,
} as const;

/** A signal received again within this window is the same request: npm relays what a terminal's Ctrl-C or a process-group kill already delivered. */
export const DUPLICATE_SIGNAL_MS = 1000;

export type ProcessSignal = "SIGTERM" | "SIGINT" | "SIGHUP";

/** What a received signal means. */
export type SignalDecision =
  | "stop" // the first SIGTERM or SIGINT: a graceful stop
  | "reload" // SIGHUP: apply the config file again
  | "duplicate" // the same signal again within DUPLICATE_SIGNAL_MS of the last one that counted
  | "already_stopping" // SIGTERM during a stop: the stop is bounded, so it runs to its end
  | "force"; // SIGINT again, later than the window, during a stop: a person insisting; exit now

/** Decides what each signal means; the caller acts on the decision. The clock is injected for tests. */
export class SignalPolicy {
  readonly #now: () => number;
  readonly #counted = new Map<ProcessSignal, number>();
  #stopping = false;

  constructor(now: () => number) {
    this.#now = now;
  }

  get stopping(): boolean {
    return this.#stopping;
  }

  decide(signal: ProcessSignal): SignalDecision {
    const now = this.#now();
    const last = this.#counted.get(signal);
    if (last !== undefined && now - last < DUPLICATE_SIGNAL_MS) return "duplicate";
    this.#counted.set(signal, now);
    if (signal === "SIGHUP") return this.#stopping ? "already_stopping" : "reload";
    if (!this.#stopping) {
      this.#stopping = true;
      return "stop";
    }
    return signal === "SIGINT" ? "force" : "already_stopping";
  }
}

/** Waits for `work` at most `ms`; true if it settled in time. Its failure is the caller's to report through `work` itself. */
export async function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([work.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
