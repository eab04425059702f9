//! The gateway's rate-limit middleware.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use paystream_http::clock::now_ms;
use paystream_http::{ClientIp, Problem};
use sha2::{Digest, Sha256};

use super::gcra::{Gcra, LocalGcra, Verdict};
use super::redis_store::RedisGcra;
use crate::metrics::HttpMetrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Requests per minute per client address and per credential, on most routes.
    pub default_per_minute: u32,
    /// Requests per minute per client address on sign-up, login and refresh.
    pub auth_per_minute: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { default_per_minute: 600, auth_per_minute: 20 }
    }
}

const MINUTE_MS: i64 = 60_000;

pub struct RateLimiter {
    config: RateLimitConfig,
    redis: Option<RedisGcra>,
    local: LocalGcra,
    metrics: Arc<HttpMetrics>,
}

struct Policy {
    name: &'static str,
    gcra: Gcra,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig, redis: Option<RedisGcra>, metrics: Arc<HttpMetrics>) -> RateLimiter {
        RateLimiter { config, redis, local: LocalGcra::default(), metrics }
    }

    fn policy(&self, path: &str) -> Policy {
        let strict = ["/v1/auth/login", "/v1/auth/refresh", "/v1/auth/signup"].contains(&path);
        if strict {
            Policy { name: "auth", gcra: Gcra::per_window(self.config.auth_per_minute, MINUTE_MS) }
        } else {
            Policy { name: "default", gcra: Gcra::per_window(self.config.default_per_minute, MINUTE_MS) }
        }
    }

    /// `Err(response)` when the request may not pass.
    async fn check(&self, key: &str, policy: &Policy, moves_money: bool) -> Result<Verdict, Response> {
        let Some(redis) = &self.redis else {
            return Ok(self.local.check(key, policy.gcra, now_ms()));
        };
        match redis.check(key, policy.gcra).await {
            Ok(verdict) => Ok(verdict),
            Err(error) if moves_money => {
                tracing::error!(%error, "rate limiter unavailable: refusing a money-moving request");
                self.metrics.rate_limiter_unavailable.with_label_values(&["fail_closed"]).inc();
                Err(Problem::unavailable().into_response())
            }
            Err(error) => {
                tracing::warn!(%error, "rate limiter unavailable: limiting in process");
                self.metrics.rate_limiter_unavailable.with_label_values(&["local_fallback"]).inc();
                Ok(self.local.check(key, policy.gcra, now_ms()))
            }
        }
    }
}

fn seconds_up(milliseconds: i64) -> i64 {
    (milliseconds.max(0) + 999) / 1000
}

/// The credential as the authenticator reads it (scheme case and spaces do not make
/// another key), hashed.
fn credential_key(request: &Request) -> Option<String> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    let credential = credential.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || credential.is_empty() {
        return None;
    }
    let digest = Sha256::digest(credential.as_bytes());
    Some(paystream_http::hex::encode(&digest[..12]))
}

/// Middleware (`from_fn_with_state(limiter, rate_limit)`), inside the client-address
/// layer.
pub async fn rate_limit(State(limiter): State<Arc<RateLimiter>>, request: Request, next: Next) -> Response {
    let policy = limiter.policy(request.uri().path());
    let moves_money = request.method() == Method::POST
        && (request.uri().path().starts_with("/v1/payments") || request.uri().path().starts_with("/v1/wallet"));
    let address = request.extensions().get::<ClientIp>().map_or_else(|| "unknown".to_string(), |ip| ip.0.to_string());
    let mut keys = vec![format!("{}:ip:{address}", policy.name)];
    if let Some(credential) = credential_key(&request) {
        keys.push(format!("{}:credential:{credential}", policy.name));
    }
    let mut tightest: Option<Verdict> = None;
    for key in &keys {
        let verdict = match limiter.check(key, &policy, moves_money).await {
            Ok(verdict) => verdict,
            Err(refusal) => return refusal,
        };
        if !verdict.allowed {
            limiter.metrics.rate_limited.with_label_values(&[policy.name]).inc();
            let mut response = Problem::too_many_requests(seconds_up(verdict.reset_ms) as u64).into_response();
            set_headers(&mut response, &policy, verdict);
            return response;
        }
        if tightest.is_none_or(|tight| verdict.remaining < tight.remaining) {
            tightest = Some(verdict);
        }
    }
    let mut response = next.run(request).await;
    if let Some(verdict) = tightest {
        set_headers(&mut response, &policy, verdict);
    }
    response
}

fn set_headers(response: &mut Response, policy: &Policy, verdict: Verdict) {
    let window_seconds = seconds_up(policy.gcra.window_ms());
    let policy_header = format!("\"{}\";q={};w={window_seconds}", policy.name, policy.gcra.burst);
    let limit_header = format!("\"{}\";r={};t={}", policy.name, verdict.remaining, seconds_up(verdict.reset_ms));
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&policy_header) {
        headers.insert("ratelimit-policy", value);
    }
    if let Ok(value) = HeaderValue::from_str(&limit_header) {
        headers.insert("ratelimit", value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_authorization(value: &str) -> Request {
        axum::http::Request::builder().header(header::AUTHORIZATION, value).body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn one_credential_is_one_key_however_it_is_spelled() {
        let key = credential_key(&with_authorization("Bearer token-1")).unwrap();
        for spelling in ["bearer token-1", "BEARER token-1", "Bearer  token-1 "] {
            assert_eq!(credential_key(&with_authorization(spelling)).as_deref(), Some(key.as_str()), "{spelling:?}");
        }
        assert_ne!(credential_key(&with_authorization("Bearer token-2")).unwrap(), key);
        assert_eq!(credential_key(&with_authorization("Basic token-1")), None);
    }
}
