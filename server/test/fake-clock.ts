// The one Clock for server tests: time moves only when told, and each due timer fires at its own
// instant, earliest (then first set) first.
import type { Clock, TimerHandle } from "../src/domain/types.js";

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

  /** The instants the armed timers are due, earliest first. */
  deadlines(): number[] {
    return [...this.timers.values()].map((t) => t.at).sort((a, b) => a - b);
  }

  /** Moves time forward by ms, firing every timer due on the way (synchronous code: the engine). */
  advance(ms: number): void {
    const target = this.current + ms;
    for (let due = this.next(target); due; due = this.next(target)) this.fire(due);
    this.current = target;
  }

  /** Like advance, letting promise callbacks settle after each timer (code that awaits between timers). */
  async advanceAsync(ms: number): Promise<void> {
    const target = this.current + ms;
    for (let due = this.next(target); due; due = this.next(target)) {
      this.fire(due);
      await settle();
    }
    this.current = target;
    await settle();
  }

  private next(target: number): FakeTimer | undefined {
    let due: FakeTimer | undefined;
    for (const t of this.timers.values()) {
      if (t.at <= target && (!due || t.at < due.at || (t.at === due.at && t.id < due.id))) due = t;
    }
    return due;
  }

  private fire(t: FakeTimer): void {
    this.timers.delete(t.id);
    this.current = Math.max(this.current, t.at);
    t.fn();
  }
}

/** Lets pending promise callbacks run (no timers involved). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}
