// The budgets section (issue 20): goodput against a fake provider that sends no rate-limit headers
// (declared requests_per_minute), against token-per-minute limits with requests of 100 to 8,000 tokens
// (reserved, then reconciled by the usage reported), and with a primary and a backup tier. Each scenario
// first drains the keys' buckets on both sides (a burst of requests through the same path), so the
// measured run meets the budgets' refill rate, not their first minute's burst; client-side round robin
// without KeyMesh runs the same way as the baseline. The declared-RPM scenario runs again on two replica
// processes sharing one Postgres, half the load offered to each. Figures only, never assertions.
import os from "node:os";
import type { Client } from "@connectrpc/connect";
import postgres from "postgres";
import { Strategy, type PoolAdminService } from "../../server/src/gen/keymesh/v1/admin_pb.js";
import { startFakeProvider, type FakeProvider, type RateLimits } from "../../test/fake-provider/provider.js";
import { scratchDatabase } from "../../test/support/database.js";
import { runLoadgen, type GoodputResult } from "./loadgen.js";
import { ownerOf, settled, start, stop, until, type Replica } from "./replicas.js";
import type { BenchServer } from "./server.js";

export interface BudgetParams {
  seconds: number;
  warmupSeconds: number;
  /** The bench's Postgres: the two-replica scenario's servers share a scratch database on it. */
  postgresUrl: string;
}

/** The two-replica scenario's measured seconds at most, per variant: with the server starts and drains, both stay within a minute. */
const REPLICAS_MAX_SECONDS = 12;

const MINUTE = 60_000;
const LATENCY_MS = 20;
const BUDGET_MS = 5_000;
/** A draining request's budget: the burst beyond the buckets fails fast instead of queueing into the measured run. */
const DRAIN_BUDGET_MS = 500;
/** Requests (or tokens) drained per bucket's capacity: what refills during the burst is spent too. */
const DRAIN_FACTOR = 1.1;
/**
 * Declared limits are this share of what the provider enforces: while the provider's bucket is full, a
 * request in flight costs it refill that KeyMesh's bucket (already debited) keeps, a one-off lead of about
 * rate × latency that a 1% margin wins back in seconds. Goodput is measured against the provider's limits.
 */
const DECLARED_SHARE = 0.99;
const declared = (limit: number) => Math.floor(limit * DECLARED_SHARE);
/** Declared RPM per key with no headers: 4 keys at 20 requests a second. */
const RPM = { keys: 4, perKeyPerMinute: 1_200 };
/** Token-bound keys: 20,000 tokens a second each; requests estimate 100-8,000 tokens and use 60-100% of it. */
const TPM = { keys: 4, perKeyPerMinute: 1_200_000, tokensMin: 100, tokensMax: 8_000 };
/** Tiers: two primary keys at 10 requests a second each, two backup keys; the load is 1.5 times the primary's. */
const TIERS = { primary: 2, backup: 2, perKeyPerMinute: 600, loadFactor: 1.5 };

type Scenario = Omit<GoodputResult, "latency"> & {
  /** With one load generator; with several, each one's figures are in `per_loadgen`. */
  latency?: GoodputResult["latency"];
  per_loadgen?: Array<GoodputResult & { addr: string }>;
  tokens_per_sec?: number;
  provider_429s: number;
  provider_429s_by: Record<string, number>;
  drained: number;
  load_avg: number[];
};

interface KeySpec {
  id: string;
  secret: string;
  limits: { requestsPerMinute?: number; tokensPerMinute?: number };
  priority?: number;
}

/** `attempt` runs each key's AddKey: on replicas it retries while the new pool's owner is not yet serving it. */
async function createPool(
  admin: Client<typeof PoolAdminService>,
  name: string,
  keys: KeySpec[],
  attempt: (add: () => Promise<unknown>) => Promise<unknown> = (add) => add(),
): Promise<void> {
  await admin.createPool({ pool: { name, strategy: Strategy.LEAST_BUSY, defaultCooldown: { seconds: 1n, nanos: 0 } } });
  for (const k of keys) {
    const limits = { requestsPerMinute: BigInt(k.limits.requestsPerMinute ?? 0), tokensPerMinute: BigInt(k.limits.tokensPerMinute ?? 0) };
    await attempt(() => admin.addKey({ pool: name, key: { id: k.id, label: k.id, limits, priority: k.priority ?? 0 }, secret: k.secret }));
  }
}

