//! A slice as the columns the record store inserts: every record checked and converted
//! before the transaction starts, then each table written by one `UNNEST` statement
//! (one round trip per table).

use paystream_domain::Direction;
use paystream_storage::StorageError;
use paystream_storage::records::{OutputSlice, balance_changes, decision_amount_minor, event_time_ms};
use sqlx::postgres::PgConnection;

use crate::connection::database;

#[derive(Default)]
struct DecisionColumns {
    kind: Vec<String>,
    original: Vec<Option<String>>,
    payment_id: Vec<String>,
    payer: Vec<String>,
    merchant: Vec<Option<String>>,
    amount_minor: Vec<i64>,
    currency: Vec<String>,
    event_time_ms: Vec<i64>,
    outcome: Vec<String>,
    score: Vec<f32>,
    reasons: Vec<String>,
    model_version: Vec<String>,
}

#[derive(Default)]
struct PostingColumns {
    kind: Vec<String>,
    original: Vec<Option<String>>,
    transaction_id: Vec<String>,
    seq: Vec<i32>,
    payment_id: Vec<String>,
    account_id: Vec<String>,
    direction: Vec<String>,
    amount_minor: Vec<i64>,
    currency: Vec<String>,
    event_time_ms: Vec<i64>,
}

/// Net balance change per (account, currency).
#[derive(Default)]
struct BalanceColumns {
    account: Vec<String>,
    currency: Vec<String>,
    delta: Vec<i64>,
}

/// The rows of one slice, checked (an invalid record fails the whole slice here, before
/// anything is written).
pub(crate) struct SliceRows {
    decisions: DecisionColumns,
    postings: PostingColumns,
    balances: BalanceColumns,
}

impl SliceRows {
    pub(crate) fn from_slice(slice: &OutputSlice) -> Result<SliceRows, StorageError> {
        let mut d = DecisionColumns::default();
        for decision in &slice.decisions {
            d.kind.push(decision.kind.as_str().to_string());
            d.original.push(decision.original_payment_id.clone());
            d.payment_id.push(decision.payment_id.clone());
            d.payer.push(decision.payer_account_id.clone());
            d.merchant.push(decision.merchant_id.clone());
            d.amount_minor.push(decision_amount_minor(decision)?);
            d.currency.push(decision.currency.code().to_string());
            d.event_time_ms.push(event_time_ms("decision", &decision.payment_id, &decision.event_time)?);
            d.outcome.push(decision.outcome.as_str().to_string());
            d.score.push(decision.score);
            d.reasons.push(decision.reasons.join(","));
            d.model_version.push(decision.model_version.to_string());
        }
        let mut p = PostingColumns::default();
        for transaction in &slice.ledger {
            let time = event_time_ms("transaction", &transaction.transaction_id, &transaction.event_time)?;
            for (seq, posting) in transaction.postings.iter().enumerate() {
                p.kind.push(transaction.kind.as_str().to_string());
                p.original.push(transaction.original_payment_id.clone());
                p.transaction_id.push(transaction.transaction_id.clone());
                p.seq.push(seq as i32);
                p.payment_id.push(transaction.payment_id.clone());
                p.account_id.push(posting.account_id.clone());
                p.direction.push(match posting.direction {
                    Direction::Debit => "debit".to_string(),
                    Direction::Credit => "credit".to_string(),
                });
                p.amount_minor.push(posting.amount_minor);
                p.currency.push(transaction.currency.code().to_string());
                p.event_time_ms.push(time);
            }
        }
        let mut b = BalanceColumns::default();
        for ((account, currency), delta) in balance_changes(&slice.ledger)? {
            b.account.push(account);
            b.currency.push(currency);
            b.delta.push(delta);
        }
        Ok(SliceRows { decisions: d, postings: p, balances: b })
    }

    /// Inserts the decisions, postings and balance changes (inside the caller's
    /// transaction).
    pub(crate) async fn insert(&self, connection: &mut PgConnection) -> Result<(), StorageError> {
        if !self.decisions.payment_id.is_empty() {
            self.insert_decisions(connection).await?;
        }
        if !self.postings.transaction_id.is_empty() {
            self.insert_postings(connection).await?;
            self.add_balances(connection).await?;
        }
        Ok(())
    }

    async fn insert_decisions(&self, connection: &mut PgConnection) -> Result<(), StorageError> {
        let d = &self.decisions;
        sqlx::query(
            "INSERT INTO decisions (payment_id, payer_account_id, merchant_id, amount_minor, currency, event_time, \
             outcome, score, reasons, model_version, kind, original_payment_id) \
             SELECT p, y, m, a, c, to_timestamp(t::double precision / 1000), o, s, r, v, k, g \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::text[], \
             $8::real[], $9::text[], $10::text[], $11::text[], $12::text[]) AS u(p, y, m, a, c, t, o, s, r, v, k, g) \
             ON CONFLICT (payment_id) DO NOTHING",
        )
        .bind(&d.payment_id)
        .bind(&d.payer)
        .bind(&d.merchant)
        .bind(&d.amount_minor)
        .bind(&d.currency)
        .bind(&d.event_time_ms)
        .bind(&d.outcome)
        .bind(&d.score)
        .bind(&d.reasons)
        .bind(&d.model_version)
        .bind(&d.kind)
        .bind(&d.original)
        .execute(&mut *connection)
        .await
        .map_err(database("insert decisions"))?;
        Ok(())
    }

    async fn insert_postings(&self, connection: &mut PgConnection) -> Result<(), StorageError> {
        let p = &self.postings;
        sqlx::query(
            "INSERT INTO postings (transaction_id, seq, payment_id, account_id, direction, amount_minor, currency, \
             event_time, kind, original_payment_id) \
             SELECT i, q, p, a, d, m, c, to_timestamp(t::double precision / 1000), k, g \
             FROM UNNEST($1::text[], $2::integer[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], \
             $8::bigint[], $9::text[], $10::text[]) AS u(i, q, p, a, d, m, c, t, k, g)",
        )
        .bind(&p.transaction_id)
        .bind(&p.seq)
        .bind(&p.payment_id)
        .bind(&p.account_id)
        .bind(&p.direction)
        .bind(&p.amount_minor)
        .bind(&p.currency)
        .bind(&p.event_time_ms)
        .bind(&p.kind)
        .bind(&p.original)
        .execute(&mut *connection)
        .await
        .map_err(database("insert postings"))?;
        Ok(())
    }

    async fn add_balances(&self, connection: &mut PgConnection) -> Result<(), StorageError> {
        let b = &self.balances;
        sqlx::query(
            "INSERT INTO balances (account_id, currency, balance_minor) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[]) \
             ON CONFLICT (account_id, currency) DO UPDATE SET balance_minor = balances.balance_minor + EXCLUDED.balance_minor",
        )
        .bind(&b.account)
        .bind(&b.currency)
        .bind(&b.delta)
        .execute(&mut *connection)
        .await
        .map_err(database("update balances"))?;
        Ok(())
    }
}
