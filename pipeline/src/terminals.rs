//! The terminal stage: the index of every partition's payments per terminal, with the
//! fraud labels reported for them, shared by all payer partitions of this process.
//!
//! The pipeline is keyed by payer, but terminal features need every partition's
//! payments at a terminal and the label stream. Each worker indexes its own partitions'
//! payments as it reads them, ahead of scoring them ([`PAYMENT_BUFFER_BATCHES`] batches
//! parsed ahead, each payment parsed once for both), and the indexer thread reads the
//! labels topic; both add to one [`TerminalIndex`], which the workers read.
//!
//! Terminal features are an as-of query (see `paystream_operators::features`), so they are exact
//! once the index holds every payment before a payment's event time t and every label
//! reported by t. Before scoring a batch, a payer partition asks
//! [`TerminalStage::complete_through_ms`] how far that holds: an input partition counts
//! as complete when the index holds everything the log held when the batch was fetched
//! (nothing that had arrived is missing), or through (newest event time indexed there −
//! allowed lateness) while it is still reading a backlog. The payer stops before the
//! first payment past the bound and resumes once the index has caught up. So a replay
//! of data already in the log scores exactly as the backtest does, and on a live stream
//! a payment waits only for input that arrived before it. Input arriving after payments
//! later than it were scored (beyond the lateness) is counted
//! (`paystream_terminal_late_inputs_total`): features served before it could not see it.
//!
//! No cycle of waits: indexing waits for nothing but the index's lock (held for a batch or
//! an expiry pass), never for scoring. A worker whose payments find the lock taken (the
//! other workers read the index for a whole batch) keeps them for its next turn instead
//! of waiting, and then adds them whatever the lock: a waiting writer would also hold
//! up every reader behind it. A worker indexes each of its partitions on
//! every turn of its loop, whether or not that partition's scoring waits — its buffer,
//! then ([`TerminalStage::read_until_ms`]) up to `terminal_read_ahead_ms` of event time
//! past the newest payer, which exceeds the lateness, so every payer's bound can be
//! reached. Past the buffer, payments are indexed and dropped, and parsed again when
//! their turn to be scored comes.
//!
//! Exactly once: the index is idempotent (a payment or label indexed twice counts
//! once). It is snapshotted with the input positions it covers (retention keeps the
//! input after them, group [`TERMINAL_INDEX_GROUP`]); a restart loads the snapshot
//! before any worker starts, and each worker indexes its partitions from the snapshot's
//! positions (before its own committed position if the snapshot is older). Bad labels
//! go to the dead-letter topic in one transaction with the pipeline group's label
//! positions, so a re-read does not dead-letter them twice. Invalid payments are the
//! payer's to dead-letter and are not indexed.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};
use std::time::{Duration, Instant};

use paystream_domain::time::MILLIS_PER_DAY;
use paystream_domain::{DeadLetter, FraudLabel};
use paystream_operators::TerminalView;
use paystream_operators::features::{Label, LabelApplied, TerminalIndex, TerminalIndexEntry, payment_hash};
use paystream_storage::Snapshot;
use serde::{Deserialize, Serialize};

use crate::log::{Log, Record, Topic, Transaction};
use crate::runtime::{Pipeline, PipelineTopics, RunControl, RuntimeError, now_ms};

/// Consumer group whose positions mark what the last terminal-index snapshot covers.
pub const TERMINAL_INDEX_GROUP: &str = "paystream-terminal-index";
/// Longest feature window: terminal payments older than the slowest partition's
/// watermark by this plus the label delay and lateness are expired.
const LONGEST_WINDOW_MS: i64 = 30 * MILLIS_PER_DAY;
/// Batches (of `batch_records_max`) of payments a worker keeps read, parsed and indexed
/// ahead of scoring, per partition: the one it scores and two more, so that payers
/// advancing together find each other's whole batch indexed (a batch of 2,048 can span
/// more event time than the read-ahead) instead of cutting theirs and committing it in
/// pieces.
pub(crate) const PAYMENT_BUFFER_BATCHES: usize = 3;
/// Indexer rounds between expiry passes (each scans every terminal).
const EXPIRY_INTERVAL_ROUNDS: u32 = 64;

