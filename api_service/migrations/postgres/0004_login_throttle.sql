-- The login throttle's counts, shared by every API instance on this database
-- (api_service/src/auth/login_throttle/shared.rs). Times are Unix milliseconds.

-- One row per counted key: `a <network>`, `p <username> <network>` or `u <username>`.
CREATE TABLE login_throttle (
    key          TEXT     PRIMARY KEY,
    failures     INTEGER  NOT NULL,
    last_failure BIGINT   NOT NULL,
    locked_until BIGINT,
    next_slot    BIGINT,
    -- Until when each admitted attempt still without a verdict holds its slot.
    leases       BIGINT[] NOT NULL,
    -- After this the row remembers nothing (0 while being created); swept then.
    expires_at   BIGINT   NOT NULL
);

CREATE INDEX login_throttle_expiry ON login_throttle (expires_at);

-- Networks each username logged in from successfully: exempt from that username's pace.
CREATE TABLE login_known_networks (
    username     TEXT   NOT NULL,
    network      TEXT   NOT NULL,
    last_success BIGINT NOT NULL,
    PRIMARY KEY (username, network)
);

-- Entries older than 30 days are swept.
CREATE INDEX login_known_networks_age ON login_known_networks (last_success);
