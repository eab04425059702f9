-- The payments API's tables (SQLite, the embedded default). Times are milliseconds since
-- the epoch; amounts are exact decimal strings plus integer minor units.

CREATE TABLE payments (
    payment_id     TEXT    PRIMARY KEY,
    payer_user_id  TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    merchant_id    TEXT,
    terminal_id    TEXT,
    payee_user_id  TEXT,
    amount         TEXT    NOT NULL,
    amount_minor   BIGINT  NOT NULL,
    currency       TEXT    NOT NULL,
    channel        TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    reasons        TEXT    NOT NULL,
    created_at_ms  BIGINT  NOT NULL,
    decided_at_ms  BIGINT
);
CREATE INDEX payments_by_payer ON payments (payer_user_id, created_at_ms, payment_id);
CREATE INDEX payments_by_merchant ON payments (merchant_id, created_at_ms, payment_id);

-- One row per (client, key): the request's hash, and once answered, the answer.
CREATE TABLE idempotency_keys (
    client_id        TEXT    NOT NULL,
    idempotency_key  TEXT    NOT NULL,
    request_hash     TEXT    NOT NULL,
    locked_at_ms     BIGINT  NOT NULL,
    status_code      BIGINT,
    location         TEXT,
    response_body    TEXT,
    created_at_ms    BIGINT  NOT NULL,
    PRIMARY KEY (client_id, idempotency_key)
);
