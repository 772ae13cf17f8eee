// Public types of the pool engine. Times are epoch milliseconds (instants) or milliseconds
// (durations); the engine never reads the wall clock itself, only the injected Clock.

export type TimerHandle = unknown;

/** The engine's only source of time. Production uses the system clock; tests a fake one. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

/** How a pool chooses among its eligible keys (DESIGN rule 7): the one list every layer reads. */
export const STRATEGIES = ["round_robin", "least_busy", "weighted", "least_used", "latency"] as const;
export type Strategy = (typeof STRATEGIES)[number];

export interface PoolConfig {
  name: string;
  strategy: Strategy;
  minTtlMs: number;
  maxTtlMs: number;
  defaultTtlMs: number;
  defaultCooldownMs: number;
  maxCooldownMs: number;
  failureThreshold: number;
  openDurationMs: number;
  maxOpenDurationMs: number;
  halfOpenProbes: number;
  description: string;
  /** Declared budgets shared by the keys of each quota group, by group name. */
  quotaGroups: Record<string, Limits>;
  /** Tokens an Acquire reserves when it gives no estimate (0: none). */
  defaultEstimatedTokens: number;
  createdAt: number;
  updatedAt: number;
}

/** Declared budgets, each a limit per window refilled continuously (limit/window); 0 is none. */
export interface Limits {
  requestsPerMinute: number;
  tokensPerMinute: number;
  requestsPerDay: number;
}

/** Operator-settable pool fields; anything left undefined takes the default (create) or stays (update). */
export type PoolInput = Partial<Omit<PoolConfig, "createdAt" | "updatedAt">> & { name: string };

export interface KeyConfig {
  pool: string;
  id: string;
  label: string;
  /** Plaintext secret, held in memory only; the store encrypts it at rest. */
  secret: string;
  weight: number;
  maxConcurrency: number;
  quotaGroup: string;
  /** Declared budgets of this key alone. */
  limits: Limits;
  /** Tier: keys of a later tier (a higher number) are lent only while every key of an earlier one is ineligible. */
  priority: number;
  metadata: Record<string, string>;
  /** Manual (operator) disable; write-through configuration. */
  disabled: boolean;
  disabledReason: string;
  createdAt: number;
  updatedAt: number;
}

/** Limits left undefined keep their current value (update) or are none (add). */
export type KeyInput = Partial<Omit<KeyConfig, "createdAt" | "updatedAt" | "limits">> & { pool: string; limits?: Partial<Limits> };

export type KeyState = "enabled" | "disabled" | "auto_disabled_auth" | "auto_disabled_quota" | "draining";
export type CircuitState = "closed" | "open" | "half_open";
export type FailureClass = "auth" | "quota_exhausted" | "transient" | "overloaded" | "client_error";
/** What the holder reported when it ended a lease: a success, a 429, or a classified failure. */
export type LeaseOutcome = "success" | "rate_limited" | FailureClass;

/** The provider's view of a key's budget, with resets as absolute instants (server clock). */
export interface ProviderBudget {
  /** The provider's last report less the grants since (refilled up to requestsCountedAt); may be fractional. */
  requestsRemaining?: number;
  requestsLimit?: number;
  requestsResetAt?: number;
  /** The instant requestsRemaining was last brought up to date: a report or a grant. */
  requestsCountedAt?: number;
  /** Time the provider takes to refill the request budget from empty, learned from a report. */
  requestsWindowMs?: number;
  tokensRemaining?: number;
  tokensLimit?: number;
  tokensResetAt?: number;
}

/** Rate-limit report as received: typed fields (resets relative, ms) and/or raw headers. */
export interface RateLimitReport {
  requestsRemaining?: number;
  requestsLimit?: number;
  requestsResetMs?: number;
  tokensRemaining?: number;
  tokensLimit?: number;
  tokensResetMs?: number;
  headers?: Record<string, string>;
}

