//! `paystream`: a fraud-and-payment stream processor. See README.md.

/// mimalloc: the pipeline allocates many small, short-lived strings per payment.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod auth_admin;
mod backtest;
mod bench;
mod demo;
mod http_client;
mod http_share;
mod inspect;
mod loadtest;
mod log_args;
mod pipeline_args;
mod process;
mod publish;
mod serve;
mod simulator_args;
mod sql;
mod store;
mod view_keeper;
mod views;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use paystream_pipeline::log::Log;
use paystream_pipeline::metrics::Metrics;
use paystream_pipeline::{RunControl, RunMode};
use paystream_simulator::SimulatorConfig;

use log_args::{LogArgs, LogRole};
use pipeline_args::PipelineArgs;
use process::{io_runtime, start_metrics_server, stop_on_signals};
use simulator_args::{PublishArgs, SimulatorArgs};

#[derive(Parser)]
#[command(
    name = "paystream",
    version,
    about = "A fraud-and-payment stream processor: payments in, fraud decisions, ledger postings and settlements out, exactly once."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate payments, run the whole pipeline on embedded defaults, print a summary.
    Demo(demo::DemoArgs),
    /// Run the pipeline over the input topic until stopped (SIGINT/SIGTERM) or, with
    /// --until-idle, until the input is drained and committed.
    Run(RunArgs),
    /// The reference fraud simulator: write the handbook CSV or publish to the input topic.
    Generate(GenerateArgs),
    /// Replay a handbook-layout CSV or a JSON-lines file of payment events into the input topic.
    Replay(ReplayArgs),
    /// Inspect the log.
    #[command(subcommand)]
    Log(LogCommand),
    /// Measure end-to-end throughput and event→decision latency on the durable embedded log
    /// (or on Kafka with --kafka-brokers).
    Bench(bench::BenchArgs),
    /// The reference fraud protocol on a handbook-layout CSV: online features, train,
    /// test, ROC AUC / average precision / Card Precision@100.
    Backtest(backtest::BacktestArgs),
    /// Replay a handbook-layout CSV through the feature operator, train a model and write
    /// a versioned model file.
    Train(backtest::TrainArgs),
    /// The PostgreSQL record store: migrate, read balances and decisions.
    Store(store::StoreArgs),
    /// Check every settlement against the ledger postings that name it (payment count,
    /// gross, fees, net); exits non-zero on any difference.
    Reconcile(ReconcileArgs),
    /// Serve librdkafka's in-process mock Kafka cluster until stopped, with the pipeline's
    /// topics created, to try or test the Kafka path without Kafka. Not a production
    /// broker: no transaction markers or isolation, slow group fetches.
    KafkaMock(KafkaMockArgs),
    /// Serve the HTTP API: the gateway and the services behind it, with the pipeline, in
    /// one process on embedded defaults (or one service alone with --service).
    Serve(Box<serve::ServeArgs>),
    /// Drive a running gateway: sign users up, log in, top up, then post payments at a
    /// fixed rate; report throughput and latency percentiles.
    Loadtest(loadtest::LoadtestArgs),
    /// Analysts' SQL over the topics: serve the PostgreSQL wire protocol (psql, Grafana,
    /// drivers), read-only, with SCRAM login.
    Sql(sql::SqlArgs),
    /// Run one SQL statement over the topics and print its rows (table, CSV or JSON lines).
    Query(sql::QueryArgs),
    /// Keep the materialized views alone, without the pipeline: on Kafka the one process
    /// that keeps them (a second one fences the first); until stopped or, with
    /// --until-idle, until their sources are read.
    Views(views::ViewsRunArgs),
    /// Administer the auth service: grant roles, rotate the signing key.
    #[command(subcommand)]
    Auth(auth_admin::AuthCommand),
}

#[derive(Args)]
struct ReconcileArgs {
    #[command(flatten)]
    log: LogArgs,
}

