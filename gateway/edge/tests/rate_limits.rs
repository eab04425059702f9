//! The gateway's rate limits on a real Redis: two gateways share one limit, a rotating
//! `X-Forwarded-For` from an untrusted peer does not reset it, and while Redis is down
//! money-moving routes fail closed and the others are limited in process.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use axum::routing::{get, post};
use paystream_edge::rate_limit::RateLimitConfig;
use paystream_edge::{GatewayConfig, HttpMetrics, gateway_router};
use paystream_http::principal::AuthFuture;
use paystream_http::{AuthFailure, Authenticator};
use tower::ServiceExt;

struct Nobody;

impl Authenticator for Nobody {
    fn authenticate<'a>(&'a self, _: &'a str) -> AuthFuture<'a> {
        Box::pin(async { Err(AuthFailure::BadSignature) })
    }
}

fn redis_url() -> String {
    std::env::var("PAYSTREAM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn gateway(redis_url: &str, prefix: &str, metrics: Arc<HttpMetrics>) -> Router {
    let services = Router::new()
        .route("/v1/auth/login", post(|| async { "logged in" }))
        .route("/v1/payments", post(|| async { "paid" }))
        .route("/v1/things", get(|| async { "things" }));
    let config = GatewayConfig {
        rate_limits: RateLimitConfig { default_per_minute: 3, auth_per_minute: 5 },
        redis_url: Some(redis_url.to_string()),
        rate_limit_prefix: prefix.to_string(),
        ..GatewayConfig::default()
    };
    gateway_router(services, Arc::new(Nobody), config, metrics).unwrap()
}

fn request(method: &str, path: &str, peer: &str, forwarded_for: Option<&str>) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(forwarded_for) = forwarded_for {
        request = request.header("x-forwarded-for", forwarded_for);
    }
    let mut request = request.body(Body::empty()).unwrap();
    request.extensions_mut().insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    request
}

#[tokio::test]
async fn two_gateways_on_one_redis_share_one_limit() {
    let prefix = format!("test:ratelimit:{}", paystream_testkit::unique_suffix());
    let metrics = Arc::new(HttpMetrics::default());
    let gateways = [gateway(&redis_url(), &prefix, metrics.clone()), gateway(&redis_url(), &prefix, metrics.clone())];
    let mut statuses = Vec::new();
    for i in 0..10 {
        // An untrusted peer rotating X-Forwarded-For: still one client.
        let forwarded = format!("198.51.100.{i}");
        let response = gateways[i % 2]
            .clone()
            .oneshot(request("POST", "/v1/auth/login", "203.0.113.7:4000", Some(&forwarded)))
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry_after: u64 = response.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry_after), "{retry_after}");
            assert_eq!(response.headers()["ratelimit-policy"], "\"auth\";q=5;w=60");
            assert!(response.headers()["ratelimit"].to_str().unwrap().starts_with("\"auth\";r=0;t="));
        } else {
            let remaining = response.headers()["ratelimit"].to_str().unwrap().to_string();
            assert!(remaining.starts_with(&format!("\"auth\";r={};", 4 - i)), "{i}: {remaining}");
        }
        statuses.push(response.status());
    }
    assert_eq!(statuses.iter().filter(|status| **status == StatusCode::OK).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|status| **status == StatusCode::TOO_MANY_REQUESTS).count(), 5);
    // Another client address has its own limit; other routes their own policy.
    let other = gateways[0].clone().oneshot(request("POST", "/v1/auth/login", "203.0.113.8:4000", None)).await.unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    let things = gateways[1].clone().oneshot(request("GET", "/v1/things", "203.0.113.7:4000", None)).await.unwrap();
    assert_eq!(things.status(), StatusCode::OK);
    assert!(metrics.render().contains("paystream_http_rate_limited_total{policy=\"auth\"} 5"));
}

#[tokio::test]
async fn with_redis_down_money_fails_closed_and_reads_are_limited_in_process() {
    let metrics = Arc::new(HttpMetrics::default());
    // Nothing listens on port 1.
    let gateway = gateway("redis://127.0.0.1:1", "test:down", metrics.clone());
    let paid = gateway.clone().oneshot(request("POST", "/v1/payments", "203.0.113.9:4000", None)).await.unwrap();
    assert_eq!(paid.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(paid.headers()[header::RETRY_AFTER], "1");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let answer = gateway.clone().oneshot(request("GET", "/v1/things", "203.0.113.9:4000", None)).await.unwrap();
        statuses.push(answer.status());
    }
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS],
        "3 per minute, in process"
    );
    let text = metrics.render();
    assert!(text.contains("paystream_http_rate_limiter_unavailable_total{outcome=\"fail_closed\"} 1"), "{text}");
    assert!(text.contains("paystream_http_rate_limiter_unavailable_total{outcome=\"local_fallback\"} 4"), "{text}");
}
