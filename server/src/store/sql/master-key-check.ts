// The master_key_check table: one row, a known constant sealed under the master key the database was created with.
import type { Sealed } from "../secrets.js";
import type { Queryable } from "./queryable.js";

/** Records `sealed` unless a check is recorded already (the first start's stays). */
export function insertMasterKeyCheck(db: Queryable, sealed: Sealed, createdAt: number) {
  return db`
    insert into master_key_check (ciphertext, nonce, created_at)
    values (${sealed.ciphertext}, ${sealed.nonce}, ${createdAt})
    on conflict (singleton) do nothing`;
}

export async function selectMasterKeyCheck(db: Queryable): Promise<Sealed> {
  const [row] = await db<Sealed[]>`select ciphertext, nonce from master_key_check`;
  return row;
}
