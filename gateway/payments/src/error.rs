//! The payments crate's errors, and how each reaches a client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use paystream_http::Problem;

#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    /// The request is not acceptable (400, code and detail).
    #[error("{code}: {detail}")]
    Invalid { code: &'static str, detail: String },
    /// The request does not fit the state of what it names (409).
    #[error("{code}: {detail}")]
    Conflict { code: &'static str, detail: String },
    /// The same idempotency key with a different request (422).
    #[error("idempotency key reused with a different request")]
    KeyReused,
    /// The first request with this key is still being answered (409).
    #[error("a request with this idempotency key is in flight")]
    InFlight,
    #[error("not found")]
    NotFound,
    /// A body over the limit (413).
    #[error("body too large")]
    TooLarge,
    /// A body that is not JSON (415).
    #[error("body not JSON")]
    NotJson,
    /// The pipeline's log could not take the payment (503: retry with the same key).
    #[error("intake: {0}")]
    Intake(String),
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("store: {0}")]
    Database(#[from] paystream_http::database::DatabaseError),
    #[error("internal: {0}")]
    Internal(String),
}

impl PaymentsError {
    pub fn invalid(code: &'static str, detail: impl Into<String>) -> PaymentsError {
        PaymentsError::Invalid { code, detail: detail.into() }
    }
}

impl IntoResponse for PaymentsError {
    fn into_response(self) -> Response {
        let problem = match self {
            PaymentsError::Invalid { code, detail } => Problem::bad_request(code, detail),
            PaymentsError::Conflict { code, detail } => Problem::conflict(code, detail),
            PaymentsError::KeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "This idempotency key was used with a different request",
            ),
            PaymentsError::InFlight => Problem::conflict(
                "idempotency_key_in_flight",
                "the first request with this key is still being processed; retry later",
            )
            .with_header(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1")),
            PaymentsError::NotFound => Problem::not_found(),
            PaymentsError::NotJson => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "The request body must be JSON",
            )
            .with_detail("Content-Type must be application/json"),
            PaymentsError::TooLarge => {
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "The request body is too large")
            }
            PaymentsError::Intake(error) => {
                tracing::error!(%error, "the pipeline's log did not take a payment");
                Problem::unavailable()
            }
            PaymentsError::Store(error) => paystream_http::database::problem_for(&error, "payments"),
            error @ (PaymentsError::Database(_) | PaymentsError::Internal(_)) => {
                tracing::error!(%error, "payments service failed");
                Problem::internal()
            }
        };
        problem.into_response()
    }
}
