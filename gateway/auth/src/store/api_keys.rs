//! API keys: stored as a SHA-256 hash with a visible prefix (to find and show a key
//! without keeping it), owned by an account, revocable.

use sqlx::Row;
use sqlx::any::AnyRow;

use paystream_http::database::is_unique_violation;

use super::AuthStore;
use crate::error::AuthError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub key_id: String,
    pub prefix: String,
    pub key_hash: String,
    pub user_id: String,
    pub name: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

const API_KEY_COLUMNS: &str = "key_id, prefix, key_hash, user_id, name, created_at_ms, revoked_at_ms";

/// Keys one account may hold (revoked ones included).
pub const API_KEYS_PER_ACCOUNT_MAX: i64 = 100;

fn api_key(row: &AnyRow) -> Result<ApiKeyRecord, AuthError> {
    Ok(ApiKeyRecord {
        key_id: row.try_get("key_id")?,
        prefix: row.try_get("prefix")?,
        key_hash: row.try_get("key_hash")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        created_at_ms: row.try_get("created_at_ms")?,
        revoked_at_ms: row.try_get("revoked_at_ms")?,
    })
}

impl AuthStore {
    pub async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), AuthError> {
        let held: i64 = sqlx::query("SELECT COUNT(*) AS held FROM api_keys WHERE user_id = $1")
            .bind(&key.user_id)
            .fetch_one(&self.pool)
            .await?
            .try_get("held")?;
        if held >= API_KEYS_PER_ACCOUNT_MAX {
            return Err(AuthError::Conflict {
                code: "too_many_api_keys",
                detail: format!("at most {API_KEYS_PER_ACCOUNT_MAX} keys, revoked ones included"),
            });
        }
        let result =
            sqlx::query(&format!("INSERT INTO api_keys ({API_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"))
                .bind(&key.key_id)
                .bind(&key.prefix)
                .bind(&key.key_hash)
                .bind(&key.user_id)
                .bind(&key.name)
                .bind(key.created_at_ms)
                .bind(key.revoked_at_ms)
                .execute(&self.pool)
                .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_unique_violation(&error) => Err(AuthError::Internal("API key prefix collision".into())),
            Err(error) => Err(error.into()),
        }
    }

    pub async fn api_key_by_prefix(&self, prefix: &str) -> Result<Option<ApiKeyRecord>, AuthError> {
        let row = sqlx::query(&format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE prefix = $1"))
            .bind(prefix)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(api_key).transpose()
    }

    pub async fn api_keys_of(&self, user_id: &str) -> Result<Vec<ApiKeyRecord>, AuthError> {
        let rows = sqlx::query(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at_ms, key_id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(api_key).collect()
    }

    /// Revokes `user_id`'s key `key_id`. False if the account holds no such key (another
    /// account's key is "no such key").
    pub async fn revoke_api_key(&self, user_id: &str, key_id: &str, now_ms: i64) -> Result<bool, AuthError> {
        let result = sqlx::query(
            "UPDATE api_keys SET revoked_at_ms = COALESCE(revoked_at_ms, $1) WHERE key_id = $2 AND user_id = $3",
        )
        .bind(now_ms)
        .bind(key_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }
}