export interface AcquireInput {
  pool: string;
  waitTimeoutMs: number;
  /** Undefined: the pool's default ttl. */
  ttlMs?: number;
  holder: string;
  estimatedTokens: number;
  excludeKeyIds: string[];
  /** Lend the key this affinity was last lent while it stays eligible ("": none). */
  affinity?: string;
}

export interface Grant {
  leaseId: string;
  pool: string;
  keyId: string;
  keyLabel: string;
  secret: string;
  metadata: Record<string, string>;
  expiresAt: number;
  ttlMs: number;
  renewIntervalMs: number;
  /** The key's concurrency limit when granted (0: unlimited). */
  maxConcurrency: number;
  /** The lease as granted, what the grant journal records; shared with the engine, read-only. */
  record: LeaseRecord;
  /** The boot that granted it and its sequence number in that boot (the journal's high-water mark). */
  epoch: number;
  seq: number;
}

export interface Renewal {
  leaseId: string;
  expiresAt: number;
  ttlMs: number;
  renewIntervalMs: number;
}

export interface SuccessReport {
  latencyMs?: number;
  inputTokens?: number;
  outputTokens?: number;
  rateLimit?: RateLimitReport;
}

export interface FailureReport {
  /** Undefined: derive from httpStatus. */
  reason?: FailureClass;
  httpStatus: number;
  message: string;
  latencyMs?: number;
}

export interface RateLimitedReport {
  retryAfterMs?: number;
  rateLimit?: RateLimitReport;
}

export interface KeyView {
  config: KeyConfig;
  state: KeyState;
  stateReason: string;
  usage: UsageView;
}

/** Requests (leases granted), tokens reported and how the leases ended, since the key, group or pool was created. */
export interface UsageView {
  requests: number;
  inputTokens: number;
  outputTokens: number;
  successes: number;
  rateLimited: number;
  failures: number;
  /** Ended by expiry or revocation, with no outcome reported. */
  unreported: number;
}

/** What the declared budgets allow now (whole units, undefined where no limit is declared). */
export interface BudgetRemaining {
  requestsPerMinute?: number;
  tokensPerMinute?: number;
  requestsPerDay?: number;
}

export interface QuotaGroupStatsView {
  name: string;
  limits: Limits;
  remaining: BudgetRemaining;
  usage: UsageView;
  keys: number;
}

export interface KeyStatsView {
  keyId: string;
  label: string;
  state: KeyState;
  eligible: boolean;
  activeLeases: number;
  maxConcurrency: number;
  emaLatencyMs?: number;
  successRate: number;
  consecutiveFailures: number;
  circuitState: CircuitState;
  circuitOpenUntil?: number;
  cooldownUntil?: number;
  cooldownRemainingMs: number;
  budget: ProviderBudget;
  totalLeases: number;
  recentLeases: number;
  inputTokens: number;
  outputTokens: number;
  priority: number;
  quotaGroup: string;
  limits: Limits;
  remaining: BudgetRemaining;
  /** Tokens reserved by the key's live leases and not yet reconciled. */
  reservedTokens: number;
  usage: UsageView;
}

export interface PoolStatsView {
  pool: string;
  totalKeys: number;
  eligibleKeys: number;
  activeLeases: number;
  waiters: number;
  keys: KeyStatsView[];
  usage: UsageView;
  quotaGroups: QuotaGroupStatsView[];
  /** The priority of the first tier with an eligible key (the last tier's when none has one). */
  servingPriority: number;
  /** Affinities remembered (at most AFFINITY_CAP). */
  affinities: number;
}

export type EventType =
  | "pool_created" | "pool_updated" | "pool_deleted"
  | "key_added" | "key_updated" | "key_removed" | "key_enabled" | "key_disabled" | "key_auto_disabled"
  | "cooldown_started" | "cooldown_ended"
  | "circuit_opened" | "circuit_half_opened" | "circuit_closed"
  | "lease_expired" | "lease_revoked" | "pool_exhausted"
  | "lease_granted" | "lease_ended"
  | "tier_fallback" | "tier_restored"
  | "pool_claimed" | "pool_handed_over" | "pool_lost";

