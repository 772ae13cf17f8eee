// The audit_log table: one row per admin change, and every statement that reads or writes it.
import type { AuditAction, AuditChange, AuditEntry, AuditObject } from "../../domain/audit.js";
import { asJson, type Queryable } from "./queryable.js";

interface AuditRow {
  id: number;
  at: number;
  actor: string;
  action: AuditAction;
  pool: string;
  key_id: string;
  lease_id: string;
  before: AuditObject | null;
  after: AuditObject | null;
  replica: string;
  reason: string;
}

export async function insertAuditEntry(db: Queryable, change: AuditChange): Promise<number> {
  const row = {
    at: change.at,
    actor: change.actor,
    action: change.action,
    pool: change.pool,
    key_id: change.keyId ?? "",
    lease_id: change.leaseId ?? "",
    before: change.before ? asJson(change.before) : null,
    after: change.after ? asJson(change.after) : null,
    replica: change.replica,
    reason: change.reason ?? "",
  };
  const [inserted] = await db<{ id: number }[]>`insert into audit_log ${db(row)} returning id`;
  return inserted.id;
}

export interface AuditQuery {
  /** Empty: every pool. */
  pool: string;
  /** Only entries at or after (epoch ms). */
  since?: number;
  /** Only entries older than this id (the page before). */
  beforeId?: number;
  limit: number;
}

/** Newest first. */
export async function selectAuditEntries(db: Queryable, q: AuditQuery): Promise<AuditEntry[]> {
  const rows = await db<AuditRow[]>`
    select * from audit_log
    where (${q.pool} = '' or pool = ${q.pool})
      and at >= ${q.since ?? 0}
      and id < ${q.beforeId ?? Number.MAX_SAFE_INTEGER}
    order by id desc
    limit ${q.limit}`;
  return rows.map(entryFromRow);
}

/** Deletes up to `limit` of the oldest entries recorded before `cutoff`; returns how many. */
export async function deleteAuditEntriesBefore(db: Queryable, cutoff: number, limit: number): Promise<number> {
  const result = await db`
    delete from audit_log where id in (select id from audit_log where at < ${cutoff} order by id limit ${limit})`;
  return result.count;
}

function entryFromRow(r: AuditRow): AuditEntry {
  return {
    id: r.id,
    at: r.at,
    actor: r.actor,
    action: r.action,
    pool: r.pool,
    ...(r.key_id ? { keyId: r.key_id } : {}),
    ...(r.lease_id ? { leaseId: r.lease_id } : {}),
    ...(r.before ? { before: r.before } : {}),
    ...(r.after ? { after: r.after } : {}),
    replica: r.replica,
    ...(r.reason ? { reason: r.reason } : {}),
  };
}
