//! [`TerminalStage`]: the shared index, the positions it covers per input partition, and
//! what payer workers see of it (see the module docs of `terminal_index`).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};
use std::time::Instant;

use paystream_domain::time::MILLIS_PER_DAY;
use paystream_operators::TerminalView;
use paystream_operators::features::{TerminalIndex, TerminalIndexEntry};
use serde::{Deserialize, Serialize};

use crate::context::RunContext;
use crate::error::RuntimeError;
use crate::log::{Log, Record, Topic};
use crate::topics::PipelineTopics;

/// Consumer group whose positions mark what the last terminal-index snapshot covers.
pub const TERMINAL_INDEX_GROUP: &str = "paystream-terminal-index";
/// Longest feature window: terminal payments older than the slowest partition's
/// watermark by this plus the label delay and lateness are expired.
pub(super) const LONGEST_WINDOW_MS: i64 = 30 * MILLIS_PER_DAY;
/// Indexer rounds between expiry passes (each scans every terminal).
pub(super) const EXPIRY_INTERVAL_ROUNDS: u32 = 64;

/// What payer workers see of the terminal stage.
pub struct TerminalStage {
    index: RwLock<TerminalIndex>,
    /// Per input partition (payments partitions, then labels partitions): the position
    /// before which the index holds everything, and the newest event time read there.
    /// A payments partition's are written by the worker that owns it, a labels
    /// partition's by the indexer thread.
    pub(super) indexed_positions: Vec<AtomicU64>,
    indexed_event_times_ms: Vec<AtomicI64>,
    lateness_ms: i64,
    read_ahead_ms: i64,
    /// Newest event time processed by each payer partition (`i64::MIN`: none yet).
    payer_watermarks: Vec<AtomicI64>,
    pub(super) payments_partitions: usize,
    metrics: Arc<crate::metrics::Metrics>,
    /// The input positions of the snapshot the index was restored from (payments, then
    /// labels; the input's start without one).
    pub(super) restored_from: Vec<InputProgress>,
}

impl TerminalStage {
    /// The stage as the last snapshot left it (positions at the input's start if none):
    /// call before any worker starts indexing.
    pub(crate) fn restore(run: &RunContext<'_>) -> Result<TerminalStage, RuntimeError> {
        let (config, log, topics) = (run.config, run.log, run.topics);
        let started = Instant::now();
        let start = |topic: &Topic| -> Result<Vec<InputProgress>, RuntimeError> {
            (0..topic.partitions)
                .map(|p| Ok(InputProgress { position: log.offsets(topic, p)?.start, max_event_time_ms: i64::MIN }))
                .collect()
        };
        let (mut payments, mut labels) = (start(&topics.payments)?, start(&topics.labels)?);
        let mut index = TerminalIndex::new(config.operators.label_delay_ms);
        if let Some(snapshot) = run.snapshots.load(&snapshot_name(&config.group_id))? {
            let decoded: IndexSnapshot = postcard::from_bytes(&snapshot.state)
                .map_err(|e| RuntimeError::Restore { partition: 0, why: format!("terminal index snapshot: {e}") })?;
            if decoded.payments.len() != payments.len() || decoded.labels.len() != labels.len() {
                return Err(RuntimeError::Restore {
                    partition: 0,
                    why: "terminal index snapshot has a different partition count".into(),
                });
            }
            (payments, labels) = (decoded.payments, decoded.labels);
            index = TerminalIndex::from_snapshot_bytes(&decoded.index)?;
        }
        run.metrics.restore_seconds.observe(started.elapsed().as_secs_f64());
        let inputs = payments.iter().chain(&labels);
        Ok(TerminalStage {
            restored_from: inputs.clone().copied().collect(),
            index: RwLock::new(index),
            indexed_positions: inputs.clone().map(|p| AtomicU64::new(p.position)).collect(),
            indexed_event_times_ms: inputs.map(|p| AtomicI64::new(p.max_event_time_ms)).collect(),
            lateness_ms: config.operators.feature_allowed_lateness_ms,
            read_ahead_ms: config.terminal_read_ahead_ms,
            payer_watermarks: (0..topics.payments.partitions).map(|_| AtomicI64::new(i64::MIN)).collect(),
            payments_partitions: payments.len(),
            metrics: run.metrics.clone(),
        })
    }

