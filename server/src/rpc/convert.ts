// Mapping between wire messages (protobuf-es) and domain values. Durations and timestamps become
// milliseconds here; the domain never sees a generated type.
import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import { durationMs } from "@bufbuild/protobuf/wkt";
import type { JsonObject, MessageInitShape } from "@bufbuild/protobuf";
import type { AuditEntry } from "../domain/audit.js";
import { invalidArgument } from "../domain/errors.js";
import {
  STRATEGIES,
  type BudgetRemaining,
  type DomainEvent,
  type FailureClass,
  type KeyStatsView,
  type KeyView,
  type LeaseRecord,
  type Limits,
  type PoolConfig,
  type PoolStatsView,
  type ProviderBudget,
  type RateLimitReport,
  type Strategy,
  type UsageView,
} from "../domain/types.js";
import type { RateLimit } from "../gen/keymesh/v1/common_pb.js";
import { FailureReason } from "../gen/keymesh/v1/pool_pb.js";
import type { WatchItem } from "./event-hub.js";
import {
  CircuitState,
  EventType,
  KeyState,
  Strategy as StrategyEnum,
  type AuditEntrySchema,
  type BudgetRemainingSchema,
  type EventSchema,
  type KeySchema,
  type KeyStatsSchema,
  type LeaseSchema,
  type Limits as LimitsMessage,
  type LimitsSchema,
  type Pool,
  type PoolSchema,
  type PoolStatsSchema,
  type ProviderBudgetSchema,
  type UsageTotalsSchema,
} from "../gen/keymesh/v1/admin_pb.js";

const bigOpt = (n: number | undefined) => (n === undefined ? undefined : BigInt(Math.trunc(n)));

/** A non-negative duration in ms, or undefined when the field is unset. */
export function optionalMs(d: Duration | undefined, field: string): number | undefined {
  if (!d) return undefined;
  const ms = durationMs(d);
  if (!Number.isFinite(ms) || ms < 0) throw invalidArgument(field, "must not be negative");
  return ms;
}

// ts() and dur() build the messages as literals: protobuf-es's timestampFromMs and durationFromMs go
// through its reflective create(), and an Acquire answer holds three of them. Both clamp to
// what protobuf can encode, so an instant the engine derived (from a provider's retry-after, say) never
// makes an answer unencodable in JSON.

/** 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z, protobuf's Timestamp range, in ms. */
const TIMESTAMP_MIN_MS = -62_135_596_800_000;
const TIMESTAMP_MAX_MS = 253_402_300_799_999;
/** protobuf's longest Duration (315,576,000,000 s), in ms. */
const DURATION_MAX_MS = 315_576_000_000_000;

export function ts(ms: number): Timestamp;
export function ts(ms: number | undefined): Timestamp | undefined;
export function ts(ms: number | undefined): Timestamp | undefined {
  if (ms === undefined) return undefined;
  ms = Math.min(Math.max(ms, TIMESTAMP_MIN_MS), TIMESTAMP_MAX_MS);
  const seconds = Math.floor(ms / 1000);
  return { $typeName: "google.protobuf.Timestamp", seconds: BigInt(seconds), nanos: (ms - seconds * 1000) * 1_000_000 };
}

/** A non-negative Duration of whole milliseconds. */
export function dur(ms: number): Duration;
export function dur(ms: number | undefined): Duration | undefined;
export function dur(ms: number | undefined): Duration | undefined {
  if (ms === undefined) return undefined;
  const whole = Math.min(Math.max(0, Math.round(ms)), DURATION_MAX_MS);
  const seconds = Math.floor(whole / 1000);
  return { $typeName: "google.protobuf.Duration", seconds: BigInt(seconds), nanos: (whole - seconds * 1000) * 1_000_000 };
}

/** The proto enum value of each domain strategy has the same name in upper case (STRATEGY_ROUND_ROBIN ...). */
function strategyToProto(s: Strategy): StrategyEnum {
  return StrategyEnum[s.toUpperCase() as Uppercase<Strategy>];
}

const strategies = new Map<StrategyEnum, Strategy>(STRATEGIES.map((s) => [strategyToProto(s), s]));

function strategyFromProto(s: StrategyEnum): Strategy | undefined {
  if (s === StrategyEnum.UNSPECIFIED) return undefined;
  const strategy = strategies.get(s);
  if (strategy === undefined) throw invalidArgument("strategy", `unknown strategy ${s}`);
  return strategy;
}

