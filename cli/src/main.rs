//! `paystream`: a fraud-and-payment stream processor. See README.md.

/// mimalloc: the pipeline allocates many small, short-lived strings per payment.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod backtest;
mod bench;
mod demo;
mod inspect;
mod publish;
mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use paystream_domain::Currency;
use paystream_domain::time::{MILLIS_PER_DAY, MILLIS_PER_HOUR, MILLIS_PER_MINUTE};
use paystream_operators::OperatorConfig;
use paystream_pipeline::log::Log;
use paystream_pipeline::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use paystream_pipeline::log::kafka::{KafkaConfig, KafkaLog};
use paystream_pipeline::metrics::Metrics;
use paystream_pipeline::{Pipeline, PipelineConfig, RunControl, RunMode};
use paystream_simulator::SimulatorConfig;
use paystream_storage::FileSnapshotStore;
use paystream_storage_postgres::PostgresRecordStore;
use paystream_storage_scylla::ScyllaStore;

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

#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// Directory of the embedded log and state snapshots.
    #[arg(long, env = "PAYSTREAM_DATA_DIR", default_value = "paystream-data")]
    pub data_dir: PathBuf,
    /// Partitions of topics paystream creates (existing topics keep theirs).
    #[arg(long, env = "PAYSTREAM_PARTITIONS", default_value_t = 4)]
    pub partitions: u32,
    /// Delete the oldest log segments once the log exceeds this many MiB (never unread
    /// input or changelog a restore needs).
    #[arg(long, env = "PAYSTREAM_RETENTION_MIB")]
    pub retention_mib: Option<u64>,
    /// Delete log segments older than this many hours (same protections).
    #[arg(long, env = "PAYSTREAM_RETENTION_HOURS")]
    pub retention_hours: Option<u64>,
    /// Skip fdatasync on commit: still safe against process crashes (the OS keeps the
    /// data), not against power loss or kernel crashes. For experiments.
    #[arg(long, env = "PAYSTREAM_NO_FSYNC")]
    pub no_fsync: bool,
    /// Store log records uncompressed (default: LZ4 per record batch, like Kafka's
    /// compression.type=lz4): more disk bandwidth, less CPU.
    #[arg(long, env = "PAYSTREAM_NO_COMPRESSION")]
    pub no_compression: bool,
    /// Another name for one of the pipeline's topics, ROLE=NAME (repeatable); roles:
    /// payments, labels, decisions, ledger, settlements, dead-letters, changelog, transfers.
    #[arg(long = "topic", env = "PAYSTREAM_TOPICS", value_delimiter = ',')]
    pub topics: Vec<String>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// Kafka as the log (instead of the embedded one). See README, "Running on Kafka".
#[derive(Args, Clone, Debug, Default)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (host:port,...): use Kafka instead of the embedded log.
    #[arg(long, env = "PAYSTREAM_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// A properties file (`key=value` lines, `#` comments) passed to every Kafka client:
    /// security.protocol, sasl.*, ssl.*, client.id, ….
    #[arg(long, env = "PAYSTREAM_KAFKA_CONFIG")]
    pub kafka_config: Option<PathBuf>,
    /// One more client property, KEY=VALUE (repeatable; wins over the file).
    #[arg(long = "kafka-property", env = "PAYSTREAM_KAFKA_PROPERTIES", value_delimiter = ',')]
    pub kafka_properties: Vec<String>,
    /// Prefix of the transactional ids: stable across restarts of one deployment (that is
    /// what fences a zombie), different for every `paystream run` process.
    #[arg(long, env = "PAYSTREAM_KAFKA_TRANSACTIONAL_ID", default_value = "paystream")]
    pub kafka_transactional_id: String,
    /// Replication factor of the topics paystream creates.
    #[arg(long, env = "PAYSTREAM_KAFKA_REPLICATION_FACTOR", default_value_t = 3)]
    pub kafka_replication_factor: i32,
    /// The broker aborts a transaction left open this long (a crashed process's).
    #[arg(long, env = "PAYSTREAM_KAFKA_TRANSACTION_TIMEOUT_MS", default_value_t = 60_000)]
    pub kafka_transaction_timeout_ms: u64,
    /// No transactions: outputs, changelog and positions are flushed per batch, and a
    /// crash repeats the outputs of the batches since the last flush. For measuring what
    /// exactly-once costs; not for money.
    #[arg(long, env = "PAYSTREAM_KAFKA_AT_LEAST_ONCE")]
    pub kafka_at_least_once: bool,
}

