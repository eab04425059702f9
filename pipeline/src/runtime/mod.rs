//! The runtime: partition workers that read input batches, run the operator chain and
//! commit (outputs + changelog + input positions) atomically.
//!
//! One OS thread per worker; each owns a fixed set of input partitions (partition `p`
//! belongs to worker `p % workers`) and, for each, a [`PartitionProcessor`] with its
//! state. A worker's loop is pull-based: it fetches at most `batch_records_max` records
//! per partition, processes them, and commits before fetching again, so the only queue
//! is the log itself and backpressure is implicit. Each worker's snapshotter thread
//! snapshots a standby copy of its partitions' state every `snapshot_interval_batches`
//! changelog records, and the worker snapshots its own on shutdown; a restart loads the
//! snapshot and replays the changelog after it.
//!
//! Shutdown: [`RunControl::stop`](crate::RunControl::stop) (SIGINT/SIGTERM in the
//! binary) stops intake; each worker finishes and commits its batch in flight, snapshots
//! its partitions and returns; the connectors then finish what was committed.
//!
//! Files: `task` (what a worker holds), `worker` (the loop), `payments` (one
//! partition's payments through the operators), `input` (the read-ahead buffer),
//! `internal` (transfer legs and settlement entries as inputs), `commit` (the committer
//! thread), `snapshotter` (snapshots off the decision path) and `feed` (its ops, in
//! process), `idle` (when an until-idle
//! run may stop), `state` (restore and the shutdown snapshot),
//! `output` (encoding outputs into the transaction), `generations` (static assignment or
//! a consumer group's generations).
//!
//! [`PartitionProcessor`]: paystream_operators::PartitionProcessor

mod commit;
mod feed;
mod generations;
mod idle;
mod input;
mod internal;
mod output;
mod payments;
mod snapshotter;
mod state;
mod task;
mod worker;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use paystream_models::FraudModel;
use paystream_operators::OperatorConfig;
use paystream_storage::SnapshotStore;
use paystream_storage::history::HistoryStore;
use paystream_storage::records::RecordStore;

use crate::config::PipelineConfig;
use crate::connectors::model_file::{ModelHandle, watch_model_file};
use crate::connectors::terminal_index::{TERMINAL_INDEX_GROUP, TerminalStage};
use crate::connectors::velocity::VelocitySource;
use crate::context::RunContext;
use crate::control::{RunControl, RunMode, RunReport, joined, spawn_stopping_on_error};
use crate::error::RuntimeError;
use crate::log::Log;
use crate::log::Membership;
use crate::metrics::Metrics;
use crate::topics::{ensure_topics, register_group_from_start};

pub use state::SNAPSHOT_GROUP;

/// A pipeline: the log, where snapshots go, the model, the settings and the optional
/// stores and consumer group. [`Pipeline::run`] runs it.
pub struct Pipeline {
    pub log: Arc<dyn Log>,
    pub snapshots: Arc<dyn SnapshotStore>,
    pub model: Arc<dyn FraudModel>,
    pub metrics: Arc<Metrics>,
    pub config: PipelineConfig,
    /// Where decisions and postings are copied as records (PostgreSQL); `None`: only the log.
    pub record_store: Option<Mutex<Box<dyn RecordStore>>>,
    /// Where decisions are copied as payment history and daily aggregates (ScyllaDB);
    /// `None`: not copied.
    pub history_store: Option<Mutex<Box<dyn HistoryStore>>>,
    /// The consumer group deciding which input partitions this process owns (Kafka);
    /// `None`: all of them.
    pub membership: Option<Arc<dyn Membership>>,
}

impl Pipeline {
    /// A pipeline on `log` with its own metrics, copying outputs to no store and owning
    /// every partition; the `with_*` methods add the rest.
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

