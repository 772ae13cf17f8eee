// Rule 7: choosing among eligible keys. One pass over the pool's keys, no sorting; strategies
// move only their own cursors and weights, never key state.
import { isEligible, type KeyEntry } from "./key.js";
import type { PoolEntry } from "./state.js";

/** Share of latency-strategy picks that explore a random eligible key instead of the fastest. */
const LATENCY_EXPLORATION = 0.05;

type Metric = "active" | "recent" | "latency";

export function chooseKey(
  pool: PoolEntry,
  now: number,
  estimatedTokens: number,
  exclude: Set<string> | undefined,
  random: () => number,
): KeyEntry | undefined {
  switch (pool.cfg.strategy) {
    case "round_robin":
      return firstFrom(pool, pool.cursor, now, estimatedTokens, exclude, true);
    case "least_busy":
      return lowest(pool, "active", now, estimatedTokens, exclude);
    case "least_used":
      return lowest(pool, "recent", now, estimatedTokens, exclude);
    case "weighted":
      return smoothWeighted(pool, now, estimatedTokens, exclude);
    case "latency": {
      const n = pool.keyList.length;
      if (n > 0 && random() < LATENCY_EXPLORATION) {
        return firstFrom(pool, Math.floor(random() * n), now, estimatedTokens, exclude, false);
      }
      return lowest(pool, "latency", now, estimatedTokens, exclude);
    }
  }
}

function firstFrom(
  pool: PoolEntry,
  start: number,
  now: number,
  estimatedTokens: number,
  exclude: Set<string> | undefined,
  advanceCursor: boolean,
): KeyEntry | undefined {
  const keys = pool.keyList;
  const n = keys.length;
  const from = n > 0 ? start % n : 0;
  for (let i = from, seen = 0; seen < n; seen++, i = i + 1 === n ? 0 : i + 1) {
    const k = keys[i]!;
    if (isEligible(k, now, estimatedTokens, exclude)) {
      if (advanceCursor) pool.cursor = i + 1 === n ? 0 : i + 1;
      return k;
    }
  }
  return undefined;
}

function metricOf(k: KeyEntry, metric: Metric, now: number): number {
  switch (metric) {
    case "active":
      return k.active;
    case "recent":
      return k.recentGrants(now);
    case "latency":
      // Keys never measured count as fastest, so every key gets sampled.
      return k.emaLatencyMs ?? -1;
  }
}

/** The eligible key with the lowest metric; the scan starts at the rotating cursor so ties rotate. */
function lowest(
  pool: PoolEntry,
  metric: Metric,
  now: number,
  estimatedTokens: number,
  exclude: Set<string> | undefined,
): KeyEntry | undefined {
  const keys = pool.keyList;
  const n = keys.length;
  let best: KeyEntry | undefined;
  let bestValue = Infinity;
  const from = n > 0 ? pool.cursor % n : 0;
  for (let i = from, seen = 0; seen < n; seen++, i = i + 1 === n ? 0 : i + 1) {
    const k = keys[i]!;
    if (!isEligible(k, now, estimatedTokens, exclude)) continue;
    const v = metricOf(k, metric, now);
    if (best === undefined || v < bestValue) {
      best = k;
      bestValue = v;
    }
  }
  if (best) pool.cursor = best.slot + 1 === n ? 0 : best.slot + 1;
  return best;
}

/** nginx's smooth weighted round robin over the eligible keys: exact proportions, no bursts. */
function smoothWeighted(
  pool: PoolEntry,
  now: number,
  estimatedTokens: number,
  exclude: Set<string> | undefined,
): KeyEntry | undefined {
  let best: KeyEntry | undefined;
  let total = 0;
  for (const k of pool.keyList) {
    if (!isEligible(k, now, estimatedTokens, exclude)) continue;
    k.swrrCurrent += k.weight;
    total += k.weight;
    if (best === undefined || k.swrrCurrent > best.swrrCurrent) best = k;
  }
  if (best) best.swrrCurrent -= total;
  return best;
}
