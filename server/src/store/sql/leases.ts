// The leases table: live leases, inserted by the grant journal and reconciled by snapshots; a row's epoch
// and seq are its grant's (0 and 0 for a lease only a snapshot wrote). Every statement on it is here.
import type { LeaseRecord } from "../../domain/types.js";
import type { GrantMark, JournaledGrant } from "../journal.js";
import type { HeldTerm } from "./pool-owners.js";
import { asJson, type Queryable } from "./queryable.js";

interface LeaseRow {
  lease_id: string;
  pool: string;
  key_id: string;
  holder: string;
  acquired_at: number;
  expires_at: number;
  ttl_ms: number;
}

/** The live leases of `pools`. */
export async function selectLeases(db: Queryable, pools: string[]): Promise<LeaseRecord[]> {
  const rows = await db<LeaseRow[]>`select * from leases where pool in (select jsonb_array_elements_text(${db.json(pools)}::jsonb)) order by acquired_at, lease_id`;
  return rows.map((r) => ({
    leaseId: r.lease_id,
    pool: r.pool,
    keyId: r.key_id,
    holder: r.holder,
    acquiredAt: r.acquired_at,
    expiresAt: r.expires_at,
    ttlMs: r.ttl_ms,
  }));
}

/**
 * The journal's statement: inserts `grants` of the pools `owner` still holds under `terms` and raises each
 * epoch's high-water mark (server_epochs) to `marks`, which also covers grants left out as ended. One
 * statement, hence one transaction: the leases and the marks commit together, and the ownership rows stay
 * locked until then, so a claim of those pools sees these leases. Returns the pools still held: grants of
 * the others are left out, as is a grant of a key that no longer exists.
 */
export async function insertJournaledLeases(db: Queryable, owner: string, terms: HeldTerm[], grants: JournaledGrant[], marks: GrantMark[]): Promise<string[]> {
  const rows = await db<{ pool: string }[]>`
    with fence as (
      select o.pool from pool_owners o
      join jsonb_to_recordset(${db.json(asJson(terms))}::jsonb) as h(pool text, term bigint) on h.pool = o.pool and h.term = o.term
      where o.owner = ${owner}
      for share of o
    ), g as (
      select * from jsonb_to_recordset(${db.json(asJson(grants))}::jsonb) as g(
        "leaseId" text, pool text, "keyId" text, holder text,
        "acquiredAt" bigint, "expiresAt" bigint, "ttlMs" bigint, epoch bigint, seq bigint)
    ), journaled as (
      insert into leases (lease_id, pool, key_id, holder, acquired_at, expires_at, ttl_ms, epoch, seq)
      select g."leaseId", g.pool, g."keyId", g.holder, g."acquiredAt", g."expiresAt", g."ttlMs", g.epoch, g.seq
      from g
      -- A per-row probe of the key's index: a join would be planned as a scan of every key.
      where (select true from keys k where k.pool = g.pool and k.id = g."keyId")
        and g.pool in (select pool from fence)
      on conflict (lease_id) do nothing
    ), marked as (
      update server_epochs e set max_journaled_seq = greatest(e.max_journaled_seq, m.seq)
      from jsonb_to_recordset(${db.json(asJson(marks))}::jsonb) as m(epoch bigint, seq bigint)
      where e.epoch = m.epoch
    )
    select pool from fence`;
  return rows.map((r) => r.pool);
}

/** A snapshot's leases; those known only from memory (restored or re-adopted) carry epoch 0: no journal covers them. */
export function upsertSnapshotLeases(db: Queryable, rows: LeaseRecord[]) {
  return db`
    insert into leases (lease_id, pool, key_id, holder, acquired_at, expires_at, ttl_ms, epoch, seq)
    select s."leaseId", s.pool, s."keyId", s.holder, s."acquiredAt", s."expiresAt", s."ttlMs", 0, 0
    from jsonb_to_recordset(${db.json(asJson(rows))}::jsonb) as s(
      "leaseId" text, pool text, "keyId" text, holder text, "acquiredAt" bigint, "expiresAt" bigint, "ttlMs" bigint)
    join keys k on k.pool = s.pool and k.id = s."keyId"
    on conflict (lease_id) do update
      set holder = excluded.holder, expires_at = excluded.expires_at, ttl_ms = excluded.ttl_ms`;
}

/** A full snapshot's reconciliation of `pools`: every lease of them not among `keep` goes, except grants above the snapshot's mark. */
export function deleteLeasesExcept(db: Queryable, pools: string[], keep: string[], mark: GrantMark) {
  return db`
    delete from leases l
    where l.pool in (select jsonb_array_elements_text(${db.json(pools)}::jsonb))
      and not exists (
      select 1 from jsonb_array_elements_text(${db.json(keep)}::jsonb) as s(lease_id)
      where s.lease_id = l.lease_id)
      and not (l.epoch = ${mark.epoch} and l.seq > ${mark.seq})`;
}

/** Leases of `pools` that ended since the last snapshot, except grants above its mark (a lease id is never granted twice). */
export function deleteEndedLeases(db: Queryable, pools: string[], leaseIds: string[], mark: GrantMark) {
  return db`
    delete from leases l
    where l.lease_id in (select jsonb_array_elements_text(${db.json(leaseIds)}::jsonb))
      and l.pool in (select jsonb_array_elements_text(${db.json(pools)}::jsonb))
      and not (l.epoch = ${mark.epoch} and l.seq > ${mark.seq})`;
}
