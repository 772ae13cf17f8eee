import { describe, expect, it } from "vitest";
import type { KeyStatsView, PoolStatsView } from "../../src/domain/types.js";
import { NO_LIMITS } from "../../src/domain/config.js";
import { emptyUsage } from "../../src/domain/usage.js";
import { createMetrics, type MetricsSource } from "../../src/ops/metrics.js";

/** Parses Prometheus text into `name{labels}` → value, skipping comments. */
function parse(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (!match) throw new Error(`unparseable sample line: ${line}`);
    samples.set(match[1], Number(match[2]));
  }
  return samples;
}

function keyStats(keyId: string, overrides: Partial<KeyStatsView>): KeyStatsView {
  return {
    keyId, label: keyId, state: "enabled", eligible: true, activeLeases: 0, maxConcurrency: 0, successRate: 1,
    consecutiveFailures: 0, circuitState: "closed", cooldownRemainingMs: 0, budget: {}, totalLeases: 0,
    recentLeases: 0, inputTokens: 0, outputTokens: 0, priority: 0, quotaGroup: "", limits: NO_LIMITS, remaining: {},
    reservedTokens: 0, usage: emptyUsage(), ...overrides,
  };
}

describe("metrics", () => {
  it("counts hot-path events into histograms and counters", async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    metrics.observeAcquire("openai", "granted", 0.4);
    metrics.observeAcquire("openai", "granted", 30, 29);
    metrics.observeAcquire("no-such-pool-123", "pool_not_found", 0.1);
    metrics.countOutcome("openai", "success");
    metrics.countOutcome("openai", "rate_limited");
    metrics.countOutcome("openai", "rate_limited");
    metrics.countLeaseExpiries("openai", 3);
    metrics.setDatabaseUp(true);
    const s = parse(await metrics.metricsText());
    expect(s.get('keymesh_acquire_duration_seconds_count{pool="openai",result="granted"}')).toBe(2);
    expect(s.get('keymesh_acquire_duration_seconds_bucket{le="0.0005",pool="openai",result="granted"}')).toBe(1);
    expect(s.get('keymesh_acquire_wait_seconds_count{pool="openai"}')).toBe(1);
    expect(s.get('keymesh_acquire_wait_seconds_sum{pool="openai"}')).toBeCloseTo(0.029);
    expect(s.get('keymesh_acquire_duration_seconds_count{pool="_unknown",result="pool_not_found"}')).toBe(1);
    expect([...s.keys()].some((k) => k.includes("no-such-pool-123"))).toBe(false);
    expect(s.get('keymesh_outcomes_total{pool="openai",outcome="rate_limited"}')).toBe(2);
    expect(s.get('keymesh_lease_expiries_total{pool="openai"}')).toBe(3);
    expect(s.get("keymesh_database_up")).toBe(1);
  });

  it("pulls per-key gauges from the stats source at scrape time and drops removed keys", async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    let stats: PoolStatsView = {
      pool: "openai", totalKeys: 2, eligibleKeys: 1, activeLeases: 3, waiters: 4, usage: emptyUsage(), quotaGroups: [], servingPriority: 0, affinities: 0,
      keys: [
        keyStats("k1", { activeLeases: 3 }),
        keyStats("k2", { circuitState: "open", cooldownRemainingMs: 12_500 }),
      ],
    };
    const source: MetricsSource = { pools: () => ["openai"], poolStats: () => stats };
    metrics.setSource(source);
    let s = parse(await metrics.metricsText());
    expect(s.get('keymesh_waiters{pool="openai"}')).toBe(4);
    expect(s.get('keymesh_leases_active{pool="openai",key="k1"}')).toBe(3);
    expect(s.get('keymesh_key_cooldown_seconds{pool="openai",key="k2"}')).toBe(12.5);
    expect(s.get('keymesh_circuit_state{pool="openai",key="k2",state="open"}')).toBe(1);
    expect(s.get('keymesh_circuit_state{pool="openai",key="k2",state="closed"}')).toBe(0);

    stats = { ...stats, keys: [stats.keys[0]] };
    s = parse(await metrics.metricsText());
    expect(s.has('keymesh_leases_active{pool="openai",key="k2"}')).toBe(false);
    expect(s.get('keymesh_leases_active{pool="openai",key="k1"}')).toBe(3);
  });

  it("exports declared budgets left against their limits, reserved tokens, the serving tier and usage totals per key, group and pool", async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const usage = { requests: 12, inputTokens: 900, outputTokens: 300, successes: 9, rateLimited: 1, failures: 1, unreported: 1 };
    const stats: PoolStatsView = {
      pool: "openai", totalKeys: 1, eligibleKeys: 1, activeLeases: 1, waiters: 0, usage, servingPriority: 1, affinities: 0,
      quotaGroups: [{ name: "org", limits: { requestsPerMinute: 0, tokensPerMinute: 90_000, requestsPerDay: 0 }, remaining: { tokensPerMinute: 40_000 }, usage, keys: 1 }],
      keys: [
        keyStats("k1", {
          limits: { requestsPerMinute: 60, tokensPerMinute: 0, requestsPerDay: 1_000 },
          remaining: { requestsPerMinute: 12, requestsPerDay: 988 },
          reservedTokens: 4_000,
          usage,
        }),
      ],
    };
    metrics.setSource({ pools: () => ["openai"], poolStats: () => stats });
    const s = parse(await metrics.metricsText());
    expect(s.get('keymesh_key_budget_remaining{pool="openai",key="k1",budget="requests_per_minute"}')).toBe(12);
    expect(s.get('keymesh_key_budget_limit{pool="openai",key="k1",budget="requests_per_day"}')).toBe(1_000);
    expect(s.has('keymesh_key_budget_remaining{pool="openai",key="k1",budget="tokens_per_minute"}')).toBe(false);
    expect(s.get('keymesh_quota_group_budget_remaining{pool="openai",group="org",budget="tokens_per_minute"}')).toBe(40_000);
    expect(s.get('keymesh_key_reserved_tokens{pool="openai",key="k1"}')).toBe(4_000);
    expect(s.get('keymesh_pool_serving_priority{pool="openai"}')).toBe(1);
    expect(s.get('keymesh_key_requests_total{pool="openai",key="k1"}')).toBe(12);
    expect(s.get('keymesh_key_tokens_total{pool="openai",key="k1",direction="output"}')).toBe(300);
    expect(s.get('keymesh_key_leases_ended_total{pool="openai",key="k1",outcome="rate_limited"}')).toBe(1);
    expect(s.get('keymesh_quota_group_requests_total{pool="openai",group="org"}')).toBe(12);
    expect(s.get('keymesh_pool_tokens_total{pool="openai",direction="input"}')).toBe(900);
    // A second scrape reports the same totals, not twice them.
    expect(parse(await metrics.metricsText()).get('keymesh_pool_requests_total{pool="openai"}')).toBe(12);
  });

  it("reports snapshot age against the injected clock", async () => {
    let now = 1_000_000;
    const metrics = createMetrics({ defaultMetrics: false, now: () => now });
    now += 4_000;
    expect(parse(await metrics.metricsText()).get("keymesh_snapshot_age_seconds")).toBe(4);
    metrics.observeSnapshot(12, now);
    now += 2_500;
    const s = parse(await metrics.metricsText());
    expect(s.get("keymesh_snapshot_age_seconds")).toBe(2.5);
    expect(s.get("keymesh_snapshot_duration_seconds_count")).toBe(1);
  });

  it("includes process metrics on its own registry, not the global one", async () => {
    const a = createMetrics();
    const b = createMetrics();
    const text = await a.metricsText();
    expect(text).toContain("keymesh_process_cpu_seconds_total");
    expect(a.registry).not.toBe(b.registry);
    expect(a.contentType).toMatch(/^text\/plain/);
  });
});
