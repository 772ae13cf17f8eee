// Validation and defaults for pool and key configuration. Invalid input names the proto field path.
import { invalidArgument } from "./errors.js";
import { STRATEGIES, type KeyConfig, type KeyInput, type Limits, type PoolConfig, type PoolInput, type Strategy } from "./types.js";

export const POOL_DEFAULTS = {
  strategy: "round_robin" as Strategy,
  minTtlMs: 1_000,
  maxTtlMs: 3_600_000,
  defaultTtlMs: 60_000,
  defaultCooldownMs: 10_000,
  maxCooldownMs: 300_000,
  failureThreshold: 3,
  openDurationMs: 30_000,
  maxOpenDurationMs: 600_000,
  halfOpenProbes: 1,
  description: "",
  quotaGroups: {} as Record<string, Limits>,
  defaultEstimatedTokens: 0,
};

export const NO_LIMITS: Readonly<Limits> = { requestsPerMinute: 0, tokensPerMinute: 0, requestsPerDay: 0 };
/** Largest declared limit or token estimate: the contract's bound on counts (rpc/limits.ts). */
const MAX_COUNT = 1_000_000_000_000;
/** Priorities run from 0 (the first tier) to MAX_PRIORITY. */
const MAX_PRIORITY = 1_000;
/** Longest Acquire affinity (a conversation id, say). */
export const MAX_AFFINITY = 256;
/** Most quota groups a pool declares limits for. */
export const MAX_QUOTA_GROUPS = 1_000;

const STRATEGY_NAMES: ReadonlySet<string> = new Set(STRATEGIES);
/** Longest pool name and key id, as the contract says (Pool.name, Key.id). */
export const NAME_MAX = 63;
export const MAX_LABEL = 256;
export const MAX_DESCRIPTION = 1024;
export const MAX_QUOTA_GROUP = 128;
const POOL_NAME = new RegExp(`^[a-z0-9][a-z0-9._-]{0,${NAME_MAX - 1}}$`);
const KEY_ID = new RegExp(`^[A-Za-z0-9._-]{1,${NAME_MAX}}$`);
const MAX_WEIGHT = 1_000_000;

/** The pool-name rule, for every layer that takes a pool name (admin API, config file, token scopes). */
export function isPoolName(name: string): boolean {
  return POOL_NAME.test(name);
}

/** The key-id rule, for the admin API and the config file. */
export function isKeyId(id: string): boolean {
  return KEY_ID.test(id);
}

export function isStrategy(name: unknown): name is Strategy {
  return typeof name === "string" && STRATEGY_NAMES.has(name);
}

function count(v: unknown, field: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0 || v > MAX_COUNT) {
    throw invalidArgument(field, `must be a whole number in [0, ${MAX_COUNT}] (0 is none)`);
  }
  return v;
}

/** Declared limits, each 0 (none) or a positive whole number; `field` is the message's proto path. */
function validateLimits(input: Partial<Limits> | undefined, existing: Limits | undefined, field: string): Limits {
  const base = existing ?? NO_LIMITS;
  return {
    requestsPerMinute: count(input?.requestsPerMinute ?? base.requestsPerMinute, `${field}.requests_per_minute`),
    tokensPerMinute: count(input?.tokensPerMinute ?? base.tokensPerMinute, `${field}.tokens_per_minute`),
    requestsPerDay: count(input?.requestsPerDay ?? base.requestsPerDay, `${field}.requests_per_day`),
  };
}

function validateQuotaGroups(groups: Record<string, Partial<Limits>>): Record<string, Limits> {
  const names = Object.keys(groups);
  if (names.length > MAX_QUOTA_GROUPS) throw invalidArgument("quota_groups", `must have at most ${MAX_QUOTA_GROUPS} entries`);
  const out: Record<string, Limits> = {};
  for (const name of names) {
    if (name === "" || name.length > MAX_QUOTA_GROUP) throw invalidArgument("quota_groups", `group names must be 1-${MAX_QUOTA_GROUP} characters`);
    out[name] = validateLimits(groups[name], undefined, `quota_groups["${name}"]`);
  }
  return out;
}

function duration(value: number | undefined, field: string, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v < 0) throw invalidArgument(field, "must be a non-negative whole number of milliseconds");
  return v;
}

/** Circuit breaker fields follow the proto: zero means the default. */
function breakerField(value: number | undefined, field: string, current: number, byDefault: number, isDuration: boolean): number {
  const v = value === 0 ? byDefault : (value ?? current);
  if (!Number.isSafeInteger(v) || v < 1) throw invalidArgument(field, isDuration ? "must be a positive duration" : "must be >= 1");
  return v;
}

