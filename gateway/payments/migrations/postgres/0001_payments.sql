-- The payments API's tables (PostgreSQL, in the service's own schema). Times are
-- milliseconds since the epoch; amounts are exact decimal strings plus integer minor units.

CREATE TABLE payments (
    payment_id     text    PRIMARY KEY,
    payer_user_id  text    NOT NULL,
    kind           text    NOT NULL,
    merchant_id    text,
    terminal_id    text,
    payee_user_id  text,
    amount         text    NOT NULL,
    amount_minor   bigint  NOT NULL,
    currency       text    NOT NULL,
    channel        text    NOT NULL,
    status         text    NOT NULL,
    reasons        text    NOT NULL,
    created_at_ms  bigint  NOT NULL,
    decided_at_ms  bigint
);
CREATE INDEX payments_by_payer ON payments (payer_user_id, created_at_ms, payment_id);
CREATE INDEX payments_by_merchant ON payments (merchant_id, created_at_ms, payment_id);

-- One row per (client, key): the request's hash, and once answered, the answer.
CREATE TABLE idempotency_keys (
    client_id        text    NOT NULL,
    idempotency_key  text    NOT NULL,
    request_hash     text    NOT NULL,
    locked_at_ms     bigint  NOT NULL,
    status_code      bigint,
    location         text,
    response_body    text,
    created_at_ms    bigint  NOT NULL,
    PRIMARY KEY (client_id, idempotency_key)
);
