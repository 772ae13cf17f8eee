// Prometheus metrics on a private registry. The hot path only increments counters, observes histograms
// and adds to plain maps; everything about keys and pools is read from the engine's stats at scrape time.
// Per-key series are bounded: a pool with more keys than `maxKeysPerPool` exports only its pool series.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { BudgetRemaining, CircuitState, KeyState, KeyStatsView, LeaseOutcome, Limits, PoolStatsView, UsageView } from "../domain/types.js";

/**
 * How an Acquire ended, as the `result` label: `timeout` waited for a key and none came in time, `no_key`
 * found none and was not allowed to wait (wait_timeout 0).
 */
export type AcquireResult = "granted" | "timeout" | "no_key" | "pool_not_found" | "cancelled" | "error";

/** Which listener answered an RPC. */
type Listener = "grpc" | "http";

/** What the scrape reads live state from: the engine's pools and their stats, and the snapshot writer. */
export interface MetricsSource {
  pools(): string[];
  poolStats(pool: string): PoolStatsView | undefined;
  /** When the oldest runtime state not yet written was noticed (epoch ms); undefined when all is written. */
  unwrittenSince(): number | undefined;
}

export interface Metrics {
  readonly registry: Registry;
  readonly contentType: string;
  /** One finished Acquire: total duration and, when it queued, the time it waited. */
  observeAcquire(pool: string, result: AcquireResult, durationMs: number, waitedMs?: number): void;
  /** One outcome report (Release, MarkFailed, MarkRateLimited) on a key. */
  countOutcome(pool: string, keyId: string, outcome: LeaseOutcome): void;
  /** Leases reclaimed because their holder did not renew them. */
  countLeaseExpiries(pool: string, count?: number): void;
  /** One RPC answered: `code` is its gRPC status code (0 is OK); for a stream, from open to end. */
  observeRpc(listener: Listener, service: string, method: string, code: number, durationMs: number): void;
  /** One snapshot written, taking `durationMs`. */
  observeSnapshot(durationMs: number): void;
  /** One snapshot that could not be written. */
  countSnapshotFailure(): void;
  setDatabaseUp(up: boolean): void;
  /** A pool this replica claimed, took over, handed over, lost, stopped or resumed serving. */
  countOwnershipChange(change: string): void;
  /** A call forwarded to the pool's owner, by method. */
  countForwarded(method: string): void;
  /** A write refused by the fence: another replica held the pool under a newer term. */
  countFenceRejection(): void;
  /** Where scrape-time gauges come from; without a source they stay empty. */
  setSource(source: MetricsSource): void;
  metricsText(): Promise<string>;
}

export interface MetricsOptions {
  now?: () => number;
  defaultMetrics?: boolean;
  /** A pool with more keys exports no per-key series (KEYMESH_METRICS_MAX_KEYS); 0: none at all. Default 1000. */
  maxKeysPerPool?: number;
  /** For keymesh_build_info. */
  version?: string;
}

const CIRCUIT_STATES: CircuitState[] = ["closed", "open", "half_open"];
const KEY_STATES: KeyState[] = ["enabled", "disabled", "auto_disabled_auth", "auto_disabled_quota", "draining"];
/** Acquire is sub-millisecond when a key is free and seconds when it waits; buckets cover both. */
const ACQUIRE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const SNAPSHOT_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
/** Unknown pool names come from callers; folding them keeps label cardinality bounded. */
const UNKNOWN_POOL = "_unknown";
export const DEFAULT_MAX_KEYS_PER_POOL = 1000;

/** gRPC status names by code, as the `code` label spells them. */
const CODE_NAMES = [
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
  "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
];

