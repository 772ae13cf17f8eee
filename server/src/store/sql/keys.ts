// The keys table: its row (the secret sealed under the master key, bound to the key's pool and id), and
// every statement that reads or writes it.
import { mask } from "../../domain/mask.js";
import type { KeyConfig } from "../../domain/types.js";
import { MasterKeyMismatch } from "../errors.js";
import type { SecretBox } from "../secrets.js";
import type { Queryable } from "./queryable.js";

interface KeyRow {
  pool: string;
  id: string;
  label: string;
  secret_ciphertext: Buffer;
  secret_nonce: Buffer;
  secret_hint: string;
  weight: number;
  max_concurrency: number;
  quota_group: string;
  requests_per_minute: number;
  tokens_per_minute: number;
  requests_per_day: number;
  priority: number;
  metadata: Record<string, string>;
  disabled: boolean;
  disabled_reason: string;
  created_at: number;
  updated_at: number;
}

/** The keys of `pools`, secrets decrypted; a secret the master key cannot open is a MasterKeyMismatch. */
export async function selectKeys(db: Queryable, box: SecretBox, pools: string[]): Promise<KeyConfig[]> {
  const rows = await db<KeyRow[]>`select * from keys where pool in (select jsonb_array_elements_text(${db.json(pools)}::jsonb)) order by pool, created_at, id`;
  return rows.map((r) => keyFromRow(box, r));
}

export function insertKey(db: Queryable, box: SecretBox, key: KeyConfig) {
  return db`insert into keys ${db(keyRow(box, key))}`;
}

/** Replaces the key's configuration (the secret is sealed afresh). */
export function updateKey(db: Queryable, box: SecretBox, key: KeyConfig) {
  const { pool, id, created_at, ...fields } = keyRow(box, key);
  return db`update keys set ${db(fields)} where pool = ${pool} and id = ${id}`;
}

/**
 * Its runtime state goes with it (on delete cascade), and its leases' rows in the same statement: leases has no
 * foreign key to keys (migration 0003).
 */
export function deleteKey(db: Queryable, pool: string, keyId: string) {
  return db`
    with leases_gone as (delete from leases where pool = ${pool} and key_id = ${keyId})
    delete from keys where pool = ${pool} and id = ${keyId}`;
}

const secretContext = (pool: string, keyId: string): string => `key:${pool}\u0000${keyId}`;

function keyRow(box: SecretBox, key: KeyConfig): KeyRow {
  const sealed = box.seal(key.secret, secretContext(key.pool, key.id));
  return {
    pool: key.pool,
    id: key.id,
    label: key.label,
    secret_ciphertext: sealed.ciphertext,
    secret_nonce: sealed.nonce,
    secret_hint: mask(key.secret),
    weight: key.weight,
    max_concurrency: key.maxConcurrency,
    quota_group: key.quotaGroup,
    requests_per_minute: key.limits.requestsPerMinute,
    tokens_per_minute: key.limits.tokensPerMinute,
    requests_per_day: key.limits.requestsPerDay,
    priority: key.priority,
    metadata: key.metadata,
    disabled: key.disabled,
    disabled_reason: key.disabledReason,
    created_at: key.createdAt,
    updated_at: key.updatedAt,
  };
}

function keyFromRow(box: SecretBox, r: KeyRow): KeyConfig {
  let secret: string;
  try {
    secret = box.open({ ciphertext: r.secret_ciphertext, nonce: r.secret_nonce }, secretContext(r.pool, r.id));
  } catch {
    throw new MasterKeyMismatch();
  }
  return {
    pool: r.pool,
    id: r.id,
    label: r.label,
    secret,
    weight: r.weight,
    maxConcurrency: r.max_concurrency,
    quotaGroup: r.quota_group,
    limits: { requestsPerMinute: r.requests_per_minute, tokensPerMinute: r.tokens_per_minute, requestsPerDay: r.requests_per_day },
    priority: r.priority,
    metadata: r.metadata,
    disabled: r.disabled,
    disabledReason: r.disabled_reason,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}
