// Rule 7: choosing among eligible keys, within the first priority tier that has one (rule 6). One pass
// over a tier's keys, no sorting; strategies move only their own cursors and weights, never key state.
import { isEligible, type KeyEntry } from "./key.js";
import type { PoolEntry, Tier } from "./state.js";

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
  const tiers = pool.tiers;
  for (let i = 0; i < tiers.length; i++) {
    const k = chooseInTier(pool, tiers[i]!, now, estimatedTokens, exclude, random);
    if (k) return k;
  }
  return undefined;
}

/** Whether some key of a tier before `tier` is eligible. */
export function earlierTierEligible(pool: PoolEntry, tier: Tier, now: number, estimatedTokens: number, exclude: Set<string> | undefined): boolean {
  for (const t of pool.tiers) {
    if (t === tier) return false;
    for (const k of t.keys) if (isEligible(k, now, estimatedTokens, exclude)) return true;
  }
  return false;
}

function chooseInTier(
  pool: PoolEntry,
  tier: Tier,
  now: number,
  estimatedTokens: number,
  exclude: Set<string> | undefined,
  random: () => number,
): KeyEntry | undefined {
  switch (pool.cfg.strategy) {
    case "round_robin":
      return firstFrom(tier, tier.cursor, now, estimatedTokens, exclude, true);
    case "least_busy":
      return lowest(tier, "active", now, estimatedTokens, exclude);
    case "least_used":
      return lowest(tier, "recent", now, estimatedTokens, exclude);
    case "weighted":
      return smoothWeighted(tier, now, estimatedTokens, exclude);
    case "latency": {
      const n = tier.keys.length;
      if (n > 0 && random() < LATENCY_EXPLORATION) {
        return firstFrom(tier, Math.floor(random() * n), now, estimatedTokens, exclude, false);
      }
      return lowest(tier, "latency", now, estimatedTokens, exclude);
    }
  }
}

function firstFrom(
  tier: Tier,
  start: number,
  now: number,
  estimatedTokens: number,
  exclude: Set<string> | undefined,
  advanceCursor: boolean,
): KeyEntry | undefined {
  const keys = tier.keys;
  const n = keys.length;
  const from = n > 0 ? start % n : 0;
  for (let i = from, seen = 0; seen < n; seen++, i = i + 1 === n ? 0 : i + 1) {
    const k = keys[i]!;
    if (isEligible(k, now, estimatedTokens, exclude)) {
      if (advanceCursor) tier.cursor = i + 1 === n ? 0 : i + 1;
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
  tier: Tier,
  metric: Metric,
  now: number,
  estimatedTokens: number,
  exclude: Set<string> | undefined,
): KeyEntry | undefined {
  const keys = tier.keys;
  const n = keys.length;
  let best: KeyEntry | undefined;
  let bestValue = Infinity;
  const from = n > 0 ? tier.cursor % n : 0;
  for (let i = from, seen = 0; seen < n; seen++, i = i + 1 === n ? 0 : i + 1) {
    const k = keys[i]!;
    if (!isEligible(k, now, estimatedTokens, exclude)) continue;
    const v = metricOf(k, metric, now);
    if (best === undefined || v < bestValue) {
      best = k;
      bestValue = v;
    }
  }
  if (best) tier.cursor = best.tierSlot + 1 === n ? 0 : best.tierSlot + 1;
  return best;
}

/** nginx's smooth weighted round robin over the eligible keys: exact proportions, no bursts. */
function smoothWeighted(
  tier: Tier,
  now: number,
  estimatedTokens: number,
  exclude: Set<string> | undefined,
): KeyEntry | undefined {
  let best: KeyEntry | undefined;
  let total = 0;
  for (const k of tier.keys) {
    if (!isEligible(k, now, estimatedTokens, exclude)) continue;
    k.swrrCurrent += k.weight;
    total += k.weight;
    if (best === undefined || k.swrrCurrent > best.swrrCurrent) best = k;
  }
  if (best) best.swrrCurrent -= total;
  return best;
}
