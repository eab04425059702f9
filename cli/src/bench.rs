//! `paystream bench`: end-to-end throughput and event→decision latency on the durable
//! embedded log, or on Kafka (`--kafka-brokers`, with or without transactions), with a
//! fixed seed.
//!
//! Throughput: N simulated payments are published first (not timed), then the pipeline
//! drains them: payments / wall time from start to the last commit, including restore,
//! parsing, every operator, output encoding, the changelog and an fdatasync per commit.
//! Latency: a producer publishes at a fixed rate while the pipeline runs; each record's
//! latency is from its producer timestamp (ms) to the commit of its decision.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use paystream_domain::time::MILLIS_PER_DAY;
use paystream_pipeline::log::Log;
use paystream_pipeline::log::embedded::EmbeddedLog;
use paystream_pipeline::metrics::Metrics;
use paystream_pipeline::{Pipeline, PipelineConfig, PipelineTopics, RunControl, RunMode};
use paystream_simulator::{SimulatorConfig, Transaction};
use serde::Serialize;

use crate::demo::thousands;
use crate::log_args::{KafkaArgs, LogArgs, LogRole};
use crate::pipeline_args::PipelineArgs;
use crate::publish::{PublishOptions, publish_simulation};

#[derive(Args)]
pub struct BenchArgs {
    /// Payments for the throughput run.
    #[arg(long, default_value_t = 1_000_000)]
    payments: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Offered load of the latency run, payments per second.
    #[arg(long, default_value_t = 50_000)]
    latency_rate: u64,
    /// Length of the latency run.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// Where to put the benchmark's logs (default: a temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    /// Skip fdatasync (not durable against power loss): shows what the disk costs.
    #[arg(long)]
    no_fsync: bool,
    /// Store log records uncompressed: shows what LZ4 costs and saves.
    #[arg(long)]
    no_compression: bool,
    /// Run on Kafka instead of the embedded log (`--kafka-brokers`; the topics of each
    /// run are new, named `bench-<time>-<pid>-<run>-<role>`).
    #[command(flatten)]
    kafka: KafkaArgs,
}

#[derive(Serialize)]
struct BenchResult {
    payments: u64,
    publish_payments_per_second: f64,
    throughput_seconds: f64,
    throughput_payments_per_second: f64,
    log_bytes_per_payment: f64,
    /// Process CPU time (user + system, all threads) per payment in the throughput run.
    cpu_us_per_payment: f64,
    commits: u64,
    /// Times a worker stopped a batch to wait for the terminal index (models only).
    terminal_waits: u64,
    /// Payments indexed outside a worker's buffer, so parsed twice (models only).
    terminal_index_only_records: u64,
    /// Time threads waited for the terminal index's lock, summed (models only).
    terminal_index_lock_wait_seconds: f64,
    /// Batches of payments kept for a worker's next turn because the index's lock was
    /// taken (models only).
    terminal_index_deferred_batches: u64,
    latency_offered_payments_per_second: u64,
    latency_payments: u64,
    latency_ms_p50: f64,
    latency_ms_p99: f64,
    latency_ms_p999: f64,
    latency_ms_max: f64,
    workers: usize,
    partitions: u32,
    /// `embedded` or `kafka`.
    log: &'static str,
    /// On Kafka: transactions (exactly once) or not (at least once).
    exactly_once: bool,
}

/// The log arguments of one run (`throughput` or `latency`): its own directory, and on
/// Kafka topics of its own.
fn run_log_args(args: &BenchArgs, root: &std::path::Path, run: &str, started_s: u64) -> LogArgs {
    let topics = match &args.kafka.kafka_brokers {
        Some(_) => {
            let prefix = format!("bench-{started_s}-{}-{run}", std::process::id());
            crate::log_args::TOPIC_ROLES.iter().map(|role| format!("{role}={prefix}-{role}")).collect()
        }
        None => Vec::new(),
    };
    LogArgs {
        data_dir: root.join(run),
        partitions: args.partitions,
        retention_mib: None,
        retention_hours: None,
        no_fsync: args.no_fsync,
        no_compression: args.no_compression,
        topics,
        kafka: args.kafka.clone(),
    }
}

