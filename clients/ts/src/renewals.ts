// When a client's leases are renewed over its one KeepAlive stream: plain bookkeeping with no I/O and
// no clock of its own (every call is given `now`), pinned by test/vectors/keepalive.json.

/** What the stream driver must do now. */
export interface RenewalStep<T> {
  /** Open a stream (the previous one is over); `send` then holds every lease. */
  open: boolean;
  /** Half-close the stream: no lease is left. */
  close: boolean;
  /** The leases to renew now. */
  send: T[];
  /** When to call step again, unless something happens first; null: only when something happens. */
  wakeAtMs: number | null;
}

type StreamState = "closed" | "open" | "broken";

interface Held<T> {
  item: T;
  deadlineMs: number;
  intervalMs: number;
  dueMs: number;
}

const REOPEN_PAUSE_MS = 200;
const REOPEN_PAUSE_CAP_MS = 5_000;
/** Never renew in a tight loop, whatever interval the server suggests. */
const MIN_INTERVAL_MS = 50;

/**
 * The leases a client holds and when each is renewed. A lease is first renewed at its renew interval
 * (never when its scope starts), so a lease shorter than that costs no stream at all. The stream is
 * opened when a renewal falls due and closed when no lease is left; opening it renews every lease at
 * once, because the server pushes revocations only for the leases a stream renewed. A lease ends
 * only on a "gone" answer or at its local deadline: a failed stream (whatever its status) is
 * reopened after a pause that doubles while no renewal is answered.
 */
export class Renewals<T> {
  readonly #held = new Map<string, Held<T>>();
  readonly #onEnd: (item: T, reason: string, message: string) => void;
  #state: StreamState = "closed";
  #reopenAtMs = 0;
  #breaks = 0;
  #wakeAtMs: number | null = null;

  constructor(onEnd: (item: T, reason: string, message: string) => void) {
    this.#onEnd = onEnd;
  }

  get size(): number {
    return this.#held.size;
  }

  get stream(): StreamState {
    return this.#state;
  }

  get(id: string): T | undefined {
    return this.#held.get(id)?.item;
  }

  /** A lease joins; true when the driver must step now (its next wake-up is later than this lease's first renewal). */
  hold(id: string, item: T, ttlMs: number, renewIntervalMs: number, nowMs: number): boolean {
    const intervalMs = intervalOf(ttlMs, renewIntervalMs);
    const dueMs = nowMs + intervalMs;
    this.#held.set(id, { item, deadlineMs: nowMs + ttlMs, intervalMs, dueMs });
    return this.#wakeAtMs === null || dueMs < this.#wakeAtMs;
  }

  /** A lease leaves (its scope ended); true when the driver must step now to close the stream. */
  release(id: string): boolean {
    return this.#held.delete(id) && this.#held.size === 0 && this.#state !== "closed";
  }

  renewed(id: string, ttlMs: number, renewIntervalMs: number, nowMs: number): void {
    const held = this.#held.get(id);
    if (!held) return;
    this.#breaks = 0;
    held.deadlineMs = nowMs + ttlMs;
    held.intervalMs = intervalOf(ttlMs, renewIntervalMs);
    held.dueMs = nowMs + held.intervalMs;
  }

  /** The server says the lease is over (an ErrorReason name such as "LEASE_REVOKED"). */
  gone(id: string, reason: string, message = ""): void {
    this.#end(id, reason, message);
  }

  /** The stream ended or failed while it was needed. */
  broken(nowMs: number): void {
    if (this.#state !== "open") return;
    this.#state = "broken";
    this.#reopenAtMs = nowMs + Math.min(REOPEN_PAUSE_MS * 2 ** this.#breaks, REOPEN_PAUSE_CAP_MS);
    this.#breaks++;
  }

  step(nowMs: number): RenewalStep<T> {
    const out: RenewalStep<T> = { open: false, close: false, send: [], wakeAtMs: null };
    for (const [id, held] of this.#held) if (nowMs >= held.deadlineMs) this.#end(id, "LEASE_EXPIRED", "no renewal was answered before the lease's expiry");
    if (this.#held.size === 0) {
      out.close = this.#state === "open";
      this.#state = "closed";
      this.#wakeAtMs = null;
      return out;
    }
    let wake = Infinity;
    if (this.#state === "broken" && nowMs >= this.#reopenAtMs) out.open = true;
    if (this.#state === "closed") for (const held of this.#held.values()) if (held.dueMs <= nowMs) out.open = true;
    if (out.open) this.#state = "open";
    for (const held of this.#held.values()) {
      if (this.#state === "open" && (out.open || held.dueMs <= nowMs)) {
        out.send.push(held.item);
        held.dueMs = nowMs + held.intervalMs;
      }
      wake = Math.min(wake, held.deadlineMs, this.#state === "broken" ? Infinity : held.dueMs);
    }
    if (this.#state === "broken") wake = Math.min(wake, this.#reopenAtMs);
    this.#wakeAtMs = wake;
    out.wakeAtMs = wake;
    return out;
  }

  #end(id: string, reason: string, message: string): void {
    const held = this.#held.get(id);
    if (!held) return;
    this.#held.delete(id);
    this.#onEnd(held.item, reason, message);
  }
}

function intervalOf(ttlMs: number, renewIntervalMs: number): number {
  return Math.max(renewIntervalMs > 0 ? renewIntervalMs : ttlMs / 3, MIN_INTERVAL_MS);
}
