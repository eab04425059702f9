//! Idempotency records: claimed before a request is answered, completed with the answer.

use sqlx::AnyConnection;
use sqlx::Row;

use crate::error::PaymentsError;
use crate::model::{IdempotencyVerdict, StoredKey, judge_key};

/// What claiming a key gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begun {
    /// This request holds the key: answer it, then `complete` (or `release`).
    Claimed,
    /// An earlier request holds or answered it.
    Earlier(IdempotencyVerdict),
}

/// Claims (client, key) for a request with `request_hash`, or says what an earlier
/// request with that key did.
pub(super) async fn begin_key(
    connection: &mut AnyConnection,
    client_id: &str,
    key: &str,
    request_hash: &str,
    now_ms: i64,
) -> Result<Begun, PaymentsError> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (client_id, idempotency_key, request_hash, locked_at_ms, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(client_id)
    .bind(key)
    .bind(request_hash)
    .bind(now_ms)
    .bind(now_ms)
    .execute(&mut *connection)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Begun::Claimed);
    }
    let row = sqlx::query(
        "SELECT request_hash, locked_at_ms, status_code, location, response_body FROM idempotency_keys \
             WHERE client_id = $1 AND idempotency_key = $2",
    )
    .bind(client_id)
    .bind(key)
    .fetch_optional(&mut *connection)
    .await?;
    // Released by a concurrent transaction between the insert and the read: the
    // client may retry at once.
    let Some(row) = row else { return Ok(Begun::Earlier(IdempotencyVerdict::InFlight)) };
    let status: Option<i64> = row.try_get("status_code")?;
    let body: Option<String> = row.try_get("response_body")?;
    let stored = StoredKey {
        request_hash: row.try_get("request_hash")?,
        locked_at_ms: row.try_get("locked_at_ms")?,
        answer: status.zip(body).map(|(status, body)| (status as u16, row.try_get("location").ok().flatten(), body)),
    };
    match judge_key(&stored, request_hash, now_ms) {
        IdempotencyVerdict::TakeOver => {
            let taken = sqlx::query(
                "UPDATE idempotency_keys SET locked_at_ms = $1 WHERE client_id = $2 AND idempotency_key = $3 \
                     AND locked_at_ms = $4 AND status_code IS NULL",
            )
            .bind(now_ms)
            .bind(client_id)
            .bind(key)
            .bind(stored.locked_at_ms)
            .execute(&mut *connection)
            .await?;
            if taken.rows_affected() == 1 {
                tracing::warn!(%client_id, "took over an abandoned idempotent request");
                Ok(Begun::Claimed)
            } else {
                Ok(Begun::Earlier(IdempotencyVerdict::InFlight))
            }
        }
        verdict => Ok(Begun::Earlier(verdict)),
    }
}

/// Stores the answer; later requests with the key replay it.
pub(super) async fn complete_key(
    connection: &mut AnyConnection,
    client_id: &str,
    key: &str,
    status: u16,
    location: Option<&str>,
    body: &str,
) -> Result<(), PaymentsError> {
    sqlx::query(
        "UPDATE idempotency_keys SET status_code = $1, location = $2, response_body = $3 \
             WHERE client_id = $4 AND idempotency_key = $5",
    )
    .bind(i64::from(status))
    .bind(location.map(str::to_string))
    .bind(body)
    .bind(client_id)
    .bind(key)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Forgets a claimed key whose request failed before any effect (validation, the log
/// unavailable), so the client may retry it.
pub(super) async fn release_key(
    connection: &mut AnyConnection,
    client_id: &str,
    key: &str,
) -> Result<(), PaymentsError> {
    sqlx::query("DELETE FROM idempotency_keys WHERE client_id = $1 AND idempotency_key = $2 AND status_code IS NULL")
        .bind(client_id)
        .bind(key)
        .execute(&mut *connection)
        .await?;
    Ok(())
}
