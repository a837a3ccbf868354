-- Exact history paging with several writers (PostgreSQL).
--
-- Identity ids are handed out at INSERT, not at COMMIT: with two API instances writing, a row
-- with a lower id can commit after one with a higher id, and a client already holding a
-- cursor past it would never see it. `history.seq` is instead a per-user position drawn from
-- `users.history_seq` under that user's row lock, held until commit: a user's positions
-- commit in order, so whoever sees position n sees every position below it.

ALTER TABLE users ADD COLUMN history_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE history ADD COLUMN seq BIGINT;

UPDATE history h SET seq = r.position
FROM (SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY id) AS position FROM history) r
WHERE h.id = r.id;

UPDATE users u SET history_seq = COALESCE((SELECT max(seq) FROM history WHERE user_id = u.id), 0);

ALTER TABLE history ALTER COLUMN seq SET NOT NULL;

-- Serves `WHERE user_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3` as one index range
-- scan, and the ON DELETE CASCADE lookup when a user is deleted.
CREATE UNIQUE INDEX history_user_seq ON history (user_id, seq DESC);
DROP INDEX history_user_id_id;