    /// A read guard on the index.
    pub fn read(&self) -> RwLockReadGuard<'_, TerminalIndex> {
        self.timed_lock(|| self.index.read().expect("terminal index lock"))
    }

    /// A write guard on the index.
    pub(super) fn write(&self) -> RwLockWriteGuard<'_, TerminalIndex> {
        self.timed_lock(|| self.index.write().expect("terminal index lock"))
    }

    /// Takes a lock of the index, counting the wait.
    fn timed_lock<G>(&self, lock: impl FnOnce() -> G) -> G {
        let started = Instant::now();
        let guard = lock();
        self.metrics.terminal_index_lock_wait_seconds.inc_by(started.elapsed().as_secs_f64());
        guard
    }

    /// The end offsets of every input partition (payments, then labels).
    pub fn input_ends(&self, log: &dyn Log, topics: &PipelineTopics) -> Result<Vec<u64>, RuntimeError> {
        let mut ends = Vec::with_capacity(self.indexed_positions.len());
        for topic in [&topics.payments, &topics.labels] {
            for partition in 0..topic.partitions {
                ends.push(log.offsets(topic, partition)?.end);
            }
        }
        Ok(ends)
    }

    /// How far in event time the index is complete for a batch fetched when the inputs
    /// ended at `ends` (from [`TerminalStage::input_ends`]).
    pub fn complete_through_ms(&self, ends: &[u64]) -> i64 {
        let mut complete = i64::MAX;
        for (i, end) in ends.iter().enumerate() {
            // The event time is read before the position: both are published position
            // last, so a position that covers `end` comes with its event time.
            let read_ms = self.indexed_event_times_ms[i].load(Ordering::Acquire);
            if self.indexed_positions[i].load(Ordering::Acquire) < *end {
                complete = complete.min(read_ms.saturating_sub(self.lateness_ms));
            }
        }
        complete
    }

    pub fn view<'a>(&self, index: &'a TerminalIndex, ends: &[u64]) -> TerminalView<'a> {
        TerminalView { index: Some(index), complete_through_ms: self.complete_through_ms(ends) }
    }

    pub fn set_payer_watermark(&self, partition: u32, max_event_time_ms: i64) {
        if let Some(slot) = self.payer_watermarks.get(partition as usize) {
            slot.fetch_max(max_event_time_ms, Ordering::Release);
        }
    }

    /// How far the index holds `partition` of the payments topic.
    pub(crate) fn payments_progress(&self, partition: u32) -> InputProgress {
        self.progress(partition as usize)
    }

    pub(super) fn progress(&self, input: usize) -> InputProgress {
        InputProgress {
            position: self.indexed_positions[input].load(Ordering::Acquire),
            max_event_time_ms: self.indexed_event_times_ms[input].load(Ordering::Acquire),
        }
    }

    /// Inputs with event times up to this are read ahead: `terminal_read_ahead_ms` past
    /// the newest payer (everything while no payer has processed a payment).
    pub(crate) fn read_until_ms(&self) -> i64 {
        self.fastest_payer_ms().map_or(i64::MAX, |w| w.saturating_add(self.read_ahead_ms))
    }

    /// Adds payments read from `partition` of
    /// the payments topic, which is now indexed as far as `progress` says. Only the
    /// worker owning the partition calls this.
    pub(crate) fn index_payments(&self, partition: u32, payments: &[TerminalIndexEntry], progress: InputProgress) {
        let added = self.add_payments(partition, payments, progress, true);
        debug_assert!(added, "a waiting add always adds");
    }

    /// [`index_payments`](Self::index_payments) unless that would wait for the index's
    /// lock (another worker reading or writing it): then changes nothing and returns false.
    pub(crate) fn try_index_payments(
        &self,
        partition: u32,
        payments: &[TerminalIndexEntry],
        progress: InputProgress,
    ) -> bool {
        self.add_payments(partition, payments, progress, false)
    }

    fn add_payments(
        &self,
        partition: u32,
        payments: &[TerminalIndexEntry],
        progress: InputProgress,
        wait: bool,
    ) -> bool {
        if !payments.is_empty() {
            let mut index = if wait {
                self.write()
            } else {
                match self.index.try_write() {
                    Ok(index) => index,
                    Err(TryLockError::WouldBlock) => return false,
                    Err(TryLockError::Poisoned(e)) => panic!("terminal index lock: {e}"),
                }
            };
            // Payments older than payments some partition already scored came too late for them.
            let late_before_ms = self.late_before_ms();
            self.metrics
                .terminal_late_inputs
                .inc_by(payments.iter().filter(|p| p.event_time_ms < late_before_ms).count() as u64);
            index.add_payments(payments);
        }
        self.publish(partition as usize, progress);
        true
    }

    /// Inputs older than this came too late for payments some partition already scored.
    pub(super) fn late_before_ms(&self) -> i64 {
        self.slowest_payer_ms().map_or(i64::MIN, |w| w.saturating_sub(self.lateness_ms))
    }

    /// The oldest watermark among payer partitions that have one.
    pub(super) fn slowest_payer_ms(&self) -> Option<i64> {
        self.payer_watermarks.iter().map(|w| w.load(Ordering::Acquire)).filter(|w| *w != i64::MIN).min()
    }

    /// The newest watermark among payer partitions.
    fn fastest_payer_ms(&self) -> Option<i64> {
        self.payer_watermarks.iter().map(|w| w.load(Ordering::Acquire)).filter(|w| *w != i64::MIN).max()
    }

    /// Publishes how far the index holds `input` (call after updating the index).
    pub(super) fn publish(&self, input: usize, progress: InputProgress) {
        self.indexed_event_times_ms[input].store(progress.max_event_time_ms, Ordering::Release);
        self.indexed_positions[input].store(progress.position, Ordering::Release);
    }
}

