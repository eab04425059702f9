-- Every wallet's movements, one row per ledger transaction, wallet and currency, read
-- from the pipeline's ledger topic. A wallet's balance is the sum of its rows; a row is
-- written once however often the topic is re-read (the primary key).
CREATE TABLE wallet_postings (
    transaction_id  TEXT    NOT NULL,
    user_id         TEXT    NOT NULL,
    currency        TEXT    NOT NULL,
    -- Into the wallet positive, out of it negative.
    amount_minor    BIGINT  NOT NULL,
    kind            TEXT    NOT NULL,
    payment_id      TEXT    NOT NULL,
    event_time      TEXT    NOT NULL,
    recorded_at_ms  BIGINT  NOT NULL,
    PRIMARY KEY (transaction_id, user_id, currency)
);
CREATE INDEX wallet_postings_by_user ON wallet_postings (user_id, currency);
