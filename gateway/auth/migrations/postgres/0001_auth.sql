-- The auth service's tables (PostgreSQL, in the service's own schema). Times are
-- milliseconds since the epoch; secrets are stored only as SHA-256 hashes (refresh tokens, API keys) or
-- argon2id PHC strings (passwords).

CREATE TABLE accounts (
    user_id       text    PRIMARY KEY,
    email         text    NOT NULL UNIQUE CHECK (email = lower(email)),
    display_name  text    NOT NULL,
    password_hash text    NOT NULL,
    roles         text    NOT NULL,
    merchant_id   text,
    auth_version  bigint  NOT NULL DEFAULT 1,
    created_at_ms bigint  NOT NULL
);

CREATE TABLE sessions (
    session_id    text    PRIMARY KEY,
    user_id       text    NOT NULL REFERENCES accounts (user_id),
    created_at_ms bigint  NOT NULL,
    expires_at_ms bigint  NOT NULL,
    revoked_at_ms bigint,
    revoke_reason text
);
CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE refresh_tokens (
    token_hash    text    PRIMARY KEY,
    session_id    text    NOT NULL REFERENCES sessions (session_id),
    issued_at_ms  bigint  NOT NULL,
    used_at_ms    bigint
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

CREATE TABLE api_keys (
    key_id        text    PRIMARY KEY,
    prefix        text    NOT NULL UNIQUE,
    key_hash      text    NOT NULL,
    user_id       text    NOT NULL REFERENCES accounts (user_id),
    name          text    NOT NULL,
    created_at_ms bigint  NOT NULL,
    revoked_at_ms bigint
);
CREATE INDEX api_keys_by_user ON api_keys (user_id);
