//! The auth service's operations, over its store and keys. Handlers in [`crate::routes`]
//! are thin: they parse, call one of these, and shape the answer.

use std::sync::RwLock;

use paystream_http::{ClientIp, Principal, Role};
use serde::Serialize;

use crate::config::AuthConfig;
use crate::error::AuthError;
use crate::keys::Keyring;
use crate::model::{self, AccessClaims, RefreshVerdict};
use crate::password::{self, HashParams, Verified};
use crate::secrets;
use crate::store::{Account, ApiKeyRecord, AuthStore};
use crate::throttle::{ACCOUNT_FAILURES_MAX, ADDRESS_FAILURES_MAX, LoginThrottle};

pub use paystream_http::clock::{Clock, system_clock};

/// What login and refresh return (RFC 6749 section 5.1 names).
#[derive(Debug, Clone, Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    /// Seconds the access token is valid.
    pub expires_in: u64,
}

/// An account as shown to its owner (never the password hash).
#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    pub user_id: String,
    pub email: String,
    pub display_name: String,
    pub roles: Vec<Role>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_id: Option<String>,
    pub created_at_ms: i64,
}

impl From<&Account> for AccountView {
    fn from(account: &Account) -> AccountView {
        AccountView {
            user_id: account.user_id.clone(),
            email: account.email.clone(),
            display_name: account.display_name.clone(),
            roles: account.roles.clone(),
            merchant_id: account.merchant_id.clone(),
            created_at_ms: account.created_at_ms,
        }
    }
}

/// An API key as listed (never the key or its hash).
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyView {
    pub key_id: String,
    pub prefix: String,
    pub name: String,
    pub created_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<i64>,
}

impl From<&ApiKeyRecord> for ApiKeyView {
    fn from(key: &ApiKeyRecord) -> ApiKeyView {
        ApiKeyView {
            key_id: key.key_id.clone(),
            prefix: key.prefix.clone(),
            name: key.name.clone(),
            created_at_ms: key.created_at_ms,
            revoked_at_ms: key.revoked_at_ms,
        }
    }
}

pub const API_KEY_NAME_CHARS_MAX: usize = 100;

pub struct AuthService {
    pub(crate) store: AuthStore,
    pub(crate) keys: RwLock<Keyring>,
    pub(crate) config: AuthConfig,
    pub(crate) throttle: LoginThrottle,
    decoy_hash: String,
    pub(crate) clock: Clock,
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, AuthError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| AuthError::Internal(format!("hashing task: {error}")))
}

impl AuthService {
    pub async fn new(
        store: AuthStore,
        keys: Keyring,
        config: AuthConfig,
        clock: Clock,
    ) -> Result<AuthService, AuthError> {
        config.validate().map_err(AuthError::Internal)?;
        let decoy_hash = blocking(password::decoy_hash).await?;
        Ok(AuthService {
            store,
            keys: RwLock::new(keys),
            config,
            throttle: LoginThrottle::default(),
            decoy_hash,
            clock,
        })
    }

