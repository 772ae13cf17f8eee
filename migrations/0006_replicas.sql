-- Several servers on one Postgres. Times here are the database's own clock (timestamptz, now()): the
-- replicas' clocks never decide who owns what.

-- One row per live server process: the address its peers forward to, and its heartbeat.
create table replicas (
  id            text        primary key,
  address       text        not null,
  started_at    timestamptz not null default now(),
  heartbeat_at  timestamptz not null default now()
);

-- Who owns each pool, under which term, until when. A claim increments the term; every write an owner
-- makes for the pool checks its term in the same statement, so an owner that lost the pool writes
-- nothing. Rows outlive their pool, so a pool created again under the same name never reuses a term.
create table pool_owners (
  pool        text        primary key,
  owner       text        not null,
  term        bigint      not null,
  expires_at  timestamptz not null
);
create index pool_owners_owner on pool_owners (owner);
