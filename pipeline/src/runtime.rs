//! The runtime: partition workers that read input batches, run the operator chain and
//! commit (outputs + changelog + input positions) atomically.
//!
//! One OS thread per worker; each owns a fixed set of input partitions (partition `p`
//! belongs to worker `p % workers`) and, for each, a [`PartitionProcessor`] with its
//! state. A worker's loop is pull-based: it fetches at most `batch_records_max` records
//! per partition, processes them, and commits before fetching again, so the only queue
//! is the log itself and backpressure is implicit. Snapshots of each partition's state
//! are taken every `snapshot_interval_batches` and on shutdown; a restart loads the
//! snapshot and replays the changelog after it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use paystream_domain::{Payment, Rejection};
use paystream_models::FraudModel;
use paystream_operators::state::encode_ops;
use paystream_operators::{
    BatchCounters, InputRecord, OperatorConfig, OperatorError, OutputBatch, PartitionProcessor, TerminalView,
    VELOCITY_BUCKET_MS, VELOCITY_BUCKETS, VelocityTotals,
};
use paystream_storage::counters::{CounterConfig, CounterEvent, RedisCounters, SharedMemoryCounters, WindowedCounters};
use paystream_storage::{Snapshot, SnapshotStore, StorageError};
use serde::Serialize;
use thiserror::Error;

use crate::log::{Log, LogError, Membership, Topic, Transaction, read_to_written_end};
use crate::metrics::Metrics;
use crate::model::ModelHandle;
use crate::terminals::{PAYMENT_BUFFER_BATCHES, TERMINAL_INDEX_GROUP, TerminalStage, read_position};

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Operator(#[from] OperatorError),
    #[error("encoding an output record: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("invalid pipeline configuration: {0}")]
    Config(String),
    #[error("cannot restore partition {partition}: {why}")]
    Restore { partition: u32, why: String },
    #[error("worker thread panicked: {0}")]
    WorkerPanicked(String),
    #[error("model file {path}: {why}")]
    Model { path: std::path::PathBuf, why: String },
}

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

/// The topics, resolved against a log.
#[derive(Clone, Debug)]
pub struct PipelineTopics {
    pub payments: Topic,
    pub labels: Topic,
    pub decisions: Topic,
    pub ledger: Topic,
    pub settlements: Topic,
    pub dead_letters: Topic,
    pub changelog: Topic,
    pub transfers: Topic,
    pub settlement_entries: Topic,
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
    /// Batches of a worker between snapshots of its partitions' state.
    pub snapshot_interval_batches: u32,
    /// How long an idle worker waits for new input before looking again.
    pub idle_wait_ms: u64,
    /// How often a worker looks for transfer legs and settlement entries on a partition
    /// whose last look found none (0: before every batch). A look asks the log for the
    /// partition's end (on Kafka a broker round trip); a leg or entry waits at most this
    /// long on an idle partition.
    pub leg_poll_interval_ms: u64,
    /// Each worker waits for a batch to commit before it reads the next (no pipelining):
    /// slower, but what a batch reads no longer depends on commit timing — transfer legs
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
    pub scylla: Option<paystream_storage::scylla::ScyllaConfig>,
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

/// A worker's way to the velocity store (a connection, or the process's shared counters).
enum VelocitySource {
    Memory(SharedMemoryCounters),
    Redis { url: String, prefix: String, config: CounterConfig },
}

impl VelocitySource {
    fn new(store: &VelocityStore, retention_ms: i64) -> Result<VelocitySource, StorageError> {
        let config = CounterConfig { bucket_ms: VELOCITY_BUCKET_MS, retention_ms };
        Ok(match store {
            VelocityStore::Memory => VelocitySource::Memory(SharedMemoryCounters::new(config)?),
            VelocityStore::Redis { url, prefix } => {
                VelocitySource::Redis { url: url.clone(), prefix: prefix.clone(), config }
            }
        })
    }

    fn connect(&self) -> Result<Box<dyn WindowedCounters>, StorageError> {
        Ok(match self {
            VelocitySource::Memory(shared) => Box::new(shared.clone()),
            VelocitySource::Redis { url, prefix, config } => Box::new(RedisCounters::connect(url, prefix, *config)?),
        })
    }
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
            idle_wait_ms: 50,
            commit_each_batch_before_the_next: false,
            leg_poll_interval_ms: 10,
            input_records_per_second_max: None,
            operators: OperatorConfig::default(),
            model_file: None,
            model_poll_ms: 1_000,
            terminal_read_ahead_ms: 6 * 3_600_000,
            velocity_store: VelocityStore::Memory,
            velocity_retention_ms: 6 * 3_600_000,
            velocity_store_retry_ms: 30_000,
            postgres_url: None,
            postgres_schema: "paystream".into(),
            scylla: None,
        }
    }
}

/// Consumer group whose positions in the changelog mark the last snapshot, so retention
/// keeps every changelog record a restore still needs.
pub const SNAPSHOT_GROUP: &str = "paystream-snapshots";
/// Largest number of partitions a pipeline may have (bounds per-worker state).
pub const PIPELINE_PARTITIONS_MAX: u32 = 256;
/// Largest batch per partition.
pub const BATCH_RECORDS_MAX_LIMIT: usize = 65_536;

/// Gives `group` a position at the start of every partition of `topics` where it has none,
/// so retention keeps everything the group has not read.
fn register_group_from_start(log: &dyn Log, group: &str, topics: &[&Topic]) -> Result<(), LogError> {
    if !log.retention_keeps_unread() {
        // Nothing to protect; and a stale view must not overwrite another process's position.
        return Ok(());
    }
    let mut registration = Transaction::new();
    for topic in topics {
        for partition in 0..topic.partitions {
            if log.committed_position(group, topic, partition)?.is_none() {
                registration.set_position(group, topic, partition, log.offsets(topic, partition)?.start);
            }
        }
    }
    log.commit(registration)
}

