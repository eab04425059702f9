//! Sessions and their refresh tokens (one family per session).

use sqlx::Row;

use super::AuthStore;
use crate::error::AuthError;
use crate::model::RefreshState;

/// What verifying an access token needs to know about its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCheck {
    pub revoked: bool,
    pub expires_at_ms: i64,
    /// The account's current authorization version.
    pub auth_version: i64,
}

/// A refresh token as stored, with its session's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    pub session_id: String,
    pub user_id: String,
    pub state: RefreshState,
}

impl AuthStore {
    /// Opens a session with its first refresh token, in one transaction.
    pub async fn create_session(
        &self,
        session_id: &str,
        user_id: &str,
        refresh_token_hash: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<(), AuthError> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query("INSERT INTO sessions (session_id, user_id, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4)")
            .bind(session_id)
            .bind(user_id)
            .bind(now_ms)
            .bind(expires_at_ms)
            .execute(&mut *transaction)
            .await?;
        sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, issued_at_ms) VALUES ($1, $2, $3)")
            .bind(refresh_token_hash)
            .bind(session_id)
            .bind(now_ms)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    pub async fn session_check(&self, session_id: &str, user_id: &str) -> Result<Option<SessionCheck>, AuthError> {
        let row = sqlx::query(
            "SELECT s.revoked_at_ms, s.expires_at_ms, a.auth_version FROM sessions s \
             JOIN accounts a ON a.user_id = s.user_id WHERE s.session_id = $1 AND s.user_id = $2",
        )
        .bind(session_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(SessionCheck {
            revoked: row.try_get::<Option<i64>, _>("revoked_at_ms")?.is_some(),
            expires_at_ms: row.try_get("expires_at_ms")?,
            auth_version: row.try_get("auth_version")?,
        }))
    }

    pub async fn refresh_record(&self, token_hash: &str) -> Result<Option<RefreshRecord>, AuthError> {
        let row = sqlx::query(
            "SELECT r.session_id, r.used_at_ms, s.user_id, s.revoked_at_ms, s.expires_at_ms FROM refresh_tokens r \
             JOIN sessions s ON s.session_id = r.session_id WHERE r.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(RefreshRecord {
            session_id: row.try_get("session_id")?,
            user_id: row.try_get("user_id")?,
            state: RefreshState {
                token_used: row.try_get::<Option<i64>, _>("used_at_ms")?.is_some(),
                session_revoked: row.try_get::<Option<i64>, _>("revoked_at_ms")?.is_some(),
                session_expires_at_ms: row.try_get("expires_at_ms")?,
            },
        }))
    }

    /// Spends `old_hash` and records `new_hash` in the same session, atomically. False if
    /// the old token was spent meanwhile (a concurrent use: treat as reuse).
    pub async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        session_id: &str,
        now_ms: i64,
    ) -> Result<bool, AuthError> {
        let mut transaction = self.pool.begin().await?;
        let spent =
            sqlx::query("UPDATE refresh_tokens SET used_at_ms = $1 WHERE token_hash = $2 AND used_at_ms IS NULL")
                .bind(now_ms)
                .bind(old_hash)
                .execute(&mut *transaction)
                .await?;
        if spent.rows_affected() != 1 {
            transaction.rollback().await?;
            return Ok(false);
        }
        sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, issued_at_ms) VALUES ($1, $2, $3)")
            .bind(new_hash)
            .bind(session_id)
            .bind(now_ms)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(true)
    }

    /// Ends a session: its access and refresh tokens stop working. Idempotent.
    pub async fn revoke_session(&self, session_id: &str, reason: &str, now_ms: i64) -> Result<(), AuthError> {
        sqlx::query(
            "UPDATE sessions SET revoked_at_ms = $1, revoke_reason = $2 WHERE session_id = $3 AND revoked_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(reason)
        .bind(session_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