/** Successful requests and 429s per key, as the provider counted them. */
function providerCounts(p: FakeProvider) {
  const out: Record<string, { ok: number; rateLimited: number; by: Record<string, number>; tokens: number }> = {};
  for (const [key, s] of Object.entries(p.stats().keys)) out[key] = { ok: s.ok, rateLimited: s.rateLimited, by: { ...s.rateLimitedBy }, tokens: s.tokens };
  return out;
}

type Run = GoodputResult & { tokens_per_sec: number };

/** The runs of several load generators as one: counts and rates summed, each one's figures kept. */
function merged(addrs: string[], runs: Run[]): Scenario & { tokens_per_sec: number } {
  if (runs.length === 1) return runs[0]! as Scenario & { tokens_per_sec: number };
  const sum = (f: (r: Run) => number) => runs.reduce((n, r) => n + f(r), 0);
  const failedBy: Record<string, number> = {};
  for (const r of runs) for (const [cause, n] of Object.entries(r.failed_by)) failedBy[cause] = (failedBy[cause] ?? 0) + n;
  const { latency: _, ...first } = runs[0]!;
  return {
    ...first,
    offered_rps: sum((r) => r.offered_rps),
    requests: sum((r) => r.requests),
    succeeded: sum((r) => r.succeeded),
    failed: sum((r) => r.failed),
    failed_by: failedBy,
    provider_calls: sum((r) => r.provider_calls),
    rate_limited_answers: sum((r) => r.rate_limited_answers),
    success_per_sec: sum((r) => r.success_per_sec),
    tokens_per_sec: sum((r) => r.tokens_per_sec),
    per_loadgen: runs.map((r, i) => ({ ...r, addr: addrs[i]! })),
    provider_429s: 0,
    provider_429s_by: {},
    drained: 0,
    load_avg: [],
  };
}

/**
 * Drains the buckets with `drain` requests, then offers `rate` Poisson arrivals; provider counts are those of the
 * measured run. With several addresses, one load generator per address at once, each with an even share of both.
 */
async function scenario(
  addrs: string[],
  p: BudgetParams,
  name: string,
  args: {
    scenario: "keymesh" | "rr";
    pool: string;
    provider: FakeProvider;
    keys: string[];
    rate: number;
    drain: number;
    tokens?: { min: number; max: number };
    /** More load generator flags, for the drain and the run. */
    extra?: Record<string, string>;
  },
): Promise<{ result: Scenario; perKey: Record<string, { ok: number; rateLimited: number }> }> {
  const common = {
    mode: "goodput",
    scenario: args.scenario,
    pool: args.pool,
    provider: args.provider.url,
    keys: args.keys.join(","),
    budget: `${BUDGET_MS}ms`,
    ...(args.tokens ? { "tokens-min": args.tokens.min, "tokens-max": args.tokens.max } : {}),
    ...args.extra,
  };
  const n = addrs.length;
  process.stderr.write(`  budgets ${name} … `);
  const drains = await Promise.all(
    addrs.map((addr, i) =>
      runLoadgen<GoodputResult>({ ...common, addr, seed: 7 + i, budget: `${DRAIN_BUDGET_MS}ms`, rate: 1, drain: Math.ceil((args.drain * DRAIN_FACTOR) / n) }, 120_000),
    ),
  );
  const before = providerCounts(args.provider);
  const runs = await Promise.all(
    addrs.map((addr, i) =>
      runLoadgen<Run>(
        { ...common, addr, seed: 7 + i, rate: args.rate / n, duration: `${Math.round(p.seconds * 1000)}ms`, warmup: `${Math.round(p.warmupSeconds * 1000)}ms` },
        (p.seconds + p.warmupSeconds + BUDGET_MS / 1000 + 60) * 1000,
      ),
    ),
  );
  const r = merged(addrs, runs);
  const after = providerCounts(args.provider);
  const perKey: Record<string, { ok: number; rateLimited: number }> = {};
  const by: Record<string, number> = {};
  let provider429s = 0;
  for (const [key, a] of Object.entries(after)) {
    const b = before[key]!;
    perKey[key] = { ok: a.ok - b.ok, rateLimited: a.rateLimited - b.rateLimited };
    provider429s += a.rateLimited - b.rateLimited;
    for (const [kind, n] of Object.entries(a.by)) by[kind] = (by[kind] ?? 0) + n - (b.by[kind] ?? 0);
  }
  const drained = drains.reduce((s, d) => s + d.succeeded, 0);
  const result: Scenario = { ...r, provider_429s: provider429s, provider_429s_by: by, drained, load_avg: os.loadavg().map((l) => Math.round(l * 100) / 100) };
  process.stderr.write(
    `${r.success_per_sec.toFixed(1)} ok/s${args.tokens ? `, ${Math.round(r.tokens_per_sec)} tokens/s` : ""}, ${r.failed}/${r.requests} failed, ` +
      `${provider429s} provider 429s of ${r.provider_calls} calls (load ${result.load_avg.join(" ")})\n`,
  );
  return { result, perKey };
}

