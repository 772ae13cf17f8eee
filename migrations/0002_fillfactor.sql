-- Room on each page for the rows snapshots rewrite (used keys' runtime, renewed leases), so the new
-- version stays on its page as a HOT update: no new index entries, no bloat. On packed pages almost no
-- update was HOT. server/test/store/store-bench.ts: a steady-state snapshot of 10,000 keys and 100,000
-- leases wrote in 2.4 s instead of 2.9 s, and every row changed in 2.2 s instead of 3.0 s.
-- Pages written from now on keep the room.
alter table key_runtime set (fillfactor = 50);
-- Leases are mostly inserted and deleted, so they keep less room than key_runtime's one row per key.
alter table leases set (fillfactor = 70);