/// The run's log, and the embedded log itself when it is one (for its size on disk).
type RunLog = (Arc<dyn Log>, Option<Arc<EmbeddedLog>>);

/// Opens the run's log: Kafka when brokers are given, else the embedded log.
fn open_run_log(log_args: &LogArgs, workers: usize) -> Result<RunLog> {
    if let Some(kafka) = log_args.open_kafka(LogRole::Pipeline { workers })? {
        return Ok((kafka, None));
    }
    let log = log_args.open()?;
    Ok((log.clone(), Some(log)))
}

pub fn bench(args: BenchArgs) -> Result<()> {
    let temp = tempfile::Builder::new().prefix("paystream-bench-").tempdir()?;
    let root = args.data_dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    // The reference population makes ~9,600 payments a day; simulate enough days.
    let days = (args.payments / 9_000 + 2) as u32;
    let sim_config = SimulatorConfig { days, seed: args.seed, ..SimulatorConfig::default() };
    eprintln!("simulating {days} days (seed {}) ...", args.seed);
    let mut transactions = paystream_simulator::simulate(&sim_config);
    transactions.truncate(args.payments);
    let options = PublishOptions {
        currency: paystream_domain::Currency::EUR,
        label_delay_ms: 7 * MILLIS_PER_DAY,
        rate_per_second: None,
        terminals_per_merchant: 10,
        genuine_labels: false,
        wallet_customers_percent: 0,
    };
    let no_progress = AtomicU64::new(0);
    let no_stop = AtomicBool::new(false);

    // Throughput.
    let started_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let log_args = run_log_args(&args, &root, "throughput", started_s);
    let config: PipelineConfig = args.pipeline.config(&log_args, "off")?;
    let workers = config.workers.min(args.partitions as usize);
    let (log, embedded) = open_run_log(&log_args, workers)?;
    let stored_bytes = || embedded.as_ref().map_or(0, |log| log.stored_bytes());
    let topics = paystream_pipeline::ensure_topics(log.as_ref(), &config)?;
    eprintln!("publishing {} payments ...", thousands(transactions.len() as u64));
    let started = Instant::now();
    let published =
        publish_simulation(log.as_ref(), &topics, &sim_config, &transactions, &options, &no_progress, &no_stop)?;
    let publish_seconds = started.elapsed().as_secs_f64();
    let bytes_before = stored_bytes();
    let throughput_metrics = Arc::new(Metrics::new());
    let pipeline =
        crate::process::pipeline(log.clone(), &log_args.data_dir, config.clone(), throughput_metrics.clone())?;
    let uses_terminal_index = pipeline.needs_terminal_index();
    eprintln!("running the pipeline ...");
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let report = pipeline.run(RunMode::UntilIdle, &RunControl::new(true))?;
    let throughput_seconds = started.elapsed().as_secs_f64();
    let cpu_us_per_payment = (cpu_seconds() - cpu_before) * 1e6 / report.input_records.max(1) as f64;
    let log_bytes = stored_bytes() - bytes_before;
    drop(pipeline);
    drop(log);
    drop(embedded);

    // Latency at a fixed offered load.
    let latency_payments = (args.latency_rate * args.latency_seconds) as usize;
    let latency_transactions = &transactions[..latency_payments.min(transactions.len())];
    let log_args = run_log_args(&args, &root, "latency", started_s);
    let (log, _) = open_run_log(&log_args, workers)?;
    let topics = paystream_pipeline::ensure_topics(log.as_ref(), &config)?;
    let metrics = Arc::new(Metrics::new());
    let pipeline = crate::process::pipeline(log.clone(), &log_args.data_dir, config, metrics.clone())?;
    let latency_options = PublishOptions { rate_per_second: Some(args.latency_rate), ..options };
    eprintln!("latency run: {} payments/s for {} s ...", thousands(args.latency_rate), args.latency_seconds);
    publish_while_running(&pipeline, log.as_ref(), &topics, &sim_config, latency_transactions, &latency_options)?;
    let latency = metrics.latency_us.lock().expect("latency lock").clone();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1_000.0;

    let result = BenchResult {
        payments: report.input_records,
        publish_payments_per_second: published.payments as f64 / publish_seconds,
        throughput_seconds,
        throughput_payments_per_second: report.input_records as f64 / throughput_seconds,
        log_bytes_per_payment: log_bytes as f64 / report.input_records.max(1) as f64,
        cpu_us_per_payment,
        commits: report.commits,
        terminal_waits: throughput_metrics.terminal_waits.get(),
        terminal_index_only_records: throughput_metrics.terminal_index_only_records.get(),
        terminal_index_lock_wait_seconds: throughput_metrics.terminal_index_lock_wait_seconds.get(),
        terminal_index_deferred_batches: throughput_metrics.terminal_index_deferred_batches.get(),
        latency_offered_payments_per_second: args.latency_rate,
        latency_payments: latency.len(),
        latency_ms_p50: ms(0.5),
        latency_ms_p99: ms(0.99),
        latency_ms_p999: ms(0.999),
        latency_ms_max: latency.max() as f64 / 1_000.0,
        workers,
        partitions: args.partitions,
        log: if args.kafka.kafka_brokers.is_some() { "kafka" } else { "embedded" },
        exactly_once: !args.kafka.kafka_at_least_once,
    };
    print_result(&args, &result, uses_terminal_index)
}

