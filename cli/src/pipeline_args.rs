//! The pipeline's flags and how they map onto [`PipelineConfig`] and its
//! `OperatorConfig`; the defaults are the settings types' own.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use paystream_domain::time::{MILLIS_PER_DAY, MILLIS_PER_HOUR, MILLIS_PER_MINUTE, MILLIS_PER_SECOND};
use paystream_operators::OperatorConfig;
use paystream_pipeline::PipelineConfig;

use crate::log_args::LogArgs;

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
    /// Batches (of a partition, that changed its state) at least between snapshots of
    /// the partition's state.
    #[arg(long, default_value_t = PipelineConfig::default().snapshot_interval_batches)]
    pub snapshot_interval_batches: u32,
    /// And changelog bytes at least between snapshots, as a percentage of the last
    /// snapshot's size: bounds the disk bandwidth snapshots of a large state take (0: by
    /// batches only).
    #[arg(long, default_value_t = PipelineConfig::default().snapshot_changelog_min_percent)]
    pub snapshot_changelog_min_percent: u32,
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
    /// How far (seconds) a payment's event time may be ahead of its record's log
    /// timestamp; beyond it the payment is dead-lettered `event_time_in_future`.
    #[arg(long, env = "PAYSTREAM_MAX_EVENT_TIME_SKEW_SECONDS", default_value_t = seconds(OperatorConfig::default().max_event_time_skew_ms))]
    pub max_event_time_skew_seconds: u32,
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

/// Whole days, hours, minutes and seconds of a default in milliseconds, for flags in those units
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

fn seconds(ms: i64) -> u32 {
    (ms / MILLIS_PER_SECOND) as u32
}

impl PipelineArgs {
    /// Where the operations endpoints are served, unless `--no-metrics`.
    pub fn operations_addr(&self) -> Option<std::net::SocketAddr> {
        (!self.no_metrics).then_some(self.metrics_addr)
    }

    /// The pipeline configuration; `velocity_default` applies when `--velocity` is not given.
    pub fn config(&self, log_args: &LogArgs, velocity_default: &str) -> Result<PipelineConfig> {
        let mut config = log_args.pipeline_config()?;
        if let Some(workers) = self.workers {
            config.workers = workers;
        }
        config.group_id = self.group_id.clone();
        config.batch_records_max = self.batch_records_max;
        config.snapshot_interval_batches = self.snapshot_interval_batches;
        config.snapshot_changelog_min_percent = self.snapshot_changelog_min_percent;
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
        config.operators.max_event_time_skew_ms = i64::from(self.max_event_time_skew_seconds) * MILLIS_PER_SECOND;
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
