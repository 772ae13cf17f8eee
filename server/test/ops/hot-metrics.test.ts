import { Counter, Histogram, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { HotCounter, HotHistogram } from "../../src/ops/hot-metrics.js";

const BUCKETS = [0.001, 0.01, 0.5, 1];

describe("hot metrics", () => {
  it("print the same text as prom-client's Histogram and Counter for the same updates", async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const h = new HotHistogram({ name: "t_seconds", help: "h", labelNames: ["pool", "result"], buckets: BUCKETS, registry: ours });
    const ph = new Histogram({ name: "t_seconds", help: "h", labelNames: ["pool", "result"], buckets: BUCKETS, registers: [theirs] });
    const w = new HotHistogram({ name: "w_seconds", help: "w", labelNames: ["pool"], buckets: BUCKETS, registry: ours });
    const pw = new Histogram({ name: "w_seconds", help: "w", labelNames: ["pool"], buckets: BUCKETS, registers: [theirs] });
    const c = new HotCounter({ name: "o_total", help: "c", labelNames: ["pool", "outcome"], registry: ours });
    const pc = new Counter({ name: "o_total", help: "c", labelNames: ["pool", "outcome"], registers: [theirs] });

    // Values on a bound, between bounds, above all of them, and a label value that needs escaping.
    const observations: Array<[number, string, string]> = [
      [0.001, "a", "granted"], [0.0004, "a", "granted"], [0.2, "a", "granted"], [7, "a", "granted"],
      [0.5, "a", "exhausted"], [1, 'b"\\\n', "granted"], [0.01, "b", "error"],
    ];
    for (const [v, pool, result] of observations) {
      h.observe(v, pool, result);
      ph.observe({ pool, result }, v);
      w.observe(v * 2, pool);
      pw.observe({ pool }, v * 2);
      c.inc(pool, result);
      pc.inc({ pool, outcome: result });
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());

    ours.resetMetrics();
    theirs.resetMetrics();
    expect(await ours.metrics()).toBe(await theirs.metrics());
  });
});