const failureReasons: Record<FailureReason, FailureClass | undefined> = {
  [FailureReason.UNSPECIFIED]: undefined,
  [FailureReason.AUTH]: "auth",
  [FailureReason.QUOTA_EXHAUSTED]: "quota_exhausted",
  [FailureReason.TRANSIENT]: "transient",
  [FailureReason.OVERLOADED]: "overloaded",
  [FailureReason.CLIENT_ERROR]: "client_error",
};

export function failureFromProto(r: FailureReason): FailureClass | undefined {
  if (!(r in failureReasons)) throw invalidArgument("reason", `unknown failure reason ${r}`);
  return failureReasons[r];
}

export function failureToProto(c: FailureClass | "rate_limited"): FailureReason {
  if (c === "rate_limited") return FailureReason.UNSPECIFIED;
  return Number(Object.entries(failureReasons).find(([, v]) => v === c)![0]) as FailureReason;
}

function nonNegative(v: bigint | undefined, field: string): number | undefined {
  if (v === undefined) return undefined;
  if (v < 0n) throw invalidArgument(field, "must not be negative");
  return Number(v);
}

export function rateLimitFromProto(r: RateLimit | undefined, field: string): RateLimitReport | undefined {
  if (!r) return undefined;
  return {
    requestsRemaining: nonNegative(r.requestsRemaining, `${field}.requests_remaining`),
    requestsLimit: nonNegative(r.requestsLimit, `${field}.requests_limit`),
    requestsResetMs: optionalMs(r.requestsReset, `${field}.requests_reset`),
    tokensRemaining: nonNegative(r.tokensRemaining, `${field}.tokens_remaining`),
    tokensLimit: nonNegative(r.tokensLimit, `${field}.tokens_limit`),
    tokensResetMs: optionalMs(r.tokensReset, `${field}.tokens_reset`),
    headers: Object.keys(r.headers).length > 0 ? r.headers : undefined,
  };
}

/** Declared limits as given (the edge bounds them; the engine validates them). */
export function limitsFromProto(l: LimitsMessage): Limits {
  return { requestsPerMinute: Number(l.requestsPerMinute), tokensPerMinute: Number(l.tokensPerMinute), requestsPerDay: Number(l.requestsPerDay) };
}

function limitsToProto(l: Limits): MessageInitShape<typeof LimitsSchema> {
  return { requestsPerMinute: BigInt(l.requestsPerMinute), tokensPerMinute: BigInt(l.tokensPerMinute), requestsPerDay: BigInt(l.requestsPerDay) };
}

function usageToProto(u: UsageView): MessageInitShape<typeof UsageTotalsSchema> {
  return {
    requests: BigInt(u.requests),
    inputTokens: BigInt(u.inputTokens),
    outputTokens: BigInt(u.outputTokens),
    successes: BigInt(u.successes),
    rateLimited: BigInt(u.rateLimited),
    failures: BigInt(u.failures),
    unreported: BigInt(u.unreported),
  };
}

function remainingToProto(r: BudgetRemaining): MessageInitShape<typeof BudgetRemainingSchema> {
  return { requestsPerMinute: bigOpt(r.requestsPerMinute), tokensPerMinute: bigOpt(r.tokensPerMinute), requestsPerDay: bigOpt(r.requestsPerDay) };
}

/** Pool fields an operator can set, as a partial domain input. */
export function poolFieldsFromProto(p: Pool): Omit<Partial<PoolConfig>, "createdAt" | "updatedAt"> {
  const cb = p.circuitBreaker;
  const quotaGroups: Record<string, Limits> = {};
  for (const [name, l] of Object.entries(p.quotaGroups)) quotaGroups[name] = limitsFromProto(l);
  return {
    name: p.name,
    strategy: strategyFromProto(p.strategy),
    minTtlMs: optionalMs(p.minTtl, "pool.min_ttl"),
    maxTtlMs: optionalMs(p.maxTtl, "pool.max_ttl"),
    defaultTtlMs: optionalMs(p.defaultTtl, "pool.default_ttl"),
    defaultCooldownMs: optionalMs(p.defaultCooldown, "pool.default_cooldown"),
    maxCooldownMs: optionalMs(p.maxCooldown, "pool.max_cooldown"),
    failureThreshold: cb && cb.failureThreshold > 0 ? cb.failureThreshold : undefined,
    openDurationMs: optionalMs(cb?.openDuration, "pool.circuit_breaker.open_duration"),
    maxOpenDurationMs: optionalMs(cb?.maxOpenDuration, "pool.circuit_breaker.max_open_duration"),
    halfOpenProbes: cb && cb.halfOpenProbes > 0 ? cb.halfOpenProbes : undefined,
    description: p.description,
    quotaGroups,
    defaultEstimatedTokens: Number(p.defaultEstimatedTokens),
  };
}