/// What a command does with the log; on Kafka it decides the transactional ids, so that a
/// publisher or a reader never fences the running pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogRole {
    /// The pipeline: one transactional producer per worker.
    Pipeline { workers: usize },
    /// Publishes input (generate, replay): its own transactional id.
    Publisher,
    /// Reads only (log dump, log topics): no producer at all.
    Reader,
}

impl KafkaArgs {
    fn config(&self, brokers: &str, role: LogRole, changelog: &str) -> Result<KafkaConfig> {
        if brokers.trim().is_empty() {
            bail!("--kafka-brokers (PAYSTREAM_KAFKA_BROKERS) is empty: give host:port[,host:port...]");
        }
        let mut config = KafkaConfig::new(brokers);
        if let Some(path) = &self.kafka_config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read the Kafka properties file {}", path.display()))?;
            for (number, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((key, value)) = line.split_once('=') else {
                    bail!("{}:{}: expected key=value, found {line:?}", path.display(), number + 1);
                };
                config.client_properties.push((key.trim().to_string(), value.trim().to_string()));
            }
        }
        for property in &self.kafka_properties {
            let Some((key, value)) = property.split_once('=') else {
                bail!("--kafka-property: expected KEY=VALUE, found {property:?}");
            };
            config.client_properties.push((key.trim().to_string(), value.trim().to_string()));
        }
        config.replication_factor = self.kafka_replication_factor;
        config.transaction_timeout_ms = self.kafka_transaction_timeout_ms;
        config.exactly_once = !self.kafka_at_least_once;
        (config.transactional_id, config.producers) = match role {
            LogRole::Pipeline { workers } => (self.kafka_transactional_id.clone(), workers.max(1)),
            LogRole::Publisher => (format!("{}-publisher", self.kafka_transactional_id), 1),
            LogRole::Reader => (format!("{}-reader", self.kafka_transactional_id), 0),
        };
        // A restore replays the changelog from the last snapshot: retention must not delete it.
        for (key, value) in [("retention.ms", "-1"), ("retention.bytes", "-1")] {
            config.topic_properties.push((changelog.into(), key.into(), value.into()));
        }
        Ok(config)
    }
}

/// The roles `--topic ROLE=NAME` renames.
pub const TOPIC_ROLES: [&str; 9] = [
    "payments",
    "labels",
    "decisions",
    "ledger",
    "settlements",
    "dead-letters",
    "changelog",
    "transfers",
    "settlement-entries",
];

impl LogArgs {
    pub fn open(&self) -> Result<Arc<EmbeddedLog>> {
        open_log(&self.data_dir, self)
    }

    /// The pipeline's topic names: the defaults, renamed by `--topic ROLE=NAME`.
    pub fn topic_names(&self) -> Result<paystream_pipeline::TopicNames> {
        let mut names = paystream_pipeline::TopicNames::default();
        for mapping in &self.topics {
            let Some((role, name)) = mapping.split_once('=') else {
                bail!("--topic: expected ROLE=NAME, found {mapping:?}");
            };
            // One arm per entry of TOPIC_ROLES.
            let slot = match role.trim() {
                "payments" => &mut names.payments,
                "labels" => &mut names.labels,
                "decisions" => &mut names.decisions,
                "ledger" => &mut names.ledger,
                "settlements" => &mut names.settlements,
                "dead-letters" => &mut names.dead_letters,
                "changelog" => &mut names.changelog,
                "transfers" => &mut names.transfers,
                "settlement-entries" => &mut names.settlement_entries,
                other => bail!(
                    "--topic: unknown role {other:?} (payments, labels, decisions, ledger, settlements, dead-letters, \
                     changelog, transfers, settlement-entries)"
                ),
            };
            *slot = name.trim().to_string();
        }
        Ok(names)
    }

    /// A pipeline configuration for publishing and reading: partitions and topic names.
    pub fn pipeline_config(&self) -> Result<PipelineConfig> {
        Ok(PipelineConfig { partitions: self.partitions, topics: self.topic_names()?, ..PipelineConfig::default() })
    }