const secrets = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `sk-fake-${prefix}-${i}-0123456789`);
const pct = (part: number, whole: number) => Math.round((1000 * part) / whole) / 10;

/** The sum of `keymesh_forwarded_calls_total` (every method) on these replicas' metrics. */
async function forwardedCalls(replicas: Replica[]): Promise<number> {
  let n = 0;
  for (const r of replicas) {
    const text = await (await fetch(`http://127.0.0.1:${r.httpPort}/metrics`)).text();
    for (const m of text.matchAll(/^keymesh_forwarded_calls_total\{[^}]*\} (\d+)$/gm)) n += Number(m[1]);
  }
  return n;
}

/**
 * declared_rpm_no_headers on two replica processes sharing a scratch database, one load generator pointed at each
 * replica with half the load, a pool (created on one, owned by whichever placement settles on) and a fresh provider
 * per variant. The non-owner forwards a call to the owner and names it (keymesh-owner): `follows_owner`, the Go
 * client then calls the owner directly, so only the calls made before that answer are forwarded; `forwarded`, the
 * load generators drop that header, so the non-owner forwards every call of its half.
 */
async function twoReplicas(p: BudgetParams) {
  const db = await scratchDatabase(p.postgresUrl, "keymesh_budgets_replicas");
  const sql = postgres(db.url, { max: 2, onnotice: () => {} });
  const aggregate = (RPM.keys * RPM.perKeyPerMinute) / 60;
  const params = { ...p, seconds: Math.min(p.seconds, REPLICAS_MAX_SECONDS) };
  const replicas: Replica[] = [];
  try {
    for (let i = 0; i < 2; i++) replicas.push(await start(db.url));
    const addrs = replicas.map((r) => r.addr);
    const variants: Record<string, unknown> = {};
    for (const variant of ["follows_owner", "forwarded"] as const) {
      const keys = secrets(`replicas-${variant}`, RPM.keys);
      const provider = await startFakeProvider({ keys, limits: { requestsPerWindow: RPM.perKeyPerMinute, windowMs: MINUTE }, latencyMs: LATENCY_MS, rateLimitHeaders: false });
      try {
        const pool = `budgets-two-replicas-${variant.replaceAll("_", "-")}`;
        const specs = keys.map((secret, i) => ({ id: `r${i}`, secret, limits: { requestsPerMinute: declared(RPM.perKeyPerMinute) } }));
        await createPool(replicas[0]!.admin, pool, specs, (add) => until(async () => (await add()) && true));
        const [owner] = await settled(sql, [pool]);
        const forwarded0 = await forwardedCalls(replicas);
        const { result } = await scenario(addrs, params, `two_replicas ${variant}`, {
          scenario: "keymesh",
          pool,
          provider,
          keys,
          rate: aggregate,
          drain: RPM.keys * RPM.perKeyPerMinute,
          ...(variant === "forwarded" ? { extra: { "owner-blind": "true" } } : {}),
        });
        variants[variant] = {
          goodput_pct: pct(result.success_per_sec, aggregate),
          offered_realised_rps: Math.round((10 * result.requests) / result.seconds) / 10,
          provider_429_pct: pct(result.provider_429s, result.provider_calls),
          user_visible_failures: result.failed,
          owner_replica: addrs.indexOf(owner!),
          owner_unchanged: (await ownerOf(sql, pool)) === owner,
          // Over the drain and the measured run.
          forwarded_calls: (await forwardedCalls(replicas)) - forwarded0,
          run: result,
        };
      } finally {
        await provider.close();
      }
    }
    return {
      setup: { ...RPM, replicas: 2, declared_share: DECLARED_SHARE, aggregate_rps: aggregate, offered_rps: aggregate, offered_per_replica_rps: aggregate / 2, latency_ms: LATENCY_MS, budget_ms: BUDGET_MS, provider_headers: false, seconds: params.seconds },
      ...variants,
    };
  } finally {
    await stop(replicas);
    await sql.end();
    await db.drop();
  }
}

