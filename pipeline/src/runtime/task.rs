//! What a worker holds: its context (the run's plus its place among the workers) and,
//! per partition it owns, a task with the processor and its read positions.

use std::sync::Arc;

use paystream_operators::{OperatorConfig, PartitionProcessor, TerminalIndexEntry};

use super::idle::IdleBarrier;
use super::input::{InputBuffer, InternalInput};
use crate::connectors::model_file::ModelHandle;
use crate::connectors::terminal_index::{InputProgress, TerminalStage};
use crate::connectors::velocity::VelocitySource;
use crate::context::RunContext;
use crate::control::RunMode;
use crate::log::Membership;

/// What a worker has: the run's context and its own place among the workers.
#[derive(Clone)]
pub(super) struct WorkerContext<'a> {
    pub(super) run: RunContext<'a>,
    pub(super) operator_config: Arc<OperatorConfig>,
    pub(super) model: &'a ModelHandle,
    pub(super) stage: Option<&'a TerminalStage>,
    /// With velocity enabled.
    pub(super) velocity: Option<&'a VelocitySource>,
    pub(super) mode: RunMode,
    /// The consumer group generation the workers run; they stop when it moves.
    pub(super) generation: Option<(&'a dyn Membership, u64)>,
    /// Worker threads running now (the input rate cap is shared among them).
    pub(super) workers: usize,
    /// This worker's index among them.
    pub(super) worker: usize,
    /// When the workers of an `UntilIdle` run may stop, together.
    pub(super) idle: Arc<IdleBarrier>,
}

impl WorkerContext<'_> {
    pub(super) fn keep_running(&self) -> bool {
        !self.run.control.stopped() && self.generation.is_none_or(|(membership, g)| membership.generation() == g)
    }
}

pub(super) struct PartitionTask {
    pub(super) processor: PartitionProcessor,
    /// The first input offset not yet processed (committed with the batch).
    pub(super) next_offset: u64,
    /// The partition of `paystream-transfers`.
    pub(super) legs: InternalInput,
    /// The partition of `paystream-settlement-entries`.
    pub(super) entries: InternalInput,
    /// Records fetched and parsed but not processed yet (a batch that stopped to wait for
    /// the terminal index keeps its tail here instead of fetching it again; with a
    /// terminal stage, up to `PAYMENT_BUFFER_BATCHES` batches, indexed too).
    pub(super) fetched: InputBuffer,
    /// The terminal index's bound when processing last stopped to wait: nothing to try
    /// until it moves.
    pub(super) waiting_at_bound_ms: Option<i64>,
    /// Payments read for the terminal index whose lock was taken: added on the next turn.
    pub(super) unindexed: Option<UnindexedPayments>,
}

/// What a worker's turn over its partitions found, beyond what it committed.
#[derive(Default)]
pub(super) struct Turn {
    /// Some partition stopped to wait for the terminal index.
    pub(super) waiting: bool,
    /// Payments were read into the terminal index (other partitions may move on).
    pub(super) indexed: bool,
}

/// Payments read from a partition for the terminal index but not added yet, and how far the partition is indexed with them.
pub(super) struct UnindexedPayments {
    pub(super) entries: Vec<TerminalIndexEntry>,
    pub(super) progress: InputProgress,
}