    /// The log these arguments name: Kafka when brokers are given, else the embedded log.
    pub fn open_any(&self, role: LogRole) -> Result<Arc<dyn Log>> {
        if let Some(kafka) = self.open_kafka(role)? {
            return Ok(kafka);
        }
        Ok(match role {
            LogRole::Reader => self.open_read_only()?,
            _ => self.open()?,
        })
    }

    /// The Kafka log, if brokers are given.
    pub fn open_kafka(&self, role: LogRole) -> Result<Option<Arc<KafkaLog>>> {
        let Some(brokers) = &self.kafka.kafka_brokers else { return Ok(None) };
        let config = self.kafka.config(brokers, role, &self.topic_names()?.changelog)?;
        let log = KafkaLog::open(config).with_context(|| format!("open the Kafka log at {brokers}"))?;
        Ok(Some(Arc::new(log)))
    }

    /// For inspection while another process (a running pipeline) writes the log.
    pub fn open_read_only(&self) -> Result<Arc<EmbeddedLog>> {
        let log = EmbeddedLog::open_read_only(EmbeddedLogConfig::new(self.data_dir.join("log")))
            .with_context(|| format!("open the embedded log in {} for reading", self.data_dir.display()))?;
        Ok(Arc::new(log))
    }
}

pub fn open_log(dir: &Path, args: &LogArgs) -> Result<Arc<EmbeddedLog>> {
    let config = EmbeddedLogConfig {
        retention_bytes_max: args.retention_mib.map(|m| m * 1024 * 1024),
        retention_age_ms_max: args.retention_hours.map(|h| h as i64 * MILLIS_PER_HOUR),
        fsync: !args.no_fsync,
        compression: !args.no_compression,
        ..EmbeddedLogConfig::new(dir.join("log"))
    };
    let log = EmbeddedLog::open(config).with_context(|| format!("open the embedded log in {}", dir.display()))?;
    Ok(Arc::new(log))
}

