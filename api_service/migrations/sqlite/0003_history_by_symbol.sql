-- The history filtered by symbol (`GET /api/v1/users/history?symbol=`, and its CSV): serves
-- `WHERE user_id = ? AND upper(symbol) = ? AND id < ? ORDER BY id DESC LIMIT ?` as one range
-- scan, however many other symbols the user asked for.
CREATE INDEX history_user_symbol ON history (user_id, upper(symbol), id DESC);
