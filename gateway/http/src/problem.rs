//! Errors as RFC 9457 problem details (`application/problem+json`).
//!
//! Every error a service returns is a [`Problem`]: an HTTP status, a stable
//! machine-readable `code` clients may branch on, a human `title`, an optional `detail`
//! for 4xx (never for 5xx: internals stay in the log), and the request id.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::request_id;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: StatusCode,
    /// Stable, snake_case; part of the API contract.
    pub code: &'static str,
    pub title: &'static str,
    pub detail: Option<String>,
    /// Extra headers: `Retry-After`, `Allow`, `WWW-Authenticate`.
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, title: &'static str) -> Problem {
        Problem { status, code, title, detail: None, headers: Vec::new() }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Problem {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Problem {
        self.headers.push((name, value));
        self
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, code, "The request is not valid").with_detail(detail)
    }

    /// 401 with `WWW-Authenticate: Bearer`. The reason is deliberately not told.
    pub fn unauthorized() -> Problem {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Authentication is required")
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    pub fn forbidden() -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "This credential may not do that")
    }

    /// 404: also what another user's object looks like, so existence never leaks.
    pub fn not_found() -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not_found", "No such resource")
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::CONFLICT, code, "The request conflicts with the current state").with_detail(detail)
    }

    pub fn too_many_requests(retry_after_seconds: u64) -> Problem {
        Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "Too many requests")
            .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds.max(1)))
    }

    /// 500: the cause is logged by the caller, never returned.
    pub fn internal() -> Problem {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error")
    }

    /// 503: a store or upstream is unavailable; the client may retry.
    pub fn unavailable() -> Problem {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Temporarily unavailable")
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let request_id = request_id::current();
        let detail = if self.status.is_server_error() { None } else { self.detail.as_deref() };
        let body = Body {
            kind: "about:blank",
            title: self.title,
            status: self.status.as_u16(),
            code: self.code,
            detail,
            request_id: request_id.as_deref(),
        };
        let bytes = serde_json::to_vec(&body).expect("a problem body serializes");
        let mut response = (self.status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn server_errors_carry_no_detail() {
        let response = Problem::internal().with_detail("pool timed out at 10.0.0.7").into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_CONTENT_TYPE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "internal");
        assert_eq!(body["status"], 500);
        assert!(body.get("detail").is_none(), "{body}");
    }

    #[tokio::test]
    async fn client_errors_say_why_and_carry_headers() {
        let response = Problem::too_many_requests(0).into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let response = Problem::bad_request("invalid_email", "email: not an address").into_response();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["detail"], "email: not an address");
        assert_eq!(body["code"], "invalid_email");
    }
}
