//! Services in other processes: the gateway forwards every request under a route's path
//! prefix (`--route /v1/auth=http://auth:8080`) to that service, bodies streamed both
//! ways. The gateway's own stack (request ids, header rewriting, metrics, rate limits,
//! the request timeout) runs first; the service authenticates and authorizes the request
//! itself. The service learns the client's address from `X-Forwarded-For`, which the
//! gateway sets to the one address it decided on (so the service must trust the
//! gateway's address: its `--trusted-proxy`).
//!
//! An upstream that cannot be reached is a 502; one that does not answer within the
//! gateway's request timeout is a 504 (the timeout layer).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::uri::{Authority, PathAndQuery, Scheme};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use paystream_http::{ClientIp, Problem};

/// How long the gateway tries to open a connection to a service before it answers 502.
pub const UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Idle connections kept per service.
pub const UPSTREAM_IDLE_CONNECTIONS_MAX: usize = 64;

/// `PREFIX=URL`: requests whose path is `PREFIX` or under `PREFIX/` go to the service at
/// `URL` (`http://host:port`), with their path and query unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub prefix: String,
    pub authority: Authority,
}

impl FromStr for Route {
    type Err = String;

    fn from_str(text: &str) -> Result<Route, String> {
        let (prefix, url) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: a route is PREFIX=URL, e.g. /v1/auth=http://auth:8080"))?;
        let prefix = prefix.trim_end_matches('/');
        let segments_ok = prefix.split('/').skip(1).all(|segment| {
            !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        });
        if !prefix.starts_with('/') || !segments_ok {
            return Err(format!("{text:?}: the prefix must be a path such as /v1/auth (letters, digits, -._~)"));
        }
        let uri: Uri = url.parse().map_err(|error| format!("{text:?}: {error}"))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(format!("{text:?}: the service URL must be http://host:port"));
        }
        if uri.path_and_query().is_some_and(|path| path.as_str() != "/") {
            return Err(format!("{text:?}: the service URL takes no path; the request's path is kept"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| format!("{text:?}: the service URL has no host"))?;
        Ok(Route { prefix: prefix.to_string(), authority })
    }
}

type UpstreamClient = Client<HttpConnector, Body>;

struct Upstream {
    authority: Authority,
    client: UpstreamClient,
}

/// The routes as a router, to put behind [`crate::gateway_router`]. `Err` if two routes
/// have one prefix.
pub fn proxy_router(routes: &[Route]) -> Result<Router, String> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_millis(UPSTREAM_CONNECT_TIMEOUT_MS)));
    connector.set_nodelay(true);
    let client: UpstreamClient =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(UPSTREAM_IDLE_CONNECTIONS_MAX).build(connector);
    let mut router = Router::new();
    let mut prefixes = std::collections::BTreeSet::new();
    for route in routes {
        if !prefixes.insert(route.prefix.as_str()) {
            return Err(format!("two routes for {}", route.prefix));
        }
        let upstream = Arc::new(Upstream { authority: route.authority.clone(), client: client.clone() });
        router = router
            .route(&route.prefix, axum::routing::any(forward).with_state(upstream.clone()))
            .route(&format!("{}/{{*rest}}", route.prefix), axum::routing::any(forward).with_state(upstream));
    }
    Ok(router)
}

async fn forward(State(upstream): State<Arc<Upstream>>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    let uri = Uri::builder().scheme(Scheme::HTTP).authority(upstream.authority.clone()).path_and_query(path).build();
    let Ok(uri) = uri else {
        return Problem::new(StatusCode::BAD_REQUEST, "invalid_path", "The request's path is not valid")
            .into_response();
    };
    parts.uri = uri;
    parts.headers.remove(header::HOST);
    parts.headers.remove("x-forwarded-for");
    if let Some(ClientIp(address)) = parts.extensions.get::<ClientIp>()
        && let Ok(value) = HeaderValue::from_str(&address.to_string())
    {
        parts.headers.insert("x-forwarded-for", value);
    }
    match upstream.client.request(Request::from_parts(parts, body)).await {
        Ok(response) => response.map(Body::new),
        Err(error) => {
            tracing::warn!(upstream = %upstream.authority, %error, "a service could not be reached");
            Problem::new(StatusCode::BAD_GATEWAY, "bad_gateway", "The service is unavailable; try again later")
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_and_say_what_is_wrong() {
        let route: Route = "/v1/auth=http://auth:8080".parse().unwrap();
        assert_eq!((route.prefix.as_str(), route.authority.as_str()), ("/v1/auth", "auth:8080"));
        let route: Route = "/v1/payments/=http://10.0.0.7:8080/".parse().unwrap();
        assert_eq!((route.prefix.as_str(), route.authority.as_str()), ("/v1/payments", "10.0.0.7:8080"));
        for (bad, says) in [
            ("/v1/auth", "PREFIX=URL"),
            ("v1=http://a:1", "prefix"),
            ("/v1//x=http://a:1", "prefix"),
            ("/v1/{id}=http://a:1", "prefix"),
            ("/v1=https://a:1", "http://"),
            ("/v1=http://a:1/base", "no path"),
            ("/v1=not a url", "/v1=not a url"),
        ] {
            let error = bad.parse::<Route>().unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
        let twice: Vec<Route> = ["/v1/a=http://a:1", "/v1/a/=http://b:1"].iter().map(|r| r.parse().unwrap()).collect();
        assert!(proxy_router(&twice).unwrap_err().contains("two routes"));
    }
}
