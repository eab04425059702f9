//! The in-process [`Authenticator`]: access tokens are verified with the service's keys
//! and their session is checked in the store on every request, so logout and role
//! changes take effect at once; API keys (`psk_…`) are looked up by prefix and compared
//! by hash.

use std::sync::Arc;

use paystream_http::principal::AuthFuture;
use paystream_http::{AuthFailure, Authenticator, Principal};

use crate::error::AuthError;
use crate::secrets;
use crate::service::AuthService;

#[derive(Clone)]
pub struct TokenAuthenticator {
    service: Arc<AuthService>,
}

impl TokenAuthenticator {
    pub fn new(service: Arc<AuthService>) -> TokenAuthenticator {
        TokenAuthenticator { service }
    }

    async fn access_token(&self, token: &str) -> Result<Principal, AuthFailure> {
        let now_ms = self.service.now_ms();
        let claims = self.service.keys.read().expect("keys lock").verify(token, &self.service.config, now_ms)?;
        let session = self.service.store.session_check(&claims.sid, &claims.sub).await.map_err(unavailable)?;
        let session = session.ok_or(AuthFailure::Revoked)?;
        if session.revoked || now_ms >= session.expires_at_ms || session.auth_version != claims.ver {
            return Err(AuthFailure::Revoked);
        }
        Ok(Principal {
            subject: claims.sub,
            roles: claims.roles,
            session_id: Some(claims.sid),
            merchant_id: claims.mid,
        })
    }

    async fn api_key(&self, key: &str) -> Result<Principal, AuthFailure> {
        let prefix = secrets::api_key_prefix(key).ok_or(AuthFailure::Malformed)?;
        let record = self.service.store.api_key_by_prefix(prefix).await.map_err(unavailable)?;
        let record = record.ok_or(AuthFailure::UnknownKey)?;
        if !secrets::hashes_equal(&record.key_hash, &secrets::secret_hash(key)) {
            return Err(AuthFailure::BadSignature);
        }
        if record.revoked_at_ms.is_some() {
            return Err(AuthFailure::Revoked);
        }
        let account = self.service.store.account_by_id(&record.user_id).await.map_err(unavailable)?;
        let account = account.ok_or(AuthFailure::Revoked)?;
        Ok(Principal {
            subject: account.user_id,
            roles: account.roles,
            session_id: None,
            merchant_id: account.merchant_id,
        })
    }
}

fn unavailable(error: AuthError) -> AuthFailure {
    tracing::error!(%error, "credential check could not reach the store");
    AuthFailure::Unavailable
}

impl Authenticator for TokenAuthenticator {
    fn authenticate<'a>(&'a self, bearer: &'a str) -> AuthFuture<'a> {
        Box::pin(async move {
            if bearer.starts_with("psk_") { self.api_key(bearer).await } else { self.access_token(bearer).await }
        })
    }
}
