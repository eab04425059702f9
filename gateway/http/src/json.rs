//! `ApiJson<T>`: a JSON request body whose refusals are problems: 415 when the content
//! type is not JSON, 413 over [`REQUEST_BODY_BYTES_MAX`], 400 with the failing field's
//! path when the body does not parse. Unknown fields are refused where the type says
//! `#[serde(deny_unknown_fields)]`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::limits::REQUEST_BODY_BYTES_MAX;
use crate::problem::Problem;

pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Response;

    async fn from_request(request: Request, _state: &S) -> Result<ApiJson<T>, Response> {
        if !is_json(request.headers()) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "The request body must be JSON",
            )
            .with_detail("Content-Type must be application/json")
            .into_response());
        }
        let bytes = axum::body::to_bytes(request.into_body(), REQUEST_BODY_BYTES_MAX)
            .await
            .map_err(|_| too_large().into_response())?;
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(refusal(rejection).into_response()),
        }
    }
}

/// `application/json`, or any `application/*+json`, with optional parameters.
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn too_large() -> Problem {
    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "The request body is too large")
        .with_detail(format!("at most {REQUEST_BODY_BYTES_MAX} bytes"))
}

fn refusal(rejection: JsonRejection) -> Problem {
    match rejection {
        JsonRejection::JsonDataError(error) => {
            Problem::new(StatusCode::BAD_REQUEST, "invalid_body", "The request body does not match the schema")
                .with_detail(error.body_text())
        }
        JsonRejection::JsonSyntaxError(error) => {
            Problem::new(StatusCode::BAD_REQUEST, "malformed_json", "The request body is not JSON")
                .with_detail(error.body_text())
        }
        rejection => Problem::new(StatusCode::BAD_REQUEST, "unreadable_body", "The request body could not be read")
            .with_detail(rejection.body_text()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            headers
        };
        assert!(is_json(&headers("application/json")));
        assert!(is_json(&headers("Application/JSON; charset=utf-8")));
        assert!(is_json(&headers("application/merge-patch+json")));
        assert!(!is_json(&headers("text/plain")));
        assert!(!is_json(&headers("application/jsonx")));
        assert!(!is_json(&HeaderMap::new()));
    }
}
