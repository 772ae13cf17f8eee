// What a start reads and records before the engine serves: a new epoch, then everything needed to rebuild
// the engine's pools (configuration, the last snapshot, and the journal since), in one consistent read. A
// takeover of pools from another replica reads them with the same code.
import type postgres from "postgres";
import type { KeyConfig, PoolConfig, RuntimeSnapshot } from "../domain/types.js";
import type { Availability } from "./availability.js";
import type { SecretBox } from "./secrets.js";
import { selectRuntime } from "./sql/key-runtime.js";
import { selectPoolRuntime } from "./sql/pool-runtime.js";
import { selectKeys } from "./sql/keys.js";
import { selectLeases, vacuumLeases } from "./sql/leases.js";
import { selectPools } from "./sql/pools.js";
import type { Queryable } from "./sql/queryable.js";
import { insertEpoch, selectEpochs } from "./sql/server-epochs.js";
import { selectSnapshotMeta } from "./sql/snapshot-meta.js";

export interface LoadedState {
  pools: PoolConfig[];
  /** Secrets decrypted. */
  keys: KeyConfig[];
  /** Undefined when nothing was ever snapshotted or journaled. */
  runtime?: RuntimeSnapshot;
  /**
   * Per epoch, the highest grant sequence number known to be reflected in `runtime.leases`: a lease id of
   * that epoch with seq at or below it that is not among the leases has ended; above it, it may have been
   * granted while the database was down and is re-adopted.
   */
  grantHighWater: Record<number, number>;
}

/** Records a new server start at `now`; the grants of this process carry the epoch returned. */
export function beginEpoch(sql: postgres.Sql, availability: Availability, now: number): Promise<number> {
  return availability.run(() => insertEpoch(sql, now));
}

/** Reclaims the space of the lease rows ended before this start (for a database without autovacuum). */
export function compactLeases(sql: postgres.Sql, availability: Availability): Promise<unknown> {
  return availability.run(() => vacuumLeases(sql));
}

/** Everything needed to rebuild `pools` in the engine, read in one repeatable-read transaction. */
export async function loadState(sql: postgres.Sql, box: SecretBox, availability: Availability, pools: string[]): Promise<LoadedState> {
  const read = async (tx: Queryable) => ({
    pools: await selectPools(tx, pools),
    keys: await selectKeys(tx, box, pools),
    runtime: await selectRuntime(tx, pools),
    poolRuntime: await selectPoolRuntime(tx, pools),
    leases: await selectLeases(tx, pools),
    meta: await selectSnapshotMeta(tx),
    epochs: await selectEpochs(tx),
  });
  const rows = await availability.run(() => sql.begin("isolation level repeatable read read only", read) as ReturnType<typeof read>);
  const grantHighWater: Record<number, number> = {};
  for (const e of rows.epochs) grantHighWater[e.epoch] = e.max_journaled_seq;
  if (rows.meta && rows.meta.epoch in grantHighWater) {
    grantHighWater[rows.meta.epoch] = Math.max(grantHighWater[rows.meta.epoch], rows.meta.seq_mark);
  }
  const hasRuntime = rows.meta !== undefined || rows.runtime.length > 0 || rows.leases.length > 0 || rows.poolRuntime.length > 0;
  return {
    pools: rows.pools,
    keys: rows.keys,
    runtime: hasRuntime ? { takenAt: rows.meta?.taken_at ?? 0, keys: rows.runtime, leases: rows.leases, pools: rows.poolRuntime } : undefined,
    grantHighWater,
  };
}
