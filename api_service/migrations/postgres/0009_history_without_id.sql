-- Since history positions (migration 3) nothing reads `history.id` on PostgreSQL (pages,
-- cursors and exports go by `(user_id, seq)`), yet every `/stock` still drew it from a
-- sequence and inserted it into the primary key's index: about 30 MB per million rows, and
-- 1-8 % of PostgreSQL's CPU per hot `/stock` in the benchmark (BENCHMARKS.md, round eight).
-- Instances older than migration 3 read history by `id`: stop them before this runs (every
-- later version is unaffected).
ALTER TABLE history DROP COLUMN id;

-- `(user_id, seq)` is the row's identity now; name it so for logical replication, which
-- needs one to publish the deletes of the `users_delete_history` trigger.
ALTER TABLE history REPLICA IDENTITY USING INDEX history_user_seq;