/// What payer workers see of the terminal stage.
pub struct TerminalStage {
    index: RwLock<TerminalIndex>,
    /// Per input partition (payments partitions, then labels partitions): the position
    /// before which the index holds everything, and the newest event time read there.
    /// A payments partition's are written by the worker that owns it, a labels
    /// partition's by the indexer thread.
    indexed_positions: Vec<AtomicU64>,
    indexed_event_times_ms: Vec<AtomicI64>,
    lateness_ms: i64,
    read_ahead_ms: i64,
    /// Newest event time processed by each payer partition (`i64::MIN`: none yet).
    payer_watermarks: Vec<AtomicI64>,
    payments_partitions: usize,
    metrics: Arc<crate::metrics::Metrics>,
}

impl TerminalStage {
    /// The stage as the last snapshot left it (positions at the input's start if none):
    /// call before any worker starts indexing.
    pub(crate) fn restore(pipeline: &Pipeline, topics: &PipelineTopics) -> Result<TerminalStage, RuntimeError> {
        let (config, log) = (&pipeline.config, pipeline.log.as_ref());
        let started = Instant::now();
        let start = |topic: &Topic| -> Result<Vec<InputProgress>, RuntimeError> {
            (0..topic.partitions)
                .map(|p| Ok(InputProgress { position: log.offsets(topic, p)?.start, max_event_time_ms: i64::MIN }))
                .collect()
        };
        let (mut payments, mut labels) = (start(&topics.payments)?, start(&topics.labels)?);
        let mut index = TerminalIndex::new(config.operators.label_delay_ms);
        if let Some(snapshot) = pipeline.snapshots.load(&snapshot_name(&config.group_id))? {
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
        pipeline.metrics.restore_seconds.observe(started.elapsed().as_secs_f64());
        let inputs = payments.iter().chain(&labels);
        Ok(TerminalStage {
            index: RwLock::new(index),
            indexed_positions: inputs.clone().map(|p| AtomicU64::new(p.position)).collect(),
            indexed_event_times_ms: inputs.map(|p| AtomicI64::new(p.max_event_time_ms)).collect(),
            lateness_ms: config.operators.feature_allowed_lateness_ms,
            read_ahead_ms: config.terminal_read_ahead_ms,
            payer_watermarks: (0..topics.payments.partitions).map(|_| AtomicI64::new(i64::MIN)).collect(),
            payments_partitions: payments.len(),
            metrics: pipeline.metrics.clone(),
        })
    }

    /// A read guard on the index.
    pub fn read(&self) -> RwLockReadGuard<'_, TerminalIndex> {
        self.timed_lock(|| self.index.read().expect("terminal index lock"))
    }

    /// A write guard on the index.
    fn write(&self) -> RwLockWriteGuard<'_, TerminalIndex> {
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

