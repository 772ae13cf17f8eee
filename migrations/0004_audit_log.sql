-- The audit trail: one row per admin change, written in the transaction of the change it records. Who
-- (a token's name, never the token), what, the object before and after (secrets only as their masked
-- hint), when, and through which server process. No foreign key: a deleted pool's history stays.
-- Rows older than KEYMESH_AUDIT_RETENTION are deleted by the server (store/audit-log.ts).
create table audit_log (
  id        bigint generated always as identity primary key,
  at        bigint not null,
  actor     text   not null,
  action    text   not null,
  pool      text   not null,
  key_id    text   not null default '',
  lease_id  text   not null default '',
  before    jsonb,
  after     jsonb,
  replica   text   not null,
  reason    text   not null default ''
);

-- ListAuditEntries by pool, newest first; pruning and `since` by time.
create index audit_log_pool_id on audit_log (pool, id);
create index audit_log_at on audit_log (at);