    /// Reports to `metrics` (shared with an HTTP endpoint, say) instead of its own.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Pipeline {
        self.metrics = metrics;
        self
    }

    /// Copies decisions and postings into `store`, exactly once.
    pub fn with_record_store(mut self, store: Box<dyn RecordStore>) -> Pipeline {
        self.record_store = Some(Mutex::new(store));
        self
    }

    /// Copies decisions into `store` as payment history and daily aggregates.
    pub fn with_history_store(mut self, store: Box<dyn HistoryStore>) -> Pipeline {
        self.history_store = Some(Mutex::new(store));
        self
    }

    /// Runs the partitions `membership` assigns to this process.
    pub fn with_membership(mut self, membership: Arc<dyn Membership>) -> Pipeline {
        self.membership = Some(membership);
        self
    }

    /// Whether the run needs the terminal index: learned models read terminal features.
    pub fn needs_terminal_index(&self) -> bool {
        self.config.model_file.is_some() || self.model.uses_terminal_features()
    }

    /// Whether some part of the run reads every input partition — the terminal index and
    /// the PostgreSQL and ScyllaDB sinks do — so one process must own them all.
    pub fn reads_every_partition(&self) -> bool {
        self.needs_terminal_index() || self.record_store.is_some() || self.history_store.is_some()
    }

    /// Checks the settings against this pipeline's parts before anything starts.
    fn validate(&self) -> Result<(), RuntimeError> {
        let consumer_group = self.membership.is_some();
        self.config.validate(consumer_group)?;
        if consumer_group && self.reads_every_partition() {
            return Err(RuntimeError::Config(
                "the terminal index (models reading terminal features) and the PostgreSQL and ScyllaDB sinks read \
                 every partition: in a consumer group they are not supported yet; run one process with static \
                 assignment"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Runs the pipeline until `mode` says stop. Returns after every worker has committed
    /// its last batch and snapshotted its partitions, and every connector has finished.
    pub fn run(&self, mode: RunMode, control: &RunControl) -> Result<RunReport, RuntimeError> {
        self.validate()?;
        let config = &self.config;
        let topics = ensure_topics(self.log.as_ref(), config)?;
        config.validate_partitions(topics.payments.partitions)?;
        let velocity = config
            .operators
            .velocity
            .enabled
            .then(|| VelocitySource::new(&config.velocity_store, config.velocity_retention_ms))
            .transpose()?;
        let workers_finished = AtomicBool::new(false);
        let run = RunContext {
            log: self.log.as_ref(),
            snapshots: self.snapshots.as_ref(),
            metrics: &self.metrics,
            config,
            topics: &topics,
            control,
            workers_finished: &workers_finished,
        };
        let model = ModelHandle::new(self.model.clone());
        self.metrics.model_loaded("", self.model.version());
        let stage = if self.needs_terminal_index() {
            register_group_from_start(run.log, TERMINAL_INDEX_GROUP, &[&topics.payments, &topics.labels])?;
            Some(TerminalStage::restore(&run)?)
        } else {
            None
        };
        let workers = task::WorkerContext {
            run,
            operator_config: Arc::new(OperatorConfig {
                input_partitions: Some(topics.payments.partitions),
                ..config.operators.clone()
            }),
            model: &model,
            stage: stage.as_ref(),
            velocity: velocity.as_ref(),
            mode,
            generation: None,
            workers: config.workers.min(topics.payments.partitions as usize).max(1),
            worker: 0,
            idle: Arc::new(idle::IdleBarrier::new(1)),
        };
        self.metrics.workers.set(workers.workers as i64);
        self.metrics.input_partitions.set(i64::from(topics.payments.partitions));
        control.begin_restore(workers.workers);
        let mut results = Vec::new();
        let connectors = std::thread::scope(|scope| {
            let connectors = self.spawn_connectors(scope, run, &model, stage.as_ref());
            results = match &self.membership {
                None => {
                    let partitions: Vec<u32> = (0..topics.payments.partitions).collect();
                    self.metrics.assigned_partitions.set(partitions.len() as i64);
                    generations::run_workers(scope, &partitions, &workers)
                }
                Some(membership) => vec![workers.run_generations(membership.as_ref())],
            };
            workers_finished.store(true, Ordering::SeqCst);
            connectors.into_iter().map(joined).collect::<Vec<_>>()
        });
        for connector in connectors {
            connector?;
        }
        let mut report = RunReport::default();
        for result in results {
            report.add(&result?);
        }
        Ok(report)
    }

    /// Starts the threads beside the workers: the terminal indexer, the record and
    /// history sinks and the model watcher. Workers waiting for the index must not wait
    /// forever, and a store that cannot take the outputs must not be silently skipped:
    /// any of them failing stops the run.
    fn spawn_connectors<'scope>(
        &'scope self,
        scope: &'scope std::thread::Scope<'scope, '_>,
        run: RunContext<'scope>,
        model: &'scope ModelHandle,
        stage: Option<&'scope TerminalStage>,
    ) -> Vec<std::thread::ScopedJoinHandle<'scope, Result<(), RuntimeError>>> {
        let control = run.control;
        let mut threads = Vec::new();
        if let Some(stage) = stage {
            threads.push(spawn_stopping_on_error(scope, "paystream-terminal-index".into(), control, move || {
                crate::connectors::terminal_index::run_indexer(&run, stage)
            }));
        }
        if let Some(store) = &self.record_store {
            threads.push(spawn_stopping_on_error(scope, "paystream-record-sink".into(), control, move || {
                let mut store = store.lock().expect("record store lock");
                crate::connectors::record_sink::run_sink(&run, store.as_mut())
            }));
        }
        if let Some(store) = &self.history_store {
            threads.push(spawn_stopping_on_error(scope, "paystream-history-sink".into(), control, move || {
                let mut store = store.lock().expect("history store lock");
                crate::connectors::history_sink::run_history_sink(&run, store.as_mut())
            }));
        }
        if let Some(path) = &run.config.model_file {
            threads.push(spawn_stopping_on_error(scope, "paystream-model-watch".into(), control, move || {
                watch_model_file(path, &run, model);
                Ok(())
            }));
        }
        threads
    }
}