fn reconcile(args: ReconcileArgs) -> Result<()> {
    let log = args.log.open_any(LogRole::Reader)?;
    let names = args.log.topic_names()?;
    let mut settlements = Vec::new();
    inspect::scan(log.as_ref(), &log.topic(&names.settlements)?, None, |p, record| {
        let settlement: paystream_domain::Settlement = serde_json::from_slice(&record.value)
            .with_context(|| format!("{} {p}/{} is not a settlement", names.settlements, record.offset))?;
        settlements.push(settlement);
        Ok(())
    })?;
    let mut reconciler = paystream_operators::settlement::Reconciler::new(settlements);
    inspect::scan(log.as_ref(), &log.topic(&names.ledger)?, None, |p, record| {
        let transaction: paystream_domain::LedgerTransaction = serde_json::from_slice(&record.value)
            .with_context(|| format!("{} {p}/{} is not a ledger transaction", names.ledger, record.offset))?;
        reconciler.add(&transaction);
        Ok(())
    })?;
    let report = reconciler.finish();
    for mismatch in &report.mismatches {
        println!("MISMATCH {mismatch}");
    }
    println!(
        "{} settlements checked against {} ledger transactions ({} in windows still open): {}",
        report.settlements,
        report.transactions,
        report.open_transactions,
        if report.mismatches.is_empty() {
            "all match".to_string()
        } else {
            format!("{} differences", report.mismatches.len())
        }
    );
    if !report.mismatches.is_empty() {
        bail!("reconciliation found {} differences", report.mismatches.len());
    }
    Ok(())
}

#[derive(Args)]
struct KafkaMockArgs {
    /// Brokers in the mock cluster.
    #[arg(long, default_value_t = 3)]
    brokers: i32,
    /// Partitions of the pipeline's topics.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
}

