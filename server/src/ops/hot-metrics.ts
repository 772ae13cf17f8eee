// Labeled Prometheus histograms and counters for metrics updated on every Acquire and Release. They
// register in a prom-client Registry like any of its metrics and print the same text. prom-client's
// own Histogram and Counter turn the label object into a sorted hash string and check every label
// on each update, and a histogram finds its bucket by a string key: about 1 µs of server CPU per
// lease cycle RPC under load (issue 7, bench/README.md). Here a series is found through one Map per
// label, and a bucket by index.
import type { Registry } from "prom-client";

type Labels = Record<string, string>;

interface Sample {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}

/** Series keyed by one or two label values, through a Map per label. */
abstract class Labeled<S extends { labels: Labels }> {
  readonly #series = new Map<string, Map<string, S>>();

  protected constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly [string] | readonly [string, string],
    registry: Registry,
  ) {
    registry.registerMetric(this as never);
  }

  protected abstract create(labels: Labels): S;

  protected find(a: string, b: string | undefined): S {
    let inner = this.#series.get(a);
    if (inner === undefined) this.#series.set(a, (inner = new Map()));
    const key = b ?? "";
    let s = inner.get(key);
    if (s === undefined) {
      const labels: Labels = { [this.labelNames[0]]: a };
      if (this.labelNames.length === 2) labels[this.labelNames[1]] = key;
      inner.set(key, (s = this.create(labels)));
    }
    return s;
  }

  protected *all(): Iterable<S> {
    for (const inner of this.#series.values()) yield* inner.values();
  }

  reset(): void {
    this.#series.clear();
  }
}

interface HistogramSeries {
  labels: Labels;
  /** Observations per bucket, not cumulative; the last counts those above every bound. */
  counts: number[];
  sum: number;
}

export class HotHistogram extends Labeled<HistogramSeries> {
  readonly type = "histogram";
  readonly aggregator = "sum";
  private readonly buckets: number[];

  constructor(opts: { name: string; help: string; labelNames: readonly [string] | readonly [string, string]; buckets: number[]; registry: Registry }) {
    super(opts.name, opts.help, opts.labelNames, opts.registry);
    this.buckets = [...opts.buckets].sort((x, y) => x - y);
  }

  protected create(labels: Labels): HistogramSeries {
    return { labels, counts: new Array<number>(this.buckets.length + 1).fill(0), sum: 0 };
  }

  observe(value: number, a: string, b?: string): void {
    const s = this.find(a, b);
    const bounds = this.buckets;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    s.counts[i]!++;
    s.sum += value;
  }

  get() {
    const values: Sample[] = [];
    const bucket = `${this.name}_bucket`;
    for (const s of this.all()) {
      let cumulative = 0;
      for (let i = 0; i < this.buckets.length; i++) {
        cumulative += s.counts[i]!;
        values.push({ value: cumulative, labels: { le: this.buckets[i]!, ...s.labels }, metricName: bucket });
      }
      cumulative += s.counts[this.buckets.length]!;
      values.push({ value: cumulative, labels: { le: "+Inf", ...s.labels }, metricName: bucket });
      values.push({ value: s.sum, labels: s.labels, metricName: `${this.name}_sum` });
      values.push({ value: cumulative, labels: s.labels, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

export class HotCounter extends Labeled<{ labels: Labels; value: number }> {
  readonly type = "counter";
  readonly aggregator = "sum";

  constructor(opts: { name: string; help: string; labelNames: readonly [string] | readonly [string, string]; registry: Registry }) {
    super(opts.name, opts.help, opts.labelNames, opts.registry);
  }

  protected create(labels: Labels) {
    return { labels, value: 0 };
  }

  inc(a: string, b?: string): void {
    this.find(a, b).value++;
  }

  get() {
    const values: Sample[] = [];
    for (const s of this.all()) values.push({ value: s.value, labels: s.labels });
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}