#[derive(Args, Clone, Debug)]
pub struct PipelineArgs {
    /// Worker threads (each owns a share of the partitions).
    #[arg(long, env = "PAYSTREAM_WORKERS")]
    pub workers: Option<usize>,
    /// The pipeline's consumer group: its input positions, snapshot names, and on Kafka
    /// the group whose members share the input partitions.
    #[arg(long, env = "PAYSTREAM_GROUP_ID", default_value_t = PipelineConfig::default().group_id)]
    pub group_id: String,
    /// Most records taken from one partition per batch.
    #[arg(long, default_value_t = PipelineConfig::default().batch_records_max)]
    pub batch_records_max: usize,
    /// Batches between state snapshots.
    #[arg(long, default_value_t = PipelineConfig::default().snapshot_interval_batches)]
    pub snapshot_interval_batches: u32,
    /// Process at most this many input records per second (default: no limit).
    #[arg(long, env = "PAYSTREAM_MAX_INPUT_RATE")]
    pub max_input_rate: Option<u64>,
    /// Serve Prometheus /metrics and /healthz here (port 0 picks a free port).
    #[arg(long, env = "PAYSTREAM_METRICS_ADDR", default_value = "127.0.0.1:9898")]
    pub metrics_addr: SocketAddr,
    /// Do not serve /metrics.
    #[arg(long)]
    pub no_metrics: bool,
    /// Score with this trained model file (`paystream train`) instead of the rules;
    /// it is watched and reloaded when it changes.
    #[arg(long, env = "PAYSTREAM_MODEL")]
    pub model: Option<PathBuf>,
    /// The terminal features' label delay d, in days (must match the model's).
    #[arg(long, default_value_t = days(OperatorConfig::default().label_delay_ms))]
    pub feature_delay_days: u32,
    /// Copy decisions, ledger postings and account balances into PostgreSQL (exactly
    /// once; e.g. postgres://user@host:5432/db).
    #[arg(long, env = "PAYSTREAM_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// PostgreSQL schema for those tables (created and migrated if missing).
    #[arg(long, env = "PAYSTREAM_POSTGRES_SCHEMA", default_value_t = PipelineConfig::default().postgres_schema)]
    pub postgres_schema: String,
    /// Copy decisions into ScyllaDB/Cassandra as payment history per account and daily
    /// aggregates per customer and merchant (idempotent): nodes, host:port, comma-separated.
    #[arg(long, env = "PAYSTREAM_SCYLLA_NODES")]
    pub scylla_nodes: Option<String>,
    /// Keyspace for those tables (created with replication factor
    /// --scylla-replication-factor and migrated if missing).
    #[arg(long, env = "PAYSTREAM_SCYLLA_KEYSPACE", default_value = "paystream")]
    pub scylla_keyspace: String,
    #[arg(long, env = "PAYSTREAM_SCYLLA_REPLICATION_FACTOR", default_value_t = 1)]
    pub scylla_replication_factor: u32,
    /// one, local_one, quorum, local_quorum or all (reads and writes).
    #[arg(long, env = "PAYSTREAM_SCYLLA_CONSISTENCY", default_value = "local_quorum")]
    pub scylla_consistency: String,
    /// Payments older than their partition's newest by more than the allowed lateness
    /// (one hour): `review` (never approved automatically; reason
    /// late_event_features_inexact) or `score` (decided like any other).
    #[arg(long, env = "PAYSTREAM_LATE_PAYMENTS", default_value = "review", value_parser = ["review", "score"])]
    pub late_payments: String,
    /// Fee charged to payees, in basis points of the amount (120 = 1.2 %).
    #[arg(long, env = "PAYSTREAM_FEE_BASIS_POINTS", default_value_t = OperatorConfig::default().fees.default_basis_points)]
    pub fee_basis_points: u32,
    /// A JSON fee schedule instead: {"default_basis_points": 120, "channels":
    /// {"card_present": 90}, "merchants": {"M7": 50}} (merchant rate, else channel rate,
    /// else the default).
    #[arg(long, env = "PAYSTREAM_FEE_SCHEDULE")]
    pub fee_schedule: Option<PathBuf>,
    /// Scores at or above this are decided `review`.
    #[arg(long, env = "PAYSTREAM_REVIEW_SCORE_MIN", default_value_t = OperatorConfig::default().review_score_min)]
    pub review_score_min: f32,
    /// Scores at or above this are decided `decline`.
    #[arg(long, env = "PAYSTREAM_DECLINE_SCORE_MIN", default_value_t = OperatorConfig::default().decline_score_min)]
    pub decline_score_min: f32,
    /// Length of a merchant settlement window in minutes (windows start at multiples of
    /// it since the epoch, UTC). Choose it before the first run: open windows keep theirs.
    #[arg(long, env = "PAYSTREAM_SETTLEMENT_WINDOW_MINUTES", default_value_t = minutes(OperatorConfig::default().settlement_window_ms))]
    pub settlement_window_minutes: u32,
    /// A window closes once its partition's event time passes its end by this many
    /// minutes; a payment for a closed window goes to the next open one, marked late.
    #[arg(long, env = "PAYSTREAM_SETTLEMENT_LATENESS_MINUTES", default_value_t = minutes(OperatorConfig::default().settlement_allowed_lateness_ms))]
    pub settlement_lateness_minutes: u32,
    /// How long (event time) a payment id is remembered: a retry within it is counted,
    /// not decided twice; the same id with other content is dead-lettered. Memory grows
    /// with payments per day × days (about 100 bytes each).
    #[arg(long, env = "PAYSTREAM_PAYMENT_ID_RETENTION_DAYS", default_value_t = days(OperatorConfig::default().dedupe_retention_ms))]
    pub payment_id_retention_days: u32,
    /// How long (event time) an approved payment can be refunded or charged back: its
    /// record (about 100 bytes) is kept that long; later refunds are declined
    /// `original_not_found`.
    #[arg(long, env = "PAYSTREAM_REFUND_WINDOW_DAYS", default_value_t = days(OperatorConfig::default().refund_window_ms))]
    pub refund_window_days: u32,
    /// An authorization neither captured nor voided this many hours (event time) after
    /// it is released (`paystream_holds_expired_total`).
    #[arg(long, env = "PAYSTREAM_AUTHORIZATION_TIMEOUT_HOURS", default_value_t = hours(OperatorConfig::default().authorization_timeout_ms))]
    pub authorization_timeout_hours: u32,
    /// How far below zero a wallet may go, in the wallet currency's minor units (0:
    /// never; wallet payments beyond the balance are declined `insufficient_funds`).
    #[arg(long, env = "PAYSTREAM_WALLET_OVERDRAFT_MINOR", default_value_t = OperatorConfig::default().wallet_overdraft_minor)]
    pub wallet_overdraft_minor: i64,
    /// A JSON file of per-account overdraft limits (credit lines) overriding
    /// --wallet-overdraft-minor: {"C17": 5000, "C42": 0} (payer account → minor units of
    /// its wallet's currency). A changed limit applies at the wallet's next movement.
    #[arg(long, env = "PAYSTREAM_WALLET_OVERDRAFTS")]
    pub wallet_overdrafts: Option<PathBuf>,
    /// Velocity features (payments per merchant and per device in the hour, across every
    /// partition; on each decision): `off`, `memory` (in this process) or a Redis URL
    /// (redis://host:6379, shared by every process and kept across restarts). Default:
    /// off for `run` and `bench`, memory for `demo`.
    #[arg(long, env = "PAYSTREAM_VELOCITY")]
    pub velocity: Option<String>,
    /// Prefix of the velocity keys in Redis (one per deployment sharing a server).
    #[arg(long, env = "PAYSTREAM_VELOCITY_PREFIX", default_value = "paystream:velocity")]
    pub velocity_prefix: String,
    /// A payment whose device made at least this many payments in the hour (it included)
    /// is decided at least `review`, reason device_velocity_1h.
    #[arg(long, env = "PAYSTREAM_DEVICE_VELOCITY_REVIEW_MIN")]
    pub device_velocity_review_min: Option<u64>,
    /// Likewise for the merchant's payments in the hour (reason merchant_velocity_1h).
    #[arg(long, env = "PAYSTREAM_MERCHANT_VELOCITY_REVIEW_MIN")]
    pub merchant_velocity_review_min: Option<u64>,
}

