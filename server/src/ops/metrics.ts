// Prometheus metrics on a private registry. The hot path only increments counters and observes
// histograms; per-key gauges are pulled from the engine's stats at scrape time.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { BudgetRemaining, CircuitState, LeaseOutcome, Limits, PoolStatsView, UsageView } from "../domain/types.js";

/** How an Acquire ended, as the `result` label. */
export type AcquireResult = "granted" | "exhausted" | "pool_not_found" | "cancelled" | "error";

/** What the scrape reads live state from: the engine's pools and their stats. */
export interface MetricsSource {
  pools(): string[];
  poolStats(pool: string): PoolStatsView | undefined;
}

export interface Metrics {
  readonly registry: Registry;
  readonly contentType: string;
  /** One finished Acquire: total duration and, when it queued, the time it waited. */
  observeAcquire(pool: string, result: AcquireResult, durationMs: number, waitedMs?: number): void;
  /** One outcome report (Release, MarkFailed, MarkRateLimited). */
  countOutcome(pool: string, outcome: LeaseOutcome): void;
  /** Leases reclaimed because their holder did not renew them. */
  countLeaseExpiries(pool: string, count?: number): void;
  /** One snapshot written, taking `durationMs`, completed at `completedAt` (epoch ms). */
  observeSnapshot(durationMs: number, completedAt: number): void;
  setDatabaseUp(up: boolean): void;
  /** Where scrape-time gauges come from; without a source they stay empty. */
  setSource(source: MetricsSource): void;
  metricsText(): Promise<string>;
}

const CIRCUIT_STATES: CircuitState[] = ["closed", "open", "half_open"];
/** Acquire is sub-millisecond when a key is free and seconds when it waits; buckets cover both. */
const ACQUIRE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const SNAPSHOT_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
/** Unknown pool names come from callers; folding them keeps label cardinality bounded. */
const UNKNOWN_POOL = "_unknown";