export interface DomainEvent {
  type: EventType;
  time: number;
  pool: string;
  keyId?: string;
  leaseId?: string;
  reason?: string;
  until?: number;
  /** lease_ended by Release, MarkFailed or MarkRateLimited: what the holder reported. */
  outcome?: LeaseOutcome;
  /** Ownership events: the replica's address and the term. */
  replica?: string;
  term?: number;
}

/** Why a lease is not live: the reason a late call on it is answered with. */
export type LeaseGoneReason = "expired" | "released" | "revoked" | "unknown";

/** Runtime state of one key, persisted by snapshots (never the secret). */
export interface KeyRuntime {
  pool: string;
  keyId: string;
  autoDisabled?: { cause: "auth" | "quota"; message: string; at: number };
  draining?: { remove: boolean };
  cooldownUntil?: number;
  /** 429s in the current doubling window and when that window started. */
  rateLimitStreak: number;
  rateLimitStreakStart?: number;
  circuitState: CircuitState;
  circuitOpenUntil?: number;
  circuitOpenCount: number;
  consecutiveFailures: number;
  emaLatencyMs?: number;
  /**
   * Outcomes in the success-rate window, oldest first, delta-coded to keep snapshot rows small: `gaps[0]` is
   * the oldest outcome's instant, each later gap the ms since the outcome before; `failed` holds the indices
   * of failures (every other outcome is a success).
   */
  outcomes: { gaps: number[]; failed: number[] };
  /** Grants in the least_used window: one count per second, oldest first, the last for second `until` since 1970. */
  grantsPerSecond: { until: number; counts: number[] };
  budget: ProviderBudget;
  /** The declared budgets' levels (absent: full, or none declared). */
  declared?: DeclaredBudgetState;
  totalLeases: number;
  inputTokens: number;
  outputTokens: number;
  /** Outcome counts (absent in snapshots taken before they were counted: 0). */
  outcomeCounts?: OutcomeCounts;
}

/** Each declared budget's level at an instant (it refills from there); absent budgets are full. */
export interface DeclaredBudgetState {
  requestsPerMinute?: BucketLevel;
  tokensPerMinute?: BucketLevel;
  requestsPerDay?: BucketLevel;
}

export interface BucketLevel {
  level: number;
  at: number;
}

export interface OutcomeCounts {
  successes: number;
  rateLimited: number;
  failures: number;
  unreported: number;
}

/** Runtime state of a pool as a whole, persisted by snapshots: its quota groups, usage and affinities. */
export interface PoolRuntime {
  pool: string;
  usage: UsageView;
  groups: Array<{ name: string; declared?: DeclaredBudgetState; usage: UsageView }>;
  /** Affinity to key id, least recently used first. */
  affinities: Array<[string, string]>;
}

/** A live lease: as persisted, and as operators list it. */
export interface LeaseRecord {
  leaseId: string;
  pool: string;
  keyId: string;
  holder: string;
  acquiredAt: number;
  expiresAt: number;
  ttlMs: number;
}

/** What the engine hands the store to persist and takes back on start. */
export interface RuntimeSnapshot {
  takenAt: number;
  keys: KeyRuntime[];
  leases: LeaseRecord[];
  /** Absent in snapshots from before pools had runtime state. */
  pools?: PoolRuntime[];
}

/** What changed in runtime state since the previous export: applied to that export, it gives this one. */
export interface RuntimeChanges {
  takenAt: number;
  /**
   * Keys whose runtime state changed, each read as it is when iterated (once), so a long list costs the export
   * nothing; a key changed again meanwhile is also in the next export, one gone meanwhile is skipped.
   */
  keys: Iterable<KeyRuntime>;
  /** Keys gone since (removed, or their pool deleted); a key re-added since is also in `keys`. */
  removedKeys: Array<{ pool: string; keyId: string }>;
  /** Live leases granted or renewed since, as they are now. */
  leases: LeaseRecord[];
  /** Ids of leases that ended since, including those granted since. */
  endedLeases: string[];
  /** Pools whose runtime state changed since, as they are now (the engine always sets it). */
  pools?: PoolRuntime[];
}