/// Whole days, hours and minutes of a default in milliseconds, for flags in those units
/// (their defaults are the settings' own, from `PipelineConfig` and `OperatorConfig`).
fn days(ms: i64) -> u32 {
    (ms / MILLIS_PER_DAY) as u32
}

fn hours(ms: i64) -> u32 {
    (ms / MILLIS_PER_HOUR) as u32
}

fn minutes(ms: i64) -> u32 {
    (ms / MILLIS_PER_MINUTE) as u32
}

impl PipelineArgs {
    /// The pipeline configuration; `velocity_default` applies when `--velocity` is not given.
    pub fn config(&self, log_args: &LogArgs, velocity_default: &str) -> Result<PipelineConfig> {
        let mut config = log_args.pipeline_config()?;
        if let Some(workers) = self.workers {
            config.workers = workers;
        }
        config.group_id = self.group_id.clone();
        config.batch_records_max = self.batch_records_max;
        config.snapshot_interval_batches = self.snapshot_interval_batches;
        config.input_records_per_second_max = self.max_input_rate.filter(|r| *r > 0);
        config.model_file = self.model.clone();
        config.operators.label_delay_ms = i64::from(self.feature_delay_days) * MILLIS_PER_DAY;
        config.postgres_url = self.postgres_url.clone();
        config.postgres_schema = self.postgres_schema.clone();
        config.scylla = match &self.scylla_nodes {
            Some(nodes) => {
                let mut scylla = paystream_storage_scylla::ScyllaConfig::new(nodes, &self.scylla_keyspace)?;
                scylla.replication_factor = self.scylla_replication_factor;
                scylla.consistency = paystream_storage_scylla::ConsistencyLevel::parse(&self.scylla_consistency)?;
                Some(scylla)
            }
            None => None,
        };
        config.operators.review_score_min = self.review_score_min;
        config.operators.late_payments = match self.late_payments.as_str() {
            "score" => paystream_operators::LatePaymentPolicy::Score,
            _ => paystream_operators::LatePaymentPolicy::Review,
        };
        config.operators.decline_score_min = self.decline_score_min;
        config.operators.settlement_window_ms = i64::from(self.settlement_window_minutes) * MILLIS_PER_MINUTE;
        config.operators.dedupe_retention_ms = i64::from(self.payment_id_retention_days) * MILLIS_PER_DAY;
        config.operators.settlement_allowed_lateness_ms =
            i64::from(self.settlement_lateness_minutes) * MILLIS_PER_MINUTE;
        config.operators.refund_window_ms = i64::from(self.refund_window_days) * MILLIS_PER_DAY;
        config.operators.authorization_timeout_ms = i64::from(self.authorization_timeout_hours) * MILLIS_PER_HOUR;
        config.operators.wallet_overdraft_minor = self.wallet_overdraft_minor;
        if let Some(path) = &self.wallet_overdrafts {
            let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
            config.operators.wallet_overdrafts = serde_json::from_str(&text).with_context(|| {
                format!("overdraft limits {}: expected {{\"<account>\": <minor units>, …}}", path.display())
            })?;
        }
        let velocity = self.velocity.as_deref().unwrap_or(velocity_default);
        config.operators.velocity = paystream_operators::VelocityConfig {
            enabled: velocity != "off",
            device_tx_1h_review_min: self.device_velocity_review_min,
            merchant_tx_1h_review_min: self.merchant_velocity_review_min,
        };
        config.velocity_store = match velocity {
            "off" | "memory" => paystream_pipeline::VelocityStore::Memory,
            url if url.starts_with("redis://") || url.starts_with("rediss://") => {
                paystream_pipeline::VelocityStore::Redis { url: url.to_string(), prefix: self.velocity_prefix.clone() }
            }
            other => bail!("--velocity {other:?}: expected off, memory or a redis:// URL"),
        };
        if !config.operators.velocity.enabled
            && (self.device_velocity_review_min.is_some() || self.merchant_velocity_review_min.is_some())
        {
            bail!("velocity review thresholds need --velocity memory or --velocity redis://…");
        }
        config.operators.fees = match &self.fee_schedule {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
                serde_json::from_str(&text).with_context(|| format!("fee schedule {}", path.display()))?
            }
            None => paystream_operators::FeeSchedule::flat(self.fee_basis_points),
        };
        config.operators.validate().context("operator configuration")?;
        Ok(config)
    }
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
}

