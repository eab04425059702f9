//! The gateway's stack around the services' routers, outermost first:
//! request id → client address → header rewriting → metrics → rate limits → request
//! timeout → response masking → the services. Unknown paths are 404 and known paths with another method 405
//! with `Allow`, both as problem+json.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use paystream_http::{AuthFailure, ClientIp, Problem, SharedAuthenticator, request_id};

use crate::client_ip::{IpBlock, client_address};
use crate::headers;
use crate::mask::{MaskRule, default_mask_rules, mask};
use crate::metrics::HttpMetrics;
use crate::rate_limit::{RateLimitConfig, RateLimiter, RedisGcra, rate_limit};

/// The longest any request may take before the gateway answers 504.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpBlock>,
    pub request_timeout: Duration,
    pub rate_limits: RateLimitConfig,
    /// Where rate limits are shared (`redis://…`); in process without it.
    pub redis_url: Option<String>,
    /// Prefix of the rate-limit keys in Redis (one per deployment sharing a server).
    pub rate_limit_prefix: String,
    /// Fields masked in JSON responses.
    pub mask_rules: Vec<MaskRule>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            trusted_proxies: Vec::new(),
            request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS_DEFAULT),
            rate_limits: RateLimitConfig::default(),
            redis_url: None,
            rate_limit_prefix: RATE_LIMIT_KEY_PREFIX.to_string(),
            mask_rules: default_mask_rules(),
        }
    }
}

/// Key prefix of the gateway's rate limits in Redis.
pub const RATE_LIMIT_KEY_PREFIX: &str = "paystream:ratelimit";

/// The OpenAPI 3.1 document of every route behind the gateway, served at
/// `/openapi.json` (`cli/tests/openapi.rs` keeps it equal to the services' route tables).
pub const OPENAPI_DOCUMENT: &str = include_str!("../api/openapi.json");

/// `services`: the merged routers of the services behind this gateway; `authenticator`
/// makes their callers' principals.
pub fn gateway_router(
    services: Router,
    authenticator: SharedAuthenticator,
    config: GatewayConfig,
    metrics: Arc<HttpMetrics>,
) -> Result<Router, String> {
    let redis = match &config.redis_url {
        Some(url) => {
            Some(RedisGcra::new(url, &config.rate_limit_prefix).map_err(|error| format!("Redis URL: {error}"))?)
        }
        None => None,
    };
    let limiter = Arc::new(RateLimiter::new(config.rate_limits, redis, metrics.clone()));
    let mask_rules = Arc::new(config.mask_rules.clone());
    let config = Arc::new(config);
    Ok(services
        .route(
            "/openapi.json",
            axum::routing::get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI_DOCUMENT) }),
        )
        .fallback(|| async { Problem::not_found().into_response() })
        .layer(middleware::from_fn(move |request, next| {
            paystream_http::principal::layer(authenticator.clone(), request, next)
        }))
        .layer(middleware::from_fn_with_state(mask_rules, mask))
        .layer(middleware::from_fn(method_not_allowed))
        .layer(middleware::from_fn_with_state(config.clone(), timeout))
        .layer(middleware::from_fn_with_state(limiter, rate_limit))
        .layer(middleware::from_fn_with_state(metrics, measure))
        .layer(middleware::from_fn(headers::rewrite))
        .layer(middleware::from_fn_with_state(config, client))
        .layer(middleware::from_fn(request_id::middleware)))
}

/// Binds `addr` and serves `router` until `shutdown`; returns the bound address.
pub async fn serve_gateway(
    addr: SocketAddr,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let handle = tokio::spawn(async move { axum::serve(listener, service).with_graceful_shutdown(shutdown).await });
    tracing::info!(%bound, "gateway listening");
    Ok((bound, handle))
}

async fn client(State(config): State<Arc<GatewayConfig>>, mut request: Request, next: Next) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        let forwarded: Vec<&str> =
            request.headers().get_all("x-forwarded-for").iter().filter_map(|value| value.to_str().ok()).collect();
        let forwarded = (!forwarded.is_empty()).then(|| forwarded.join(","));
        let address = client_address(peer.ip(), forwarded.as_deref(), &config.trusted_proxies);
        request.extensions_mut().insert(ClientIp(address));
    }
    next.run(request).await
}

async fn measure(State(metrics): State<Arc<HttpMetrics>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |path| path.as_str()).to_string();
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.request_duration.with_label_values(&[&route, &method]).observe(started.elapsed().as_secs_f64());
    metrics.requests.with_label_values(&[&route, &method, response.status().as_str()]).inc();
    if let Some(failure) = response.extensions().get::<AuthFailure>() {
        metrics.auth_failures.with_label_values(&[failure.reason()]).inc();
    }
    response
}

