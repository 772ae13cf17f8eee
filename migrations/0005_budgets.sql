-- Declared budgets (issue 20): a key's own limits and priority tier, a pool's quota-group limits and default
-- token estimate, and each pool's runtime state (quota groups' budget levels, usage, affinities) written by snapshots.
alter table keys
  add column requests_per_minute bigint  not null default 0,
  add column tokens_per_minute   bigint  not null default 0,
  add column requests_per_day    bigint  not null default 0,
  add column priority            integer not null default 0;

alter table pools
  -- Group name to {"requestsPerMinute", "tokensPerMinute", "requestsPerDay"}.
  add column quota_groups              jsonb  not null default '{}',
  add column default_estimated_tokens  bigint not null default 0;

-- PoolRuntime without pool, as the snapshot writer encodes it.
create table pool_runtime (
  pool   text  primary key references pools (name) on delete cascade,
  state  jsonb not null
);
alter table pool_runtime set (fillfactor = 50);