/// Creates the pipeline's topics if missing and resolves them.
pub fn ensure_topics(log: &dyn Log, config: &PipelineConfig) -> Result<PipelineTopics, RuntimeError> {
    let names = &config.topics;
    let payments = match log.topic(&names.payments) {
        Ok(topic) => topic,
        Err(LogError::UnknownTopic(_)) => log.create_topic(&names.payments, config.partitions)?,
        Err(e) => return Err(e.into()),
    };
    let partitions = payments.partitions;
    let get_or_create = |name: &str| match log.topic(name) {
        Ok(topic) => Ok(topic),
        Err(LogError::UnknownTopic(_)) => log.create_topic(name, partitions),
        Err(e) => Err(e),
    };
    // Partition p of these belongs with partition p of the payments.
    let co_partitioned = |role: &str, name: &str| {
        let topic = get_or_create(name)?;
        if topic.partitions != partitions {
            return Err(RuntimeError::Config(format!(
                "{role} topic {} has {} partitions but {} has {partitions}; they must match",
                topic.name, topic.partitions, payments.name
            )));
        }
        Ok(topic)
    };
    let changelog = co_partitioned("changelog", &names.changelog)?;
    let transfers = co_partitioned("transfers", &names.transfers)?;
    let settlement_entries = co_partitioned("settlement entries", &names.settlement_entries)?;
    // Register the pipeline's consumer group from the start, so log retention keeps all
    // input it has not processed, even input published before its first run.
    register_group_from_start(log, &config.group_id, &[&payments, &transfers, &settlement_entries])?;
    Ok(PipelineTopics {
        transfers,
        settlement_entries,
        labels: get_or_create(&names.labels)?,
        decisions: get_or_create(&names.decisions)?,
        ledger: get_or_create(&names.ledger)?,
        settlements: get_or_create(&names.settlements)?,
        dead_letters: get_or_create(&names.dead_letters)?,
        payments,
        changelog,
    })
}

/// When the pipeline stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// Until [`RunControl::stop`].
    Forever,
    /// Until every input partition is read to its end and the input is closed
    /// ([`RunControl::close_input`]), or stopped earlier.
    UntilIdle,
}

/// Shared switches between the runtime and whoever drives it (signals, the demo).
#[derive(Debug, Default)]
pub struct RunControl {
    stop: AtomicBool,
    input_closed: AtomicBool,
    /// Input records processed so far, for progress displays.
    pub processed_records: AtomicU64,
}

impl RunControl {
    pub fn new(input_closed: bool) -> RunControl {
        RunControl { input_closed: AtomicBool::new(input_closed), ..RunControl::default() }
    }
    /// Stop intake; workers finish and commit the batch in flight, then return.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
    /// No more input will arrive (lets [`RunMode::UntilIdle`] finish).
    pub fn close_input(&self) {
        self.input_closed.store(true, Ordering::SeqCst);
    }
    pub(crate) fn input_closed(&self) -> bool {
        self.input_closed.load(Ordering::SeqCst)
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    pub input_records: u64,
    pub counters: BatchCounters,
    pub dead_letters: u64,
    pub commits: u64,
}

impl RunReport {
    pub fn add(&mut self, other: &RunReport) {
        self.input_records += other.input_records;
        self.counters.add(&other.counters);
        self.dead_letters += other.dead_letters;
        self.commits += other.commits;
    }
}

/// How often a worker refreshes its partitions' lag gauge.
pub const LAG_UPDATE_INTERVAL: Duration = Duration::from_secs(1);

/// Batches a worker may have handed to its committer and not yet seen committed.
pub const COMMIT_QUEUE_DEPTH_MAX: usize = 2;

/// One batch's transaction on its way to the log.
struct CommitJob {
    transaction: Transaction,
    /// Producer timestamps of the batch's input records, for latency.
    timestamps: Vec<i64>,
    started: Instant,
}

/// Counts committed batches so a worker can wait until all it submitted are durable.
#[derive(Default)]
struct CommitTracker {
    state: std::sync::Mutex<(u64, Option<String>)>,
    changed: std::sync::Condvar,
}

impl CommitTracker {
    fn done(&self) {
        self.state.lock().expect("tracker lock").0 += 1;
        self.changed.notify_all();
    }

    fn fail(&self, why: &str) {
        self.state.lock().expect("tracker lock").1 = Some(why.to_string());
        self.changed.notify_all();
    }

    /// Waits until `submitted` batches are committed; Err if the committer failed.
    fn wait_for(&self, submitted: u64) -> Result<(), String> {
        let state = self.state.lock().expect("tracker lock");
        let state = self
            .changed
            .wait_while(state, |(done, failed)| *done < submitted && failed.is_none())
            .expect("tracker lock");
        match &state.1 {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }
}

/// What every worker shares.
#[derive(Clone)]
struct WorkerContext<'a> {
    topics: &'a PipelineTopics,
    operator_config: Arc<OperatorConfig>,
    model: &'a ModelHandle,
    stage: Option<&'a TerminalStage>,
    /// With velocity enabled.
    velocity: Option<&'a VelocitySource>,
    mode: RunMode,
    control: &'a RunControl,
    /// The consumer group generation the workers run; they stop when it moves.
    generation: Option<(&'a dyn Membership, u64)>,
    /// Worker threads running now (the input rate cap is shared among them).
    workers: usize,
    /// This worker's index among them.
    worker: usize,
    /// When the workers of an `UntilIdle` run may stop, together.
    idle: Arc<IdleBarrier>,
}

/// A partition of an internal topic the workers write and read (transfer legs,
/// settlement entries): a second and third input of the partition's owner.
struct InternalInput {
    /// The first offset not yet processed (committed with the batch).
    next_offset: u64,
    /// When the worker last looked and found nothing (`None`: look now).
    idle_since: Option<Instant>,
}

impl InternalInput {
    fn new(next_offset: u64) -> InternalInput {
        InternalInput { next_offset, idle_since: None }
    }
}

/// With `UntilIdle`, a worker may stop only when every worker is idle at once: workers
/// write transfer legs to each other's partitions, so one worker running out of input
/// does not mean no more will come. A worker is idle when its commits are done and its
/// partitions' inputs are read; it records the number of commits (by any worker) it saw
/// before looking. All may stop when all have recorded the current number: nobody
/// committed anything after anybody looked.
#[derive(Default)]
struct IdleBarrier {
    /// Durable commits of any worker (counted by the committers, after the commit).
    commits: std::sync::atomic::AtomicU64,
    /// Per worker: the commit count before it last found itself idle; `None`: busy.
    idle_at: std::sync::Mutex<Vec<Option<u64>>>,
}

impl IdleBarrier {
    fn new(workers: usize) -> IdleBarrier {
        IdleBarrier { commits: Default::default(), idle_at: std::sync::Mutex::new(vec![None; workers]) }
    }

    fn committed(&self) {
        self.commits.fetch_add(1, Ordering::SeqCst);
    }

    fn commits(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
    }

    /// `worker` is idle as of `commits_seen`; true if every worker is, and nothing was
    /// committed since.
    fn idle(&self, worker: usize, commits_seen: u64) -> bool {
        let mut idle_at = self.idle_at.lock().expect("idle lock");
        if let Some(slot) = idle_at.get_mut(worker) {
            *slot = Some(commits_seen);
        }
        idle_at.iter().all(|seen| *seen == Some(commits_seen)) && self.commits() == commits_seen
    }

