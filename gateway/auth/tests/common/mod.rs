//! Shared by the auth service's tests: every test runs on both stores, SQLite in a
//! temporary directory and PostgreSQL (this machine's server;
//! `PAYSTREAM_TEST_POSTGRES_URL` overrides the URL) in a schema of its own.

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use paystream_auth::service::Clock;
use paystream_auth::{AuthConfig, AuthService, AuthStore, Keyring};
use tower::ServiceExt;

pub const START_MS: i64 = 1_800_000_000_000;

/// A service on one store, with a clock the test moves.
pub struct Harness {
    pub store_name: &'static str,
    pub service: Arc<AuthService>,
    pub router: Router,
    pub keys: Keyring,
    pub now_ms: Arc<AtomicI64>,
}

impl Harness {
    pub fn advance_ms(&self, milliseconds: i64) {
        self.now_ms.fetch_add(milliseconds, Ordering::SeqCst);
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, HeaderMap, serde_json::Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(bearer) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {bearer}"));
        }
        let request = match body {
            Some(body) => request.header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let body = if bytes.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        (status, headers, body)
    }

    pub async fn signup(&self, email: &str) -> String {
        let body = serde_json::json!({"email": email, "password": "correct horse battery", "display_name": "Test"});
        let (status, _, body) = self.call(Method::POST, "/v1/auth/signup", None, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{}: {body}", self.store_name);
        body["user_id"].as_str().unwrap().to_string()
    }

    /// Logs in; returns (access token, refresh token).
    pub async fn login(&self, email: &str) -> (String, String) {
        let body = serde_json::json!({"email": email, "password": "correct horse battery"});
        let (status, _, body) = self.call(Method::POST, "/v1/auth/login", None, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{}: {body}", self.store_name);
        (body["access_token"].as_str().unwrap().to_string(), body["refresh_token"].as_str().unwrap().to_string())
    }
}

async fn harness(store_name: &'static str, store: AuthStore) -> Harness {
    let now_ms = Arc::new(AtomicI64::new(START_MS));
    let clock_now = now_ms.clone();
    let clock: Clock = Arc::new(move || clock_now.load(Ordering::SeqCst));
    let keys = Keyring::generate(START_MS).unwrap();
    let service = Arc::new(AuthService::new(store, keys.clone(), AuthConfig::default(), clock).await.unwrap());
    let router = paystream_auth::router(service.clone());
    Harness { store_name, service, router, keys, now_ms }
}

/// Runs `check` on a fresh SQLite store and a fresh PostgreSQL schema.
pub async fn on_every_store<F, Fut>(test: &str, check: F)
where
    F: Fn(Harness) -> Fut,
    Fut: Future<Output = ()>,
{
    let directory = tempfile::tempdir().unwrap();
    let sqlite = AuthStore::open_embedded(directory.path()).await.unwrap();
    check(harness("sqlite", sqlite).await).await;

    let schema = format!("test_auth_{test}_{}", paystream_testkit::unique_suffix());
    let postgres = AuthStore::connect(&paystream_testkit::postgres_url(), &schema).await.unwrap_or_else(|error| {
        panic!("PostgreSQL must be running for these tests ({}): {error}", paystream_testkit::postgres_url())
    });
    check(harness("postgres", postgres.clone()).await).await;
    postgres.drop_schema(&schema).await.unwrap();
}