fn kafka_mock(args: KafkaMockArgs) -> Result<()> {
    let names = paystream_pipeline::TopicNames::default();
    let cluster = paystream_pipeline::log::kafka::mock_cluster(args.brokers, args.partitions, &names.all())?;
    println!("{}", cluster.bootstrap_servers());
    std::io::Write::flush(&mut std::io::stdout())?;
    eprintln!("mock Kafka cluster: export PAYSTREAM_KAFKA_BROKERS={}  (Ctrl-C stops it)", cluster.bootstrap_servers());
    let runtime = io_runtime()?;
    let control = Arc::new(RunControl::new(true));
    stop_on_signals(&runtime, control.clone());
    while !control.stopped() {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Stop once the input is drained and committed.
    #[arg(long)]
    until_idle: bool,
    #[command(flatten)]
    views: sql::ViewsArgs,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    simulator: SimulatorArgs,
    /// Write the handbook CSV layout to this file instead of publishing.
    #[arg(long)]
    csv: Option<PathBuf>,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    publish: PublishArgs,
}

#[derive(Args)]
struct ReplayArgs {
    /// A handbook-layout CSV, or JSON lines of payment events v1.
    file: PathBuf,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    publish: PublishArgs,
}

#[derive(Subcommand)]
enum LogCommand {
    /// Print a topic's records as JSON lines (like `kcat -C -J`).
    Dump {
        topic: String,
        #[arg(long)]
        partition: Option<u32>,
        #[command(flatten)]
        log: LogArgs,
    },
    /// List topics with their partitions and offsets.
    Topics {
        #[command(flatten)]
        log: LogArgs,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("PAYSTREAM_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(error) = run_command(cli.command) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run_command(command: Command) -> Result<()> {
    match command {
        Command::Demo(args) => demo::demo(args),
        Command::Bench(args) => bench::bench(args),
        Command::Backtest(args) => backtest::backtest(args),
        Command::Train(args) => backtest::train(args),
        Command::Store(args) => store::store(args),
        Command::KafkaMock(args) => kafka_mock(args),
        Command::Serve(args) => serve::serve(*args),
        Command::Sql(args) => sql::sql(args),
        Command::Query(args) => sql::query(args),
        Command::Views(args) => views::views(args),
        Command::Auth(command) => auth_admin::auth(command),
        Command::Loadtest(args) => loadtest::loadtest(args),
        Command::Reconcile(args) => reconcile(args),
        Command::Run(args) => run(args),
        Command::Generate(args) => generate(args),
        Command::Replay(args) => replay(args),
        Command::Log(LogCommand::Dump { topic, partition, log }) => {
            let log = log.open_any(LogRole::Reader)?;
            let topic = log.topic(&topic)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            inspect::dump(log.as_ref(), &topic, partition, &mut out)?;
            std::io::Write::flush(&mut out)?;
            Ok(())
        }
        Command::Log(LogCommand::Topics { log }) => {
            let log = log.open_any(LogRole::Reader)?;
            for topic in log.topics() {
                let mut total = 0;
                let mut parts = Vec::new();
                for p in 0..topic.partitions {
                    let offsets = log.offsets(&topic, p)?;
                    total += offsets.end - offsets.start;
                    parts.push(format!("{p}:[{},{})", offsets.start, offsets.end));
                }
                println!("{}\tpartitions={}\trecords={total}\t{}", topic.name, topic.partitions, parts.join(" "));
            }
            Ok(())
        }
    }
}

fn run(args: RunArgs) -> Result<()> {
    let config = args.pipeline.config(&args.log, "off")?;
    let metrics = Arc::new(Metrics::new());
    let runtime = io_runtime()?;
    let control = Arc::new(RunControl::new(true));
    if let Some(addr) = start_metrics_server(&runtime, &args.pipeline, &metrics, &control) {
        eprintln!("metrics: http://{addr}/metrics");
    }
    stop_on_signals(&runtime, control.clone());
    let sql_metrics = paystream_sql::SqlMetrics::new(&metrics.registry);
    let (pipeline, log, _) = process::prepare_pipeline(&args.log, config, metrics)?;
    let (views_stop, views_drain) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    // On Kafka the catalog's views are the views process's (the one keeper, which
    // would otherwise be fenced); on the embedded log this process owns the log.
    let catalog = args.log.kafka.kafka_brokers.is_none();
    let views = args.views.start(
        catalog,
        &args.log,
        Some(log),
        (views_stop.clone(), views_drain.clone()),
        Some(sql_metrics),
    )?;
    let mode = if args.until_idle { RunMode::UntilIdle } else { RunMode::Forever };
    let started = std::time::Instant::now();
    let report = pipeline.run(mode, &control);
    // With --until-idle the views finish reading what the pipeline wrote; else they stop.
    let finish = if args.until_idle && report.is_ok() { &views_drain } else { &views_stop };
    finish.store(true, Ordering::SeqCst);
    // A view that stopped said why; the pipeline ran on without it.
    let stopped_views = views.join();
    let report = report?;
    let seconds = started.elapsed().as_secs_f64();
    let [approve, review, decline] = report.counters.outcomes;
    println!(
        "processed {} input records in {seconds:.2} s ({:.0}/s): approve {approve}, review {review}, decline {decline}, retries {}, dead letters {}",
        report.input_records,
        report.input_records as f64 / seconds.max(1e-9),
        report.counters.retries,
        report.dead_letters
    );
    if !stopped_views.is_empty() {
        bail!("materialized views stopped on an error: {}", stopped_views.join(", "));
    }
    Ok(())
}

fn generate(args: GenerateArgs) -> Result<()> {
    let config = args.simulator.config(SimulatorConfig::default().days)?;
    let started = std::time::Instant::now();
    let transactions = paystream_simulator::simulate(&config);
    let frauds = transactions.iter().filter(|t| t.is_fraud).count();
    eprintln!(
        "simulated {} transactions ({frauds} fraud, {:.2} %) in {:.1} s",
        transactions.len(),
        100.0 * frauds as f64 / transactions.len().max(1) as f64,
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.csv {
        publish::write_csv(path, &config, &transactions)?;
        println!("wrote {} rows to {}", transactions.len(), path.display());
        return Ok(());
    }
    let log = args.log.open_any(LogRole::Publisher)?;
    let pipeline_config = args.log.pipeline_config()?;
    let topics = paystream_pipeline::ensure_topics(log.as_ref(), &pipeline_config)?;
    let progress = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let report = publish::publish_simulation(
        log.as_ref(),
        &topics,
        &config,
        &transactions,
        &args.publish.options(0)?,
        &progress,
        &stop,
    )?;
    println!("published {} payments and {} labels to {}", report.payments, report.labels, args.log.data_dir.display());
    Ok(())
}

fn replay(args: ReplayArgs) -> Result<()> {
    let log = args.log.open_any(LogRole::Publisher)?;
    let pipeline_config = args.log.pipeline_config()?;
    let topics = paystream_pipeline::ensure_topics(log.as_ref(), &pipeline_config)?;
    let progress = AtomicU64::new(0);
    let report = publish::replay(log.as_ref(), &topics, &args.file, &args.publish.options(0)?, &progress)?;
    println!(
        "replayed {}: {} payments ({} amounts rounded to the currency's minor unit), {} labels, {} unreadable rows \
         to the dead-letter topic",
        args.file.display(),
        report.payments,
        report.rounded_amounts,
        report.labels,
        report.dead_letters
    );
    Ok(())
}
