-- Users, their quote history and per-symbol request counters (PostgreSQL).

CREATE TABLE users (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      TEXT        NOT NULL UNIQUE,
    password_hash TEXT        NOT NULL,
    role          TEXT        NOT NULL CHECK (role IN ('user', 'admin')),
    created_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE history (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      BIGINT           NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    requested_at TIMESTAMPTZ      NOT NULL,
    symbol       TEXT             NOT NULL,
    name         TEXT             NOT NULL,
    open         DOUBLE PRECISION NOT NULL,
    high         DOUBLE PRECISION NOT NULL,
    low          DOUBLE PRECISION NOT NULL,
    close        DOUBLE PRECISION NOT NULL
);

-- Serves `WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3` as one index range scan,
-- and the ON DELETE CASCADE lookup when a user is deleted.
CREATE INDEX history_user_id_id ON history (user_id, id DESC);

-- Key: lower-case symbol. Counts requests ever served; deleting a user does not undo them.
CREATE TABLE stock_counters (
    symbol          TEXT   PRIMARY KEY,
    times_requested BIGINT NOT NULL CHECK (times_requested >= 0)
);

-- Serves the top-N stats query in index order without sorting the whole table.
CREATE INDEX stock_counters_top ON stock_counters (times_requested DESC, symbol);
