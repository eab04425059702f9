//! `paystream loadtest`: drives a running gateway as an app would — signs users up, logs
//! them in, tops their wallets up, then posts payments with idempotency keys at a fixed
//! offered rate (open loop: latency is measured from when a request was due, so a slow
//! server cannot hide its queueing) and reports throughput and latency percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use crate::http_client;

#[derive(Args)]
pub struct LoadtestArgs {
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Payments per second offered.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    rate: u32,
    /// Seconds of offered load.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=3_600))]
    duration: u32,
    /// Distinct paying users (each signed up, logged in and topped up first).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    users: u32,
    /// Requests in flight at most; more due requests wait (and their wait is measured).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    in_flight_max: u32,
    /// Seconds a request may wait for its decision (the `Prefer: wait=N` sent).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=10))]
    wait: u32,
}

/// Latencies are recorded in microseconds up to this.
const LATENCY_US_MAX: u64 = 120_000_000;

pub fn loadtest(args: LoadtestArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: LoadtestArgs) -> Result<()> {
    let base = args.url.trim_end_matches('/').to_string();
    let client = http_client::client();
    let run_id = format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis());
    let started = Instant::now();
    let mut tokens = Vec::new();
    for index in 0..args.users {
        let email = format!("loadtest-{run_id}-{index}@example.com");
        let key = format!("loadtest-top-up-{run_id}-{index}");
        tokens.push(Arc::new(http_client::set_up_user(&client, &base, &email, "1000000.00", &key).await?));
    }
    eprintln!("set up {} users (sign-up, login, top-up) in {:.1} s", args.users, started.elapsed().as_secs_f64());

    let total = u64::from(args.rate) * u64::from(args.duration);
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let latencies = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3)?));
    let statuses: Arc<[AtomicU64; 6]> = Arc::new(Default::default());
    let in_flight = Arc::new(Semaphore::new(args.in_flight_max as usize));
    let url = Arc::new(format!("{base}/v1/payments"));
    let wait = format!("wait={}", args.wait);
    let begun = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for sequence in 0..total {
        let due = begun + interval.mul_f64(sequence as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = in_flight.clone().acquire_owned().await?;
        let (client, url, latencies, statuses) = (client.clone(), url.clone(), latencies.clone(), statuses.clone());
        let token = tokens[(sequence % u64::from(args.users)) as usize].clone();
        let headers = vec![("idempotency-key", format!("loadtest-{run_id}-{sequence}")), ("prefer", wait.clone())];
        tasks.push(tokio::spawn(async move {
            let body =
                serde_json::json!({"merchant_id": "M1", "terminal_id": "T1", "amount": "1.00", "currency": "EUR"});
            let status = http_client::post(&client, &url, Some(&token), &headers, body).await.map(|(status, _)| status);
            let elapsed_us = due.elapsed().as_micros() as u64;
            drop(permit);
            latencies.lock().expect("histogram lock").saturating_record(elapsed_us.max(1));
            let slot = match status {
                Ok(201) => 0,
                Ok(202) => 1,
                Ok(429) => 2,
                Ok(status) if status >= 500 => 3,
                Ok(_) => 4,
                Err(_) => 5,
            };
            statuses[slot].fetch_add(1, Ordering::Relaxed);
        }));
    }
    for task in tasks {
        task.await?;
    }
    let seconds = begun.elapsed().as_secs_f64();
    let latencies = latencies.lock().expect("histogram lock");
    let count = |slot: usize| statuses[slot].load(Ordering::Relaxed);
    let ms = |quantile: f64| latencies.value_at_quantile(quantile) as f64 / 1000.0;
    println!(
        "offered {total} payments at {}/s for {} s; done in {seconds:.1} s: {:.0} payments/s",
        args.rate,
        args.duration,
        total as f64 / seconds
    );
    println!(
        "answers: 201 (decided) {}, 202 (pending) {}, 429 {}, 5xx {}, other 4xx {}, connection errors {}",
        count(0),
        count(1),
        count(2),
        count(3),
        count(4),
        count(5)
    );
    println!(
        "latency from due time: p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        latencies.max() as f64 / 1000.0
    );
    if count(3) + count(4) + count(5) > 0 {
        bail!("some requests failed");
    }
    Ok(())
}