async fn timeout(State(config): State<Arc<GatewayConfig>>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(config.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout_ms = config.request_timeout.as_millis() as u64, "request timed out");
            Problem::new(StatusCode::GATEWAY_TIMEOUT, "timeout", "The service did not answer in time").into_response()
        }
    }
}

/// axum answers a known path with another method by an empty 405; make it a problem.
/// (axum adds `Allow` to a 405 outside the route's layers, so it is still set.)
async fn method_not_allowed(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED || response.headers().contains_key(header::CONTENT_TYPE) {
        return response;
    }
    let mut problem =
        Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "This method is not allowed here");
    if let Some(allow) = response.headers().get(header::ALLOW) {
        problem = problem.with_header(header::ALLOW, allow.clone());
    }
    problem.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::HeaderValue;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn send(router: &Router, request: axum::http::Request<Body>) -> (Response, serde_json::Value) {
        let response = router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (Response::from_parts(parts, Body::empty()), json)
    }

    fn services() -> Router {
        Router::new()
            .route(
                "/v1/echo/{id}",
                get(|request: Request| async move {
                    let leaked = request.headers().keys().any(|name| name.as_str().starts_with("x-paystream-"));
                    let mut response = format!("leaked={leaked}").into_response();
                    response.headers_mut().insert("x-paystream-shard", HeaderValue::from_static("7"));
                    response
                }),
            )
            .route(
                "/v1/card",
                get(|| async { axum::Json(serde_json::json!({"card_number": "4242424242424242", "amount": "1.00"})) }),
            )
            .route(
                "/v1/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
    }

    #[tokio::test]
    async fn not_found_method_not_allowed_request_ids_headers_timeouts_and_metrics() {
        let metrics = Arc::new(HttpMetrics::default());
        let config = GatewayConfig { request_timeout: Duration::from_millis(200), ..GatewayConfig::default() };
        struct Nobody;
        impl paystream_http::Authenticator for Nobody {
            fn authenticate<'a>(&'a self, _: &'a str) -> paystream_http::principal::AuthFuture<'a> {
                Box::pin(async { Err(AuthFailure::BadSignature) })
            }
        }
        let router = gateway_router(services(), Arc::new(Nobody), config, metrics.clone()).unwrap();
        let request = |method: &str, path: &str| axum::http::Request::builder().method(method).uri(path);

        let (response, body) = send(&router, request("GET", "/nowhere").body(Body::empty()).unwrap()).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
        let id = response.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(body["request_id"], id.as_str(), "{body}");

        let (response, body) = send(&router, request("POST", "/v1/echo/1").body(Body::empty()).unwrap()).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(response.headers()[header::ALLOW].to_str().unwrap().contains("GET"), "{:?}", response.headers());
        assert_eq!(body["code"], "method_not_allowed");

        let echo = request("GET", "/v1/echo/1")
            .header("x-request-id", "client-id-1")
            .header("x-paystream-principal", "admin")
            .header(header::CONNECTION, "keep-alive")
            .body(Body::empty())
            .unwrap();
        let response = router.clone().oneshot(echo).await.unwrap();
        assert_eq!(response.headers()["x-request-id"], "client-id-1");
        assert!(!response.headers().contains_key("x-paystream-shard"), "internal headers do not leave");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        assert_eq!(&body[..], b"leaked=false", "internal headers do not enter");

        let (response, body) = send(&router, request("GET", "/v1/card").body(Body::empty()).unwrap()).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body, serde_json::json!({"card_number": "************4242", "amount": "1.00"}), "masked");

        let bad_id = request("GET", "/v1/echo/1").header("x-request-id", "bad id!").body(Body::empty()).unwrap();
        let response = router.clone().oneshot(bad_id).await.unwrap();
        assert_ne!(response.headers()["x-request-id"], "bad id!");

        let (response, body) = send(&router, request("GET", "/v1/slow").body(Body::empty()).unwrap()).await;
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body["code"], "timeout");

        let text = metrics.render();
        assert!(
            text.contains(r#"paystream_http_requests_total{method="GET",route="/v1/echo/{id}",status="200"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"route="unmatched",status="404"} 1"#), "{text}");
        assert!(
            text.contains(r#"paystream_http_request_duration_seconds_bucket{method="GET",route="/v1/slow""#),
            "{text}"
        );
    }
}
