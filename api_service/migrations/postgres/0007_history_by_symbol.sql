-- The history filtered by symbol (`GET /api/v1/users/history?symbol=`, and its CSV): serves
-- `WHERE user_id = $1 AND upper(symbol) = $4 AND seq < $2 ORDER BY seq DESC LIMIT $3` as one
-- range scan, however many other symbols the user asked for.
CREATE INDEX history_user_symbol_seq ON history (user_id, upper(symbol), seq DESC);
