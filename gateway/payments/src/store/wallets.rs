//! Wallet balances: the sum of each wallet's postings, recorded from the ledger.

use serde::Serialize;
use sqlx::AnyConnection;
use sqlx::Row;

use super::PaymentsStore;
use crate::error::PaymentsError;
use crate::intake::WalletPosting;

/// One currency of a wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub currency: String,
    /// The exact decimal amount, e.g. "12.30".
    pub balance: String,
    pub balance_minor: i64,
    /// Ledger transactions that moved it.
    pub postings: i64,
    /// When the last of them was recorded (ms since the epoch).
    pub updated_at_ms: i64,
}

/// Records a posting once: the same transaction read again changes nothing.
pub(super) async fn insert_posting(
    connection: &mut AnyConnection,
    posting: &WalletPosting,
) -> Result<(), PaymentsError> {
    sqlx::query(
        "INSERT INTO wallet_postings (transaction_id, user_id, currency, amount_minor, kind, payment_id, event_time, \
         recorded_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
    )
    .bind(&posting.transaction_id)
    .bind(&posting.user_id)
    .bind(&posting.currency)
    .bind(posting.amount_minor)
    .bind(&posting.kind)
    .bind(&posting.payment_id)
    .bind(&posting.event_time)
    .bind(posting.recorded_at_ms)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

impl PaymentsStore {
    /// `user_id`'s wallet, one balance per currency it has moved in (none yet: empty).
    pub async fn balances(&self, user_id: &str) -> Result<Vec<Balance>, PaymentsError> {
        // (PostgreSQL sums bigints as numeric, which sqlx's Any driver cannot read.)
        let rows = sqlx::query(
            "SELECT currency, CAST(SUM(amount_minor) AS BIGINT) AS balance_minor, COUNT(*) AS postings, \
             MAX(recorded_at_ms) AS updated_at_ms FROM wallet_postings WHERE user_id = $1 \
             GROUP BY currency ORDER BY currency",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let currency: String = row.try_get("currency")?;
                let balance_minor: i64 = row.try_get("balance_minor")?;
                let digits = paystream_domain::Currency::from_code(&currency)
                    .map_err(|error| PaymentsError::Internal(format!("a recorded posting's currency: {error}")))?
                    .minor_unit_digits();
                Ok(Balance {
                    balance: paystream_domain::money::format_minor_units(balance_minor, digits),
                    currency,
                    balance_minor,
                    postings: row.try_get("postings")?,
                    updated_at_ms: row.try_get("updated_at_ms")?,
                })
            })
            .collect()
    }
}
