// The snapshot_meta table: one row, the last committed snapshot's instant and grant mark.
import type { Queryable } from "./queryable.js";

export interface SnapshotMeta {
  taken_at: number;
  written_at: number;
  epoch: number;
  seq_mark: number;
}

export async function selectSnapshotMeta(db: Queryable): Promise<SnapshotMeta | undefined> {
  const [meta] = await db<SnapshotMeta[]>`select taken_at, written_at, epoch, seq_mark from snapshot_meta`;
  return meta;
}

/**
 * Records the snapshot, and raises its epoch's high-water mark (server_epochs) to its mark: with several
 * replicas each writes this row in turn, and the epoch's row keeps every replica's mark.
 */
export function upsertSnapshotMeta(db: Queryable, meta: SnapshotMeta) {
  return db`
    with marked as (
      update server_epochs set max_journaled_seq = greatest(max_journaled_seq, ${meta.seq_mark}) where epoch = ${meta.epoch}
    )
    insert into snapshot_meta ${db(meta)}
    on conflict (singleton) do update
      set taken_at = excluded.taken_at, written_at = excluded.written_at,
          epoch = excluded.epoch, seq_mark = excluded.seq_mark`;
}
