-- paystream users: the accounts people sign in with (the auth service reads them) and
-- their KYC state. Email addresses are stored lower-cased and unique. This chain runs in
-- the users' own schema, with its own _sqlx_migrations table, apart from the record
-- sink's chain.

CREATE TABLE users (
    user_id       text        PRIMARY KEY,
    email         text        NOT NULL UNIQUE CHECK (email = lower(email) AND position('@' IN email) > 1),
    display_name  text        NOT NULL,
    kyc_status    text        NOT NULL DEFAULT 'pending' CHECK (kyc_status IN ('pending', 'verified', 'rejected')),
    created_at_ms bigint      NOT NULL
);
