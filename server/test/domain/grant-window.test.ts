import { describe, expect, it } from "vitest";
import { GrantWindow } from "../../src/domain/state.js";

describe("GrantWindow (the least_used window)", () => {
  it("counts the grants of the last minute, its edge moving a whole second at a time", () => {
    const w = new GrantWindow();
    w.add(10_000);
    w.add(10_999);
    w.add(11_000);
    // A second stays while any instant of it may be younger than a minute: second 10 until 70_999.
    expect(w.prune(70_998)).toBe(false);
    expect(w.count).toBe(3);
    expect(w.prune(70_999)).toBe(true);
    expect(w.count).toBe(1);
    expect(w.prune(71_998)).toBe(false);
    expect(w.prune(71_999)).toBe(true);
    expect(w.count).toBe(0);
  });

  it("keeps one count per second however many grants it had", () => {
    const w = new GrantWindow();
    for (let i = 0; i < 5000; i++) w.add(1_700_000_000_000 + (i % 1000));
    w.add(1_700_000_001_000);
    expect(w.export()).toEqual({ until: 1_700_000_001, counts: [5000, 1] });
    expect(w.count).toBe(5001);
  });

  it("rebuilds from its export, and the export is a copy", () => {
    const w = new GrantWindow();
    w.add(3_000);
    w.add(5_500);
    const exported = w.export();
    const copy = GrantWindow.from(exported);
    w.add(5_600);
    expect(exported).toEqual({ until: 5, counts: [1, 0, 1] });
    expect(copy.count).toBe(2);
    expect(copy.export()).toEqual(exported);
  });

  it("keeps the same count as a list of instants through gaps, bursts and a clock that steps back", () => {
    const w = new GrantWindow();
    let instants: number[] = [];
    let now = 1_000_000;
    let seed = 11;
    const next = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 5_000; i++) {
      const r = next();
      now += r < 0.01 ? 90_000 : r < 0.05 ? -Math.floor(next() * 2_000) : Math.floor(next() * 700);
      w.add(now);
      instants.push(now);
      const newest = Math.max(...instants.slice(-200));
      // A grant a whole window older than the newest second counted is left out.
      instants = instants.filter((at) => Math.floor(at / 1000) > Math.floor(newest / 1000) - 61);
      if (i % 5 === 0) {
        const at = now + Math.floor(next() * 70_000);
        w.prune(at);
        const first = Math.floor((at - 59_999) / 1000);
        instants = instants.filter((t) => Math.floor(t / 1000) >= first);
      }
      expect(w.count).toBe(instants.length);
    }
    expect(GrantWindow.from(w.export()).export()).toEqual(w.export());
  });

  it("ends its export at the newest second and starts it at the oldest one with grants", () => {
    const w = new GrantWindow();
    expect(w.export()).toEqual({ until: 0, counts: [] });
    w.add(10_000);
    w.add(12_000);
    w.add(12_500);
    w.prune(71_500);
    expect(w.export()).toEqual({ until: 12, counts: [2] });
    w.add(13_000);
    expect(w.export()).toEqual({ until: 13, counts: [2, 1] });
  });
});