export async function budgets(bs: BenchServer, p: BudgetParams) {
  const out: Record<string, unknown> = {};

  // Declared RPM, a provider that sends no x-ratelimit-* headers.
  {
    const keys = secrets("rpm", RPM.keys);
    const aggregate = (RPM.keys * RPM.perKeyPerMinute) / 60;
    const limits: Partial<RateLimits> = { requestsPerWindow: RPM.perKeyPerMinute, windowMs: MINUTE };
    const runs: Record<string, Scenario> = {};
    for (const sc of ["keymesh", "rr"] as const) {
      const provider = await startFakeProvider({ keys, limits, latencyMs: LATENCY_MS, rateLimitHeaders: false });
      const pool = `budgets-rpm-${sc}`;
      if (sc === "keymesh") await createPool(bs.admin, pool, keys.map((secret, i) => ({ id: `r${i}`, secret, limits: { requestsPerMinute: declared(RPM.perKeyPerMinute) } })));
      try {
        runs[sc] = (await scenario([bs.addr], p, `declared_rpm_no_headers (${sc})`, { scenario: sc, pool, provider, keys, rate: aggregate, drain: RPM.keys * RPM.perKeyPerMinute })).result;
      } finally {
        await provider.close();
      }
    }
    out.declared_rpm_no_headers = {
      setup: { ...RPM, declared_share: DECLARED_SHARE, aggregate_rps: aggregate, offered_rps: aggregate, latency_ms: LATENCY_MS, budget_ms: BUDGET_MS, provider_headers: false },
      goodput_pct: pct(runs.keymesh!.success_per_sec, aggregate),
      // Poisson arrivals offer the limit on average; this is what they offered in this run.
      offered_realised_rps: Math.round((10 * runs.keymesh!.requests) / runs.keymesh!.seconds) / 10,
      provider_429_pct: pct(runs.keymesh!.provider_429s, runs.keymesh!.provider_calls),
      user_visible_failures: runs.keymesh!.failed,
      baseline_rr: { goodput_pct: pct(runs.rr!.success_per_sec, aggregate), provider_429_pct: pct(runs.rr!.provider_429s, runs.rr!.provider_calls), failures: runs.rr!.failed },
      runs,
    };
  }

  // Token-bound traffic: requests of 100-8,000 tokens against tokens_per_minute.
  {
    const keys = secrets("tpm", TPM.keys);
    const aggregateTokens = (TPM.keys * TPM.perKeyPerMinute) / 60;
    const meanActual = ((TPM.tokensMin + TPM.tokensMax) / 2) * 0.8;
    const rate = aggregateTokens / meanActual;
    const limits: Partial<RateLimits> = { requestsPerWindow: 1_000_000, windowMs: MINUTE, tokensPerWindow: TPM.perKeyPerMinute };
    const runs: Record<string, Scenario> = {};
    for (const sc of ["keymesh", "rr"] as const) {
      const provider = await startFakeProvider({ keys, limits, latencyMs: LATENCY_MS });
      const pool = `budgets-tpm-${sc}`;
      if (sc === "keymesh") await createPool(bs.admin, pool, keys.map((secret, i) => ({ id: `t${i}`, secret, limits: { tokensPerMinute: declared(TPM.perKeyPerMinute) } })));
      try {
        const drain = Math.ceil((TPM.keys * TPM.perKeyPerMinute) / meanActual);
        runs[sc] = (await scenario([bs.addr], p, `token_bound (${sc})`, { scenario: sc, pool, provider, keys, rate, drain, tokens: { min: TPM.tokensMin, max: TPM.tokensMax } })).result;
      } finally {
        await provider.close();
      }
    }
    out.token_bound = {
      setup: { ...TPM, declared_share: DECLARED_SHARE, aggregate_tokens_per_sec: aggregateTokens, offered_rps: rate, used_share: "60-100% of the estimate", latency_ms: LATENCY_MS, budget_ms: BUDGET_MS },
      goodput_tokens_pct: pct(runs.keymesh!.tokens_per_sec!, aggregateTokens),
      provider_429_pct: pct(runs.keymesh!.provider_429s, runs.keymesh!.provider_calls),
      user_visible_failures: runs.keymesh!.failed,
      baseline_rr: { goodput_tokens_pct: pct(runs.rr!.tokens_per_sec!, aggregateTokens), provider_429_pct: pct(runs.rr!.provider_429s, runs.rr!.provider_calls), failures: runs.rr!.failed },
      runs,
    };
  }

  // Tiers: the backup carries only what the primary's budget cannot.
  {
    const primary = secrets("primary", TIERS.primary);
    const backup = secrets("backup", TIERS.backup);
    const primaryRps = (TIERS.primary * TIERS.perKeyPerMinute) / 60;
    const rate = primaryRps * TIERS.loadFactor;
    const provider = await startFakeProvider({ keys: [...primary, ...backup], limits: { requestsPerWindow: TIERS.perKeyPerMinute, windowMs: MINUTE }, latencyMs: LATENCY_MS });
    const pool = "budgets-tiers";
    await createPool(bs.admin, pool, [
      ...primary.map((secret, i) => ({ id: `p${i}`, secret, limits: { requestsPerMinute: declared(TIERS.perKeyPerMinute) } })),
      ...backup.map((secret, i) => ({ id: `b${i}`, secret, limits: { requestsPerMinute: declared(TIERS.perKeyPerMinute) }, priority: 1 })),
    ]);
    try {
      const { result, perKey } = await scenario([bs.addr], p, "tiers", { scenario: "keymesh", pool, provider, keys: [...primary, ...backup], rate, drain: TIERS.primary * TIERS.perKeyPerMinute });
      const sum = (keys: string[]) => keys.reduce((n, k) => n + perKey[k]!.ok, 0);
      const seconds = result.seconds;
      const primaryOk = sum(primary) / seconds;
      const backupOk = sum(backup) / seconds;
      out.tiers = {
        setup: { ...TIERS, declared_share: DECLARED_SHARE, primary_limit_rps: primaryRps, offered_rps: rate, latency_ms: LATENCY_MS, budget_ms: BUDGET_MS },
        primary_ok_per_sec: Math.round(primaryOk * 10) / 10,
        backup_ok_per_sec: Math.round(backupOk * 10) / 10,
        primary_pct_of_its_limit: pct(primaryOk, primaryRps),
        backup_share_pct: pct(backupOk, primaryOk + backupOk),
        excess_share_pct: pct(rate - primaryRps, rate),
        provider_429_pct: pct(result.provider_429s, result.provider_calls),
        user_visible_failures: result.failed,
        run: result,
      };
    } finally {
      await provider.close();
    }
  }

  out.two_replicas = await twoReplicas(p);
  return out;
}
