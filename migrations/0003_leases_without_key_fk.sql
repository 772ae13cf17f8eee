-- The lease journal's insert no longer checks each row against keys: the foreign key's check took a row
-- lock on the key (a WAL record and a dirtied keys page per key and statement) and, with the probe that
-- kept removed keys' rows out, was about half of the journal statement's cost (bench/README.md). A lease
-- row whose key was removed meanwhile is harmless: a start skips leases of unknown keys, the lease's end
-- deletes its row, and a full snapshot deletes every row that is not a live lease. Deleting a key or a
-- pool deletes its leases' rows in the same statement (store/sql/keys.ts, store/sql/pools.ts).
alter table leases drop constraint leases_pool_key_id_fkey;