/// How far the index holds one input partition.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct InputProgress {
    /// Everything before this offset is indexed.
    pub position: u64,
    /// The newest event time indexed there (`i64::MIN`: none).
    pub max_event_time_ms: i64,
}

#[derive(Serialize, Deserialize)]
pub(super) struct IndexSnapshot {
    pub(super) payments: Vec<InputProgress>,
    pub(super) labels: Vec<InputProgress>,
    pub(super) index: Vec<u8>,
}

/// Where to read `partition` next after fetching `records` from `from`: past the last
/// record, and past offsets the log knows hold none (Kafka's transaction markers).
pub(crate) fn read_position(log: &dyn Log, topic: &Topic, partition: u32, from: u64, records: &[Record]) -> u64 {
    log.resume_offset(topic, partition, records.last().map_or(from, |r| r.offset + 1))
}

pub(super) fn snapshot_name(group: &str) -> String {
    format!("{group}-terminal-index")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(payments_partitions: usize) -> TerminalStage {
        TerminalStage {
            index: RwLock::new(TerminalIndex::new(7 * MILLIS_PER_DAY)),
            indexed_positions: (0..payments_partitions).map(|_| AtomicU64::new(0)).collect(),
            indexed_event_times_ms: (0..payments_partitions).map(|_| AtomicI64::new(i64::MIN)).collect(),
            lateness_ms: paystream_domain::time::MILLIS_PER_HOUR,
            read_ahead_ms: 2 * paystream_domain::time::MILLIS_PER_HOUR,
            payer_watermarks: (0..payments_partitions).map(|_| AtomicI64::new(i64::MIN)).collect(),
            payments_partitions,
            metrics: Arc::new(crate::metrics::Metrics::new()),
            restored_from: Vec::new(),
        }
    }

    /// A worker that finds the lock taken changes nothing: neither the index nor the
    /// progress other partitions' bounds read, so no payment is scored as if the batch
    /// were indexed; adding it later publishes both.
    #[test]
    fn payments_finding_the_lock_taken_change_nothing_until_added() {
        let stage = stage(2);
        let entry = |payment_hash, event_time_ms| TerminalIndexEntry { payment_hash, terminal_hash: 7, event_time_ms };
        let payments = [entry(11, 1_000), entry(12, 2_000)];
        let progress = InputProgress { position: 2, max_event_time_ms: 2_000 };
        {
            let _reader = stage.read();
            assert!(!stage.try_index_payments(1, &payments, progress));
            assert_eq!(stage.payments_progress(1).position, 0, "nothing published");
            assert_eq!(stage.payments_progress(1).max_event_time_ms, i64::MIN);
        }
        assert_eq!(stage.read().sizes().1, 0, "nothing indexed");
        stage.index_payments(1, &payments, progress);
        assert_eq!(stage.read().sizes().1, 2);
        assert_eq!(stage.payments_progress(1).position, 2);
        assert_eq!(stage.payments_progress(1).max_event_time_ms, 2_000);
        // With the lock free, a try adds at once (the same payments again count once).
        assert!(stage.try_index_payments(1, &payments, InputProgress { position: 3, max_event_time_ms: 2_000 }));
        assert_eq!(stage.read().sizes().1, 2);
        assert_eq!(stage.payments_progress(1).position, 3);
        assert_eq!(stage.payments_progress(0).position, 0, "the other partition is untouched");
    }
}
