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

  it("keeps one entry per second however many grants it had", () => {
    const w = new GrantWindow();
    for (let i = 0; i < 5000; i++) w.add(1_700_000_000_000 + (i % 1000));
    w.add(1_700_000_001_000);
    expect(w.toArray()).toEqual([
      [1_700_000_000, 5000],
      [1_700_000_001, 1],
    ]);
    expect(w.count).toBe(5001);
  });

  it("rebuilds from its export, and the export is a copy", () => {
    const w = new GrantWindow();
    w.add(3_000);
    w.add(5_500);
    const exported = w.toArray();
    const copy = GrantWindow.from(exported);
    w.add(5_600);
    expect(exported).toEqual([
      [3, 1],
      [5, 1],
    ]);
    expect(copy.count).toBe(2);
    expect(copy.toArray()).toEqual(exported);
  });
});
