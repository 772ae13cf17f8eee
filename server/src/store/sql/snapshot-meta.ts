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

export function upsertSnapshotMeta(db: Queryable, meta: SnapshotMeta) {
  return db`
    insert into snapshot_meta ${db(meta)}
    on conflict (singleton) do update
      set taken_at = excluded.taken_at, written_at = excluded.written_at,
          epoch = excluded.epoch, seq_mark = excluded.seq_mark`;
}
