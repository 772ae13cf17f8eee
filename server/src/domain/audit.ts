// The audit trail's records: one per admin change, with the changed object as it read before and after.
// A key's secret never appears in a record, only its masked hint (what listings show).
import { mask } from "./mask.js";
import type { KeyConfig, PoolConfig } from "./types.js";

export type AuditAction =
  | "create_pool"
  | "update_pool"
  | "delete_pool"
  | "add_key"
  | "update_key"
  | "remove_key"
  | "enable_key"
  | "disable_key"
  | "revoke_lease";

/** Who made the changes the config file declares (at start, on SIGHUP or `keymesh config apply` through it). */
export const CONFIG_FILE_ACTOR = "config file";
/** Who made a change while auth is off: no token, no name. */
export const ANONYMOUS_ACTOR = "anonymous";

/** An object as a record shows it: plain JSON values. */
export type AuditObject = Record<string, unknown>;

/** One admin change, as the service records it. */
export interface AuditChange {
  at: number;
  /** A token's name, CONFIG_FILE_ACTOR or ANONYMOUS_ACTOR; never a token. */
  actor: string;
  action: AuditAction;
  pool: string;
  keyId?: string;
  leaseId?: string;
  /** Unset for a creation. */
  before?: AuditObject;
  /** Unset for a deletion. */
  after?: AuditObject;
  /** The server process that made the change. */
  replica: string;
  reason?: string;
}

/** A recorded change: its place in the trail. */
export interface AuditEntry extends AuditChange {
  id: number;
}

/** A pool's configuration for the record (every setting; the timestamps are the record's own). */
export function poolRecord(pool: PoolConfig): AuditObject {
  const { createdAt: _c, updatedAt: _u, ...settings } = pool;
  return settings;
}

/** A key's configuration for the record: the secret only as its masked hint. */
export function keyRecord(key: KeyConfig): AuditObject {
  const { secret, createdAt: _c, updatedAt: _u, ...fields } = key;
  return { ...fields, secretHint: mask(secret) };
}
