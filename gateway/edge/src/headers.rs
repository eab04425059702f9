//! Header rewriting at the edge. Hop-by-hop headers (RFC 9110 section 7.6.1, and any
//! named in `Connection`) are removed both ways; `x-paystream-*` headers are internal
//! (services and the gateway use them among themselves) and are removed from what
//! clients send and from what they receive, as is `Server`.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, header};
use axum::middleware::Next;
use axum::response::Response;

pub const INTERNAL_HEADER_PREFIX: &str = "x-paystream-";

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

pub fn strip(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
    let internal: Vec<HeaderName> =
        headers.keys().filter(|name| name.as_str().starts_with(INTERNAL_HEADER_PREFIX)).cloned().collect();
    for name in internal {
        headers.remove(name);
    }
}

/// Middleware: strips the request's headers before the services see them and the
/// response's before the client does.
pub async fn rewrite(mut request: Request, next: Next) -> Response {
    strip(request.headers_mut());
    let mut response = next.run(request).await;
    strip(response.headers_mut());
    response.headers_mut().remove(header::SERVER);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_named_and_internal_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "close, x-custom-hop".parse().unwrap());
        headers.insert("x-custom-hop", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("x-paystream-principal", "admin".parse().unwrap());
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        headers.insert("x-request-id", "abc".parse().unwrap());
        strip(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort();
        assert_eq!(left, ["content-type", "x-request-id"]);
    }
}