/// Publishes `transactions` (at the options' rate) while `pipeline` runs until idle.
fn publish_while_running(
    pipeline: &Pipeline,
    log: &dyn Log,
    topics: &PipelineTopics,
    sim_config: &SimulatorConfig,
    transactions: &[Transaction],
    options: &PublishOptions,
) -> Result<()> {
    let control = RunControl::new(false);
    let (no_progress, no_stop) = (AtomicU64::new(0), AtomicBool::new(false));
    std::thread::scope(|scope| -> Result<()> {
        let producer = scope.spawn(|| {
            let result = publish_simulation(log, topics, sim_config, transactions, options, &no_progress, &no_stop);
            control.close_input();
            result
        });
        let run = pipeline.run(RunMode::UntilIdle, &control);
        producer.join().expect("producer thread")?;
        run?;
        Ok(())
    })
}

/// Prints the figures: JSON with `--json`, else one line per figure.
fn print_result(args: &BenchArgs, result: &BenchResult, uses_terminal_index: bool) -> Result<()> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(result)?);
    } else {
        let log = match &args.kafka.kafka_brokers {
            Some(brokers) if result.exactly_once => format!("Kafka at {brokers}, transactions (exactly once)"),
            Some(brokers) => format!("Kafka at {brokers}, NO transactions (at least once)"),
            None if args.no_fsync => "embedded log, NO fsync: not durable against power loss".to_string(),
            None => "embedded log, durable: fdatasync per commit".to_string(),
        };
        println!(
            "paystream bench (seed {}, {} partitions, {} workers, {log})",
            args.seed, result.partitions, result.workers
        );
        println!(
            "  publish      {:>12} payments/s (producer, not part of the pipeline figure)",
            thousands(result.publish_payments_per_second as u64)
        );
        println!(
            "  throughput   {:>12} payments/s end to end ({} payments in {:.2} s, {} commits, {:.0} log bytes and {:.2} CPU-µs per payment)",
            thousands(result.throughput_payments_per_second as u64),
            thousands(result.payments),
            result.throughput_seconds,
            thousands(result.commits),
            result.log_bytes_per_payment,
            result.cpu_us_per_payment
        );
        if uses_terminal_index {
            println!(
                "  terminal     {} waits for the index, {} payments indexed outside a worker's buffer (parsed twice), {:.2} s waited for its lock (all threads), {} batches deferred (lock taken)",
                thousands(result.terminal_waits),
                thousands(result.terminal_index_only_records),
                result.terminal_index_lock_wait_seconds,
                thousands(result.terminal_index_deferred_batches)
            );
        }
        println!(
            "  latency      event→decision at {} payments/s offered: p50 {:.1} ms · p99 {:.1} ms · p99.9 {:.1} ms · max {:.1} ms ({} samples; producer timestamps have 1 ms resolution)",
            thousands(result.latency_offered_payments_per_second),
            result.latency_ms_p50,
            result.latency_ms_p99,
            result.latency_ms_p999,
            result.latency_ms_max,
            thousands(result.latency_payments)
        );
    }
    Ok(())
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
