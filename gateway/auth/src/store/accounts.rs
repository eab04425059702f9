//! Accounts: e-mail, password hash, roles and the authorization version.

use paystream_http::Role;
use sqlx::Row;
use sqlx::any::AnyRow;

use paystream_http::database::is_unique_violation;

use super::AuthStore;
use crate::error::AuthError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user_id: String,
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub roles: Vec<Role>,
    pub merchant_id: Option<String>,
    pub auth_version: i64,
    pub created_at_ms: i64,
}

pub(crate) fn roles_text(roles: &[Role]) -> String {
    roles.iter().map(|role| role.as_str()).collect::<Vec<_>>().join(",")
}

pub(crate) fn parse_roles(text: &str) -> Result<Vec<Role>, AuthError> {
    text.split(',')
        .filter(|role| !role.is_empty())
        .map(|role| Role::parse(role).ok_or_else(|| AuthError::Internal(format!("stored role {role:?} is unknown"))))
        .collect()
}

const ACCOUNT_COLUMNS: &str =
    "user_id, email, display_name, password_hash, roles, merchant_id, auth_version, created_at_ms";

fn account(row: &AnyRow) -> Result<Account, AuthError> {
    Ok(Account {
        user_id: row.try_get("user_id")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        password_hash: row.try_get("password_hash")?,
        roles: parse_roles(&row.try_get::<String, _>("roles")?)?,
        merchant_id: row.try_get("merchant_id")?,
        auth_version: row.try_get("auth_version")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

impl AuthStore {
    /// Creates an account; a taken e-mail address is [`AuthError::EmailTaken`].
    pub async fn create_account(&self, account: &Account) -> Result<(), AuthError> {
        let result = sqlx::query(
            "INSERT INTO accounts (user_id, email, display_name, password_hash, roles, merchant_id, auth_version, \
             created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&account.user_id)
        .bind(&account.email)
        .bind(&account.display_name)
        .bind(&account.password_hash)
        .bind(roles_text(&account.roles))
        .bind(account.merchant_id.clone())
        .bind(account.auth_version)
        .bind(account.created_at_ms)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_unique_violation(&error) => Err(AuthError::EmailTaken),
            Err(error) => Err(error.into()),
        }
    }

    pub async fn account_by_email(&self, email: &str) -> Result<Option<Account>, AuthError> {
        let row = sqlx::query(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE email = $1"))
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(account).transpose()
    }

    pub async fn account_by_id(&self, user_id: &str) -> Result<Option<Account>, AuthError> {
        let row = sqlx::query(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE user_id = $1"))
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(account).transpose()
    }

    pub async fn set_password_hash(&self, user_id: &str, password_hash: &str) -> Result<(), AuthError> {
        sqlx::query("UPDATE accounts SET password_hash = $1 WHERE user_id = $2")
            .bind(password_hash)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replaces an account's roles and merchant binding and raises its authorization
    /// version, so access tokens issued before stop working at once. False if there is
    /// no such account.
    pub async fn set_roles(&self, user_id: &str, roles: &[Role], merchant_id: Option<&str>) -> Result<bool, AuthError> {
        let result = sqlx::query(
            "UPDATE accounts SET roles = $1, merchant_id = $2, auth_version = auth_version + 1 WHERE user_id = $3",
        )
        .bind(roles_text(roles))
        .bind(merchant_id.map(str::to_string))
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }
}