    fn busy(&self, worker: usize) {
        if let Some(slot) = self.idle_at.lock().expect("idle lock").get_mut(worker) {
            *slot = None;
        }
    }
}

impl WorkerContext<'_> {
    fn keep_running(&self) -> bool {
        !self.control.stopped() && self.generation.is_none_or(|(membership, g)| membership.generation() == g)
    }
}

struct PartitionTask {
    processor: PartitionProcessor,
    /// The first input offset not yet processed (committed with the batch).
    next_offset: u64,
    /// The partition of `paystream-transfers`.
    legs: InternalInput,
    /// The partition of `paystream-settlement-entries`.
    entries: InternalInput,
    /// Records fetched and parsed but not processed yet (a batch that stopped to wait for
    /// the terminal index keeps its tail here instead of fetching it again; with a
    /// terminal stage, up to `PAYMENT_BUFFER_BATCHES` batches, indexed too).
    fetched: InputBuffer,
    /// The terminal index's bound when processing last stopped to wait: nothing to try
    /// until it moves.
    waiting_at_bound_ms: Option<i64>,
    /// Payments read for the terminal index whose lock was taken: added on the next turn.
    unindexed: Option<UnindexedPayments>,
}

/// Payments (payment hash, terminal hash, event time) read from a partition for the
/// terminal index but not added yet, and how far the partition is indexed with them.
struct UnindexedPayments {
    entries: Vec<paystream_operators::TerminalIndexEntry>,
    progress: crate::terminals::InputProgress,
}

/// A record parsed ahead of processing (`None` once processed).
type ParsedPayment = Option<Result<Payment, Rejection>>;

/// What a worker's turn over its partitions found, beyond what it committed.
#[derive(Default)]
struct Turn {
    /// Some partition stopped to wait for the terminal index.
    waiting: bool,
    /// Payments were read into the terminal index (other partitions may move on).
    indexed: bool,
}

/// A partition's payments read ahead of processing, from `next_offset` on, in offset
/// order; `parsed[i]` is `records[i]` parsed (taken when processed).
#[derive(Default)]
struct InputBuffer {
    records: Vec<crate::log::Record>,
    parsed: Vec<ParsedPayment>,
    /// Records before this were processed.
    start: usize,
}

impl InputBuffer {
    fn len(&self) -> usize {
        self.records.len() - self.start
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn records(&self) -> &[crate::log::Record] {
        &self.records[self.start..]
    }

    /// The offset after the last record held.
    fn end_offset(&self) -> Option<u64> {
        self.records().last().map(|r| r.offset + 1)
    }

    /// Appends `records` and their parses (`parsed[i]` of `records[i]`).
    fn push(&mut self, records: Vec<crate::log::Record>, mut parsed: Vec<ParsedPayment>) {
        assert_eq!(parsed.len(), records.len(), "one parse per record");
        // Drop what was processed once it is most of the buffer (each record moves at
        // most about once).
        if self.start > 0 && self.start >= self.len() {
            self.records.drain(..self.start);
            self.parsed.drain(..self.start);
            self.start = 0;
        }
        self.parsed.append(&mut parsed);
        self.records.extend(records);
    }

    /// The first `n` records held and their parses.
    fn front(&mut self, n: usize) -> (&[crate::log::Record], &mut [ParsedPayment]) {
        (&self.records[self.start..self.start + n], &mut self.parsed[self.start..self.start + n])
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.records.len() {
            self.records.clear();
            self.parsed.clear();
            self.start = 0;
        }
    }
}

/// Spawns a pipeline thread whose failure stops the whole run.
fn spawn_stopping_on_error<'scope, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    name: String,
    control: &'scope RunControl,
    body: impl FnOnce() -> Result<T, RuntimeError> + Send + 'scope,
) -> std::thread::ScopedJoinHandle<'scope, Result<T, RuntimeError>> {
    std::thread::Builder::new()
        .name(name)
        .spawn_scoped(scope, move || {
            let result = body();
            if result.is_err() {
                control.stop();
            }
            result
        })
        .expect("spawn a pipeline thread")
}

/// A pipeline thread's result; a panic becomes an error.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, Result<T, RuntimeError>>) -> Result<T, RuntimeError> {
    handle.join().unwrap_or_else(|panic| Err(RuntimeError::WorkerPanicked(format!("{panic:?}"))))
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn snapshot_name(group: &str, partition: u32) -> String {
    format!("{group}-p{partition}")
}

/// Everything a worker needs, shared by all workers.
pub struct Pipeline {
    pub log: Arc<dyn Log>,
    pub snapshots: Arc<dyn SnapshotStore>,
    pub model: Arc<dyn FraudModel>,
    pub metrics: Arc<Metrics>,
    pub config: PipelineConfig,
    /// Where decisions and postings are copied as records (PostgreSQL); `None`: only the log.
    pub record_store: Option<std::sync::Mutex<Box<dyn paystream_storage::records::RecordStore>>>,
    /// Where decisions are copied as payment history and daily aggregates (ScyllaDB);
    /// `None`: not copied.
    pub history_store: Option<std::sync::Mutex<Box<dyn paystream_storage::history::HistoryStore>>>,
    /// The consumer group deciding which input partitions this process owns (Kafka);
    /// `None`: all of them.
    pub membership: Option<Arc<dyn Membership>>,
}

impl Pipeline {
    /// A pipeline on `log` with its own metrics, copying outputs to no store and owning
    /// every partition (set the other fields for a record or history store, shared
    /// metrics or a consumer group).
    pub fn new(
        log: Arc<dyn Log>,
        snapshots: Arc<dyn SnapshotStore>,
        model: Arc<dyn FraudModel>,
        config: PipelineConfig,
    ) -> Pipeline {
        Pipeline {
            log,
            snapshots,
            model,
            metrics: Arc::new(Metrics::new()),
            config,
            record_store: None,
            history_store: None,
            membership: None,
        }
    }

