//! The runtime over the embedded log: restarts resume exactly, and log retention never
//! deletes what a restart needs (unprocessed input, changelog after the last snapshot).

mod common;

use std::path::Path;
use std::sync::Arc;

use paystream_operators::{OperatorConfig, default_model};
use paystream_pipeline::log::Log;
use paystream_pipeline::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use paystream_pipeline::{Pipeline, PipelineConfig, RunControl, RunMode};
use paystream_storage::FileSnapshotStore;

use common::publish_payments;

fn log_config(dir: &Path) -> EmbeddedLogConfig {
    // Tiny segments and a tight size limit, so retention runs constantly.
    EmbeddedLogConfig {
        segment_bytes_max: 32 * 1024,
        retention_bytes_max: Some(96 * 1024),
        compression: false,
        ..EmbeddedLogConfig::new(dir.join("log"))
    }
}

fn config() -> PipelineConfig {
    PipelineConfig {
        partitions: 2,
        workers: 2,
        batch_records_max: 50,
        snapshot_interval_batches: 3,
        operators: OperatorConfig::default(),
        ..PipelineConfig::default()
    }
}

fn run(dir: &Path, log: Arc<EmbeddedLog>) {
    let snapshots = Arc::new(FileSnapshotStore::open(dir.join("snapshots")).unwrap());
    let pipeline = Pipeline::new(log, snapshots, default_model(&OperatorConfig::default()), config());
    pipeline.run(RunMode::UntilIdle, &RunControl::new(true)).unwrap();
}

#[test]
fn retention_keeps_what_restarts_need_and_restarts_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..4u32 {
        let log = Arc::new(EmbeddedLog::open(log_config(dir.path())).unwrap());
        if round > 0 {
            // A client retry of the previous round's last payment: the restored dedupe
            // state must recognise it, so it is not decided twice.
            publish_payments(log.as_ref(), &config(), round * 1_500 - 1, round * 1_500, 600_000);
        }
        publish_payments(log.as_ref(), &config(), round * 1_500, (round + 1) * 1_500, 600_000);
        run(dir.path(), log.clone());
        let decisions = log.topic("decisions").unwrap();
        let total: u64 = (0..decisions.partitions).map(|p| log.offsets(&decisions, p).unwrap().end).sum();
        assert_eq!(total, u64::from((round + 1) * 1_500), "round {round}: exactly one decision per payment");
        assert!(log.stored_bytes() < 2 * 1024 * 1024, "retention keeps the log bounded: {}", log.stored_bytes());
        if round > 0 {
            let payments = log.topic("payments").unwrap();
            assert!(log.offsets(&payments, 0).unwrap().start > 0, "retention deleted processed input");
        }
    }
}
