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

const source = (stats: () => PoolStatsView[], unwrittenSince: () => number | undefined = () => undefined): MetricsSource => ({
  pools: () => stats().map((p) => p.pool),
  poolStats: (pool) => stats().find((p) => p.pool === pool),
  unwrittenSince,
});

const pool = (name: string, keys: KeyStatsView[], overrides: Partial<PoolStatsView> = {}): PoolStatsView => ({
  pool: name, totalKeys: keys.length, eligibleKeys: keys.filter((k) => k.eligible).length,
  activeLeases: keys.reduce((n, k) => n + k.activeLeases, 0), waiters: 0, keys, usage: emptyUsage(), quotaGroups: [], servingPriority: 0, affinities: 0,
  ...overrides,
});

describe("metrics", () => {
  it("counts hot-path events into histograms and counters", async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    metrics.observeAcquire("openai", "granted", 0.4);
    metrics.observeAcquire("openai", "granted", 30, 29);
    metrics.observeAcquire("openai", "timeout", 1000, 1000);
    metrics.observeAcquire("openai", "no_key", 0.2);
    metrics.observeAcquire("no-such-pool-123", "pool_not_found", 0.1);
    metrics.countOutcome("openai", "k1", "success");
    metrics.countOutcome("openai", "k1", "rate_limited");
    metrics.countOutcome("openai", "k2", "rate_limited");
    metrics.countLeaseExpiries("openai", 3);
    metrics.setDatabaseUp(true);
    const s = parse(await metrics.metricsText());
    expect(s.get('keymesh_acquire_duration_seconds_count{pool="openai",result="granted"}')).toBe(2);
    expect(s.get('keymesh_acquire_duration_seconds_bucket{le="0.0005",pool="openai",result="granted"}')).toBe(1);
    expect(s.get('keymesh_acquire_duration_seconds_count{pool="openai",result="timeout"}')).toBe(1);
    expect(s.get('keymesh_acquire_duration_seconds_count{pool="openai",result="no_key"}')).toBe(1);
    expect(s.get('keymesh_acquire_wait_seconds_count{pool="openai"}')).toBe(2);
    expect(s.get('keymesh_acquire_wait_seconds_sum{pool="openai"}')).toBeCloseTo(1.029);
    expect(s.get('keymesh_acquire_duration_seconds_count{pool="_unknown",result="pool_not_found"}')).toBe(1);
    expect([...s.keys()].some((k) => k.includes("no-such-pool-123"))).toBe(false);
    expect(s.get('keymesh_outcomes_total{pool="openai",outcome="rate_limited"}')).toBe(2);
    expect(s.get('keymesh_lease_expiries_total{pool="openai"}')).toBe(3);
    expect(s.get("keymesh_database_up")).toBe(1);
  });

  it("pulls per-key and per-pool series from the stats source at scrape time and drops removed keys", async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    let stats = pool("openai", [
      keyStats("k1", { activeLeases: 3, emaLatencyMs: 250, successRate: 0.75, totalLeases: 40, inputTokens: 1000, outputTokens: 300, budget: { requestsRemaining: 12, requestsLimit: 60, tokensRemaining: 9000, tokensLimit: 10000 } }),
      keyStats("k2", { eligible: false, circuitState: "open", cooldownRemainingMs: 12_500, consecutiveFailures: 4, state: "auto_disabled_auth" }),
    ], { waiters: 4 });
    metrics.setSource(source(() => [stats]));
    metrics.countOutcome("openai", "k1", "success");
    metrics.countOutcome("openai", "k1", "success");
    metrics.countOutcome("openai", "k2", "auth");
    let s = parse(await metrics.metricsText());
    expect(s.get('keymesh_waiters{pool="openai"}')).toBe(4);
    expect(s.get('keymesh_leases_active{pool="openai",key="k1"}')).toBe(3);
    expect(s.get('keymesh_key_cooldown_seconds{pool="openai",key="k2"}')).toBe(12.5);
    expect(s.get('keymesh_circuit_state{pool="openai",key="k2",state="open"}')).toBe(1);
    expect(s.get('keymesh_circuit_state{pool="openai",key="k2",state="closed"}')).toBe(0);
    expect(s.get('keymesh_key_state{pool="openai",key="k2",state="auto_disabled_auth"}')).toBe(1);
    expect(s.get('keymesh_key_state{pool="openai",key="k2",state="enabled"}')).toBe(0);
    expect([s.get('keymesh_key_eligible{pool="openai",key="k1"}'), s.get('keymesh_key_eligible{pool="openai",key="k2"}')]).toEqual([1, 0]);
    expect(s.get('keymesh_key_ema_latency_seconds{pool="openai",key="k1"}')).toBe(0.25);
    expect(s.has('keymesh_key_ema_latency_seconds{pool="openai",key="k2"}')).toBe(false);
    expect(s.get('keymesh_key_success_ratio{pool="openai",key="k1"}')).toBe(0.75);
    expect(s.get('keymesh_key_consecutive_failures{pool="openai",key="k2"}')).toBe(4);
    expect(s.get('keymesh_key_provider_requests_remaining{pool="openai",key="k1"}')).toBe(12);
    expect(s.get('keymesh_key_provider_requests_limit{pool="openai",key="k1"}')).toBe(60);
    expect(s.get('keymesh_key_provider_tokens_remaining{pool="openai",key="k1"}')).toBe(9000);
    expect(s.get('keymesh_key_provider_tokens_limit{pool="openai",key="k1"}')).toBe(10000);
    expect(s.has('keymesh_key_provider_requests_remaining{pool="openai",key="k2"}')).toBe(false);
    expect(s.get('keymesh_key_leases_total{pool="openai",key="k1"}')).toBe(40);
    expect(s.get('keymesh_key_tokens_total{pool="openai",key="k1",direction="input"}')).toBe(1000);
    expect(s.get('keymesh_key_tokens_total{pool="openai",key="k1",direction="output"}')).toBe(300);
    expect(s.get('keymesh_key_outcomes_total{pool="openai",key="k1",outcome="success"}')).toBe(2);
    expect(s.get('keymesh_key_outcomes_total{pool="openai",key="k2",outcome="auth"}')).toBe(1);
    expect(s.get('keymesh_pool_keys{pool="openai",state="enabled"}')).toBe(1);
    expect(s.get('keymesh_pool_keys{pool="openai",state="auto_disabled_auth"}')).toBe(1);
    expect(s.get('keymesh_pool_eligible_keys{pool="openai"}')).toBe(1);
    expect(s.get('keymesh_pool_leases_active{pool="openai"}')).toBe(3);
    expect(s.get('keymesh_pool_circuits{pool="openai",state="open"}')).toBe(1);
    expect(s.get('keymesh_pool_keys_cooling_down{pool="openai"}')).toBe(1);
    expect(s.get('keymesh_pool_per_key_series{pool="openai"}')).toBe(1);

    stats = pool("openai", [stats.keys[0]!]);
    s = parse(await metrics.metricsText());
    expect(s.has('keymesh_leases_active{pool="openai",key="k2"}')).toBe(false);
    expect(s.has('keymesh_key_outcomes_total{pool="openai",key="k2",outcome="auth"}')).toBe(false);
    expect(s.get('keymesh_leases_active{pool="openai",key="k1"}')).toBe(3);
  });

  it("exports declared budgets left against their limits, reserved tokens, the serving tier and usage totals per key, group and pool", async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const usage = { requests: 12, inputTokens: 900, outputTokens: 300, successes: 9, rateLimited: 1, failures: 1, unreported: 1 };
    const stats: PoolStatsView = {
      ...pool("openai", []),
      usage,
      servingPriority: 1,
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
    metrics.setSource(source(() => [stats]));
    const s = parse(await metrics.metricsText());
    expect(s.get('keymesh_key_budget_remaining{pool="openai",key="k1",budget="requests_per_minute"}')).toBe(12);
    expect(s.get('keymesh_key_budget_limit{pool="openai",key="k1",budget="requests_per_day"}')).toBe(1_000);
    expect(s.has('keymesh_key_budget_remaining{pool="openai",key="k1",budget="tokens_per_minute"}')).toBe(false);
    expect(s.get('keymesh_quota_group_budget_remaining{pool="openai",group="org",budget="tokens_per_minute"}')).toBe(40_000);
    expect(s.get('keymesh_key_reserved_tokens{pool="openai",key="k1"}')).toBe(4_000);
    expect(s.get('keymesh_pool_serving_priority{pool="openai"}')).toBe(1);
    expect(s.get('keymesh_quota_group_requests_total{pool="openai",group="org"}')).toBe(12);
    expect(s.get('keymesh_pool_tokens_total{pool="openai",direction="input"}')).toBe(900);
    // A second scrape reports the same totals, not twice them.
    expect(parse(await metrics.metricsText()).get('keymesh_pool_requests_total{pool="openai"}')).toBe(12);
  });

  it("exports only pool series for a pool with more keys than the limit, and none per key at 0", async () => {
    const keys = (n: number) => Array.from({ length: n }, (_, i) => keyStats(`k${i}`, { activeLeases: 1 }));
    const stats = [pool("small", keys(3)), pool("large", keys(4))];
    const limited = createMetrics({ defaultMetrics: false, maxKeysPerPool: 3 });
    limited.setSource(source(() => stats));
    const s = parse(await limited.metricsText());
    const perKey = (p: string) => [...s.keys()].filter((k) => k.includes(`pool="${p}",key=`));
    expect(perKey("small").length).toBeGreaterThan(0);
    expect(perKey("large")).toEqual([]);
    expect([s.get('keymesh_pool_per_key_series{pool="small"}'), s.get('keymesh_pool_per_key_series{pool="large"}')]).toEqual([1, 0]);
    expect(s.get('keymesh_pool_leases_active{pool="large"}')).toBe(4);

    const none = createMetrics({ defaultMetrics: false, maxKeysPerPool: 0 });
    none.setSource(source(() => stats));
    const text = await none.metricsText();
    expect(text).not.toMatch(/key="/);
    expect(parse(text).get('keymesh_pool_eligible_keys{pool="small"}')).toBe(3);
  });

  it("counts RPCs and their latency by listener, service, method and status code", async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    metrics.observeRpc("grpc", "keymesh.v1.KeyPoolService", "Acquire", 0, 0.3);
    metrics.observeRpc("grpc", "keymesh.v1.KeyPoolService", "Acquire", 0, 0.4);
    metrics.observeRpc("grpc", "keymesh.v1.KeyPoolService", "Acquire", 8, 2000);
    metrics.observeRpc("http", "keymesh.v1.PoolAdminService", "ListPools", 16, 1);
    const s = parse(await metrics.metricsText());
    const labels = (listener: string, service: string, method: string, code: string) =>
      `listener="${listener}",service="${service}",method="${method}",code="${code}"`;
    expect(s.get(`keymesh_rpc_duration_seconds_count{${labels("grpc", "keymesh.v1.KeyPoolService", "Acquire", "OK")}}`)).toBe(2);
    expect(s.get(`keymesh_rpc_duration_seconds_count{${labels("grpc", "keymesh.v1.KeyPoolService", "Acquire", "RESOURCE_EXHAUSTED")}}`)).toBe(1);
    expect(s.get(`keymesh_rpc_duration_seconds_sum{${labels("grpc", "keymesh.v1.KeyPoolService", "Acquire", "RESOURCE_EXHAUSTED")}}`)).toBe(2);
    expect(s.get(`keymesh_rpc_duration_seconds_count{${labels("http", "keymesh.v1.PoolAdminService", "ListPools", "UNAUTHENTICATED")}}`)).toBe(1);

    const acquireOk = labels("grpc", "keymesh.v1.KeyPoolService", "Acquire", "OK");
    expect(s.get(`keymesh_rpc_duration_seconds_bucket{le="0.0001",${acquireOk}}`)).toBeUndefined();
    expect(s.get(`keymesh_rpc_duration_seconds_bucket{le="0.0005",${acquireOk}}`)).toBe(2);
    expect(s.get(`keymesh_rpc_duration_seconds_bucket{le="+Inf",${acquireOk}}`)).toBe(2);
    const exhausted = labels("grpc", "keymesh.v1.KeyPoolService", "Acquire", "RESOURCE_EXHAUSTED");
    expect([1, 2.5, 30, "+Inf"].map((le) => s.get(`keymesh_rpc_duration_seconds_bucket{le="${le}",${exhausted}}`))).toEqual([0, 1, 1, 1]);
    expect(s.get(`keymesh_rpc_duration_seconds_sum{${acquireOk}}`)).toBeCloseTo(0.0007);
  });

  it("reports the snapshot age as how long state has waited to be written, 0 when all is written", async () => {
    let now = 1_000_000;
    let unwrittenSince: number | undefined;
    const metrics = createMetrics({ defaultMetrics: false, now: () => now });
    metrics.setSource(source(() => [], () => unwrittenSince));
    now += 600_000;
    expect(parse(await metrics.metricsText()).get("keymesh_snapshot_age_seconds")).toBe(0);
    unwrittenSince = now;
    now += 2_500;
    expect(parse(await metrics.metricsText()).get("keymesh_snapshot_age_seconds")).toBe(2.5);
    metrics.observeSnapshot(12);
    metrics.countSnapshotFailure();
    const s = parse(await metrics.metricsText());
    expect(s.get("keymesh_snapshot_duration_seconds_count")).toBe(1);
    expect(s.get("keymesh_snapshot_failures_total")).toBe(1);
  });

  it("carries the build's version and the runtime in keymesh_build_info", async () => {
    const s = parse(await createMetrics({ defaultMetrics: false, version: "1.2.3" }).metricsText());
    expect(s.get(`keymesh_build_info{version="1.2.3",node="${process.version}"}`)).toBe(1);
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
