-- Users, their quote history and per-symbol request counters (SQLite).
--
-- Timestamps are INTEGER microseconds since the Unix epoch (UTC): exact round trip to
-- chrono's DateTime<Utc> at microsecond precision and numeric ordering, which TEXT
-- timestamps of varying precision would not give.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('user', 'admin')),
    created_at    INTEGER NOT NULL
);

-- AUTOINCREMENT: ids never go backwards even after the newest rows are deleted, so an id
-- is a stable keyset-pagination cursor.
CREATE TABLE history (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    requested_at INTEGER NOT NULL,
    symbol       TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    open         REAL    NOT NULL,
    high         REAL    NOT NULL,
    low          REAL    NOT NULL,
    close        REAL    NOT NULL
);

-- Serves `WHERE user_id = ? AND id < ? ORDER BY id DESC LIMIT ?` as one range scan, and the
-- ON DELETE CASCADE lookup when a user is deleted.
CREATE INDEX history_user_id_id ON history (user_id, id DESC);

-- Key: lower-case symbol. Counts requests ever served; deleting a user does not undo them.
CREATE TABLE stock_counters (
    symbol          TEXT    PRIMARY KEY NOT NULL,
    times_requested INTEGER NOT NULL CHECK (times_requested >= 0)
) WITHOUT ROWID;

-- Serves the top-N stats query in index order without sorting the whole table.
CREATE INDEX stock_counters_top ON stock_counters (times_requested DESC, symbol);
