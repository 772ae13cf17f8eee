import { describe, expect, it } from "vitest";
import { Scheduler } from "../../src/domain/scheduler.js";
import type { Scheduled } from "../../src/domain/timer-heap.js";
import type { Clock } from "../../src/domain/types.js";
import { FakeClock } from "../fake-clock.js";

interface Item extends Scheduled {
  name: string;
}

const item = (name: string): Item => ({ name, at: 0, heapPos: -1, heapSeq: 0 });

function setup(clock: Clock = new FakeClock()) {
  const fired: Array<[string, number]> = [];
  let onFire = (_i: Item, _now: number) => {};
  const timers = new Scheduler<Item>(clock, (i, now) => {
    fired.push([i.name, now]);
    onFire(i, now);
  });
  return { timers, fired, setOnFire: (fn: typeof onFire) => (onFire = fn) };
}

describe("scheduler", () => {
  it("fires each item at its deadline, ties first-scheduled first, with one clock timer armed for the earliest", () => {
    const clock = new FakeClock();
    const t0 = clock.now();
    const { timers, fired } = setup(clock);
    const [a, b, c, d] = ["a", "b", "c", "d"].map(item);
    timers.schedule(a!, t0 + 300, t0);
    timers.schedule(b!, t0 + 100, t0);
    timers.schedule(c!, t0 + 300, t0);
    timers.schedule(d!, t0 + 200, t0);
    expect(clock.deadlines()).toEqual([t0 + 100]);
    clock.advance(150);
    expect(fired).toEqual([["b", t0 + 100]]);
    expect(clock.deadlines()).toEqual([t0 + 200]);
    clock.advance(1_000);
    expect(fired).toEqual([["b", t0 + 100], ["d", t0 + 200], ["a", t0 + 300], ["c", t0 + 300]]);
    expect(clock.pending).toBe(0);
  });

  it("moves a rescheduled item and drops a cancelled one, re-arming only for an earlier deadline", () => {
    const clock = new FakeClock();
    const t0 = clock.now();
    const { timers, fired } = setup(clock);
    const [a, b] = ["a", "b"].map(item);
    timers.schedule(a!, t0 + 100, t0);
    timers.schedule(b!, t0 + 200, t0);
    timers.schedule(a!, t0 + 500, t0);
    // The timer armed for a's old deadline stays and re-arms when it fires.
    expect(clock.deadlines()).toEqual([t0 + 100]);
    timers.schedule(b!, t0 + 50, t0);
    expect(clock.deadlines()).toEqual([t0 + 50]);
    timers.cancel(b!);
    timers.cancel(b!);
    clock.advance(499);
    expect(fired).toEqual([]);
    expect(clock.deadlines()).toEqual([t0 + 500]);
    clock.advance(1);
    expect(fired).toEqual([["a", t0 + 500]]);
  });

  it("tick() applies what is due even before the clock timer fires, and returns now", () => {
    const fake = new FakeClock();
    let armed = 0;
    const late: Clock = { now: () => fake.now(), setTimeout: () => ++armed, clearTimeout: () => {} };
    const { timers, fired } = setup(late);
    const t0 = fake.now();
    timers.schedule(item("a"), t0 + 10, t0);
    timers.schedule(item("b"), t0 + 20, t0);
    fake.advance(15);
    expect(timers.tick()).toBe(t0 + 15);
    expect(fired).toEqual([["a", t0 + 15]]);
    // The timer armed for a still stands; it re-arms for b when it fires.
    expect(armed).toBe(1);
  });

  it("fires in the same run what a fired item schedules as already due", () => {
    const clock = new FakeClock();
    const t0 = clock.now();
    const { timers, fired, setOnFire } = setup(clock);
    const follow = item("follow");
    setOnFire((i, now) => {
      if (i.name === "first") timers.schedule(follow, now, now);
    });
    timers.schedule(item("first"), t0 + 10, t0);
    clock.advance(10);
    expect(fired).toEqual([["first", t0 + 10], ["follow", t0 + 10]]);
  });

  it("arms at most the longest delay a timer takes, and re-arms when it fires, without firing early", () => {
    const clock = new FakeClock();
    const t0 = clock.now();
    const { timers, fired } = setup(clock);
    const far = t0 + 2 ** 31 + 5_000;
    timers.schedule(item("far"), far, t0);
    expect(clock.deadlines()).toEqual([t0 + 2 ** 31 - 1]);
    clock.advance(2 ** 31 - 1);
    expect(fired).toEqual([]);
    expect(clock.deadlines()).toEqual([far]);
    clock.advance(5_001);
    expect(fired).toEqual([["far", far]]);
  });

  it("after close() nothing is armed and nothing fires", () => {
    const clock = new FakeClock();
    const t0 = clock.now();
    const { timers, fired } = setup(clock);
    timers.schedule(item("a"), t0 + 10, t0);
    timers.close();
    expect(clock.pending).toBe(0);
    timers.schedule(item("b"), t0 + 5, t0);
    clock.advance(100);
    expect(clock.pending).toBe(0);
    expect(fired).toEqual([]);
  });
});