export function poolToProto(p: PoolConfig & { keyCount: number }): MessageInitShape<typeof PoolSchema> {
  return {
    name: p.name,
    strategy: strategyToProto(p.strategy),
    minTtl: dur(p.minTtlMs),
    maxTtl: dur(p.maxTtlMs),
    defaultTtl: dur(p.defaultTtlMs),
    defaultCooldown: dur(p.defaultCooldownMs),
    maxCooldown: dur(p.maxCooldownMs),
    circuitBreaker: {
      failureThreshold: p.failureThreshold,
      openDuration: dur(p.openDurationMs),
      maxOpenDuration: dur(p.maxOpenDurationMs),
      halfOpenProbes: p.halfOpenProbes,
    },
    description: p.description,
    quotaGroups: Object.fromEntries(Object.entries(p.quotaGroups).map(([name, l]) => [name, limitsToProto(l)])),
    defaultEstimatedTokens: BigInt(p.defaultEstimatedTokens),
    keyCount: p.keyCount,
    createTime: ts(p.createdAt),
    updateTime: ts(p.updatedAt),
  };
}

const keyStates: Record<KeyView["state"], KeyState> = {
  enabled: KeyState.ENABLED,
  disabled: KeyState.DISABLED,
  auto_disabled_auth: KeyState.AUTO_DISABLED_AUTH,
  auto_disabled_quota: KeyState.AUTO_DISABLED_QUOTA,
  draining: KeyState.DRAINING,
};

export function keyToProto(k: KeyView, mask: (secret: string) => string): MessageInitShape<typeof KeySchema> {
  const c = k.config;
  return {
    id: c.id,
    pool: c.pool,
    label: c.label,
    secretHint: mask(c.secret),
    weight: c.weight,
    maxConcurrency: c.maxConcurrency,
    quotaGroup: c.quotaGroup,
    metadata: c.metadata,
    state: keyStates[k.state],
    stateReason: k.stateReason,
    createTime: ts(c.createdAt),
    updateTime: ts(c.updatedAt),
    limits: limitsToProto(c.limits),
    priority: c.priority,
    usage: usageToProto(k.usage),
  };
}

export function leaseToProto(l: LeaseRecord): MessageInitShape<typeof LeaseSchema> {
  return {
    leaseId: l.leaseId,
    pool: l.pool,
    keyId: l.keyId,
    holder: l.holder,
    acquireTime: ts(l.acquiredAt),
    expiresAt: ts(l.expiresAt),
    ttl: dur(l.ttlMs),
  };
}


function budgetToProto(b: ProviderBudget): MessageInitShape<typeof ProviderBudgetSchema> {
  return {
    requestsRemaining: bigOpt(b.requestsRemaining),
    requestsLimit: bigOpt(b.requestsLimit),
    requestsResetAt: ts(b.requestsResetAt),
    tokensRemaining: bigOpt(b.tokensRemaining),
    tokensLimit: bigOpt(b.tokensLimit),
    tokensResetAt: ts(b.tokensResetAt),
  };
}

const circuitStates: Record<KeyStatsView["circuitState"], CircuitState> = {
  closed: CircuitState.CLOSED,
  open: CircuitState.OPEN,
  half_open: CircuitState.HALF_OPEN,
};