export function validatePool(input: PoolInput, existing: PoolConfig | undefined, now: number): PoolConfig {
  const base = existing ?? { ...POOL_DEFAULTS, name: input.name, createdAt: now, updatedAt: now };
  if (typeof input.name !== "string" || !isPoolName(input.name)) {
    throw invalidArgument("name", "must be 1-63 characters of [a-z0-9._-] starting with a letter or digit");
  }
  if (existing && existing.name !== input.name) throw invalidArgument("name", "cannot be changed");
  const strategy = input.strategy ?? base.strategy;
  if (!isStrategy(strategy)) throw invalidArgument("strategy", `unknown strategy "${String(strategy)}"`);
  const minTtlMs = duration(input.minTtlMs, "min_ttl", base.minTtlMs);
  const maxTtlMs = duration(input.maxTtlMs, "max_ttl", base.maxTtlMs);
  // An unspecified default follows the bounds the operator did set.
  const defaultTtlMs = duration(input.defaultTtlMs, "default_ttl", Math.min(Math.max(base.defaultTtlMs, minTtlMs), maxTtlMs));
  if (minTtlMs < 1) throw invalidArgument("min_ttl", "must be positive");
  if (minTtlMs > maxTtlMs) throw invalidArgument("min_ttl", "must not exceed max_ttl");
  if (defaultTtlMs < minTtlMs || defaultTtlMs > maxTtlMs) throw invalidArgument("default_ttl", "must lie within [min_ttl, max_ttl]");
  const maxCooldownMs = duration(input.maxCooldownMs, "max_cooldown", base.maxCooldownMs);
  const defaultCooldownMs = duration(input.defaultCooldownMs, "default_cooldown", Math.min(base.defaultCooldownMs, maxCooldownMs));
  if (defaultCooldownMs < 1) throw invalidArgument("default_cooldown", "must be positive");
  if (maxCooldownMs < defaultCooldownMs) throw invalidArgument("max_cooldown", "must not be below default_cooldown");
  const failureThreshold = breakerField(input.failureThreshold, "circuit_breaker.failure_threshold", base.failureThreshold, POOL_DEFAULTS.failureThreshold, false);
  const maxOpenDurationMs = breakerField(input.maxOpenDurationMs, "circuit_breaker.max_open_duration", base.maxOpenDurationMs, POOL_DEFAULTS.maxOpenDurationMs, true);
  const openDurationMs = breakerField(
    input.openDurationMs,
    "circuit_breaker.open_duration",
    Math.min(base.openDurationMs, maxOpenDurationMs),
    Math.min(POOL_DEFAULTS.openDurationMs, maxOpenDurationMs),
    true,
  );
  const halfOpenProbes = breakerField(input.halfOpenProbes, "circuit_breaker.half_open_probes", base.halfOpenProbes, POOL_DEFAULTS.halfOpenProbes, false);
  if (maxOpenDurationMs < openDurationMs) throw invalidArgument("circuit_breaker.max_open_duration", "must not be below open_duration");
  const description = input.description ?? base.description;
  if (typeof description !== "string" || description.length > MAX_DESCRIPTION) {
    throw invalidArgument("description", `must be at most ${MAX_DESCRIPTION} characters`);
  }
  const quotaGroups = validateQuotaGroups(input.quotaGroups ?? base.quotaGroups);
  const defaultEstimatedTokens = count(input.defaultEstimatedTokens ?? base.defaultEstimatedTokens, "default_estimated_tokens");
  return {
    name: input.name,
    strategy,
    minTtlMs,
    maxTtlMs,
    defaultTtlMs,
    defaultCooldownMs,
    maxCooldownMs,
    failureThreshold,
    openDurationMs,
    maxOpenDurationMs,
    halfOpenProbes,
    description,
    quotaGroups,
    defaultEstimatedTokens,
    createdAt: base.createdAt,
    updatedAt: now,
  };
}

/** Validates a key; `id` must already be set (the engine generates one when the input has none). */
export function validateKey(input: KeyInput & { id: string }, existing: KeyConfig | undefined, now: number): KeyConfig {
  if (!isKeyId(input.id)) throw invalidArgument("key.id", "must be 1-63 characters of [A-Za-z0-9._-]");
  const secret = input.secret || existing?.secret || "";
  if (secret === "") throw invalidArgument("secret", "must not be empty");
  const label = input.label || existing?.label || input.id;
  if (label.length > MAX_LABEL) throw invalidArgument("key.label", `must be at most ${MAX_LABEL} characters`);
  const weight = input.weight ?? existing?.weight ?? 1;
  if (!Number.isSafeInteger(weight) || weight < 1 || weight > MAX_WEIGHT) {
    throw invalidArgument("key.weight", `must be a whole number in [1, ${MAX_WEIGHT}]`);
  }
  const maxConcurrency = input.maxConcurrency ?? existing?.maxConcurrency ?? 0;
  if (!Number.isSafeInteger(maxConcurrency) || maxConcurrency < 0) {
    throw invalidArgument("key.max_concurrency", "must be a non-negative whole number (0 is unlimited)");
  }
  const quotaGroup = input.quotaGroup ?? existing?.quotaGroup ?? "";
  if (quotaGroup.length > MAX_QUOTA_GROUP) throw invalidArgument("key.quota_group", `must be at most ${MAX_QUOTA_GROUP} characters`);
  const limits = validateLimits(input.limits, existing?.limits, "key.limits");
  const priority = input.priority ?? existing?.priority ?? 0;
  if (!Number.isSafeInteger(priority) || priority < 0 || priority > MAX_PRIORITY) {
    throw invalidArgument("key.priority", `must be a whole number in [0, ${MAX_PRIORITY}] (0 is the first tier)`);
  }
  return {
    pool: input.pool,
    id: input.id,
    label,
    secret,
    weight,
    maxConcurrency,
    quotaGroup,
    limits,
    priority,
    metadata: { ...(input.metadata ?? existing?.metadata ?? {}) },
    disabled: input.disabled ?? existing?.disabled ?? false,
    disabledReason: input.disabledReason ?? existing?.disabledReason ?? "",
    createdAt: existing?.createdAt ?? now,
    updatedAt: now,
  };
}