    pub fn store(&self) -> &AuthStore {
        &self.store
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    pub fn jwks(&self) -> serde_json::Value {
        self.keys.read().expect("keys lock").jwks(self.now_ms())
    }

    /// Replaces the keys (after a rotation written to the key file).
    pub fn set_keys(&self, keys: Keyring) {
        *self.keys.write().expect("keys lock") = keys;
    }

    pub async fn signup(&self, email: &str, password: &str, display_name: &str) -> Result<AccountView, AuthError> {
        let email = model::normalize_email(email)?;
        model::validate_password(password)?;
        let display_name = model::validate_display_name(display_name)?;
        let password = password.to_string();
        let password_hash = blocking(move || password::hash(&password, HashParams::CURRENT)).await??;
        let account = Account {
            user_id: secrets::new_id("usr"),
            email,
            display_name,
            password_hash,
            roles: vec![Role::Customer],
            merchant_id: None,
            auth_version: 1,
            created_at_ms: self.now_ms(),
        };
        self.store.create_account(&account).await?;
        tracing::info!(user_id = %account.user_id, "account created");
        Ok(AccountView::from(&account))
    }

    pub async fn login(&self, email: &str, password: &str, client: Option<ClientIp>) -> Result<TokenPair, AuthError> {
        let now_ms = self.now_ms();
        // Malformed addresses and passwords are wrong credentials too: no hint.
        let email = model::normalize_email(email).unwrap_or_default();
        let account_key = format!("account:{email}");
        let address_key = format!("ip:{}", client.map_or_else(|| "unknown".to_string(), |ip| ip.0.to_string()));
        let keys = [(account_key.as_str(), ACCOUNT_FAILURES_MAX), (address_key.as_str(), ADDRESS_FAILURES_MAX)];
        let attempt = self
            .throttle
            .attempt(&keys, now_ms)
            .map_err(|retry_after_seconds| AuthError::Throttled { retry_after_seconds })?;
        let account = self.store.account_by_email(&email).await?;
        let stored = account.as_ref().map_or_else(|| self.decoy_hash.clone(), |account| account.password_hash.clone());
        let presented = password.to_string();
        let verified = blocking(move || password::verify(&presented, &stored)).await?;
        let account = match (account, verified) {
            (Some(account), Verified::Yes | Verified::YesRehash) => account,
            _ => {
                attempt.failed();
                return Err(AuthError::InvalidCredentials);
            }
        };
        attempt.succeeded(&account_key);
        if verified == Verified::YesRehash {
            let presented = password.to_string();
            let rehashed = blocking(move || password::hash(&presented, HashParams::CURRENT)).await??;
            self.store.set_password_hash(&account.user_id, &rehashed).await?;
            tracing::info!(user_id = %account.user_id, "password rehashed with current parameters");
        }
        let session_id = secrets::new_id("ses");
        let refresh_token = secrets::new_refresh_token();
        let expires_at_ms = now_ms + self.config.session_ttl.as_millis() as i64;
        self.store
            .create_session(&session_id, &account.user_id, &secrets::secret_hash(&refresh_token), now_ms, expires_at_ms)
            .await?;
        self.token_pair(&account, &session_id, refresh_token, now_ms)
    }

    fn token_pair(
        &self,
        account: &Account,
        session_id: &str,
        refresh_token: String,
        now_ms: i64,
    ) -> Result<TokenPair, AuthError> {
        let ttl_seconds = self.config.access_token_ttl.as_secs();
        let issued_at = (now_ms / 1000) as u64;
        let claims = AccessClaims {
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            sub: account.user_id.clone(),
            exp: issued_at + ttl_seconds,
            iat: issued_at,
            jti: secrets::new_id("jti"),
            roles: account.roles.clone(),
            sid: session_id.to_string(),
            ver: account.auth_version,
            mid: account.merchant_id.clone(),
        };
        let access_token = self.keys.read().expect("keys lock").sign(&claims)?;
        Ok(TokenPair { access_token, refresh_token, token_type: "Bearer", expires_in: ttl_seconds })
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, AuthError> {
        let now_ms = self.now_ms();
        let hash = secrets::secret_hash(refresh_token);
        let record = self.store.refresh_record(&hash).await?.ok_or(AuthError::InvalidRefreshToken)?;
        match model::judge_refresh(record.state, now_ms) {
            RefreshVerdict::Refuse => return Err(AuthError::InvalidRefreshToken),
            RefreshVerdict::RevokeFamily => {
                self.store.revoke_session(&record.session_id, "refresh_token_reused", now_ms).await?;
                tracing::warn!(session_id = %record.session_id, "refresh token reused: session revoked");
                return Err(AuthError::InvalidRefreshToken);
            }
            RefreshVerdict::Rotate => {}
        }
        let account = self.store.account_by_id(&record.user_id).await?.ok_or(AuthError::InvalidRefreshToken)?;
        let next = secrets::new_refresh_token();
        if !self.store.rotate_refresh_token(&hash, &secrets::secret_hash(&next), &record.session_id, now_ms).await? {
            // Spent by a concurrent request: that is reuse too.
            self.store.revoke_session(&record.session_id, "refresh_token_reused", now_ms).await?;
            return Err(AuthError::InvalidRefreshToken);
        }
        self.token_pair(&account, &record.session_id, next, now_ms)
    }

    pub async fn logout(&self, principal: &Principal) -> Result<(), AuthError> {
        let Some(session_id) = &principal.session_id else {
            return Err(AuthError::invalid("not_a_session", "an API key has no session; revoke the key instead"));
        };
        self.store.revoke_session(session_id, "logout", self.now_ms()).await
    }

    pub async fn me(&self, principal: &Principal) -> Result<AccountView, AuthError> {
        let account = self.store.account_by_id(&principal.subject).await?.ok_or(AuthError::NotFound)?;
        Ok(AccountView::from(&account))
    }

    pub async fn set_roles(
        &self,
        user_id: &str,
        roles: &[Role],
        merchant_id: Option<&str>,
    ) -> Result<AccountView, AuthError> {
        if roles.is_empty() {
            return Err(AuthError::invalid("invalid_roles", "roles: at least one"));
        }
        if roles.contains(&Role::Merchant) != merchant_id.is_some() {
            return Err(AuthError::invalid(
                "invalid_roles",
                "merchant_id is required with role merchant, and only then",
            ));
        }
        if !self.store.set_roles(user_id, roles, merchant_id).await? {
            return Err(AuthError::NotFound);
        }
        let account = self.store.account_by_id(user_id).await?.ok_or(AuthError::NotFound)?;
        tracing::info!(%user_id, roles = ?roles, "roles changed; earlier tokens refused");
        Ok(AccountView::from(&account))
    }

    /// Creates an API key for the caller; the key itself is returned once, here.
    pub async fn create_api_key(&self, principal: &Principal, name: &str) -> Result<(ApiKeyView, String), AuthError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > API_KEY_NAME_CHARS_MAX || name.chars().any(char::is_control) {
            return Err(AuthError::invalid("invalid_name", format!("name: 1 to {API_KEY_NAME_CHARS_MAX} characters")));
        }
        let (key, prefix) = secrets::new_api_key();
        let record = ApiKeyRecord {
            key_id: secrets::new_id("key"),
            prefix,
            key_hash: secrets::secret_hash(&key),
            user_id: principal.subject.clone(),
            name: name.to_string(),
            created_at_ms: self.now_ms(),
            revoked_at_ms: None,
        };
        self.store.create_api_key(&record).await?;
        Ok((ApiKeyView::from(&record), key))
    }

    pub async fn api_keys(&self, principal: &Principal) -> Result<Vec<ApiKeyView>, AuthError> {
        Ok(self.store.api_keys_of(&principal.subject).await?.iter().map(ApiKeyView::from).collect())
    }

    pub async fn revoke_api_key(&self, principal: &Principal, key_id: &str) -> Result<(), AuthError> {
        if self.store.revoke_api_key(&principal.subject, key_id, self.now_ms()).await? {
            Ok(())
        } else {
            Err(AuthError::NotFound)
        }
    }
}
