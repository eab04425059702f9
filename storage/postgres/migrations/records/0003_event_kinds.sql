-- Event kinds (payment, authorize, capture, void, refund, chargeback, top_up) and the
-- payment a capture, refund or chargeback refers to; transaction kinds of postings
-- (payment, capture, refund, chargeback, top_up, settlement, payout).

ALTER TABLE decisions ADD COLUMN kind text NOT NULL DEFAULT 'payment';
ALTER TABLE decisions ADD COLUMN original_payment_id text;
CREATE INDEX decisions_by_original ON decisions (original_payment_id) WHERE original_payment_id IS NOT NULL;

ALTER TABLE postings ADD COLUMN kind text NOT NULL DEFAULT 'payment';
ALTER TABLE postings ADD COLUMN original_payment_id text;