    fn progress(&self, input: usize) -> InputProgress {
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

    /// Adds payments (payment hash, terminal hash, event time) read from `partition` of
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
    fn late_before_ms(&self) -> i64 {
        self.slowest_payer_ms().map_or(i64::MIN, |w| w.saturating_sub(self.lateness_ms))
    }

    /// The oldest watermark among payer partitions that have one.
    fn slowest_payer_ms(&self) -> Option<i64> {
        self.payer_watermarks.iter().map(|w| w.load(Ordering::Acquire)).filter(|w| *w != i64::MIN).min()
    }

    /// The newest watermark among payer partitions.
    fn fastest_payer_ms(&self) -> Option<i64> {
        self.payer_watermarks.iter().map(|w| w.load(Ordering::Acquire)).filter(|w| *w != i64::MIN).max()
    }

    /// Publishes how far the index holds `input` (call after updating the index).
    fn publish(&self, input: usize, progress: InputProgress) {
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
struct IndexSnapshot {
    payments: Vec<InputProgress>,
    labels: Vec<InputProgress>,
    index: Vec<u8>,
}

/// Where to read `partition` next after fetching `records` from `from`: past the last
/// record, and past offsets the log knows hold none (Kafka's transaction markers).
pub(crate) fn read_position(log: &dyn Log, topic: &Topic, partition: u32, from: u64, records: &[Record]) -> u64 {
    log.resume_offset(topic, partition, records.last().map_or(from, |r| r.offset + 1))
}

fn snapshot_name(group: &str) -> String {
    format!("{group}-terminal-index")
}

/// Reads the labels topic into the index, expires old payments and snapshots the index,
/// until `finished` says the workers are done (the workers index the payments).
pub(crate) fn run_indexer(
    pipeline: &Pipeline,
    topics: &PipelineTopics,
    stage: &TerminalStage,
    control: &RunControl,
    finished: &std::sync::atomic::AtomicBool,
) -> Result<(), RuntimeError> {
    let config = &pipeline.config;
    let log = pipeline.log.as_ref();
    let label_inputs = stage.payments_partitions..stage.indexed_positions.len();
    let mut labels: Vec<InputProgress> = label_inputs.clone().map(|i| stage.progress(i)).collect();
    // Labels before these positions were dead-lettered already (if bad).
    let mut labels_committed = Vec::with_capacity(labels.len());
    for (p, progress) in labels.iter().enumerate() {
        let committed = log.committed_position(&config.group_id, &topics.labels, p as u32)?;
        labels_committed.push(committed.unwrap_or(progress.position));
    }

    let horizon_slack_ms =
        config.operators.feature_allowed_lateness_ms + config.operators.label_delay_ms + LONGEST_WINDOW_MS;
    let mut rounds = 0u32;
    let mut rounds_since_snapshot = 0u32;
    let mut new_labels: Vec<(u64, Label)> = Vec::new();
    let mut payments_positions_before = 0u64;
    loop {
        // Read after the flag, so the last round sees everything the workers committed.
        let done = finished.load(Ordering::SeqCst) || control.stopped();
        let sequence = log.commit_sequence();
        new_labels.clear();
        let mut read_any = false;
        // Labels are read ahead as far as payments are (see the module doc).
        let read_until_ms = stage.read_until_ms();
        let mut transaction = Transaction::new();
        let wall_ms = now_ms();
        for (p, progress) in labels.iter_mut().enumerate() {
            if progress.max_event_time_ms > read_until_ms {
                continue;
            }
            let records = log.fetch(&topics.labels, p as u32, progress.position, config.batch_records_max)?;
            for record in &records {
                match FraudLabel::parse(&record.value) {
                    Ok((label, reported_at_ms)) => {
                        new_labels.push((
                            payment_hash(&label.payment_id),
                            Label { is_fraud: label.is_fraud, reported_at_ms },
                        ));
                        progress.max_event_time_ms = progress.max_event_time_ms.max(reported_at_ms);
                    }
                    Err(rejection) if record.offset >= labels_committed[p] => {
                        pipeline.metrics.dead_letter(rejection.reason);
                        let letter = DeadLetter::new(
                            rejection,
                            &topics.labels.name,
                            p as u32,
                            record.offset,
                            &record.key,
                            &record.value,
                        );
                        transaction.send_to_partition_with(
                            &topics.dead_letters,
                            p as u32 % topics.dead_letters.partitions,
                            &[],
                            wall_ms,
                            |buf| serde_json::to_writer(buf, &letter).map_err(RuntimeError::from),
                        )?;
                    }
                    Err(_) => {} // dead-lettered before the restart
                }
            }
            progress.position = read_position(log, &topics.labels, p as u32, progress.position, &records);
            if progress.position > labels_committed[p] {
                transaction.set_position(&config.group_id, &topics.labels, p as u32, progress.position);
                labels_committed[p] = progress.position;
            }
            read_any |= !records.is_empty();
        }
        if !transaction.is_empty() {
            log.commit(transaction)?;
        }
        if !new_labels.is_empty() {
            let late_before_ms = stage.late_before_ms();
            let late = new_labels.iter().filter(|(_, l)| l.reported_at_ms < late_before_ms).count();
            pipeline.metrics.terminal_late_inputs.inc_by(late as u64);
            let mut index = stage.write();
            for &(id, label) in &new_labels {
                let result = match index.add_label(id, label) {
                    LabelApplied::Attached => "attached",
                    LabelApplied::Pending => "pending",
                };
                pipeline.metrics.labels.with_label_values(&[result]).inc();
            }
        }
        for (input, progress) in label_inputs.clone().zip(&labels) {
            stage.publish(input, *progress);
        }
        let read_through_ms = (0..stage.indexed_positions.len()).map(|i| stage.progress(i).max_event_time_ms).min();
        let read_through_s = read_through_ms.unwrap_or(0).max(0) as f64 / 1_000.0;
        pipeline.metrics.terminal_read_through_timestamp_seconds.set(read_through_s);

        rounds += 1;
        if rounds.is_multiple_of(EXPIRY_INTERVAL_ROUNDS)
            && let Some(slowest) = stage.slowest_payer_ms()
        {
            stage.write().expire(slowest.saturating_sub(horizon_slack_ms));
        }
        let (_, indexed, pending) = stage.read().sizes();
        pipeline.metrics.terminal_index_payments.set(indexed as i64);
        pipeline.metrics.terminal_index_pending_labels.set(pending as i64);

        // Snapshot about as often as before the workers indexed payments: by the rounds
        // in which anything (payments or labels) moved.
        let payments_positions: u64 = (0..stage.payments_partitions).map(|i| stage.progress(i).position).sum();
        if read_any || payments_positions != payments_positions_before {
            payments_positions_before = payments_positions;
            rounds_since_snapshot += 1;
        }
        if done {
            break;
        }
        if rounds_since_snapshot >= config.snapshot_interval_batches {
            save_snapshot(pipeline, topics, stage)?;
            rounds_since_snapshot = 0;
        }
        if !read_any {
            log.wait_for_commit(sequence, Duration::from_millis(config.idle_wait_ms.min(10)));
        }
    }
    save_snapshot(pipeline, topics, stage)
}

fn save_snapshot(pipeline: &Pipeline, topics: &PipelineTopics, stage: &TerminalStage) -> Result<(), RuntimeError> {
    let started = Instant::now();
    // Positions first, then the index: workers add payments before publishing a position,
    // so the index holds at least what the positions say (more is harmless: idempotent).
    let inputs: Vec<InputProgress> = (0..stage.indexed_positions.len()).map(|i| stage.progress(i)).collect();
    let (payments, labels) = inputs.split_at(stage.payments_partitions);
    let snapshot =
        IndexSnapshot { payments: payments.to_vec(), labels: labels.to_vec(), index: stage.read().to_snapshot_bytes() };
    let state = postcard::to_stdvec(&snapshot).expect("encoding to a Vec cannot fail");
    pipeline.snapshots.save(&snapshot_name(&pipeline.config.group_id), &Snapshot { changelog_offset: 0, state })?;
    let mut transaction = Transaction::new();
    for (p, progress) in payments.iter().enumerate() {
        transaction.set_position(TERMINAL_INDEX_GROUP, &topics.payments, p as u32, progress.position);
    }
    for (p, progress) in labels.iter().enumerate() {
        transaction.set_position(TERMINAL_INDEX_GROUP, &topics.labels, p as u32, progress.position);
    }
    pipeline.log.commit(transaction)?;
    pipeline.metrics.snapshot_seconds.observe(started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(payments_partitions: usize) -> TerminalStage {
        TerminalStage {
            index: RwLock::new(TerminalIndex::new(7 * MILLIS_PER_DAY)),
            indexed_positions: (0..payments_partitions).map(|_| AtomicU64::new(0)).collect(),
            indexed_event_times_ms: (0..payments_partitions).map(|_| AtomicI64::new(i64::MIN)).collect(),
            lateness_ms: 3_600_000,
            read_ahead_ms: 7_200_000,
            payer_watermarks: (0..payments_partitions).map(|_| AtomicI64::new(i64::MIN)).collect(),
            payments_partitions,
            metrics: Arc::new(crate::metrics::Metrics::new()),
        }
    }

    /// A worker that finds the lock taken changes nothing: neither the index nor the
    /// progress other partitions' bounds read, so no payment is scored as if the batch
    /// were indexed; adding it later publishes both.
    #[test]
    fn payments_finding_the_lock_taken_change_nothing_until_added() {
        let stage = stage(2);
        let payments = [(11, 7, 1_000), (12, 7, 2_000)];
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
