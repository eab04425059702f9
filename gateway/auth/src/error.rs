//! The auth crate's errors, and how each reaches a client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use paystream_http::Problem;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The client's input is not acceptable (field and reason).
    #[error("{code}: {detail}")]
    Invalid { code: &'static str, detail: String },
    /// Unknown account or wrong password: one answer for both.
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("email already registered")]
    EmailTaken,
    /// The request is well formed but does not fit the account's current state (409).
    #[error("{code}: {detail}")]
    Conflict { code: &'static str, detail: String },
    #[error("refresh token invalid, expired or reused")]
    InvalidRefreshToken,
    #[error("too many failed attempts; retry in {retry_after_seconds} s")]
    Throttled { retry_after_seconds: u64 },
    #[error("not found")]
    NotFound,
    /// The store failed (external: retry).
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("store: {0}")]
    Database(#[from] paystream_http::database::DatabaseError),
    /// Keys could not be read, written or used.
    #[error("keys: {0}")]
    Keys(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl AuthError {
    pub fn invalid(code: &'static str, detail: impl Into<String>) -> AuthError {
        AuthError::Invalid { code, detail: detail.into() }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let problem = match self {
            AuthError::Invalid { code, detail } => Problem::bad_request(code, detail),
            AuthError::InvalidCredentials => {
                Problem::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "Invalid email or password")
            }
            AuthError::EmailTaken => Problem::conflict("email_taken", "an account with this email exists"),
            AuthError::Conflict { code, detail } => Problem::conflict(code, detail),
            AuthError::InvalidRefreshToken => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid_refresh_token",
                "The refresh token is invalid, expired or was already used",
            ),
            AuthError::Throttled { retry_after_seconds } => Problem::too_many_requests(retry_after_seconds),
            AuthError::NotFound => Problem::not_found(),
            AuthError::Store(error) => paystream_http::database::problem_for(&error, "auth"),
            error @ (AuthError::Database(_) | AuthError::Keys(_) | AuthError::Internal(_)) => {
                tracing::error!(%error, "auth service failed");
                Problem::internal()
            }
        };
        problem.into_response()
    }
}
