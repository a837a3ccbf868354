-- Token revocation (PostgreSQL). See api_service/src/auth/revocation.rs.

-- Bumped whenever a user's password or role changes: tokens carry the version they were
-- issued under, and an older one is refused.
ALTER TABLE users ADD COLUMN token_version BIGINT NOT NULL DEFAULT 0;

-- Tokens logged out before they expire; a row is useless after `expires_at` (Unix seconds)
-- and is purged then.
CREATE TABLE revoked_tokens (
    jti        TEXT    PRIMARY KEY,
    user_id    BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at BIGINT  NOT NULL
);

CREATE INDEX revoked_tokens_user ON revoked_tokens (user_id);
CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expires_at);
