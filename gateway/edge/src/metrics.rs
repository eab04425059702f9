//! The gateway's metrics: RED per route (requests by route, method and status class,
//! and a latency histogram), and refused credentials by reason. Routes are the matched
//! route templates (`/v1/payments/{id}`), never raw paths, so the label set is bounded.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

pub struct HttpMetrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub auth_failures: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub rate_limiter_unavailable: IntCounterVec,
}

/// Seconds; from 1 ms (an in-process read) to 10 s (beyond every timeout).
const DURATION_BUCKETS_SECONDS: [f64; 13] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl Default for HttpMetrics {
    fn default() -> Self {
        let registry = Registry::new_custom(Some("paystream".into()), None).expect("a valid prefix");
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests answered, by route template, method and status code."),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "Time to answer an HTTP request, by route template.")
                .buckets(DURATION_BUCKETS_SECONDS.to_vec()),
            &["route", "method"],
        )
        .expect("valid metric");
        let auth_failures =
            IntCounterVec::new(Opts::new("http_auth_failures_total", "Credentials refused, by reason."), &["reason"])
                .expect("valid metric");
        let rate_limited = IntCounterVec::new(
            Opts::new("http_rate_limited_total", "Requests refused with 429 by the rate limiter, by policy."),
            &["policy"],
        )
        .expect("valid metric");
        let rate_limiter_unavailable = IntCounterVec::new(
            Opts::new(
                "http_rate_limiter_unavailable_total",
                "Checks made while Redis did not answer: refused (money-moving routes) or limited in process.",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(auth_failures.clone()),
            Box::new(rate_limited.clone()),
            Box::new(rate_limiter_unavailable.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        HttpMetrics { registry, requests, request_duration, auth_failures, rate_limited, rate_limiter_unavailable }
    }
}

impl HttpMetrics {
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer).expect("text encoding");
        String::from_utf8(buffer).expect("metrics are UTF-8")
    }
}