    /// Runs the pipeline until `mode` says stop. Returns after every worker has committed
    /// its last batch and snapshotted its partitions.
    pub fn run(&self, mode: RunMode, control: &RunControl) -> Result<RunReport, RuntimeError> {
        let config = &self.config;
        config.operators.validate()?;
        if config.workers == 0 || config.batch_records_max == 0 || config.batch_records_max > BATCH_RECORDS_MAX_LIMIT {
            return Err(RuntimeError::Config(format!(
                "need workers >= 1 and 1 <= batch_records_max <= {BATCH_RECORDS_MAX_LIMIT}"
            )));
        }
        if config.terminal_read_ahead_ms <= config.operators.feature_allowed_lateness_ms {
            return Err(RuntimeError::Config(
                "terminal_read_ahead_ms must exceed operators.feature_allowed_lateness_ms".into(),
            ));
        }
        let topics = ensure_topics(self.log.as_ref(), config)?;
        if topics.payments.partitions > PIPELINE_PARTITIONS_MAX {
            return Err(RuntimeError::Config(format!("at most {PIPELINE_PARTITIONS_MAX} partitions")));
        }
        let workers = self.worker_count(&topics);
        let velocity_enabled = config.operators.velocity.enabled;
        if velocity_enabled
            && config.velocity_retention_ms
                < paystream_operators::VELOCITY_WINDOW_MS + config.operators.feature_allowed_lateness_ms
        {
            return Err(RuntimeError::Config(
                "velocity_retention_ms must cover the velocity window (1 h) plus the allowed lateness".into(),
            ));
        }
        if self.membership.is_some() && velocity_enabled && config.velocity_store == VelocityStore::Memory {
            return Err(RuntimeError::Config(
                "velocity in a consumer group needs a shared feature store (Redis): in-process counters would see \
                 only this process's partitions"
                    .into(),
            ));
        }
        let velocity = velocity_enabled
            .then(|| VelocitySource::new(&config.velocity_store, config.velocity_retention_ms))
            .transpose()?;
        if self.membership.is_some()
            && (self.needs_terminal_index() || self.record_store.is_some() || self.history_store.is_some())
        {
            return Err(RuntimeError::Config(
                "the terminal index (models reading terminal features) and the PostgreSQL and ScyllaDB sinks read \
                 every partition: in a consumer group they are not supported yet; run one process with static \
                 assignment"
                    .into(),
            ));
        }
        let operator_config =
            Arc::new(OperatorConfig { input_partitions: Some(topics.payments.partitions), ..config.operators.clone() });
        let model = ModelHandle::new(self.model.clone());
        self.metrics.model_loaded("", self.model.version());
        // Learned models read terminal features: run the terminal index.
        let stage = if self.needs_terminal_index() {
            self.register_terminal_index(&topics)?;
            Some(TerminalStage::restore(self, &topics)?)
        } else {
            None
        };
        let workers_finished = AtomicBool::new(false);
        let mut indexed = Ok(());
        let mut sunk = Ok(());
        let mut historied = Ok(());
        let results: Vec<Result<RunReport, RuntimeError>> = std::thread::scope(|scope| {
            let (topics, model, stage, workers_finished) = (&topics, &model, stage.as_ref(), &workers_finished);
            // Workers waiting for the index must not wait forever; a store that cannot
            // take the outputs must not be silently skipped: either failing stops the run.
            let indexer = stage.map(|stage| {
                spawn_stopping_on_error(scope, "paystream-terminal-index".into(), control, move || {
                    crate::terminals::run_indexer(self, topics, stage, control, workers_finished)
                })
            });
            let sink = self.record_store.as_ref().map(|store| {
                spawn_stopping_on_error(scope, "paystream-record-sink".into(), control, move || {
                    let mut store = store.lock().expect("record store lock");
                    crate::sink::run_sink(self, topics, store.as_mut(), control, workers_finished)
                })
            });
            let history = self.history_store.as_ref().map(|store| {
                spawn_stopping_on_error(scope, "paystream-history-sink".into(), control, move || {
                    let mut store = store.lock().expect("history store lock");
                    crate::history_sink::run_history_sink(self, topics, store.as_mut(), control, workers_finished)
                })
            });
            let watcher = config.model_file.as_ref().map(|path| {
                std::thread::Builder::new()
                    .name("paystream-model-watch".into())
                    .spawn_scoped(scope, move || {
                        crate::model::watch_model_file(
                            path,
                            config.operators.label_delay_ms,
                            Duration::from_millis(config.model_poll_ms),
                            model,
                            &self.metrics,
                            workers_finished,
                        )
                    })
                    .expect("spawn model watcher thread")
            });
            let context = WorkerContext {
                topics,
                operator_config,
                model,
                stage,
                velocity: velocity.as_ref(),
                mode,
                control,
                generation: None,
                workers,
                worker: 0,
                idle: Arc::new(IdleBarrier::new(1)),
            };
            let results = match &self.membership {
                None => {
                    let partitions: Vec<u32> = (0..topics.payments.partitions).collect();
                    self.metrics.assigned_partitions.set(partitions.len() as i64);
                    self.run_workers(scope, &partitions, workers, &context)
                }
                Some(membership) => vec![self.run_generations(membership.as_ref(), workers, &context)],
            };
            workers_finished.store(true, Ordering::SeqCst);
            if let Some(indexer) = indexer {
                indexed = joined(indexer);
            }
            if let Some(watcher) = watcher {
                let _ = watcher.join();
            }
            if let Some(sink) = sink {
                sunk = joined(sink);
            }
            if let Some(history) = history {
                historied = joined(history);
            }
            results
        });
        indexed?;
        sunk?;
        historied?;
        let mut report = RunReport::default();
        for result in results {
            report.add(&result?);
        }
        Ok(report)
    }

    pub fn needs_terminal_index(&self) -> bool {
        // Learned models read terminal features: run the terminal index.
        self.config.model_file.is_some() || self.model.uses_terminal_features()
    }

