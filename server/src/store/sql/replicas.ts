// The replicas table: one row per live server process (its id, the address its peers forward to, and its
// heartbeat on the database's clock), and every statement on it.
import type { Queryable } from "./queryable.js";

export interface ReplicaRow {
  id: string;
  address: string;
  /** Milliseconds since the replica's last heartbeat, on the database's clock. */
  heartbeat_age_ms: number;
  started_at: Date;
}

/** Records the replica's heartbeat now (its row is created on the first). */
export function upsertReplica(db: Queryable, id: string, address: string) {
  return db`
    insert into replicas (id, address) values (${id}, ${address})
    on conflict (id) do update set address = excluded.address, heartbeat_at = now()`;
}

export function deleteReplica(db: Queryable, id: string) {
  return db`delete from replicas where id = ${id}`;
}

/** Rows whose heartbeat is younger than `liveMs`, by id; older ones (gone for an hour) are deleted by the same statement. */
export async function selectLiveReplicas(db: Queryable, liveMs: number): Promise<ReplicaRow[]> {
  return db<ReplicaRow[]>`
    with gone as (delete from replicas where heartbeat_at < now() - interval '1 hour')
    select id, address, started_at, (extract(epoch from now() - heartbeat_at) * 1000)::bigint as heartbeat_age_ms
    from replicas
    where heartbeat_at > now() - make_interval(secs => ${liveMs / 1000})
    order by id`;
}
