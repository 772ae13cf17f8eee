// The timer scheduler: every deadline of the engine (lease expiries, waiter timeouts, cooldown ends,
// circuit re-opens, budget resets) on one heap, and one clock timer armed for the earliest of them.
import { TimerHeap, type Scheduled } from "./timer-heap.js";
import type { Clock, TimerHandle } from "./types.js";

/** Node clamps longer timer delays to 1 ms; longer deadlines re-arm when this fires. */
const MAX_TIMER_DELAY_MS = 2 ** 31 - 1;

export class Scheduler<T extends Scheduled> {
  private readonly heap = new TimerHeap<T>();
  private armed: TimerHandle | undefined;
  private armedAt: number | undefined;
  private closed = false;

  /** `fire` runs each item when its deadline comes, in deadline order (first scheduled first on a tie). */
  constructor(
    private readonly clock: Clock,
    private readonly fire: (item: T, now: number) => void,
  ) {}

  /** Fires every item due by now, so no caller ever sees a stale deadline; returns now. */
  tick(): number {
    const now = this.clock.now();
    const top = this.heap.peek();
    if (top && top.at <= now) this.runDue(now);
    return now;
  }

  /** Schedules the item at `at`, or moves it there if it is already scheduled. */
  schedule(item: T, at: number, now: number): void {
    this.heap.schedule(item, at);
    if (this.armedAt === undefined || at < this.armedAt) this.arm(now);
  }

  cancel(item: T): void {
    this.heap.cancel(item);
  }

  /** Stops the clock timer for good; nothing fires after this. */
  close(): void {
    this.closed = true;
    if (this.armed !== undefined) this.clock.clearTimeout(this.armed);
    this.armed = undefined;
    this.armedAt = undefined;
  }

  private readonly onTimer = (): void => {
    this.armed = undefined;
    this.armedAt = undefined;
    if (!this.closed) this.runDue(this.clock.now());
  };

  private runDue(now: number): void {
    for (let item = this.heap.peek(); item && item.at <= now; item = this.heap.peek()) {
      this.heap.pop();
      this.fire(item, now);
    }
    this.arm(now);
  }

  /** Keeps one clock timer armed for the earliest deadline; a later-armed timer is left alone and re-arms when it fires. */
  private arm(now: number): void {
    if (this.closed) return;
    const top = this.heap.peek();
    if (!top) return;
    if (this.armedAt !== undefined && this.armedAt <= top.at) return;
    if (this.armed !== undefined) this.clock.clearTimeout(this.armed);
    const delay = Math.min(Math.max(0, top.at - now), MAX_TIMER_DELAY_MS);
    this.armedAt = now + delay;
    this.armed = this.clock.setTimeout(this.onTimer, delay);
  }
}
