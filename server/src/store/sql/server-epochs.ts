// The server_epochs table: one row per server start, with the highest grant seq of that epoch the journal
// has accounted for (written by the journal's statement, in leases.ts).
import type { Queryable } from "./queryable.js";

export async function insertEpoch(db: Queryable, startedAt: number): Promise<number> {
  const [row] = await db<{ epoch: number }[]>`insert into server_epochs (started_at) values (${startedAt}) returning epoch`;
  return row.epoch;
}

export function selectEpochs(db: Queryable) {
  return db<{ epoch: number; max_journaled_seq: number }[]>`select epoch, max_journaled_seq from server_epochs`;
}
