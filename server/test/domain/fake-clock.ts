// A Clock for tests: time moves only through advance(), which fires due timers in deadline order.
import type { Clock, TimerHandle } from "../../src/domain/types.js";

interface FakeTimer {
  id: number;
  at: number;
  fn: () => void;
}

export class FakeClock implements Clock {
  private current: number;
  private nextId = 1;
  private readonly timers = new Map<number, FakeTimer>();

  constructor(start = Date.UTC(2026, 0, 1)) {
    this.current = start;
  }

  now(): number {
    return this.current;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const id = this.nextId++;
    this.timers.set(id, { id, at: this.current + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(handle: TimerHandle): void {
    this.timers.delete(handle as number);
  }

  /** Timers currently armed: the engine promises at most one. */
  get pending(): number {
    return this.timers.size;
  }

  /** Moves time forward by ms, firing each due timer at its own instant, earliest (then oldest) first. */
  advance(ms: number): void {
    const target = this.current + ms;
    for (;;) {
      let due: FakeTimer | undefined;
      for (const t of this.timers.values()) {
        if (t.at <= target && (!due || t.at < due.at || (t.at === due.at && t.id < due.id))) due = t;
      }
      if (!due) break;
      this.timers.delete(due.id);
      this.current = Math.max(this.current, due.at);
      due.fn();
    }
    this.current = target;
  }
}
