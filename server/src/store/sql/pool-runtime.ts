// The pool_runtime table: one pool's quota groups (budget levels, usage), usage and affinities as a jsonb
// row, written by snapshots; and every statement that reads or writes it.
import type { PoolRuntime } from "../../domain/types.js";
import { asJson, type Queryable } from "./queryable.js";

type PoolRuntimeState = Omit<PoolRuntime, "pool">;

export async function selectPoolRuntime(db: Queryable, pools: string[]): Promise<PoolRuntime[]> {
  const rows = await db<{ pool: string; state: PoolRuntimeState }[]>`
    select pool, state from pool_runtime where pool in (select jsonb_array_elements_text(${db.json(pools)}::jsonb)) order by pool`;
  return rows.map(({ pool, state }) => ({ ...state, pool }));
}

/** Pools deleted meanwhile are skipped (their row went with them). */
export function upsertPoolRuntime(db: Queryable, rows: PoolRuntime[]) {
  const json = rows.map(({ pool, ...state }) => ({ pool, state }));
  return db`
    insert into pool_runtime (pool, state)
    select s.pool, s.state
    from jsonb_to_recordset(${db.json(asJson(json))}::jsonb) as s(pool text, state jsonb)
    join pools p on p.name = s.pool
    on conflict (pool) do update set state = excluded.state`;
}
