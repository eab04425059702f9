//! `X-Request-Id`: every request has one. A client's value is kept when it is valid (at
//! most [`REQUEST_ID_BYTES_MAX`] bytes of `[A-Za-z0-9._-]`), otherwise one is generated.
//! The id is set on the request (so it is forwarded to services), returned on the
//! response, recorded in the request's tracing span, and readable by the code serving
//! the request through [`current`] (problem bodies carry it).

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::limits::REQUEST_ID_BYTES_MAX;

pub static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static REQUEST_ID: RequestId;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// A new random id: 16 bytes as 32 lowercase hex digits.
    pub fn generate() -> RequestId {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system's random source works");
        RequestId(crate::hex::encode(&bytes))
    }

    /// The client's id if it is acceptable.
    pub fn parse(value: &str) -> Option<RequestId> {
        let valid = !value.is_empty()
            && value.len() <= REQUEST_ID_BYTES_MAX
            && value.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
        valid.then(|| RequestId(value.to_string()))
    }
}

/// The id of the request being served by this task, if any.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(|id| id.0.clone()).ok()
}

/// Middleware (`axum::middleware::from_fn(request_id::middleware)`): the outermost layer
/// of every service and of the gateway.
pub async fn middleware(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(RequestId::parse)
        .unwrap_or_else(RequestId::generate);
    let value = HeaderValue::from_str(&id.0).expect("request ids are visible ASCII");
    request.headers_mut().insert(REQUEST_ID_HEADER.clone(), value.clone());
    request.extensions_mut().insert(id.clone());
    let span =
        tracing::info_span!("request", request_id = %id.0, method = %request.method(), path = %request.uri().path());
    let mut response = REQUEST_ID.scope(id, next.run(request)).instrument(span).await;
    response.headers_mut().insert(REQUEST_ID_HEADER.clone(), value);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_valid_ids_and_refuses_others() {
        assert_eq!(RequestId::parse("abc-123_X.y"), Some(RequestId("abc-123_X.y".into())));
        assert_eq!(RequestId::parse(""), None);
        assert_eq!(RequestId::parse("a b"), None);
        assert_eq!(RequestId::parse("x\u{e9}"), None);
        assert_eq!(RequestId::parse(&"a".repeat(REQUEST_ID_BYTES_MAX + 1)), None);
        assert!(RequestId::parse(&"a".repeat(REQUEST_ID_BYTES_MAX)).is_some());
        let generated = RequestId::generate();
        assert_eq!(generated.0.len(), 32);
        assert_ne!(generated, RequestId::generate());
    }
}
