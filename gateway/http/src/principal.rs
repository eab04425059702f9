//! Who is calling: a [`Principal`] (subject and roles), made from the request's bearer
//! credential by the process's [`Authenticator`]. Services extract `Principal` in
//! handlers; the authenticator reaches them as a request extension, put there by
//! [`layer`], so a service's state type does not need to know about it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::limits::BEARER_BYTES_MAX;
use crate::problem::Problem;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Merchant,
    SupportAgent,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Customer, Role::Merchant, Role::SupportAgent, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Merchant => "merchant",
            Role::SupportAgent => "support_agent",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user id (or, for an API key, the id of the user who owns it).
    pub subject: String,
    pub roles: Vec<Role>,
    /// The login session (absent for API keys).
    pub session_id: Option<String>,
    /// For role `merchant`: the merchant id the account is bound to.
    pub merchant_id: Option<String>,
}

impl Principal {
    pub fn has_any(&self, roles: &[Role]) -> bool {
        self.roles.iter().any(|role| roles.contains(role))
    }
}

/// Why a credential was refused. Logged and counted by reason; the client only ever
/// sees 401 (or 503 when the store is unavailable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no credential")]
    Missing,
    #[error("malformed credential")]
    Malformed,
    #[error("bad signature or algorithm")]
    BadSignature,
    #[error("unknown key id")]
    UnknownKey,
    #[error("expired")]
    Expired,
    #[error("wrong issuer or audience")]
    WrongAudience,
    #[error("session revoked or superseded")]
    Revoked,
    #[error("the credential store is unavailable")]
    Unavailable,
}

impl AuthFailure {
    /// A label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::Expired => "expired",
            AuthFailure::WrongAudience => "wrong_audience",
            AuthFailure::Revoked => "revoked",
            AuthFailure::Unavailable => "unavailable",
        }
    }
}

impl IntoResponse for AuthFailure {
    fn into_response(self) -> Response {
        tracing::info!(reason = self.reason(), "credential refused");
        let mut response = match self {
            AuthFailure::Unavailable => Problem::unavailable().into_response(),
            _ => Problem::unauthorized().into_response(),
        };
        // For the gateway's metrics (refusals by reason); never sent.
        response.extensions_mut().insert(self);
        response
    }
}

pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Principal, AuthFailure>> + Send + 'a>>;

/// Turns a bearer credential (an access token or an API key) into a principal.
/// Implementations MUST check signature, expiry, audience and revocation, and MUST NOT
/// accept a credential whose checks could not be made (store down: `Unavailable`).
pub trait Authenticator: Send + Sync {
    fn authenticate<'a>(&'a self, bearer: &'a str) -> AuthFuture<'a>;
}

pub type SharedAuthenticator = Arc<dyn Authenticator>;

/// Middleware putting `authenticator` on every request, for the [`Principal`] extractor.
pub async fn layer(authenticator: SharedAuthenticator, mut request: Request, next: Next) -> Response {
    request.extensions_mut().insert(authenticator);
    next.run(request).await
}

/// The bearer credential of `Authorization: Bearer …`.
pub fn bearer(parts: &Parts) -> Result<&str, AuthFailure> {
    let value = parts.headers.get(header::AUTHORIZATION).ok_or(AuthFailure::Missing)?;
    if value.len() > BEARER_BYTES_MAX {
        return Err(AuthFailure::Malformed);
    }
    let value = value.to_str().map_err(|_| AuthFailure::Malformed)?;
    let (scheme, credential) = value.split_once(' ').ok_or(AuthFailure::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || credential.trim().is_empty() {
        return Err(AuthFailure::Malformed);
    }
    Ok(credential.trim())
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Principal, Response> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let authenticator = parts.extensions.get::<SharedAuthenticator>().cloned().ok_or_else(|| {
            tracing::error!("a route needs a principal but no authenticator is installed");
            Problem::internal().into_response()
        })?;
        let credential = bearer(parts).map_err(IntoResponse::into_response)?;
        let principal = authenticator.authenticate(credential).await.map_err(IntoResponse::into_response)?;
        parts.extensions.insert(principal.clone());
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn reads_only_bearer_credentials() {
        let parts = |value: &str| {
            let request = axum::http::Request::builder().header(header::AUTHORIZATION, value).body(()).unwrap();
            request.into_parts().0
        };
        assert_eq!(bearer(&parts("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(&parts("bearer  abc ")), Ok("abc"));
        assert_eq!(bearer(&parts("Basic abc")), Err(AuthFailure::Malformed));
        assert_eq!(bearer(&parts("Bearer ")), Err(AuthFailure::Malformed));
        let none = axum::http::Request::builder().body(()).unwrap().into_parts().0;
        assert_eq!(bearer(&none), Err(AuthFailure::Missing));
    }
}

/// The client's address as the gateway determined it (the peer, or the last address
/// before a trusted proxy in `X-Forwarded-For`). Set as a request extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub std::net::IpAddr);