export function createMetrics(options: { now?: () => number; defaultMetrics?: boolean } = {}): Metrics {
  const now = options.now ?? Date.now;
  const registry = new Registry();
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: "keymesh_" });

  let source: MetricsSource | undefined;
  // Before the first snapshot the age counts from start, so a server that never snapshots alerts.
  let lastSnapshotAt = now();

  const acquireDuration = new Histogram({
    name: "keymesh_acquire_duration_seconds",
    help: "Time from Acquire received to answered, by result.",
    labelNames: ["pool", "result"] as const,
    buckets: ACQUIRE_BUCKETS,
    registers: [registry],
  });
  const acquireWait = new Histogram({
    name: "keymesh_acquire_wait_seconds",
    help: "Time an Acquire spent queued waiting for an eligible key.",
    labelNames: ["pool"] as const,
    buckets: ACQUIRE_BUCKETS,
    registers: [registry],
  });
  const outcomes = new Counter({
    name: "keymesh_outcomes_total",
    help: "Outcome reports by class (success, rate_limited, auth, quota_exhausted, transient, overloaded, client_error).",
    labelNames: ["pool", "outcome"] as const,
    registers: [registry],
  });
  const leaseExpiries = new Counter({
    name: "keymesh_lease_expiries_total",
    help: "Leases reclaimed because the holder did not renew them before expiry.",
    labelNames: ["pool"] as const,
    registers: [registry],
  });
  const snapshotDuration = new Histogram({
    name: "keymesh_snapshot_duration_seconds",
    help: "Time to write one runtime-state snapshot.",
    buckets: SNAPSHOT_BUCKETS,
    registers: [registry],
  });
  new Gauge({
    name: "keymesh_snapshot_age_seconds",
    help: "Seconds since the last completed snapshot (since start before the first).",
    registers: [registry],
    collect() {
      this.set(Math.max(0, now() - lastSnapshotAt) / 1000);
    },
  });
  const databaseUp = new Gauge({
    name: "keymesh_database_up",
    help: "1 when the last database operation succeeded, 0 otherwise.",
    registers: [registry],
  });

  const waiters = new Gauge({
    name: "keymesh_waiters",
    help: "Acquire calls waiting for a key.",
    labelNames: ["pool"] as const,
    registers: [registry],
  });
  const leasesActive = new Gauge({
    name: "keymesh_leases_active",
    help: "Live leases per key.",
    labelNames: ["pool", "key"] as const,
    registers: [registry],
  });
  const keyCooldown = new Gauge({
    name: "keymesh_key_cooldown_seconds",
    help: "Seconds left in the key's rate-limit cooldown (0 when none).",
    labelNames: ["pool", "key"] as const,
    registers: [registry],
  });
  const circuitState = new Gauge({
    name: "keymesh_circuit_state",
    help: "1 for the key's current circuit-breaker state, 0 for the others.",
    labelNames: ["pool", "key", "state"] as const,
    registers: [registry],
  });

  const budgets = budgetMetrics(registry);

  // One refresh per scrape fills all per-pool gauges from the same stats read.
  const refreshPoolGauges = (): void => {
    waiters.reset();
    leasesActive.reset();
    keyCooldown.reset();
    circuitState.reset();
    budgets.reset();
    if (!source) return;
    for (const pool of source.pools()) {
      const stats = source.poolStats(pool);
      if (!stats) continue;
      budgets.refresh(stats);
      waiters.set({ pool }, stats.waiters);
      for (const key of stats.keys) {
        const labels = { pool, key: key.keyId };
        leasesActive.set(labels, key.activeLeases);
        keyCooldown.set(labels, key.cooldownRemainingMs / 1000);
        for (const state of CIRCUIT_STATES) circuitState.set({ ...labels, state }, key.circuitState === state ? 1 : 0);
      }
    }
  };

  return {
    registry,
    contentType: registry.contentType,
    observeAcquire(pool, result, durationMs, waitedMs) {
      const poolLabel = result === "pool_not_found" ? UNKNOWN_POOL : pool;
      acquireDuration.observe({ pool: poolLabel, result }, durationMs / 1000);
      if (waitedMs !== undefined) acquireWait.observe({ pool: poolLabel }, waitedMs / 1000);
    },
    countOutcome(pool, outcome) {
      outcomes.inc({ pool, outcome });
    },
    countLeaseExpiries(pool, count = 1) {
      leaseExpiries.inc({ pool }, count);
    },
    observeSnapshot(durationMs, completedAt) {
      snapshotDuration.observe(durationMs / 1000);
      lastSnapshotAt = completedAt;
    },
    setDatabaseUp(up) {
      databaseUp.set(up ? 1 : 0);
    },
    setSource(next) {
      source = next;
    },
    async metricsText() {
      refreshPoolGauges();
      return registry.metrics();
    },
  };
}

// ---- declared budgets and usage (issue 20) ------------------------------------------------------
// Set at scrape time from the same stats read as the gauges above. The usage totals are the engine's own
// (persisted by snapshots, so they only grow), exported as counters.

const BUDGETS: Array<[keyof Limits & keyof BudgetRemaining, string]> = [
  ["requestsPerMinute", "requests_per_minute"],
  ["tokensPerMinute", "tokens_per_minute"],
  ["requestsPerDay", "requests_per_day"],
];

const OUTCOMES: Array<[keyof UsageView, string]> = [
  ["successes", "success"],
  ["rateLimited", "rate_limited"],
  ["failures", "failure"],
  ["unreported", "unreported"],
];