#[derive(Args, Clone, Debug)]
pub struct SimulatorArgs {
    #[arg(long, default_value_t = 5_000)]
    pub customers: u32,
    #[arg(long, default_value_t = 10_000)]
    pub terminals: u32,
    /// Simulated days [default: 183, the reference run].
    #[arg(long)]
    pub days: Option<u32>,
    /// First simulated day (YYYY-MM-DD).
    #[arg(long, default_value = "2018-04-01")]
    pub start_date: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SimulatorArgs {
    pub fn config(&self, default_days: u32) -> Result<SimulatorConfig> {
        let days = self.days.unwrap_or(default_days);
        let start_days = paystream_domain::time::parse_date_days(&self.start_date)
            .with_context(|| format!("--start-date must be a calendar date YYYY-MM-DD, got {}", self.start_date))?;
        let (year, month, day) = paystream_domain::time::civil_from_days(start_days);
        if self.customers == 0 || self.terminals == 0 || days == 0 {
            bail!("--customers, --terminals and --days must be positive");
        }
        Ok(SimulatorConfig {
            customers: self.customers,
            terminals: self.terminals,
            days,
            start_date: (year, month, day),
            seed: self.seed,
            ..SimulatorConfig::default()
        })
    }
}

#[derive(Args, Clone, Debug)]
pub struct PublishArgs {
    /// ISO 4217 currency of simulated or CSV amounts.
    #[arg(long, default_value = "EUR")]
    pub currency: String,
    /// Fraud labels arrive this many days (event time) after their payment.
    #[arg(long, default_value_t = 7)]
    pub label_delay_days: u32,
    /// Publish at most this many payments per second.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Group numeric terminal ids into merchants of this many terminals (merchant
    /// M<terminal / n>); 1 makes each terminal its own merchant.
    #[arg(long, default_value_t = 10)]
    pub terminals_per_merchant: u32,
    /// Also publish a (genuine) label for every payment that is not fraud; by default
    /// only fraud is reported, as chargebacks and fraud reports are.
    #[arg(long)]
    pub genuine_labels: bool,
    /// This share of customers (0-100, by a hash of the id) pays from a paystream wallet:
    /// top-ups when the wallet runs low, 1 payment in 5 as an authorization and its
    /// capture, 1 in 20 half refunded, 1 in 25 followed by 5.00 sent to another customer.
    /// Default: 20 for `demo`, 0 otherwise (CSV replays stay the handbook's card payments).
    #[arg(long)]
    pub wallet_customers_percent: Option<u32>,
}

impl PublishArgs {
    /// The options, with `wallet_customers_percent` defaulting to `default_wallet_percent`.
    pub fn options(&self, default_wallet_percent: u32) -> Result<publish::PublishOptions> {
        let wallet_customers_percent = self.wallet_customers_percent.unwrap_or(default_wallet_percent);
        if wallet_customers_percent > 100 {
            bail!("--wallet-customers-percent is a percentage (0-100), not {wallet_customers_percent}");
        }
        Ok(publish::PublishOptions {
            currency: Currency::from_code(&self.currency)?,
            label_delay_ms: i64::from(self.label_delay_days) * MILLIS_PER_DAY,
            rate_per_second: self.rate.filter(|r| *r > 0),
            terminals_per_merchant: self.terminals_per_merchant.max(1),
            genuine_labels: self.genuine_labels,
            wallet_customers_percent,
        })
    }
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

/// A tokio runtime for the metrics server and signal handling; the pipeline itself runs
/// on its own worker threads.
pub fn io_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?)
}

