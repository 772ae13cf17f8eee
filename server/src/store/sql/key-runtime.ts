// The key_runtime table: one key's health, cooldowns, circuit and budget as a jsonb row, written by
// snapshots; its encoding, and every statement that reads or writes it.
import type { KeyRuntime } from "../../domain/types.js";
import { asJson, TEXT_OID, type Queryable } from "./queryable.js";

type KeyRuntimeState = Omit<KeyRuntime, "pool" | "keyId">;

/**
 * A key's state as its row holds it: the windows' number lists as comma-separated strings, which jsonb keeps
 * as they are where it would convert every number of an array to numeric (500 keys' rows took Postgres about
 * 40% longer to write with arrays).
 */
type RowState = Omit<KeyRuntimeState, "outcomes" | "grantsPerSecond"> & {
  outcomes: { gaps: string; failed: string };
  grantsPerSecond: { until: number; counts: string };
};

/** A key's runtime row, its state already encoded as JSON. */
export interface EncodedRuntime {
  pool: string;
  keyId: string;
  image: string;
}

export function encodeRuntime({ pool, keyId, outcomes, grantsPerSecond, ...rest }: KeyRuntime): EncodedRuntime {
  const row: RowState = {
    ...rest,
    outcomes: { gaps: outcomes.gaps.join(","), failed: outcomes.failed.join(",") },
    grantsPerSecond: { until: grantsPerSecond.until, counts: grantsPerSecond.counts.join(",") },
  };
  return { pool, keyId, image: JSON.stringify(row) };
}

const numbers = (list: string): number[] => (list === "" ? [] : list.split(",").map(Number));

/** The runtime state of the keys of `pools`. */
export async function selectRuntime(db: Queryable, pools: string[]): Promise<KeyRuntime[]> {
  const rows = await db<{ pool: string; key_id: string; state: RowState }[]>`
    select r.pool, r.key_id, r.state from key_runtime r where r.pool in (select jsonb_array_elements_text(${db.json(pools)}::jsonb)) order by r.pool, r.key_id`;
  return rows.map(({ pool, key_id, state: { outcomes, grantsPerSecond, ...rest } }) => ({
    ...rest,
    outcomes: { gaps: numbers(outcomes.gaps), failed: numbers(outcomes.failed) },
    grantsPerSecond: { until: grantsPerSecond.until, counts: numbers(grantsPerSecond.counts) },
    pool,
    keyId: key_id,
  }));
}

/** Each state is encoded already; the rows' JSON wraps it instead of encoding it again. Keys gone meanwhile are skipped. */
export function upsertRuntime(db: Queryable, rows: EncodedRuntime[]) {
  const json = `[${rows.map((r) => `{"pool":${JSON.stringify(r.pool)},"keyId":${JSON.stringify(r.keyId)},"state":${r.image}}`).join(",")}]`;
  return db`
    insert into key_runtime (pool, key_id, state)
    select s.pool, s."keyId", s.state
    from jsonb_to_recordset(${db.typed(json, TEXT_OID)}::jsonb) as s(pool text, "keyId" text, state jsonb)
    join keys k on k.pool = s.pool and k.id = s."keyId"
    on conflict (pool, key_id) do update set state = excluded.state`;
}

/** A full snapshot's reconciliation of `pools`: every row of their keys not among `keep` goes. */
export function deleteRuntimeExcept(db: Queryable, pools: string[], keep: Array<{ pool: string; keyId: string }>) {
  return db`
    delete from key_runtime r
    where r.pool in (select jsonb_array_elements_text(${db.json(pools)}::jsonb))
      and not exists (
      select 1 from jsonb_to_recordset(${db.json(keep.map(({ pool, keyId }) => ({ pool, keyId })))}::jsonb) as s(pool text, "keyId" text)
      where s.pool = r.pool and s."keyId" = r.key_id)`;
}

/** The rows of keys removed since the last snapshot. */
export function deleteRuntimeOf(db: Queryable, keys: Array<{ pool: string; keyId: string }>) {
  return db`
    delete from key_runtime r
    using jsonb_to_recordset(${db.json(asJson(keys))}::jsonb) as s(pool text, "keyId" text)
    where s.pool = r.pool and s."keyId" = r.key_id`;
}