function keyStatsToProto(k: KeyStatsView): MessageInitShape<typeof KeyStatsSchema> {
  return {
    keyId: k.keyId,
    label: k.label,
    state: keyStates[k.state],
    eligible: k.eligible,
    activeLeases: k.activeLeases,
    maxConcurrency: k.maxConcurrency,
    emaLatency: dur(k.emaLatencyMs),
    successRate: k.successRate,
    consecutiveFailures: k.consecutiveFailures,
    circuitState: circuitStates[k.circuitState],
    circuitOpenUntil: ts(k.circuitOpenUntil),
    cooldownRemaining: dur(k.cooldownRemainingMs),
    budget: budgetToProto(k.budget),
    totalLeases: BigInt(k.totalLeases),
    recentLeases: k.recentLeases,
    inputTokens: BigInt(k.inputTokens),
    outputTokens: BigInt(k.outputTokens),
    priority: k.priority,
    quotaGroup: k.quotaGroup,
    limits: limitsToProto(k.limits),
    remaining: remainingToProto(k.remaining),
    reservedTokens: BigInt(k.reservedTokens),
    usage: usageToProto(k.usage),
  };
}

export function statsToProto(s: PoolStatsView): MessageInitShape<typeof PoolStatsSchema> {
  return {
    pool: s.pool,
    totalKeys: s.totalKeys,
    eligibleKeys: s.eligibleKeys,
    activeLeases: s.activeLeases,
    waiters: s.waiters,
    keys: s.keys.map(keyStatsToProto),
    usage: usageToProto(s.usage),
    quotaGroups: s.quotaGroups.map((g) => ({ name: g.name, limits: limitsToProto(g.limits), remaining: remainingToProto(g.remaining), usage: usageToProto(g.usage), keys: g.keys })),
    servingPriority: s.servingPriority,
    affinities: s.affinities,
  };
}

const eventTypes: Record<DomainEvent["type"], EventType> = {
  pool_created: EventType.POOL_CREATED,
  pool_updated: EventType.POOL_UPDATED,
  pool_deleted: EventType.POOL_DELETED,
  key_added: EventType.KEY_ADDED,
  key_updated: EventType.KEY_UPDATED,
  key_removed: EventType.KEY_REMOVED,
  key_enabled: EventType.KEY_ENABLED,
  key_disabled: EventType.KEY_DISABLED,
  key_auto_disabled: EventType.KEY_AUTO_DISABLED,
  cooldown_started: EventType.COOLDOWN_STARTED,
  cooldown_ended: EventType.COOLDOWN_ENDED,
  circuit_opened: EventType.CIRCUIT_OPENED,
  circuit_half_opened: EventType.CIRCUIT_HALF_OPENED,
  circuit_closed: EventType.CIRCUIT_CLOSED,
  lease_expired: EventType.LEASE_EXPIRED,
  lease_revoked: EventType.LEASE_REVOKED,
  pool_exhausted: EventType.POOL_EXHAUSTED,
  lease_granted: EventType.LEASE_GRANTED,
  lease_ended: EventType.LEASE_ENDED,
  tier_fallback: EventType.TIER_FALLBACK,
  tier_restored: EventType.TIER_RESTORED,
  pool_claimed: EventType.POOL_CLAIMED,
  pool_handed_over: EventType.POOL_HANDED_OVER,
  pool_lost: EventType.POOL_LOST,
};

export function eventToProto(e: WatchItem, now: number): MessageInitShape<typeof EventSchema> {
  if (e === "lagged") {
    return { type: EventType.LAGGED, time: ts(now), reason: "watcher fell behind; events were dropped, re-read state with GetPoolStats" };
  }
  if (e.type === "admin_change") {
    const { entry } = e;
    return {
      type: EventType.ADMIN_CHANGE,
      time: ts(entry.at),
      pool: entry.pool,
      keyId: entry.keyId ?? "",
      leaseId: entry.leaseId ?? "",
      reason: entry.action,
      adminChange: auditEntryToProto(entry),
    };
  }
  return {
    type: eventTypes[e.type],
    time: ts(e.time),
    pool: e.pool,
    keyId: e.keyId ?? "",
    leaseId: e.leaseId ?? "",
    reason: e.reason ?? "",
    until: ts(e.until),
    replica: e.replica ?? "",
    term: BigInt(e.term ?? 0),
  };
}

export function auditEntryToProto(entry: AuditEntry): MessageInitShape<typeof AuditEntrySchema> {
  return {
    id: BigInt(entry.id),
    time: ts(entry.at),
    actor: entry.actor,
    action: entry.action,
    pool: entry.pool,
    keyId: entry.keyId ?? "",
    leaseId: entry.leaseId ?? "",
    before: entry.before as JsonObject | undefined,
    after: entry.after as JsonObject | undefined,
    replica: entry.replica,
    reason: entry.reason ?? "",
  };
}
