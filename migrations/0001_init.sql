-- KeyMesh schema. Every instant and duration is bigint milliseconds (instants since the Unix epoch,
-- on the server's clock): the engine's own unit, so deadlines round-trip exactly and compare as integers.

create table pools (
  name                  text primary key,
  strategy              text    not null,
  min_ttl_ms            bigint  not null,
  max_ttl_ms            bigint  not null,
  default_ttl_ms        bigint  not null,
  default_cooldown_ms   bigint  not null,
  max_cooldown_ms       bigint  not null,
  failure_threshold     integer not null,
  open_duration_ms      bigint  not null,
  max_open_duration_ms  bigint  not null,
  half_open_probes      integer not null,
  description           text    not null default '',
  created_at            bigint  not null,
  updated_at            bigint  not null
);

create table keys (
  pool              text    not null references pools (name) on delete cascade,
  id                text    not null,
  label             text    not null,
  -- AES-256-GCM under the master key: ciphertext followed by the 16-byte tag; (pool, id) is the AAD.
  secret_ciphertext bytea   not null,
  secret_nonce      bytea   not null,
  secret_hint       text    not null,
  weight            integer not null,
  max_concurrency   integer not null,
  quota_group       text    not null default '',
  metadata          jsonb   not null default '{}',
  disabled          boolean not null default false,
  disabled_reason   text    not null default '',
  created_at        bigint  not null,
  updated_at        bigint  not null,
  primary key (pool, id)
);

-- Health, cooldowns, circuit and budget of one key (KeyRuntime without pool/keyId), written by snapshots.
create table key_runtime (
  pool    text  not null,
  key_id  text  not null,
  state   jsonb not null,
  primary key (pool, key_id),
  foreign key (pool, key_id) references keys (pool, id) on delete cascade
);

-- Live leases: journaled at grant (group commit) and reconciled by every snapshot.
create table leases (
  lease_id     text   primary key,
  pool         text   not null,
  key_id       text   not null,
  holder       text   not null,
  acquired_at  bigint not null,
  expires_at   bigint not null,
  ttl_ms       bigint not null,
  epoch        bigint not null,
  seq          bigint not null,
  foreign key (pool, key_id) references keys (pool, id) on delete cascade
);
create index leases_key on leases (pool, key_id);

-- One row per server start. Every grant of an epoch up to max_journaled_seq is durable (or superseded
-- by a snapshot), so after a crash a token at or below it that is not in `leases` has ended.
create table server_epochs (
  epoch              bigint generated always as identity primary key,
  started_at         bigint not null,
  max_journaled_seq  bigint not null default 0
);

-- The last committed snapshot; seq_mark: the epoch's grants up to it are reflected in `leases`.
create table snapshot_meta (
  singleton   boolean primary key default true check (singleton),
  taken_at    bigint  not null,
  written_at  bigint  not null,
  epoch       bigint  not null,
  seq_mark    bigint  not null
);

-- A known constant sealed under the master key, so a wrong master key fails at start, not on first use.
create table master_key_check (
  singleton   boolean primary key default true check (singleton),
  ciphertext  bytea   not null,
  nonce       bytea   not null,
  created_at  bigint  not null
);
