// The pool_owners table: who owns each pool under which term and until when (the database's clock), and
// every statement on it. River's river_leader is the model: a claim succeeds only on a free or expired row
// and increments the term; a renewal only matches the owner's own term.
import { asJson, type Queryable } from "./queryable.js";

/** A pool this replica holds, and the term it holds it under. */
export interface HeldTerm {
  pool: string;
  term: number;
}

export interface OwnerRow {
  pool: string;
  owner: string;
  term: number;
  /** Whether expires_at is still ahead on the database's clock. */
  live: boolean;
  /** How long ago it expired, in milliseconds on the database's clock (0 while live or never claimed). */
  expired_ms: number;
  /** The owner's advertised address, when it is a live member. */
  address: string | null;
}

/**
 * Claims `pool` for `owner` until now + ttl if the pool exists and its row is free (absent) or expired; the
 * term goes up by one. Returns the new term, or undefined when another replica holds it (or the pool is gone).
 */
export async function claimPool(db: Queryable, pool: string, owner: string, ttlMs: number): Promise<number | undefined> {
  const [row] = await db<{ term: number }[]>`
    insert into pool_owners (pool, owner, term, expires_at)
    select ${pool}, ${owner}, 1, now() + make_interval(secs => ${ttlMs / 1000})
    where exists (select 1 from pools where name = ${pool})
    on conflict (pool) do update
      set owner = excluded.owner, term = pool_owners.term + 1, expires_at = excluded.expires_at
      where pool_owners.expires_at <= now()
    returning term`;
  return row?.term;
}

/**
 * Claims a pool this transaction just created, whatever row a deleted pool of that name left: nothing can
 * hold the new pool yet, and the term still goes up, so a replica that held the old one writes nothing.
 */
export async function claimCreatedPool(db: Queryable, pool: string, owner: string, ttlMs: number): Promise<number> {
  const [row] = await db<{ term: number }[]>`
    insert into pool_owners (pool, owner, term, expires_at)
    values (${pool}, ${owner}, 1, now() + make_interval(secs => ${ttlMs / 1000}))
    on conflict (pool) do update
      set owner = excluded.owner, term = pool_owners.term + 1, expires_at = excluded.expires_at
    returning term`;
  return row!.term;
}

/**
 * Extends the pools `owner` still holds under the given terms to now + ttl, expired or not: a term nobody
 * else claimed is still the owner's. Returns the pools renewed; the others were taken over.
 */
export async function renewPools(db: Queryable, owner: string, held: HeldTerm[], ttlMs: number): Promise<string[]> {
  if (held.length === 0) return [];
  const rows = await db<{ pool: string }[]>`
    update pool_owners o set expires_at = now() + make_interval(secs => ${ttlMs / 1000})
    from jsonb_to_recordset(${db.json(asJson(held))}::jsonb) as h(pool text, term bigint)
    where o.pool = h.pool and o.term = h.term and o.owner = ${owner}
    returning o.pool`;
  return rows.map((r) => r.pool);
}

/** Gives the pools up now (expired rows are free to claim) and wakes the other replicas. */
export async function resignPools(db: Queryable, owner: string, held: HeldTerm[]): Promise<void> {
  if (held.length === 0) return;
  await db`
    with resigned as (
      update pool_owners o set expires_at = now()
      from jsonb_to_recordset(${db.json(asJson(held))}::jsonb) as h(pool text, term bigint)
      where o.pool = h.pool and o.term = h.term and o.owner = ${owner}
      returning o.pool
    )
    select pg_notify('keymesh_owners', ${owner}) from (select count(*) from resigned) n`;
}

/**
 * Locks the rows of the pools `owner` holds under the given terms until the transaction ends (a claim of
 * them waits for it) and returns those pools: a pool missing from the answer was taken over.
 */
export async function lockTerms(db: Queryable, owner: string, held: HeldTerm[]): Promise<string[]> {
  if (held.length === 0) return [];
  const rows = await db<{ pool: string }[]>`
    select o.pool from pool_owners o
    join jsonb_to_recordset(${db.json(asJson(held))}::jsonb) as h(pool text, term bigint) on h.pool = o.pool and h.term = o.term
    where o.owner = ${owner}
    for share of o`;
  return rows.map((r) => r.pool);
}

/** Every pool with its owner row (none for a pool never claimed), and the owner's address if it is a live member. */
export function selectOwners(db: Queryable, liveMs: number) {
  return db<(OwnerRow & { pool: string })[]>`
    select p.name as pool, coalesce(o.owner, '') as owner, coalesce(o.term, 0) as term,
           coalesce(o.expires_at > now(), false) as live, r.address,
           greatest(0, coalesce(extract(epoch from now() - o.expires_at) * 1000, 0))::bigint as expired_ms
    from pools p
    left join pool_owners o on o.pool = p.name
    left join replicas r on r.id = o.owner and r.heartbeat_at > now() - make_interval(secs => ${liveMs / 1000})
    order by p.name`;
}

/**
 * Claims every pool for `owner` for good, whoever held it: only for the embedded database, whose data
 * directory lock already makes this process the only one. Returns each pool's new term.
 */
export function claimAllPools(db: Queryable, owner: string) {
  return db<HeldTerm[]>`
    insert into pool_owners (pool, owner, term, expires_at)
    select name, ${owner}, 1, 'infinity' from pools
    on conflict (pool) do update set owner = excluded.owner, term = pool_owners.term + 1, expires_at = excluded.expires_at
    returning pool, term`;
}
