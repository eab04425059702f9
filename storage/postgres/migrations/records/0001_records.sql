-- paystream record store: decisions and ledger postings copied from the pipeline's
-- output topics exactly once, account balances derived from the postings, and the
-- topic positions they cover (updated in the same transaction as the rows).

CREATE TABLE sink_positions (
    topic       text    NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint  NOT NULL,
    PRIMARY KEY (topic, partition)
);

CREATE TABLE decisions (
    payment_id       text        PRIMARY KEY,
    payer_account_id text        NOT NULL,
    merchant_id      text,
    amount_minor     bigint      NOT NULL CHECK (amount_minor > 0),
    currency         char(3)     NOT NULL,
    event_time       timestamptz NOT NULL,
    outcome          text        NOT NULL CHECK (outcome IN ('approve', 'review', 'decline')),
    score            real        NOT NULL,
    reasons          text        NOT NULL,
    model_version    text        NOT NULL
);
CREATE INDEX decisions_by_payer ON decisions (payer_account_id, event_time DESC);

CREATE TABLE postings (
    transaction_id text        NOT NULL,
    seq            integer     NOT NULL,
    payment_id     text        NOT NULL,
    account_id     text        NOT NULL,
    direction      text        NOT NULL CHECK (direction IN ('debit', 'credit')),
    amount_minor   bigint      NOT NULL CHECK (amount_minor >= 0),
    currency       char(3)     NOT NULL,
    event_time     timestamptz NOT NULL,
    PRIMARY KEY (transaction_id, seq)
);
CREATE INDEX postings_by_account ON postings (account_id, event_time DESC);

-- Debits positive, credits negative (the sign convention of the ledger topic).
CREATE TABLE balances (
    account_id    text    NOT NULL,
    currency      char(3) NOT NULL,
    balance_minor bigint  NOT NULL,
    PRIMARY KEY (account_id, currency)
);
