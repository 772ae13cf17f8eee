// The pools table: its row, and every statement that reads or writes it.
import type postgres from "postgres";
import type { Limits, PoolConfig, Strategy } from "../../domain/types.js";
import { asJson, type Queryable } from "./queryable.js";

interface PoolRow {
  name: string;
  strategy: Strategy;
  min_ttl_ms: number;
  max_ttl_ms: number;
  default_ttl_ms: number;
  default_cooldown_ms: number;
  max_cooldown_ms: number;
  failure_threshold: number;
  open_duration_ms: number;
  max_open_duration_ms: number;
  half_open_probes: number;
  description: string;
  quota_groups: postgres.JSONValue;
  default_estimated_tokens: number;
  created_at: number;
  updated_at: number;
}

/** The named pools (those that exist). */
export async function selectPools(db: Queryable, pools: string[]): Promise<PoolConfig[]> {
  const rows = await db<PoolRow[]>`select * from pools where name in (select jsonb_array_elements_text(${db.json(pools)}::jsonb)) order by created_at, name`;
  return rows.map(poolFromRow);
}

/** Every pool with its number of keys: what ListPools answers on any replica. */
export async function selectPoolsWithKeyCounts(db: Queryable): Promise<Array<PoolConfig & { keyCount: number }>> {
  const rows = await db<(PoolRow & { key_count: number })[]>`
    select p.*, (select count(*) from keys k where k.pool = p.name)::int as key_count from pools p order by p.created_at, p.name`;
  return rows.map((r) => ({ ...poolFromRow(r), keyCount: r.key_count }));
}

export function insertPool(db: Queryable, pool: PoolConfig) {
  return db`insert into pools ${db(poolRow(pool))}`;
}

export function updatePool(db: Queryable, pool: PoolConfig) {
  const { name, created_at, ...fields } = poolRow(pool);
  return db`update pools set ${db(fields)} where name = ${name}`;
}

/**
 * Its keys and their runtime state go with it (on delete cascade), and its leases' rows in the same statement:
 * leases has no foreign key to keys (migration 0003).
 */
export function deletePool(db: Queryable, name: string) {
  return db`
    with leases_gone as (delete from leases where pool = ${name})
    delete from pools where name = ${name}`;
}

function poolRow(p: PoolConfig): PoolRow {
  return {
    name: p.name,
    strategy: p.strategy,
    min_ttl_ms: p.minTtlMs,
    max_ttl_ms: p.maxTtlMs,
    default_ttl_ms: p.defaultTtlMs,
    default_cooldown_ms: p.defaultCooldownMs,
    max_cooldown_ms: p.maxCooldownMs,
    failure_threshold: p.failureThreshold,
    open_duration_ms: p.openDurationMs,
    max_open_duration_ms: p.maxOpenDurationMs,
    half_open_probes: p.halfOpenProbes,
    description: p.description,
    quota_groups: asJson(p.quotaGroups),
    default_estimated_tokens: p.defaultEstimatedTokens,
    created_at: p.createdAt,
    updated_at: p.updatedAt,
  };
}

function poolFromRow(r: PoolRow): PoolConfig {
  return {
    name: r.name,
    strategy: r.strategy,
    minTtlMs: r.min_ttl_ms,
    maxTtlMs: r.max_ttl_ms,
    defaultTtlMs: r.default_ttl_ms,
    defaultCooldownMs: r.default_cooldown_ms,
    maxCooldownMs: r.max_cooldown_ms,
    failureThreshold: r.failure_threshold,
    openDurationMs: r.open_duration_ms,
    maxOpenDurationMs: r.max_open_duration_ms,
    halfOpenProbes: r.half_open_probes,
    description: r.description,
    quotaGroups: r.quota_groups as unknown as Record<string, Limits>,
    defaultEstimatedTokens: r.default_estimated_tokens,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}
