-- paystream users: the accounts people sign in with (the auth service reads them) and
-- their KYC state. Email addresses are stored lower-cased and unique.

CREATE TABLE users (
    user_id       text        PRIMARY KEY,
    email         text        NOT NULL UNIQUE CHECK (email = lower(email) AND position('@' IN email) > 1),
    display_name  text        NOT NULL,
    kyc_status    text        NOT NULL DEFAULT 'pending' CHECK (kyc_status IN ('pending', 'verified', 'rejected')),
    created_at_ms bigint      NOT NULL
);
