-- The auth service's tables (SQLite, the embedded default). Times are milliseconds since
-- the epoch; secrets are stored only as SHA-256 hashes (refresh tokens, API keys) or
-- argon2id PHC strings (passwords).

CREATE TABLE accounts (
    user_id       TEXT    PRIMARY KEY,
    email         TEXT    NOT NULL UNIQUE,
    display_name  TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    roles         TEXT    NOT NULL,
    merchant_id   TEXT,
    auth_version  BIGINT  NOT NULL DEFAULT 1,
    created_at_ms BIGINT  NOT NULL
);

CREATE TABLE sessions (
    session_id    TEXT    PRIMARY KEY,
    user_id       TEXT    NOT NULL REFERENCES accounts (user_id),
    created_at_ms BIGINT  NOT NULL,
    expires_at_ms BIGINT  NOT NULL,
    revoked_at_ms BIGINT,
    revoke_reason TEXT
);
CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE refresh_tokens (
    token_hash    TEXT    PRIMARY KEY,
    session_id    TEXT    NOT NULL REFERENCES sessions (session_id),
    issued_at_ms  BIGINT  NOT NULL,
    used_at_ms    BIGINT
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

CREATE TABLE api_keys (
    key_id        TEXT    PRIMARY KEY,
    prefix        TEXT    NOT NULL UNIQUE,
    key_hash      TEXT    NOT NULL,
    user_id       TEXT    NOT NULL REFERENCES accounts (user_id),
    name          TEXT    NOT NULL,
    created_at_ms BIGINT  NOT NULL,
    revoked_at_ms BIGINT
);
CREATE INDEX api_keys_by_user ON api_keys (user_id);
