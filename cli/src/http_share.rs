//! The demo's HTTP share: the gateway with the auth and payments services, started in
//! the demo's process on its log, and an app's traffic through it — sign-ups, logins,
//! top-ups, payments with idempotency keys, and read-backs — timed.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use paystream_auth::{AuthConfig, AuthService, AuthStore, Keyring};
use paystream_edge::rate_limit::RateLimitConfig;
use paystream_edge::{GatewayConfig, HttpMetrics};
use paystream_http::clock::{now_ms, system_clock};
use paystream_payments::{LogIntake, PaymentsService, PaymentsStore};
use paystream_pipeline::PipelineTopics;
use paystream_pipeline::log::Log;
use tokio::task::JoinSet;

use crate::http_client;

/// Payments in flight at once.
const CONCURRENT_REQUESTS_MAX: usize = 32;
/// The longest the share may take before the demo gives up on it.
const SHARE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Default)]
pub struct HttpReport {
    pub users: u32,
    pub payments: u32,
    /// Payments answered 201 (with their decision) and 202 (pending).
    pub decided: u32,
    pub pending: u32,
    pub read_backs: u32,
    /// Events the share published: one top-up per user, and the payments.
    pub events: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub seconds: f64,
}

/// Starts the gateway on a free loopback port and drives `users` users and `payments`
/// payments through it.
pub fn drive(
    log: Arc<dyn Log>,
    topics: &PipelineTopics,
    data_dir: &Path,
    users: u32,
    payments: u32,
) -> Result<HttpReport> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let result = runtime.block_on(async {
        tokio::time::timeout(SHARE_TIMEOUT, share(log, topics, data_dir, users, payments, stop.clone()))
            .await
            .context("the HTTP share did not finish in time")?
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    result
}

async fn share(
    log: Arc<dyn Log>,
    topics: &PipelineTopics,
    data_dir: &Path,
    users: u32,
    payments: u32,
    stop: Arc<AtomicBool>,
) -> Result<HttpReport> {
    let services_dir = data_dir.join("services");
    let auth_store = AuthStore::open_embedded(&services_dir).await?;
    let keys = Keyring::load_or_create(&services_dir.join("auth-keys.json"), now_ms())?;
    let auth = Arc::new(AuthService::new(auth_store, keys, AuthConfig::default(), system_clock()).await?);
    let intake = LogIntake::start(log, topics, system_clock(), stop)?;
    let payments_service =
        PaymentsService::start(PaymentsStore::open_embedded(&services_dir).await?, intake, system_clock());
    let services = paystream_auth::router(auth.clone()).merge(paystream_payments::router(payments_service));
    // One app from one address: limits out of its way.
    let config = GatewayConfig {
        rate_limits: RateLimitConfig { default_per_minute: 1_000_000, auth_per_minute: 100_000 },
        ..GatewayConfig::default()
    };
    let router = paystream_edge::gateway_router(
        services,
        paystream_auth::authenticator(&auth),
        config,
        Arc::new(HttpMetrics::default()),
    )
    .map_err(anyhow::Error::msg)?;
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    let (address, server) = paystream_edge::serve_gateway("127.0.0.1:0".parse()?, router, async {
        let _ = stopped.await;
    })
    .await?;
    let report = traffic(&format!("http://{address}"), users, payments).await;
    let _ = shutdown.send(());
    server.await??;
    report
}

async fn traffic(base: &str, users: u32, payments: u32) -> Result<HttpReport> {
    let started = Instant::now();
    let client = http_client::client();
    let mut tokens = Vec::new();
    for user in 0..users {
        let email = format!("demo-{user}@example.com");
        tokens.push(http_client::set_up_user(&client, base, &email, "500.00", &format!("demo-top-up-{user}")).await?);
    }
    let mut report =
        HttpReport { users, payments, events: u64::from(users) + u64::from(payments), ..HttpReport::default() };
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut requests = JoinSet::new();
    for payment in 0..payments {
        if requests.len() >= CONCURRENT_REQUESTS_MAX {
            collect(requests.join_next().await.expect("a request in flight")??, &mut report, &mut latencies)?;
        }
        let (client, base) = (client.clone(), base.to_string());
        let token = tokens[(payment % users.max(1)) as usize].clone();
        requests.spawn(async move {
            let body = serde_json::json!({"merchant_id": "M-http", "terminal_id": "T-http", "amount": "1.25", "currency": "EUR"});
            let headers = [("idempotency-key", format!("demo-payment-{payment}"))];
            let begun = Instant::now();
            let (status, paid) = http_client::post(&client, &format!("{base}/v1/payments"), Some(&token), &headers, body).await?;
            let elapsed_us = begun.elapsed().as_micros() as u64;
            let payment_id = paid["payment_id"].as_str().with_context(|| format!("payment answered {status}: {paid}"))?;
            let url = format!("{base}/v1/payments/{payment_id}");
            let (read_status, _) = http_client::call(&client, hyper::Method::GET, &url, Some(&token), &[], None).await?;
            anyhow::Ok((status, elapsed_us, read_status == 200))
        });
    }
    while let Some(answer) = requests.join_next().await {
        collect(answer??, &mut report, &mut latencies)?;
    }
    report.p50_ms = latencies.value_at_quantile(0.5) as f64 / 1000.0;
    report.p99_ms = latencies.value_at_quantile(0.99) as f64 / 1000.0;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn collect(answer: (u16, u64, bool), report: &mut HttpReport, latencies: &mut Histogram<u64>) -> Result<()> {
    let (status, elapsed_us, read_back) = answer;
    match status {
        201 => report.decided += 1,
        202 => report.pending += 1,
        status => bail!("a payment answered {status}"),
    }
    report.read_backs += u32::from(read_back);
    latencies.saturating_record(elapsed_us.max(1));
    Ok(())
}