    /// Runs `workers` worker threads over `partitions` (partition i of the list goes to
    /// worker i % workers) until they stop; one report per worker.
    fn run_workers<'scope>(
        &'scope self,
        scope: &'scope std::thread::Scope<'scope, '_>,
        partitions: &[u32],
        workers: usize,
        context: &WorkerContext<'scope>,
    ) -> Vec<Result<RunReport, RuntimeError>> {
        let workers = workers.min(partitions.len()).max(1);
        let idle = Arc::new(IdleBarrier::new(workers));
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                let context = WorkerContext { workers, worker, idle: idle.clone(), ..context.clone() };
                let mine: Vec<u32> =
                    partitions.iter().enumerate().filter(|(i, _)| i % workers == worker).map(|(_, p)| *p).collect();
                // One worker failing stops the others cleanly.
                spawn_stopping_on_error(scope, format!("paystream-worker-{worker}"), context.control, move || {
                    self.run_worker(&mine, &context)
                })
            })
            .collect();
        handles.into_iter().map(joined).collect()
    }

    /// Runs the partitions the consumer group gives this process, one generation at a
    /// time: when the assignment moves, every worker finishes its batch, commits and
    /// snapshots, the generation is released (a revocation may then complete), and the
    /// workers start again on the new set, restoring state for partitions new to them.
    fn run_generations(
        &self,
        membership: &dyn Membership,
        workers: usize,
        context: &WorkerContext<'_>,
    ) -> Result<RunReport, RuntimeError> {
        let control = context.control;
        let mut report = RunReport::default();
        let mut seen = 0;
        let result = loop {
            if control.stopped() {
                break Ok(());
            }
            let (generation, partitions) =
                membership.wait_for_change(seen, Duration::from_millis(self.config.idle_wait_ms.max(100)));
            if generation == seen {
                continue;
            }
            seen = generation;
            self.metrics.assigned_partitions.set(partitions.len() as i64);
            self.metrics.rebalances.inc();
            if partitions.is_empty() {
                membership.released(generation);
                continue;
            }
            tracing::info!(generation, ?partitions, "running assigned partitions");
            if let Err(error) = self.log.refresh_positions() {
                break Err(error.into());
            }
            let context = WorkerContext { generation: Some((membership, generation)), ..context.clone() };
            let results = std::thread::scope(|scope| self.run_workers(scope, &partitions, workers, &context));
            membership.released(generation);
            let mut failed = None;
            for result in results {
                match result {
                    Ok(worker) => report.add(&worker),
                    Err(error) => failed = Some(error),
                }
            }
            if let Some(error) = failed {
                break Err(error);
            }
            if context.mode == RunMode::UntilIdle && membership.generation() == generation {
                break Ok(()); // our partitions are drained and nobody moved them
            }
        };
        membership.released(u64::MAX);
        result.map(|()| report)
    }

    /// Registers the terminal index's group at the input's start so retention keeps what
    /// it has not indexed, the first time it runs.
    fn register_terminal_index(&self, topics: &PipelineTopics) -> Result<(), RuntimeError> {
        Ok(register_group_from_start(self.log.as_ref(), TERMINAL_INDEX_GROUP, &[&topics.payments, &topics.labels])?)
    }

    fn restore(&self, topics: &PipelineTopics, processor: &mut PartitionProcessor) -> Result<(), RuntimeError> {
        let started = Instant::now();
        let partition = processor.partition();
        let changelog_start = self.log.offsets(&topics.changelog, partition)?.start;
        let mut offset = match self.snapshots.load(&snapshot_name(&self.config.group_id, partition))? {
            Some(snapshot) => {
                processor.restore_snapshot(&snapshot.state)?;
                snapshot.changelog_offset
            }
            None => 0,
        };
        if offset < changelog_start {
            return Err(RuntimeError::Restore {
                partition,
                why: format!("changelog starts at {changelog_start} but the snapshot covers only up to {offset}"),
            });
        }
        let mut ops = 0usize;
        // Every transaction its previous owner committed, markers written or not.
        offset = read_to_written_end(self.log.as_ref(), &topics.changelog, partition, offset, 1_024, |record| {
            ops += processor.apply_changelog(&record.value)?;
            Ok::<(), RuntimeError>(())
        })?;
        self.metrics.restore_seconds.observe(started.elapsed().as_secs_f64());
        tracing::info!(
            partition,
            changelog_offset = offset,
            ops,
            seconds = started.elapsed().as_secs_f64(),
            "restored partition state"
        );
        Ok(())
    }

    fn snapshot(&self, topics: &PipelineTopics, tasks: &[PartitionTask]) -> Result<(), RuntimeError> {
        // The snapshot group's positions only keep retention off the changelog still needed.
        let protect_changelog = self.log.retention_keeps_unread();
        let mut transaction = Transaction::new();
        for task in tasks {
            let started = Instant::now();
            let partition = task.processor.partition();
            // After every record of this partition's committed batches (the worker waited
            // for its commits), even where the log has not made them visible yet.
            let changelog_offset = self.log.written_end(&topics.changelog, partition)?;
            let snapshot = Snapshot { changelog_offset, state: task.processor.snapshot() };
            self.snapshots.save(&snapshot_name(&self.config.group_id, partition), &snapshot)?;
            if protect_changelog {
                transaction.set_position(SNAPSHOT_GROUP, &topics.changelog, partition, changelog_offset);
            }
            self.metrics.snapshot_seconds.observe(started.elapsed().as_secs_f64());
        }
        self.log.commit(transaction)?;
        Ok(())
    }

    /// Where the group resumes reading `topic`'s `partition`: its committed position, or
    /// the log start; an error if retention deleted input it had not read.
    fn start_position(&self, topic: &Topic, partition: u32) -> Result<u64, RuntimeError> {
        let offsets = self.log.offsets(topic, partition)?;
        let next_offset =
            self.log.committed_position(&self.config.group_id, topic, partition)?.unwrap_or(offsets.start);
        if next_offset < offsets.start {
            return Err(RuntimeError::Restore {
                partition,
                why: format!(
                    "committed position {next_offset} of {} is below the log start {}: input was lost to retention",
                    topic.name, offsets.start
                ),
            });
        }
        Ok(next_offset)
    }

    fn run_worker(&self, partitions: &[u32], context: &WorkerContext<'_>) -> Result<RunReport, RuntimeError> {
        let (topics, control) = (context.topics, context.control);
        let mut tasks = Vec::with_capacity(partitions.len());
        let (_, model) = context.model.current();
        for &partition in partitions {
            let mut processor = PartitionProcessor::new(context.operator_config.clone(), model.clone(), partition);
            self.restore(topics, &mut processor)?;
            let next_offset = self.start_position(&topics.payments, partition)?;
            if let (Some(stage), Some(watermark)) = (context.stage, processor.state().max_event_time_ms()) {
                stage.set_payer_watermark(partition, watermark);
            }
            tasks.push(PartitionTask {
                processor,
                next_offset,
                legs: InternalInput::new(self.start_position(&topics.transfers, partition)?),
                entries: InternalInput::new(self.start_position(&topics.settlement_entries, partition)?),
                fetched: InputBuffer::default(),
                waiting_at_bound_ms: None,
                unindexed: None,
            });
        }

        self.update_lag(topics, &tasks)?;
        let tracker = CommitTracker::default();
        let (sender, receiver) = std::sync::mpsc::sync_channel::<CommitJob>(COMMIT_QUEUE_DEPTH_MAX);
        std::thread::scope(|scope| {
            let committer = std::thread::Builder::new()
                .name("paystream-committer".into())
                .spawn_scoped(scope, || self.commit_loop(receiver, control, &tracker, &context.idle))
                .expect("spawn committer thread");
            let worked = self.process_loop(&mut tasks, context, &sender, &tracker);
            drop(sender);
            let committed = joined(committer);
            let (mut report, committed) = (worked?, committed?);
            // Every batch is durable now: the final snapshot matches the changelog's end.
            self.snapshot(topics, &tasks)?;
            report.input_records = committed.input_records;
            report.commits = committed.commits;
            Ok(report)
        })
    }

    /// Reads, processes and hands batches to the committer until told to stop.
    fn process_loop(
        &self,
        tasks: &mut [PartitionTask],
        context: &WorkerContext<'_>,
        sender: &std::sync::mpsc::SyncSender<CommitJob>,
        tracker: &CommitTracker,
    ) -> Result<RunReport, RuntimeError> {
        let (config, topics, mode, control) = (&self.config, context.topics, context.mode, context.control);
        let mut velocity = context.velocity.map(|source| source.connect().map(|c| (source, c))).transpose()?;
        let mut model_generation = context.model.generation();
        let mut report = RunReport::default();
        let mut out = OutputBatch::default();
        let mut submitted = 0u64;
        let mut fetched_records = 0u64;
        let mut batches_since_snapshot = 0u32;
        let payments_topic_name = topics.payments.name.to_string();
        let worker_started = Instant::now();
        let mut lag_updated = Instant::now();
        let worker_rate_max =
            config.input_records_per_second_max.map(|rate| (rate as f64 / context.workers as f64).max(1.0));
        while context.keep_running() {
            if let Some(rate) = worker_rate_max {
                let due = Duration::from_secs_f64(fetched_records as f64 / rate);
                if let Some(wait) = due.checked_sub(worker_started.elapsed()) {
                    std::thread::sleep(wait.min(Duration::from_millis(config.idle_wait_ms)));
                    continue;
                }
            }
            if context.model.generation() != model_generation {
                let (generation, model) = context.model.current();
                for task in tasks.iter_mut() {
                    task.processor.set_model(model.clone());
                }
                model_generation = generation;
            }
            let sequence = self.log.commit_sequence();
            let started = Instant::now();
            let mut transaction = Transaction::new();
            let mut timestamps = Vec::new();
            let mut turn = Turn::default();
            for task in tasks.iter_mut() {
                let partition = task.processor.partition();
                out.clear();
                let consumed =
                    self.process_payments(task, context, &payments_topic_name, &mut velocity, &mut out, &mut turn)?;
                let mut advanced = false;
                if consumed > 0 {
                    let records = &task.fetched.records()[..consumed];
                    let next_offset = records[consumed - 1].offset + 1;
                    timestamps.extend(records.iter().map(|r| r.timestamp_ms));
                    task.fetched.consume(consumed);
                    if let (Some(stage), Some(watermark)) = (context.stage, task.processor.state().max_event_time_ms())
                    {
                        stage.set_payer_watermark(partition, watermark);
                    }
                    transaction.set_position(&config.group_id, &topics.payments, partition, next_offset);
                    task.next_offset = next_offset;
                    advanced = true;
                } else if task.fetched.is_empty() {
                    // No payments: take on the other partitions' settlement horizon
                    // rather than hold their windows open (nothing if already there).
                    task.processor.settlement_idle(&mut out);
                    advanced |= !out.state_ops.is_empty();
                }
                // Transfer legs for this partition's accounts, then settlement entries and
                // marks for its merchants, in the same transaction.
                let processor = &mut task.processor;
                advanced |=
                    self.read_internal(&mut task.legs, &topics.transfers, partition, &mut transaction, |inputs| {
                        processor.process_transfer_legs(&topics.transfers.name, inputs, &mut out)
                    })?;
                let entries = &topics.settlement_entries;
                advanced |= self.read_internal(&mut task.entries, entries, partition, &mut transaction, |inputs| {
                    processor.process_settlement_inputs(&entries.name, inputs, &mut out)
                })?;
                if !advanced {
                    continue;
                }
                self.write_outputs(topics, partition, &out, &mut transaction)?;
                report.counters.add(&out.counters);
                report.dead_letters += out.dead_letters.len() as u64;
                self.metrics.add_counters(&out.counters);
                let scores = self.metrics.fraud_scores.local();
                for decision in &out.decisions {
                    scores.observe(f64::from(decision.score));
                }
                scores.flush();
                for letter in &out.dead_letters {
                    self.metrics.dead_letter(letter.reason);
                }
            }
            if transaction.is_empty() {
                if mode == RunMode::UntilIdle && control.input_closed() {
                    // Idle: nothing of ours committing (it may hold legs for our own
                    // partitions), all our input read — and the same for every worker.
                    let commits_seen = context.idle.commits();
                    if tracker.wait_for(submitted).is_err() {
                        break; // the committer failed; its error is reported by the caller
                    }
                    if self.caught_up(topics, tasks)? && context.idle.idle(context.worker, commits_seen) {
                        break;
                    }
                }
                if turn.indexed {
                    // Read on: the index moves with every worker's reading.
                } else if turn.waiting {
                    // The terminal index is behind: other workers move it, soon.
                    std::thread::sleep(Duration::from_millis(1));
                } else {
                    self.log.wait_for_commit(sequence, Duration::from_millis(config.idle_wait_ms));
                }
                continue;
            }
            fetched_records += timestamps.len() as u64;
            context.idle.busy(context.worker);
            if sender.send(CommitJob { transaction, timestamps, started }).is_err() {
                break; // the committer failed; its error is reported by the caller
            }
            submitted += 1;
            if config.commit_each_batch_before_the_next && tracker.wait_for(submitted).is_err() {
                break; // the committer failed; its error is reported by the caller
            }
            // Lag asks the log for every partition's end (a broker round trip on Kafka): a
            // gauge, refreshed once per interval, not per batch.
            if lag_updated.elapsed() >= LAG_UPDATE_INTERVAL {
                self.update_lag(topics, tasks)?;
                lag_updated = Instant::now();
            }
            let remembered: usize = tasks.iter().map(|t| t.processor.state().remembered_payment_ids()).sum();
            self.metrics.remembered_payment_ids.set(remembered as i64);
            batches_since_snapshot += 1;
            if batches_since_snapshot >= config.snapshot_interval_batches {
                // A snapshot must not be ahead of the durable changelog.
                if tracker.wait_for(submitted).is_err() {
                    break;
                }
                self.snapshot(topics, tasks)?;
                batches_since_snapshot = 0;
            }
        }
        Ok(report)
    }

    /// Commits batches in order as the worker hands them over, overlapping the disk
    /// write and fsync of one batch with the processing of the next.
    fn commit_loop(
        &self,
        receiver: std::sync::mpsc::Receiver<CommitJob>,
        control: &RunControl,
        tracker: &CommitTracker,
        idle: &IdleBarrier,
    ) -> Result<RunReport, RuntimeError> {
        let mut report = RunReport::default();
        for job in receiver {
            let commit_started = Instant::now();
            if let Err(error) = self.log.commit(job.transaction) {
                tracker.fail(&error.to_string());
                control.stop();
                return Err(error.into());
            }
            self.record_batch(job.started, commit_started, &job.timestamps);
            report.input_records += job.timestamps.len() as u64;
            report.commits += 1;
            control.processed_records.fetch_add(job.timestamps.len() as u64, Ordering::Relaxed);
            idle.committed();
            tracker.done();
        }
        Ok(report)
    }

    fn worker_count(&self, topics: &PipelineTopics) -> usize {
        self.config.workers.min(topics.payments.partitions as usize).max(1)
    }

    fn update_lag(&self, topics: &PipelineTopics, tasks: &[PartitionTask]) -> Result<(), RuntimeError> {
        for task in tasks {
            let end = self.log.offsets(&topics.payments, task.processor.partition())?.end;
            self.metrics
                .lag_records
                .with_label_values(&[&*topics.payments.name, &task.processor.partition().to_string()])
                .set(end.saturating_sub(self.log.resume_offset(
                    &topics.payments,
                    task.processor.partition(),
                    task.next_offset,
                )) as i64);
        }
        Ok(())
    }

    /// Runs the operators over the task's next payments (fetched if none are pending)
    /// into `out`; returns how many it consumed (fewer when the terminal index must catch
    /// up first: `turn.waiting` is set; `turn.indexed` when it read payments into the index).
    fn process_payments(
        &self,
        task: &mut PartitionTask,
        context: &WorkerContext<'_>,
        payments_topic_name: &str,
        velocity: &mut Option<(&VelocitySource, Box<dyn WindowedCounters>)>,
        out: &mut OutputBatch,
        turn: &mut Turn,
    ) -> Result<usize, RuntimeError> {
        let (config, topics) = (&self.config, context.topics);
        let partition = task.processor.partition();
        match context.stage {
            Some(stage) => turn.indexed |= self.index_ahead(task, stage, topics)?,
            None if task.fetched.is_empty() => {
                let records =
                    self.log.fetch(&topics.payments, partition, task.next_offset, config.batch_records_max)?;
                // Parsed before processing, so the operators can hint the state of the
                // payments ahead.
                let parsed = records.iter().map(|r| Some(Payment::from_json(&r.value))).collect();
                task.fetched.push(records, parsed);
            }
            None => {}
        }
        if task.fetched.is_empty() {
            return Ok(0);
        }
        let n = task.fetched.len().min(config.batch_records_max);
        let (records, parsed) = task.fetched.front(n);
        let inputs = input_records(records);
        let batch = task.processor.plan_payments(payments_topic_name, &inputs, parsed);
        let batch = match context.stage {
            Some(stage) => {
                let ends = stage.input_ends(self.log.as_ref(), topics)?;
                let index = stage.read();
                let view = stage.view(&index, &ends);
                let complete_through_ms = view.complete_through_ms;
                if task.waiting_at_bound_ms == Some(complete_through_ms) {
                    turn.waiting = true; // the index has not moved since the last try
                    return Ok(0);
                }
                // The lock is held while the batch's terminal features are read, and no
                // longer: the other workers' payments wait for it.
                let read = batch.read_terminal_features(view);
                drop(index);
                let batch = read.featurize(out);
                task.waiting_at_bound_ms = (batch.consumed() < n).then_some(complete_through_ms);
                batch
            }
            None => batch.read_terminal_features(TerminalView::NONE).featurize(out),
        };
        let consumed = match velocity {
            Some((source, counters)) => {
                let totals = self.count_velocity(batch.velocity_events(), source, counters, context.control)?;
                batch.finish(Some(&totals), out)
            }
            None => batch.finish(None, out),
        };
        if consumed < n {
            turn.waiting = true;
            self.metrics.terminal_waits.inc();
        }
        Ok(consumed)
    }

    /// Reads one more batch of `task`'s payments into the terminal index, if it is due
    /// (never waits; see the `terminals` module doc): below the payer's position after a
    /// restart whose index snapshot is older; else into the buffer, parsed once for
    /// scoring too, until it holds `PAYMENT_BUFFER_BATCHES` batches; else past the buffer
    /// (indexed, not kept) while the partition is indexed no further than
    /// [`TerminalStage::read_until_ms`]. Returns whether it read any record.
    fn index_ahead(
        &self,
        task: &mut PartitionTask,
        stage: &TerminalStage,
        topics: &PipelineTopics,
    ) -> Result<bool, RuntimeError> {
        let batch = self.config.batch_records_max;
        let partition = task.processor.partition();
        if let Some(unindexed) = task.unindexed.take() {
            // Deferred last turn (the lock was taken): added now, waiting if need be, so
            // a partition's progress is held back for one turn at most.
            stage.index_payments(partition, &unindexed.entries, unindexed.progress);
        }
        let buffer_end = task.fetched.end_offset().unwrap_or(task.next_offset);
        // This worker is the only one to move its partitions' progress.
        let indexed = stage.payments_progress(partition);
        let (from, keep) = if indexed.position < task.next_offset {
            (indexed.position, false)
        } else if task.fetched.len() < PAYMENT_BUFFER_BATCHES * batch {
            (buffer_end, true)
        } else if indexed.max_event_time_ms <= stage.read_until_ms() {
            (indexed.position.max(buffer_end), false)
        } else {
            return Ok(false);
        };
        let records = self.log.fetch(&topics.payments, partition, from, batch)?;
        let mut progress = indexed;
        let mut entries = Vec::new();
        let mut parsed = Vec::with_capacity(if keep { records.len() } else { 0 });
        for record in &records {
            let payment = Payment::from_json(&record.value);
            if record.offset >= indexed.position
                && let Ok(payment) = &payment
            {
                entries.extend(paystream_operators::terminal_index_entry(payment));
                progress.max_event_time_ms = progress.max_event_time_ms.max(payment.event_time_ms);
            }
            if keep {
                parsed.push(Some(payment));
            }
        }
        progress.position =
            progress.position.max(read_position(self.log.as_ref(), &topics.payments, partition, from, &records));
        if (progress.position != indexed.position || !entries.is_empty())
            && !stage.try_index_payments(partition, &entries, progress)
        {
            self.metrics.terminal_index_deferred_batches.inc();
            task.unindexed = Some(UnindexedPayments { entries, progress });
        }
        let read = !records.is_empty();
        if keep {
            task.fetched.push(records, parsed);
        } else {
            self.metrics.terminal_index_only_records.inc_by(records.len() as u64);
        }
        // Deferred payments count as read: the worker's next turn comes at once and adds them.
        Ok(read || task.unindexed.is_some())
    }

    /// Counts a batch's velocity events in the feature store and reads their windows (one
    /// round trip). An unreachable store is retried, reconnecting, with backoff for
    /// `velocity_store_retry_ms`; then the run stops with the error (the batch is not
    /// committed; counts it made are idempotent, so its replay counts nothing twice).
    fn count_velocity(
        &self,
        events: &[paystream_operators::VelocityEvent],
        source: &VelocitySource,
        counters: &mut Box<dyn WindowedCounters>,
        control: &RunControl,
    ) -> Result<Vec<VelocityTotals>, RuntimeError> {
        let events: Vec<CounterEvent<'_>> = events
            .iter()
            .map(|e| CounterEvent {
                entity: &e.entity,
                event_id: &e.event_id,
                event_time_ms: e.event_time_ms,
                amount_minor: e.amount_minor,
            })
            .collect();
        let deadline = Instant::now() + Duration::from_millis(self.config.velocity_store_retry_ms);
        let mut backoff = Duration::from_millis(50);
        loop {
            let started = Instant::now();
            let error = match counters.add_and_windows(&events, VELOCITY_BUCKETS) {
                Ok(windows) => {
                    self.metrics.velocity_store_seconds.observe(started.elapsed().as_secs_f64());
                    return Ok(windows
                        .into_iter()
                        .map(|w| VelocityTotals { count: w.count, amount_minor: w.sum_minor })
                        .collect());
                }
                Err(error) => error,
            };
            self.metrics.velocity_store_errors.inc();
            if Instant::now() + backoff > deadline || control.stopped() {
                return Err(error.into());
            }
            tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "velocity feature store failed; retrying");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
            // A broken connection stays broken: start a new one (if that fails, so will the next try).
            if let Ok(fresh) = source.connect() {
                *counters = fresh;
            }
        }
    }

    /// Reads an internal input's next records, hands them to `process` and moves the
    /// group's position past them in `transaction`; false if there were none.
    fn read_internal(
        &self,
        input: &mut InternalInput,
        topic: &Topic,
        partition: u32,
        transaction: &mut Transaction,
        process: impl FnOnce(&[InputRecord<'_>]),
    ) -> Result<bool, RuntimeError> {
        let records = self.fetch_internal(input, topic, partition)?;
        let Some(last) = records.last() else { return Ok(false) };
        process(&input_records(&records));
        input.next_offset = last.offset + 1;
        transaction.set_position(&self.config.group_id, topic, partition, input.next_offset);
        Ok(true)
    }

    /// The next records of an internal input (transfer legs, settlement entries): none
    /// without asking the log while the partition was found idle less than
    /// `leg_poll_interval_ms` ago; then only if its end moved.
    fn fetch_internal(
        &self,
        input: &mut InternalInput,
        topic: &Topic,
        partition: u32,
    ) -> Result<Vec<crate::log::Record>, RuntimeError> {
        let interval = Duration::from_millis(self.config.leg_poll_interval_ms);
        if input.idle_since.is_some_and(|since| since.elapsed() < interval) {
            return Ok(Vec::new());
        }
        let next = self.log.resume_offset(topic, partition, input.next_offset);
        let records = if next < self.log.offsets(topic, partition)?.end {
            self.log.fetch(topic, partition, input.next_offset, self.config.batch_records_max)?
        } else {
            Vec::new()
        };
        input.idle_since = records.is_empty().then(Instant::now);
        Ok(records)
    }

    /// Every input of the tasks processed: payments, transfer legs and settlement
    /// entries. (What this worker writes to another worker's partitions is that worker's;
    /// with `--until-idle` and several workers, a leg written after its target's worker
    /// stopped waits for the next run, in clearing, and an entry in its open window.)
    fn caught_up(&self, topics: &PipelineTopics, tasks: &[PartitionTask]) -> Result<bool, RuntimeError> {
        for task in tasks {
            let partition = task.processor.partition();
            let inputs = [
                (&topics.payments, task.next_offset),
                (&topics.transfers, task.legs.next_offset),
                (&topics.settlement_entries, task.entries.next_offset),
            ];
            // Up to what was written, not what is visible yet: a commit's markers trail it
            // on Kafka, and a worker that stopped before another's last legs or entries
            // showed up would leave that worker waiting for it forever.
            for (topic, next_offset) in inputs {
                if self.log.resume_offset(topic, partition, next_offset) < self.log.written_end(topic, partition)? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn record_batch(&self, started: Instant, commit_started: Instant, timestamps: &[i64]) {
        let now = now_ms();
        self.metrics.commit_seconds.observe(commit_started.elapsed().as_secs_f64());
        self.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.commits.inc();
        self.metrics.input_records.inc_by(timestamps.len() as u64);
        let local = self.metrics.event_to_decision_seconds.local();
        let mut exact = self.metrics.latency_us.lock().expect("latency lock");
        for &timestamp in timestamps {
            let latency_ms = (now - timestamp).max(0);
            local.observe(latency_ms as f64 / 1_000.0);
            let _ = exact.record((latency_ms as u64 * 1_000).clamp(1, crate::metrics::LATENCY_US_MAX));
        }
        local.flush();
    }

    fn write_outputs(
        &self,
        topics: &PipelineTopics,
        partition: u32,
        out: &OutputBatch,
        transaction: &mut Transaction,
    ) -> Result<(), RuntimeError> {
        let now = now_ms();
        for decision in &out.decisions {
            transaction.send_with(&topics.decisions, decision.payer_account_id.as_bytes(), now, |buf| {
                decision.write_json(buf);
                Ok::<(), RuntimeError>(())
            })?;
        }
        for ledger in &out.ledger {
            let key = paystream_operators::ledger::record_key(ledger);
            transaction.send_with(&topics.ledger, key.as_bytes(), now, |buf| {
                ledger.write_json(buf);
                Ok::<(), RuntimeError>(())
            })?;
        }
        for settlement in &out.settlements {
            send_json(transaction, &topics.settlements, settlement.merchant_id.as_bytes(), now, settlement)?;
        }
        for leg in &out.transfer_legs {
            send_json(transaction, &topics.transfers, leg.key().as_bytes(), now, leg)?;
        }
        let key = partition.to_le_bytes();
        for (target, record) in paystream_operators::settlement::encode_inputs(&out.settlement_inputs) {
            transaction.send_to_partition(&topics.settlement_entries, target, &key, &record, now)?;
        }
        for letter in &out.dead_letters {
            transaction.send_to_partition_with(
                &topics.dead_letters,
                partition % topics.dead_letters.partitions,
                &[],
                now,
                |buf| serde_json::to_writer(buf, letter).map_err(RuntimeError::from),
            )?;
        }
        if !out.state_ops.is_empty() {
            let ops = encode_ops(&out.state_ops);
            transaction.send_to_partition(&topics.changelog, partition, &partition.to_le_bytes(), &ops, now)?;
        }
        Ok(())
    }
}

/// Log records as the operators take them.
fn input_records(records: &[crate::log::Record]) -> Vec<InputRecord<'_>> {
    records.iter().map(|r| InputRecord { offset: r.offset, key: &r.key, value: &r.value }).collect()
}

fn send_json<T: Serialize>(
    transaction: &mut Transaction,
    topic: &Topic,
    key: &[u8],
    timestamp_ms: i64,
    value: &T,
) -> Result<(), RuntimeError> {
    transaction.send_with(topic, key, timestamp_ms, |buf| serde_json::to_writer(buf, value).map_err(RuntimeError::from))
}