function budgetMetrics(registry: Registry) {
  const registers = [registry];
  const keyRemaining = new Gauge({
    name: "keymesh_key_budget_remaining",
    help: "What the key's declared budget allows now (requests or tokens), per budget declared.",
    labelNames: ["pool", "key", "budget"] as const,
    registers,
  });
  const keyLimit = new Gauge({ name: "keymesh_key_budget_limit", help: "The key's declared limit, per budget declared.", labelNames: ["pool", "key", "budget"] as const, registers });
  const groupRemaining = new Gauge({
    name: "keymesh_quota_group_budget_remaining",
    help: "What the quota group's declared budget allows now, per budget declared.",
    labelNames: ["pool", "group", "budget"] as const,
    registers,
  });
  const groupLimit = new Gauge({ name: "keymesh_quota_group_budget_limit", help: "The quota group's declared limit, per budget declared.", labelNames: ["pool", "group", "budget"] as const, registers });
  const reserved = new Gauge({ name: "keymesh_key_reserved_tokens", help: "Tokens reserved by the key's live leases.", labelNames: ["pool", "key"] as const, registers });
  const servingPriority = new Gauge({ name: "keymesh_pool_serving_priority", help: "The priority of the first tier with an eligible key.", labelNames: ["pool"] as const, registers });
  const keyRequests = new Counter({ name: "keymesh_key_requests_total", help: "Leases granted on the key since it was added.", labelNames: ["pool", "key"] as const, registers });
  const keyTokens = new Counter({ name: "keymesh_key_tokens_total", help: "Tokens reported on the key since it was added.", labelNames: ["pool", "key", "direction"] as const, registers });
  const keyOutcomes = new Counter({ name: "keymesh_key_leases_ended_total", help: "The key's leases by how they ended.", labelNames: ["pool", "key", "outcome"] as const, registers });
  const groupRequests = new Counter({ name: "keymesh_quota_group_requests_total", help: "Leases granted on the quota group's keys.", labelNames: ["pool", "group"] as const, registers });
  const groupTokens = new Counter({ name: "keymesh_quota_group_tokens_total", help: "Tokens reported on the quota group's keys.", labelNames: ["pool", "group", "direction"] as const, registers });
  const poolRequests = new Counter({ name: "keymesh_pool_requests_total", help: "Leases granted in the pool since it was created.", labelNames: ["pool"] as const, registers });
  const poolTokens = new Counter({ name: "keymesh_pool_tokens_total", help: "Tokens reported in the pool since it was created.", labelNames: ["pool", "direction"] as const, registers });
  const all = [keyRemaining, keyLimit, groupRemaining, groupLimit, reserved, servingPriority, keyRequests, keyTokens, keyOutcomes, groupRequests, groupTokens, poolRequests, poolTokens];

  const budgetsOf = (limits: Limits, remaining: BudgetRemaining, set: (budget: string, limit: number, left: number) => void) => {
    for (const [field, budget] of BUDGETS) {
      const left = remaining[field];
      if (limits[field] > 0 && left !== undefined) set(budget, limits[field], left);
    }
  };
  const tokens = (counter: Counter<string>, labels: Record<string, string>, u: UsageView) => {
    counter.inc({ ...labels, direction: "input" }, u.inputTokens);
    counter.inc({ ...labels, direction: "output" }, u.outputTokens);
  };

  return {
    reset(): void {
      for (const m of all) m.reset();
    },
    refresh(stats: PoolStatsView): void {
      const pool = stats.pool;
      servingPriority.set({ pool }, stats.servingPriority);
      poolRequests.inc({ pool }, stats.usage.requests);
      tokens(poolTokens, { pool }, stats.usage);
      for (const k of stats.keys) {
        const labels = { pool, key: k.keyId };
        budgetsOf(k.limits, k.remaining, (budget, limit, left) => {
          keyLimit.set({ ...labels, budget }, limit);
          keyRemaining.set({ ...labels, budget }, left);
        });
        reserved.set(labels, k.reservedTokens);
        keyRequests.inc(labels, k.usage.requests);
        tokens(keyTokens, labels, k.usage);
        for (const [field, outcome] of OUTCOMES) keyOutcomes.inc({ ...labels, outcome }, k.usage[field]);
      }
      for (const g of stats.quotaGroups) {
        const labels = { pool, group: g.name };
        budgetsOf(g.limits, g.remaining, (budget, limit, left) => {
          groupLimit.set({ ...labels, budget }, limit);
          groupRemaining.set({ ...labels, budget }, left);
        });
        groupRequests.inc(labels, g.usage.requests);
        tokens(groupTokens, labels, g.usage);
      }
    },
  };
}