/// Serves /metrics unless disabled; returns the bound address.
pub fn start_metrics_server(
    runtime: &tokio::runtime::Runtime,
    args: &PipelineArgs,
    metrics: &Arc<Metrics>,
) -> Option<SocketAddr> {
    if args.no_metrics {
        return None;
    }
    let render_metrics = metrics.clone();
    let render: paystream_gateway::RenderMetrics = Arc::new(move || render_metrics.render());
    let served =
        runtime.block_on(paystream_gateway::serve_operations(args.metrics_addr, render, std::future::pending()));
    match served {
        Ok((addr, _)) => Some(addr),
        Err(error) => {
            eprintln!("warning: cannot serve /metrics on {}: {error}; continuing without", args.metrics_addr);
            None
        }
    }
}

/// Stops `control` on SIGINT or SIGTERM.
pub fn stop_on_signals(runtime: &tokio::runtime::Runtime, control: Arc<RunControl>) {
    runtime.spawn(async move {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        eprintln!("stopping: finishing the batch in flight and committing");
        control.stop();
    });
}

pub fn pipeline(log: Arc<dyn Log>, data_dir: &Path, config: PipelineConfig, metrics: Arc<Metrics>) -> Result<Pipeline> {
    let snapshots = FileSnapshotStore::open(data_dir.join("snapshots"))?;
    let model: Arc<dyn paystream_models::FraudModel> = match &config.model_file {
        Some(path) => Arc::new(paystream_pipeline::load_model_file(path, config.operators.label_delay_ms)?),
        None => paystream_operators::default_model(&config.operators),
    };
    let record_store = match &config.postgres_url {
        Some(url) => Some(
            paystream_storage_postgres::Blocking::<PostgresRecordStore>::connect(url, &config.postgres_schema)
                .with_context(|| format!("record store: PostgreSQL schema {}", config.postgres_schema))?,
        ),
        None => None,
    };
    let history_store = match &config.scylla {
        Some(scylla) => {
            let mut store = paystream_storage_scylla::Blocking::<ScyllaStore>::connect(scylla.clone())
                .with_context(|| format!("history store: ScyllaDB at {}", scylla.nodes.join(",")))?;
            store.migrate().with_context(|| format!("history store: ScyllaDB keyspace {}", scylla.keyspace))?;
            Some(store)
        }
        None => None,
    };
    let mut pipeline = Pipeline::new(log, Arc::new(snapshots), model, config).with_metrics(metrics);
    if let Some(store) = record_store {
        pipeline = pipeline.with_record_store(Box::new(store));
    }
    if let Some(store) = history_store {
        pipeline = pipeline.with_history_store(Box::new(store));
    }
    Ok(pipeline)
}

