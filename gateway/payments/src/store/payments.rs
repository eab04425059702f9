//! Payments as the API shows them: what was asked, and the pipeline's decision once
//! known.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use sqlx::AnyConnection;

use super::PaymentsStore;
use crate::error::PaymentsError;
use crate::intake::DecisionNotice;
use crate::model::Cursor;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentRecord {
    pub payment_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub payer_user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payee_user_id: Option<String>,
    pub amount: String,
    pub amount_minor: i64,
    pub currency: String,
    pub channel: String,
    /// `pending`, `approved`, `in_review`, `declined` or `rejected`.
    pub status: String,
    pub reasons: Vec<String>,
    pub created_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at_ms: Option<i64>,
}

const COLUMNS: &str = "payment_id, kind, payer_user_id, merchant_id, terminal_id, payee_user_id, amount, amount_minor, \
                       currency, channel, status, reasons, created_at_ms, decided_at_ms";

fn record(row: &AnyRow) -> Result<PaymentRecord, PaymentsError> {
    let reasons: String = row.try_get("reasons")?;
    Ok(PaymentRecord {
        payment_id: row.try_get("payment_id")?,
        kind: row.try_get("kind")?,
        payer_user_id: row.try_get("payer_user_id")?,
        merchant_id: row.try_get("merchant_id")?,
        terminal_id: row.try_get("terminal_id")?,
        payee_user_id: row.try_get("payee_user_id")?,
        amount: row.try_get("amount")?,
        amount_minor: row.try_get("amount_minor")?,
        currency: row.try_get("currency")?,
        channel: row.try_get("channel")?,
        status: row.try_get("status")?,
        reasons: reasons.split(',').filter(|reason| !reason.is_empty()).map(str::to_string).collect(),
        created_at_ms: row.try_get("created_at_ms")?,
        decided_at_ms: row.try_get("decided_at_ms")?,
    })
}

/// Whose list: a payer's payments, or those made to a merchant.
#[derive(Debug, Clone, Copy)]
pub enum ListOf<'a> {
    Payer(&'a str),
    Merchant(&'a str),
}

/// Records a payment as pending; an existing one (a taken-over request) is kept.
pub(super) async fn insert_payment(
    connection: &mut AnyConnection,
    payment: &PaymentRecord,
) -> Result<(), PaymentsError> {
    sqlx::query(&format!(
        "INSERT INTO payments ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT DO NOTHING"
    ))
    .bind(&payment.payment_id)
    .bind(&payment.kind)
    .bind(&payment.payer_user_id)
    .bind(payment.merchant_id.clone())
    .bind(payment.terminal_id.clone())
    .bind(payment.payee_user_id.clone())
    .bind(&payment.amount)
    .bind(payment.amount_minor)
    .bind(&payment.currency)
    .bind(&payment.channel)
    .bind(&payment.status)
    .bind(payment.reasons.join(","))
    .bind(payment.created_at_ms)
    .bind(payment.decided_at_ms)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Records the pipeline's decision on a pending payment (once: a decision is final).
pub(super) async fn record_decision(
    connection: &mut AnyConnection,
    notice: &DecisionNotice,
) -> Result<bool, PaymentsError> {
    let updated = sqlx::query(
            "UPDATE payments SET status = $1, reasons = $2, decided_at_ms = $3 WHERE payment_id = $4 AND status = 'pending'",
        )
        .bind(notice.status)
        .bind(notice.reasons.join(","))
        .bind(notice.decided_at_ms)
        .bind(&notice.payment_id)
        .execute(&mut *connection)
        .await?;
    Ok(updated.rows_affected() == 1)
}

impl PaymentsStore {
    pub async fn payment(&self, payment_id: &str) -> Result<Option<PaymentRecord>, PaymentsError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM payments WHERE payment_id = $1"))
            .bind(payment_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// Newest first, `limit` of them after `after`; returns the page and whether more
    /// follow.
    pub async fn list(
        &self,
        of: ListOf<'_>,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<(Vec<PaymentRecord>, bool), PaymentsError> {
        let (column, owner) = match of {
            ListOf::Payer(user_id) => ("payer_user_id", user_id),
            ListOf::Merchant(merchant_id) => ("merchant_id", merchant_id),
        };
        let (after_ms, after_id) =
            after.map_or((i64::MAX, String::new()), |cursor| (cursor.created_at_ms, cursor.payment_id.clone()));
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM payments WHERE {column} = $1 \
             AND (created_at_ms < $2 OR (created_at_ms = $2 AND payment_id < $3) OR $4 = 0) \
             ORDER BY created_at_ms DESC, payment_id DESC LIMIT $5"
        ))
        .bind(owner)
        .bind(after_ms)
        .bind(after_id)
        .bind(i64::from(after.is_some()))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut page = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
        let more = page.len() > limit as usize;
        page.truncate(limit as usize);
        Ok((page, more))
    }
}
