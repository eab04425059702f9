//! The pipeline's settings: topic names, partitions and workers, batching, snapshots,
//! the operators' settings, the model file, the sinks and the velocity store, with
//! their defaults and their validation in one place.

use paystream_domain::time::MILLIS_PER_HOUR;
use paystream_operators::{OperatorConfig, VELOCITY_WINDOW_MS};

use crate::error::RuntimeError;
use crate::limits::{BATCH_RECORDS_MAX_LIMIT, PIPELINE_PARTITIONS_MAX};

/// Topic names of the pipeline.
#[derive(Clone, Debug)]
pub struct TopicNames {
    pub payments: String,
    pub labels: String,
    pub decisions: String,
    pub ledger: String,
    pub settlements: String,
    pub dead_letters: String,
    pub changelog: String,
    /// Internal: legs of payments to other accounts, keyed by the account that applies
    /// them; partitioned like the payments, read by the owner of each partition.
    pub transfers: String,
    /// Internal: settlement entries keyed by merchant and every partition's settlement
    /// marks; partitioned like the payments, read by the owner of each partition.
    pub settlement_entries: String,
}

impl TopicNames {
    /// The topics' roles (`--topic ROLE=NAME`), in the order of [`TopicNames::all`].
    pub const ROLES: [&'static str; 9] = [
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

    /// The name of the topic with `role`.
    pub fn of_role(&self, role: &str) -> Option<&str> {
        Self::ROLES.iter().position(|known| *known == role).map(|index| self.all()[index])
    }

    /// Every topic name: the inputs, the outputs and the internal ones.
    pub fn all(&self) -> [&str; 9] {
        [
            &self.payments,
            &self.labels,
            &self.decisions,
            &self.ledger,
            &self.settlements,
            &self.dead_letters,
            &self.changelog,
            &self.transfers,
            &self.settlement_entries,
        ]
    }
}

impl Default for TopicNames {
    fn default() -> Self {
        TopicNames {
            payments: "payments".into(),
            labels: "labels".into(),
            decisions: "decisions".into(),
            ledger: "ledger".into(),
            settlements: "settlements".into(),
            dead_letters: "dead-letters".into(),
            changelog: "paystream-changelog".into(),
            transfers: "paystream-transfers".into(),
            settlement_entries: "paystream-settlement-entries".into(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub topics: TopicNames,
    /// Partitions of topics created by paystream (existing topics keep theirs).
    pub partitions: u32,
    pub workers: usize,
    pub group_id: String,
    /// Most records taken from one partition per batch.
    pub batch_records_max: usize,
    /// Changelog records (a partition's batches that changed its state) at least between
    /// two snapshots of a partition; for the terminal index, rounds that read anything.
    pub snapshot_interval_batches: u32,
    /// And changelog bytes at least between two snapshots of a partition, as a percentage
    /// of the last snapshot's bytes: a large state is snapshotted (compacted) only once
    /// the changelog since its last snapshot is as large as this share of it, so writing
    /// snapshots costs at most 100/percent times the changelog's bytes, and a restore
    /// reads a snapshot plus at most that share of its size in changelog. 0: by records
    /// only.
    pub snapshot_changelog_min_percent: u32,
    /// Batches of state ops a worker may have handed to its snapshotter in process and it
    /// not yet applied (on logs with dense offsets); later ones are dropped and read back
    /// from the changelog. Default [`crate::limits::FEED_BATCHES_MAX`].
    pub snapshot_feed_batches_max: usize,
    /// How long an idle worker waits for new input before looking again.
    pub idle_wait_ms: u64,
    /// How often a worker looks for transfer legs and settlement entries on a partition
    /// whose last look found none (0: before every batch). A look asks the log for the
    /// partition's end (on Kafka a broker round trip); a leg or entry waits at most this
    /// long on an idle partition.
    pub leg_poll_interval_ms: u64,
    /// Each worker waits for a batch to commit before it reads the next (no pipelining):
    /// slower, but what a batch reads does not depend on commit timing — transfer legs
    /// a worker writes to its own partitions become visible at a fixed point — so a run
    /// with one worker is deterministic. For simulations.
    pub commit_each_batch_before_the_next: bool,
    /// Caps input records per second over all workers (e.g. to protect downstream
    /// systems while catching up after an outage); `None` runs flat out.
    pub input_records_per_second_max: Option<u64>,
    pub operators: OperatorConfig,
    /// A trained model file to score with and watch for changes (hot reload). The
    /// terminal index runs when it is set (learned models read terminal features).
    pub model_file: Option<std::path::PathBuf>,
    /// How often the model file is checked for changes.
    pub model_poll_ms: u64,
    /// Copy decisions and postings into PostgreSQL at this URL (schema below), exactly once.
    pub postgres_url: Option<String>,
    pub postgres_schema: String,
    /// Copy decisions into this ScyllaDB/Cassandra keyspace (payment history, daily
    /// aggregates), idempotently; created or migrated at start.
    pub scylla: Option<paystream_storage_scylla::ScyllaConfig>,
    /// How far (event time) the terminal index reads ahead of the newest payer
    /// partition; must exceed `operators.feature_allowed_lateness_ms`.
    pub terminal_read_ahead_ms: i64,
    /// Where velocity features are counted when `operators.velocity.enabled`.
    pub velocity_store: VelocityStore,
    /// How long (wall clock) a velocity bucket is kept after the last payment it counted,
    /// in memory and in Redis (a TTL). Must cover the window plus the allowed lateness.
    pub velocity_retention_ms: i64,
    /// How long a worker retries an unreachable feature store (reconnecting) before the
    /// run stops with the error; nothing of the batch is committed meanwhile.
    pub velocity_store_retry_ms: u64,
}

/// The velocity feature store: counts shared by every partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum VelocityStore {
    /// In this process (shared by its workers; empty after a restart, so the first hour
    /// after one under-counts — never over-counts). Not for consumer groups.
    #[default]
    Memory,
    /// Redis at `url`, keys under `prefix`: shared by every process, kept across restarts.
    Redis { url: String, prefix: String },
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            topics: TopicNames::default(),
            partitions: 4,
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            group_id: "paystream".into(),
            batch_records_max: 2_048,
            snapshot_interval_batches: 500,
            snapshot_changelog_min_percent: 100,
            snapshot_feed_batches_max: crate::limits::FEED_BATCHES_MAX,
            idle_wait_ms: 50,
            commit_each_batch_before_the_next: false,
            leg_poll_interval_ms: 10,
            input_records_per_second_max: None,
            operators: OperatorConfig::default(),
            model_file: None,
            model_poll_ms: 1_000,
            terminal_read_ahead_ms: 6 * MILLIS_PER_HOUR,
            velocity_store: VelocityStore::Memory,
            velocity_retention_ms: 6 * MILLIS_PER_HOUR,
            velocity_store_retry_ms: 30_000,
            postgres_url: None,
            postgres_schema: "paystream".into(),
            scylla: None,
        }
    }
}

impl PipelineConfig {
    /// Checks the settings that do not depend on the log: the operators', the workers and
    /// batch size, and that the read-ahead and velocity retention cover what they must.
    /// `consumer_group` says whether a consumer group assigns the partitions.
    pub fn validate(&self, consumer_group: bool) -> Result<(), RuntimeError> {
        self.operators.validate()?;
        if self.workers == 0 || self.batch_records_max == 0 || self.batch_records_max > BATCH_RECORDS_MAX_LIMIT {
            return Err(RuntimeError::Config(format!(
                "need workers >= 1 and 1 <= batch_records_max <= {BATCH_RECORDS_MAX_LIMIT}"
            )));
        }
        if self.terminal_read_ahead_ms <= self.operators.feature_allowed_lateness_ms {
            return Err(RuntimeError::Config(
                "terminal_read_ahead_ms must exceed operators.feature_allowed_lateness_ms".into(),
            ));
        }
        let velocity_enabled = self.operators.velocity.enabled;
        if velocity_enabled
            && self.velocity_retention_ms < VELOCITY_WINDOW_MS + self.operators.feature_allowed_lateness_ms
        {
            return Err(RuntimeError::Config(
                "velocity_retention_ms must cover the velocity window (1 h) plus the allowed lateness".into(),
            ));
        }
        if consumer_group && velocity_enabled && self.velocity_store == VelocityStore::Memory {
            return Err(RuntimeError::Config(
                "velocity in a consumer group needs a shared feature store (Redis): in-process counters would see \
                 only this process's partitions"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Checks the partition count of the resolved payments topic.
    pub fn validate_partitions(&self, partitions: u32) -> Result<(), RuntimeError> {
        if partitions > PIPELINE_PARTITIONS_MAX {
            return Err(RuntimeError::Config(format!("at most {PIPELINE_PARTITIONS_MAX} partitions")));
        }
        Ok(())
    }
}