fn run(args: RunArgs) -> Result<()> {
    let config = args.pipeline.config(&args.log, "off")?;
    let role = LogRole::Pipeline { workers: config.workers };
    let kafka = args.log.open_kafka(role)?;
    let log: Arc<dyn Log> = match &kafka {
        Some(kafka) => kafka.clone(),
        None => args.log.open()?,
    };
    let metrics = Arc::new(Metrics::new());
    let runtime = io_runtime()?;
    if let Some(addr) = start_metrics_server(&runtime, &args.pipeline, &metrics) {
        eprintln!("metrics: http://{addr}/metrics");
    }
    let control = Arc::new(RunControl::new(true));
    stop_on_signals(&runtime, control.clone());
    let mut pipeline = pipeline(log, &args.log.data_dir, config, metrics)?;
    if let Some(kafka) = kafka {
        if pipeline.reads_every_partition() {
            // These read every partition: this process takes them all (static assignment).
            eprintln!(
                "kafka: a model reading terminal features or the PostgreSQL or ScyllaDB sink runs in one process: \
                 taking every partition, not joining group {}",
                pipeline.config.group_id
            );
        } else {
            let topics = paystream_pipeline::ensure_topics(kafka.as_ref(), &pipeline.config)?;
            let member = kafka
                .join(&pipeline.config.group_id, &topics.payments)
                .with_context(|| format!("join consumer group {}", pipeline.config.group_id))?;
            eprintln!("kafka: joined consumer group {}", pipeline.config.group_id);
            pipeline = pipeline.with_membership(member);
        }
    }
    let mode = if args.until_idle { RunMode::UntilIdle } else { RunMode::Forever };
    let started = std::time::Instant::now();
    let report = pipeline.run(mode, &control)?;
    let seconds = started.elapsed().as_secs_f64();
    let [approve, review, decline] = report.counters.outcomes;
    println!(
        "processed {} input records in {seconds:.2} s ({:.0}/s): approve {approve}, review {review}, decline {decline}, retries {}, dead letters {}",
        report.input_records,
        report.input_records as f64 / seconds.max(1e-9),
        report.counters.retries,
        report.dead_letters
    );
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
        "replayed {}: {} payments, {} labels, {} unreadable rows to the dead-letter topic",
        args.file.display(),
        report.payments,
        report.labels,
        report.dead_letters
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_args(extra: &[&str]) -> LogArgs {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            log: LogArgs,
        }
        Cli::try_parse_from(std::iter::once("paystream").chain(extra.iter().copied())).unwrap().log
    }

    #[test]
    fn topics_are_renamed_by_role_and_unknown_roles_refused() {
        let names = log_args(&["--topic", "payments=prod.payments", "--topic", "changelog=prod.changelog"])
            .topic_names()
            .unwrap();
        assert_eq!((names.payments.as_str(), names.changelog.as_str()), ("prod.payments", "prod.changelog"));
        assert_eq!(names.decisions, "decisions");
        let error = log_args(&["--topic", "paymnets=x"]).topic_names().unwrap_err().to_string();
        assert!(error.contains("unknown role \"paymnets\""), "{error}");
        assert!(log_args(&["--topic", "payments"]).topic_names().is_err());
    }

    #[test]
    fn kafka_properties_come_from_the_file_then_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("client.properties");
        std::fs::write(&file, "# SASL\nsecurity.protocol = SASL_SSL\n\nsasl.username=pay\n").unwrap();
        let args = log_args(&[
            "--kafka-config",
            file.to_str().unwrap(),
            "--kafka-property",
            "sasl.username=other",
            "--kafka-transactional-id",
            "p1",
        ]);
        let config = args.kafka.config("k:9092", LogRole::Pipeline { workers: 3 }, "changes").unwrap();
        assert_eq!(
            config.client_properties,
            [
                ("security.protocol".to_string(), "SASL_SSL".to_string()),
                ("sasl.username".into(), "pay".into()),
                ("sasl.username".into(), "other".into()),
            ]
        );
        assert_eq!((config.transactional_id.as_str(), config.producers), ("p1", 3));
        assert!(config.topic_properties.iter().any(|(t, k, v)| t == "changes" && k == "retention.ms" && v == "-1"));
        let publisher = args.kafka.config("k:9092", LogRole::Publisher, "changes").unwrap();
        assert_eq!(publisher.transactional_id, "p1-publisher", "a publisher never fences the pipeline");
        assert_eq!(args.kafka.config("k:9092", LogRole::Reader, "changes").unwrap().producers, 0);
        std::fs::write(&file, "no equals sign\n").unwrap();
        assert!(args.kafka.config("k:9092", LogRole::Reader, "c").unwrap_err().to_string().contains(":1: expected"));
    }
}