export function createMetrics(options: MetricsOptions = {}): Metrics {
  const now = options.now ?? Date.now;
  const maxKeysPerPool = options.maxKeysPerPool ?? DEFAULT_MAX_KEYS_PER_POOL;
  const registry = new Registry();
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: "keymesh_" });
  let source: MetricsSource | undefined;

  new Gauge({
    name: "keymesh_build_info",
    help: "Always 1; the labels say which build and runtime serve.",
    labelNames: ["version", "node"] as const,
    registers: [registry],
  }).set({ version: options.version ?? "unknown", node: process.version }, 1);

  // ---- lending: counted on the hot path ----

  const acquireDuration = new Histogram({
    name: "keymesh_acquire_duration_seconds",
    help: "Time from Acquire received to answered, by result (granted, timeout, no_key, pool_not_found, cancelled, error).",
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
  /** Outcome reports per pool, key and outcome: a map on the hot path, series at scrape time. */
  const keyOutcomes = new Map<string, Map<string, Map<LeaseOutcome, number>>>();

  // ---- RPCs on both listeners ----

  const rpcDuration = new Histogram({
    name: "keymesh_rpc_duration_seconds",
    help: "RPCs answered, by listener (grpc, http), service, method and status code; streams from open to end.",
    labelNames: ["listener", "service", "method", "code"] as const,
    buckets: ACQUIRE_BUCKETS,
    registers: [registry],
  });

  // ---- per key and per pool: read from the engine at scrape time ----

  const keyGauge = (name: string, help: string, extra: string[] = []) =>
    new Gauge({ name, help, labelNames: ["pool", "key", ...extra], registers: [registry] });
  const keyCounter = (name: string, help: string, extra: string[] = []) =>
    new Counter({ name, help, labelNames: ["pool", "key", ...extra], registers: [registry] });
  const poolGauge = (name: string, help: string, extra: string[] = []) =>
    new Gauge({ name, help, labelNames: ["pool", ...extra], registers: [registry] });

  const perKey = {
    leasesActive: keyGauge("keymesh_leases_active", "Live leases per key."),
    cooldown: keyGauge("keymesh_key_cooldown_seconds", "Seconds left in the key's rate-limit cooldown (0 when none)."),
    circuit: keyGauge("keymesh_circuit_state", "1 for the key's current circuit-breaker state, 0 for the others.", ["state"]),
    state: keyGauge("keymesh_key_state", "1 for the key's state (enabled, disabled, auto_disabled_auth, auto_disabled_quota, draining), 0 for the others.", ["state"]),
    eligible: keyGauge("keymesh_key_eligible", "1 when Acquire could lend the key now, 0 otherwise."),
    emaLatency: keyGauge("keymesh_key_ema_latency_seconds", "EMA (alpha 0.2) of reported latencies; absent before the first report."),
    successRatio: keyGauge("keymesh_key_success_ratio", "Share of successful outcomes over the recent window (1 when there is none)."),
    failures: keyGauge("keymesh_key_consecutive_failures", "Failures since the key's last success."),
    requestsRemaining: keyGauge("keymesh_key_provider_requests_remaining", "Requests left in the provider's budget as estimated from its rate-limit headers; absent when unknown."),
    requestsLimit: keyGauge("keymesh_key_provider_requests_limit", "The provider's request limit from its rate-limit headers; absent when unknown."),
    tokensRemaining: keyGauge("keymesh_key_provider_tokens_remaining", "Tokens left in the provider's budget from its rate-limit headers; absent when unknown."),
    tokensLimit: keyGauge("keymesh_key_provider_tokens_limit", "The provider's token limit from its rate-limit headers; absent when unknown."),
    leases: keyCounter("keymesh_key_leases_total", "Leases granted on the key since it was added."),
    tokens: keyCounter("keymesh_key_tokens_total", "Tokens reported on the key since it was added, by direction (input, output).", ["direction"]),
    outcomes: keyCounter("keymesh_key_outcomes_total", "Outcome reports on the key since this process started, by class.", ["outcome"]),
  };
  const perPool = {
    waiters: poolGauge("keymesh_waiters", "Acquire calls waiting for a key."),
    keys: poolGauge("keymesh_pool_keys", "Keys in the pool by state.", ["state"]),
    eligible: poolGauge("keymesh_pool_eligible_keys", "Keys Acquire could lend now."),
    leases: poolGauge("keymesh_pool_leases_active", "Live leases across the pool."),
    circuits: poolGauge("keymesh_pool_circuits", "Keys of the pool by circuit-breaker state.", ["state"]),
    cooling: poolGauge("keymesh_pool_keys_cooling_down", "Keys of the pool in a rate-limit cooldown."),
    perKeySeries: poolGauge("keymesh_pool_per_key_series", "1 when the pool exports per-key series, 0 when it has more keys than KEYMESH_METRICS_MAX_KEYS."),
  };

  const setKey = (pool: string, key: KeyStatsView): void => {
    const labels = { pool, key: key.keyId };
    perKey.leasesActive.set(labels, key.activeLeases);
    perKey.cooldown.set(labels, key.cooldownRemainingMs / 1000);
    for (const state of CIRCUIT_STATES) perKey.circuit.set({ ...labels, state }, key.circuitState === state ? 1 : 0);
    for (const state of KEY_STATES) perKey.state.set({ ...labels, state }, key.state === state ? 1 : 0);
    perKey.eligible.set(labels, key.eligible ? 1 : 0);
    if (key.emaLatencyMs !== undefined) perKey.emaLatency.set(labels, key.emaLatencyMs / 1000);
    perKey.successRatio.set(labels, key.successRate);
    perKey.failures.set(labels, key.consecutiveFailures);
    const b = key.budget;
    if (b.requestsRemaining !== undefined) perKey.requestsRemaining.set(labels, b.requestsRemaining);
    if (b.requestsLimit !== undefined) perKey.requestsLimit.set(labels, b.requestsLimit);
    if (b.tokensRemaining !== undefined) perKey.tokensRemaining.set(labels, b.tokensRemaining);
    if (b.tokensLimit !== undefined) perKey.tokensLimit.set(labels, b.tokensLimit);
    perKey.leases.inc(labels, key.totalLeases);
    perKey.tokens.inc({ ...labels, direction: "input" }, key.inputTokens);
    perKey.tokens.inc({ ...labels, direction: "output" }, key.outputTokens);
    for (const [outcome, n] of keyOutcomes.get(pool)?.get(key.keyId) ?? []) perKey.outcomes.inc({ ...labels, outcome }, n);
  };

  const setPool = (stats: PoolStatsView): void => {
    const { pool } = stats;
    perPool.waiters.set({ pool }, stats.waiters);
    perPool.eligible.set({ pool }, stats.eligibleKeys);
    perPool.leases.set({ pool }, stats.activeLeases);
    for (const state of KEY_STATES) perPool.keys.set({ pool, state }, stats.keys.filter((k) => k.state === state).length);
    for (const state of CIRCUIT_STATES) perPool.circuits.set({ pool, state }, stats.keys.filter((k) => k.circuitState === state).length);
    perPool.cooling.set({ pool }, stats.keys.filter((k) => k.cooldownRemainingMs > 0).length);
    const keyed = stats.keys.length <= maxKeysPerPool;
    perPool.perKeySeries.set({ pool }, keyed ? 1 : 0);
    if (keyed) for (const key of stats.keys) setKey(pool, key);
    // Counts of keys that are gone go with them.
    const counted = keyOutcomes.get(pool);
    if (counted) {
      const present = new Set(stats.keys.map((k) => k.keyId));
      for (const keyId of counted.keys()) if (!present.has(keyId)) counted.delete(keyId);
    }
  };

  // One refresh per scrape fills every pool and key series from the same stats read.
  const budgets = budgetMetrics(registry);
  const refresh = (): void => {
    for (const metric of [...Object.values(perKey), ...Object.values(perPool)]) metric.reset();
    budgets.reset();
    if (!source) return;
    const pools = source.pools();
    for (const pool of keyOutcomes.keys()) if (!pools.includes(pool)) keyOutcomes.delete(pool);
    for (const pool of pools) {
      const stats = source.poolStats(pool);
      if (!stats) continue;
      setPool(stats);
      budgets.refresh(stats, stats.keys.length <= maxKeysPerPool);
    }
  };

  // ---- persistence ----

  const ownershipChanges = new Counter({
    name: "keymesh_ownership_changes_total",
    help: "Pools this replica claimed, took over, handed over, lost, stopped serving (suspended) or resumed.",
    labelNames: ["change"] as const,
    registers: [registry],
  });
  const forwarded = new Counter({
    name: "keymesh_forwarded_calls_total",
    help: "Calls forwarded to the replica that owns their pool, by method.",
    labelNames: ["method"] as const,
    registers: [registry],
  });
  const fenceRejections = new Counter({
    name: "keymesh_fence_rejections_total",
    help: "Writes refused because another replica held the pool under a newer term.",
    registers: [registry],
  });
  const snapshotDuration = new Histogram({
    name: "keymesh_snapshot_duration_seconds",
    help: "Time to write one runtime-state snapshot.",
    buckets: SNAPSHOT_BUCKETS,
    registers: [registry],
  });
  const snapshotFailures = new Counter({
    name: "keymesh_snapshot_failures_total",
    help: "Snapshots that could not be written (retried with backoff).",
    registers: [registry],
  });
  new Gauge({
    name: "keymesh_snapshot_age_seconds",
    help: "How long runtime state has waited to be written: 0 when everything is written.",
    registers: [registry],
    collect() {
      const since = source?.unwrittenSince();
      this.set(since === undefined ? 0 : Math.max(0, now() - since) / 1000);
    },
  });
  const databaseUp = new Gauge({
    name: "keymesh_database_up",
    help: "1 when the last database operation succeeded, 0 while the database is unreachable.",
    registers: [registry],
  });

  return {
    registry,
    contentType: registry.contentType,
    observeAcquire(pool, result, durationMs, waitedMs) {
      const poolLabel = result === "pool_not_found" ? UNKNOWN_POOL : pool;
      acquireDuration.observe({ pool: poolLabel, result }, durationMs / 1000);
      if (waitedMs !== undefined) acquireWait.observe({ pool: poolLabel }, waitedMs / 1000);
    },
    countOutcome(pool, keyId, outcome) {
      outcomes.inc({ pool, outcome });
      let byKey = keyOutcomes.get(pool);
      if (!byKey) keyOutcomes.set(pool, (byKey = new Map()));
      let counts = byKey.get(keyId);
      if (!counts) byKey.set(keyId, (counts = new Map()));
      counts.set(outcome, (counts.get(outcome) ?? 0) + 1);
    },
    countLeaseExpiries(pool, count = 1) {
      leaseExpiries.inc({ pool }, count);
    },
    observeRpc(listener, service, method, code, durationMs) {
      rpcDuration.observe({ listener, service, method, code: CODE_NAMES[code] ?? String(code) }, durationMs / 1000);
    },
    observeSnapshot(durationMs) {
      snapshotDuration.observe(durationMs / 1000);
    },
    countSnapshotFailure() {
      snapshotFailures.inc();
    },
    setDatabaseUp(up) {
      databaseUp.set(up ? 1 : 0);
    },
    countOwnershipChange(change) {
      ownershipChanges.inc({ change });
    },
    countForwarded(method) {
      forwarded.inc({ method });
    },
    countFenceRejection() {
      fenceRejections.inc();
    },
    setSource(next) {
      source = next;
    },
    async metricsText() {
      refresh();
      return registry.metrics();
    },
  };
}

// ---- declared budgets and usage (issue 20) ------------------------------------------------------
// Set at scrape time from the same stats read as the series above (a key's own requests, tokens and outcomes
// are keymesh_key_leases_total, keymesh_key_tokens_total and keymesh_key_outcomes_total there). The usage
// totals are the engine's own (persisted by snapshots, so they only grow), exported as counters.

const BUDGETS: Array<[keyof Limits & keyof BudgetRemaining, string]> = [
  ["requestsPerMinute", "requests_per_minute"],
  ["tokensPerMinute", "tokens_per_minute"],
  ["requestsPerDay", "requests_per_day"],
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
  const groupRequests = new Counter({ name: "keymesh_quota_group_requests_total", help: "Leases granted on the quota group's keys.", labelNames: ["pool", "group"] as const, registers });
  const groupTokens = new Counter({ name: "keymesh_quota_group_tokens_total", help: "Tokens reported on the quota group's keys.", labelNames: ["pool", "group", "direction"] as const, registers });
  const poolRequests = new Counter({ name: "keymesh_pool_requests_total", help: "Leases granted in the pool since it was created.", labelNames: ["pool"] as const, registers });
  const poolTokens = new Counter({ name: "keymesh_pool_tokens_total", help: "Tokens reported in the pool since it was created.", labelNames: ["pool", "direction"] as const, registers });
  const all = [keyRemaining, keyLimit, groupRemaining, groupLimit, reserved, servingPriority, groupRequests, groupTokens, poolRequests, poolTokens];

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
    /** `keyed`: the pool exports per-key series (it has no more keys than the bound). */
    refresh(stats: PoolStatsView, keyed: boolean): void {
      const pool = stats.pool;
      servingPriority.set({ pool }, stats.servingPriority);
      poolRequests.inc({ pool }, stats.usage.requests);
      tokens(poolTokens, { pool }, stats.usage);
      for (const k of keyed ? stats.keys : []) {
        const labels = { pool, key: k.keyId };
        budgetsOf(k.limits, k.remaining, (budget, limit, left) => {
          keyLimit.set({ ...labels, budget }, limit);
          keyRemaining.set({ ...labels, budget }, left);
        });
        reserved.set(labels, k.reservedTokens);
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
