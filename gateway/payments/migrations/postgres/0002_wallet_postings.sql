-- Every wallet's movements, one row per ledger transaction, wallet and currency, read
-- from the pipeline's ledger topic. A wallet's balance is the sum of its rows; a row is
-- written once however often the topic is re-read (the primary key).
CREATE TABLE wallet_postings (
    transaction_id  text    NOT NULL,
    user_id         text    NOT NULL,
    currency        text    NOT NULL,
    -- Into the wallet positive, out of it negative.
    amount_minor    bigint  NOT NULL,
    kind            text    NOT NULL,
    payment_id      text    NOT NULL,
    event_time      text    NOT NULL,
    recorded_at_ms  bigint  NOT NULL,
    PRIMARY KEY (transaction_id, user_id, currency)
);
CREATE INDEX wallet_postings_by_user ON wallet_postings (user_id, currency);
