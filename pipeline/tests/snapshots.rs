//! The snapshotter over the embedded log: snapshots are taken while the worker runs, by
//! the snapshotter and not the worker; a process that dies mid-run restarts from them
//! (and the changelog after them) and decides every payment exactly once; each partition
//! keeps two generations.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use paystream_operators::{OperatorConfig, default_model};
use paystream_pipeline::log::Log;
use paystream_pipeline::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use paystream_pipeline::log::fault::CommitFault;
use paystream_pipeline::metrics::Metrics;
use paystream_pipeline::{Pipeline, PipelineConfig, RunControl, RunMode};
use paystream_storage::{FileSnapshotStore, SNAPSHOT_GENERATIONS_KEPT, Snapshot, SnapshotStore, StorageError};

use common::publish_payments;

const PAYMENTS: u32 = 4_000;
const PARTITIONS: u32 = 2;

fn config() -> PipelineConfig {
    PipelineConfig {
        partitions: PARTITIONS,
        workers: 1,
        batch_records_max: 20,
        snapshot_interval_batches: 5,
        snapshot_changelog_min_percent: 0,
        // Slow enough that the snapshotter, at the lowest priority, keeps up.
        input_records_per_second_max: Some(8_000),
        operators: OperatorConfig::default(),
        ..PipelineConfig::default()
    }
}

/// Saves through the file store; after the snapshotter's `saves_left`-th save the
/// process dies: every commit fails from then on, and so does every later save.
struct DieAfterSaves {
    inner: Arc<FileSnapshotStore>,
    saves_left: AtomicI64,
    log: Arc<CommitFault<Arc<EmbeddedLog>>>,
}

impl SnapshotStore for DieAfterSaves {
    fn save(&self, name: &str, snapshot: &Snapshot) -> Result<u64, StorageError> {
        if self.saves_left.load(Ordering::SeqCst) <= 0 {
            return Err(StorageError::Io {
                context: "injected fault: dead".into(),
                source: std::io::Error::other("dead"),
            });
        }
        let kept = self.inner.save(name, snapshot)?;
        let snapshotter = std::thread::current().name() == Some("paystream-snapshotter");
        if snapshotter && self.saves_left.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.log.fail_now();
        }
        Ok(kept)
    }

    fn load(&self, name: &str) -> Result<Option<Snapshot>, StorageError> {
        self.inner.load(name)
    }
}

fn decisions(log: &EmbeddedLog) -> u64 {
    let topic = log.topic("decisions").unwrap();
    (0..topic.partitions).map(|p| log.offsets(&topic, p).unwrap().end).sum()
}

fn open(dir: &Path) -> Arc<EmbeddedLog> {
    let config = EmbeddedLogConfig { fsync: false, compression: false, ..EmbeddedLogConfig::new(dir.join("log")) };
    Arc::new(EmbeddedLog::open(config).unwrap())
}

/// Runs until the process dies after the snapshotter's sixth save; `None` if the run
/// ended first (the snapshotter, at the lowest priority on a loaded machine, saved fewer).
fn run_until_crash(dir: &Path) -> Option<(Arc<EmbeddedLog>, Arc<FileSnapshotStore>, Arc<Metrics>)> {
    let log = open(dir);
    publish_payments(log.as_ref(), &config(), 0, PAYMENTS, 60_000);
    let files = Arc::new(FileSnapshotStore::open(dir.join("snapshots")).unwrap());
    let dying = Arc::new(CommitFault::after(log.clone(), i64::MAX));
    let store = DieAfterSaves { inner: files.clone(), saves_left: AtomicI64::new(6), log: dying.clone() };
    let metrics = Arc::new(Metrics::new());
    let pipeline = Pipeline::new(dying, Arc::new(store), default_model(&OperatorConfig::default()), config())
        .with_metrics(metrics.clone());
    let error = pipeline.run(RunMode::UntilIdle, &RunControl::new(true)).err()?;
    assert!(error.to_string().contains("injected fault"), "{error}");
    (decisions(&log) < u64::from(PAYMENTS)).then_some((log, files, metrics))
}

#[test]
fn snapshots_are_taken_while_running_and_a_crashed_run_restarts_from_them() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // The process dies mid-run right after the snapshotter's sixth save: it never
    // reaches its shutdown snapshot, so every snapshot on disk is the snapshotter's.
    let (log, files, metrics) = dirs
        .iter()
        .find_map(|dir| run_until_crash(dir.path()))
        .expect("in one of three runs the snapshotter saved six snapshots before the input ran out");
    assert!(decisions(&log) > 0);
    assert!(metrics.snapshot_seconds.get_sample_count() >= 6);
    assert_eq!(metrics.snapshot_wait_seconds.get(), 0.0, "the worker took no snapshot itself");

    let changelog = log.topic("paystream-changelog").unwrap();
    let mut covered = 0;
    for partition in 0..PARTITIONS {
        let name = format!("paystream-p{partition}");
        let generations = files.generations(&name).unwrap();
        assert!(generations.len() <= SNAPSHOT_GENERATIONS_KEPT, "{generations:?}");
        if let Some(snapshot) = files.load(&name).unwrap() {
            assert!(snapshot.changelog_offset <= log.offsets(&changelog, partition).unwrap().end);
            covered += snapshot.changelog_offset;
        }
    }
    assert!(covered > 0, "the snapshotter saved partitions' state mid-run");

    // A restart restores snapshot + changelog after it and finishes: one decision each.
    let metrics = Arc::new(Metrics::new());
    let pipeline = Pipeline::new(log.clone(), files.clone(), default_model(&OperatorConfig::default()), config())
        .with_metrics(metrics.clone());
    pipeline.run(RunMode::UntilIdle, &RunControl::new(true)).unwrap();
    assert_eq!(decisions(&log), u64::from(PAYMENTS));
    assert!(metrics.snapshot_wait_seconds.get() > 0.0, "the shutdown snapshot is the worker's");
    for partition in 0..PARTITIONS {
        let snapshot = files.load(&format!("paystream-p{partition}")).unwrap().unwrap();
        assert_eq!(snapshot.changelog_offset, log.offsets(&changelog, partition).unwrap().end);
    }
}
