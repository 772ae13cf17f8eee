// Prometheus metrics on a private registry. The hot path only increments counters and observes
// histograms; per-key gauges are pulled from the engine's stats at scrape time.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { CircuitState, LeaseOutcome, PoolStatsView } from "../domain/types.js";

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

  // One refresh per scrape fills all per-pool gauges from the same stats read.
  const refreshPoolGauges = (): void => {
    waiters.reset();
    leasesActive.reset();
    keyCooldown.reset();
    circuitState.reset();
    if (!source) return;
    for (const pool of source.pools()) {
      const stats = source.poolStats(pool);
      if (!stats) continue;
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
      refreshPoolGauges();
      return registry.metrics();
    },
  };
}
