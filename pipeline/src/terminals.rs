//! The terminal stage: the index of every partition's payments per terminal, with the
//! fraud labels reported for them, shared by all payer partitions of this process.
//!
//! The pipeline is keyed by payer, but terminal features need every partition's
//! payments at a terminal and the label stream. The indexer thread reads the payments
//! topic (all partitions) and the labels topic on its own — it depends on no pipeline
//! worker, so nothing can wait in a cycle — and maintains a [`TerminalIndex`].
//!
//! Terminal features are an as-of query (see `reference_features`), so they are exact
//! once the index holds every payment before a payment's event time t and every label
//! reported by t. Before scoring a batch, a payer partition asks
//! [`TerminalStage::complete_through_ms`] how far that holds: an input partition counts
//! as complete when the indexer has read everything the log held when the batch was
//! fetched (nothing that had arrived is missing), or through (newest event time read
//! there − allowed lateness) while it is still reading a backlog. The payer stops before
//! the first payment past the bound and resumes once the indexer has caught up. So a
//! replay of data already in the log scores exactly as the backtest does, and on a live
//! stream a payment waits only for input that arrived before it. Input arriving after
//! payments later than it were scored (beyond the lateness) is counted
//! (`paystream_terminal_late_inputs_total`): features served before it could not see it.
//!
//! Exactly once: the index is idempotent (a payment or label indexed twice counts
//! once). It is snapshotted with the input positions it covers (retention keeps the
//! input after them, group [`TERMINAL_INDEX_GROUP`]); a restart loads the snapshot and
//! re-reads the input after it. Bad labels go to the dead-letter topic in one
//! transaction with the pipeline group's label positions, so a re-read does not
//! dead-letter them twice.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use paystream_domain::time::MILLIS_PER_DAY;
use paystream_domain::{DeadLetter, FraudLabel, Payment};
use paystream_operators::TerminalView;
use paystream_operators::reference_features::{Label, LabelApplied, TerminalIndex, key_hash, payment_hash};
use paystream_storage::Snapshot;
use serde::{Deserialize, Serialize};

use crate::log::{Log, Topic, Transaction};
use crate::runtime::{Pipeline, PipelineTopics, RunControl, RuntimeError, now_ms};

/// Consumer group whose positions mark what the last terminal-index snapshot covers.
pub const TERMINAL_INDEX_GROUP: &str = "paystream-terminal-index";
/// Longest feature window: terminal payments older than the slowest partition's
/// watermark by this plus the label delay and lateness are expired.
const LONGEST_WINDOW_MS: i64 = 30 * MILLIS_PER_DAY;
/// Batches (of `batch_records_max`) the indexer reads of each payments partition past
/// what its payer has fetched. Two: a worker fetches its partitions one after another,
/// so one partition's fetched end can trail another's current batch by one batch.
const PAYER_READ_AHEAD_BATCHES: u64 = 2;
/// Indexer rounds between expiry passes (each scans every terminal).
const EXPIRY_INTERVAL_ROUNDS: u32 = 64;

/// What payer workers see of the terminal stage.
pub struct TerminalStage {
    index: RwLock<TerminalIndex>,
    /// Per input partition (payments partitions, then labels partitions): the position
    /// before which the index holds everything, and the newest event time read there.
    indexed_positions: Vec<AtomicU64>,
    indexed_event_times_ms: Vec<AtomicI64>,
    lateness_ms: i64,
    /// Newest event time processed by each payer partition (`i64::MIN`: none yet).
    payer_watermarks: Vec<AtomicI64>,
    /// Per payments partition: the offset after the last record its payer has fetched.
    payer_fetched_ends: Vec<AtomicU64>,
}

impl TerminalStage {
    pub fn new(topics: &PipelineTopics, lateness_ms: i64, label_delay_ms: i64) -> TerminalStage {
        let inputs = (topics.payments.partitions + topics.labels.partitions) as usize;
        TerminalStage {
            index: RwLock::new(TerminalIndex::new(label_delay_ms)),
            indexed_positions: (0..inputs).map(|_| AtomicU64::new(0)).collect(),
            indexed_event_times_ms: (0..inputs).map(|_| AtomicI64::new(i64::MIN)).collect(),
            lateness_ms,
            payer_watermarks: (0..topics.payments.partitions).map(|_| AtomicI64::new(i64::MIN)).collect(),
            payer_fetched_ends: (0..topics.payments.partitions).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// A read guard on the index.
    pub fn read(&self) -> RwLockReadGuard<'_, TerminalIndex> {
        self.index.read().expect("terminal index lock")
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

    /// Records that the payer of `partition` has fetched the records before `end`.
    pub fn set_payer_fetched_end(&self, partition: u32, end: u64) {
        if let Some(slot) = self.payer_fetched_ends.get(partition as usize) {
            slot.fetch_max(end, Ordering::Release);
        }
    }

    /// The oldest watermark among payer partitions that have one.
    fn slowest_payer_ms(&self) -> Option<i64> {
        self.payer_watermarks.iter().map(|w| w.load(Ordering::Acquire)).filter(|w| *w != i64::MIN).min()
    }

    /// The newest watermark among payer partitions.
    fn fastest_payer_ms(&self) -> Option<i64> {
        self.payer_watermarks.iter().map(|w| w.load(Ordering::Acquire)).filter(|w| *w != i64::MIN).max()
    }

    /// Publishes what the index holds (call after updating it).
    fn publish(&self, inputs: impl Iterator<Item = InputProgress>) {
        for (i, progress) in inputs.enumerate() {
            self.indexed_event_times_ms[i].store(progress.max_event_time_ms, Ordering::Release);
            self.indexed_positions[i].store(progress.position, Ordering::Release);
        }
    }
}

/// How far the indexer has read one input partition.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct InputProgress {
    position: u64,
    max_event_time_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct IndexSnapshot {
    payments: Vec<InputProgress>,
    labels: Vec<InputProgress>,
    index: Vec<u8>,
}

struct InputState {
    progress: InputProgress,
}

fn snapshot_name(group: &str) -> String {
    format!("{group}-terminal-index")
}

/// Runs the indexer until `finished` says the workers are done.
pub(crate) fn run_indexer(
    pipeline: &Pipeline,
    topics: &PipelineTopics,
    stage: &TerminalStage,
    control: &RunControl,
    finished: &std::sync::atomic::AtomicBool,
) -> Result<(), RuntimeError> {
    let config = &pipeline.config;
    let log = pipeline.log.as_ref();
    let started = Instant::now();
    let start = |topic: &Topic| -> Result<Vec<InputState>, RuntimeError> {
        (0..topic.partitions)
            .map(|p| {
                Ok(InputState {
                    progress: InputProgress { position: log.offsets(topic, p)?.start, max_event_time_ms: i64::MIN },
                })
            })
            .collect()
    };
    let (mut payments, mut labels) = (start(&topics.payments)?, start(&topics.labels)?);
    if let Some(snapshot) = pipeline.snapshots.load(&snapshot_name(&config.group_id))? {
        let decoded: IndexSnapshot = postcard::from_bytes(&snapshot.state)
            .map_err(|e| RuntimeError::Restore { partition: 0, why: format!("terminal index snapshot: {e}") })?;
        if decoded.payments.len() != payments.len() || decoded.labels.len() != labels.len() {
            return Err(RuntimeError::Restore {
                partition: 0,
                why: "terminal index snapshot has a different partition count".into(),
            });
        }
        for (state, progress) in payments.iter_mut().zip(decoded.payments).chain(labels.iter_mut().zip(decoded.labels))
        {
            state.progress = progress;
        }
        *stage.index.write().expect("terminal index lock") = TerminalIndex::from_snapshot_bytes(&decoded.index)?;
    }
    // Labels before these positions were dead-lettered already (if bad).
    let mut labels_committed = Vec::with_capacity(labels.len());
    for (p, state) in labels.iter().enumerate() {
        let committed = log.committed_position(&config.group_id, &topics.labels, p as u32)?;
        labels_committed.push(committed.unwrap_or(state.progress.position));
    }
    pipeline.metrics.restore_seconds.observe(started.elapsed().as_secs_f64());

    let lateness_ms = config.operators.feature_allowed_lateness_ms;
    let read_ahead_ms = config.terminal_read_ahead_ms;
    let horizon_slack_ms = lateness_ms + config.operators.label_delay_ms + LONGEST_WINDOW_MS;
    let mut rounds = 0u32;
    let mut rounds_since_snapshot = 0u32;
    let mut new_payments: Vec<(u64, u64, i64)> = Vec::new();
    let mut new_labels: Vec<(u64, Label)> = Vec::new();
    loop {
        // Read after the flag, so the last round sees everything the workers committed.
        let done = finished.load(Ordering::SeqCst) || control.stopped();
        let sequence = log.commit_sequence();
        new_payments.clear();
        new_labels.clear();
        let mut read_any = false;
        // Read at most `terminal_read_ahead_ms` of event time past the newest payer: it
        // bounds the index and keeps the payments being scored near the end of each
        // terminal's entries. No deadlock: the read-ahead exceeds the lateness, so every
        // payer's bound can be reached without reading further. And read each payments
        // partition through `PAYER_READ_AHEAD_BATCHES` past what its payer has fetched
        // (also bounded): payers advancing together then find their whole batch complete,
        // rather than cut at the time read-ahead (a batch can span more event time than
        // that) and committed in pieces.
        let read_until_ms = stage.fastest_payer_ms().map_or(i64::MAX, |w| w.saturating_add(read_ahead_ms));
        for (p, state) in payments.iter_mut().enumerate() {
            let fetched_end = stage.payer_fetched_ends[p].load(Ordering::Acquire);
            let behind_payer = state.progress.position
                < fetched_end.saturating_add(PAYER_READ_AHEAD_BATCHES * config.batch_records_max as u64);
            if state.progress.max_event_time_ms > read_until_ms && !behind_payer {
                continue;
            }
            let records = log.fetch(&topics.payments, p as u32, state.progress.position, config.batch_records_max)?;
            for record in &records {
                // Invalid payments are the payer partition's to dead-letter; they are not
                // indexed. Nor are captures, voids, refunds and top-ups: terminal features
                // count payments and authorizations, as the payer's windows do.
                if let Ok(payment) = Payment::from_json(&record.value) {
                    if payment.kind.is_scored() {
                        let terminal = key_hash(payment.terminal_id().unwrap_or(""));
                        new_payments.push((payment_hash(&payment.payment_id), terminal, payment.event_time_ms));
                    }
                    state.progress.max_event_time_ms = state.progress.max_event_time_ms.max(payment.event_time_ms);
                }
            }
            advance(log, &topics.payments, p as u32, state, &records);
            read_any |= !records.is_empty();
        }
        let mut transaction = Transaction::new();
        let wall_ms = now_ms();
        for (p, state) in labels.iter_mut().enumerate() {
            if state.progress.max_event_time_ms > read_until_ms {
                continue;
            }
            let records = log.fetch(&topics.labels, p as u32, state.progress.position, config.batch_records_max)?;
            for record in &records {
                match FraudLabel::parse(&record.value) {
                    Ok((label, reported_at_ms)) => {
                        new_labels.push((
                            payment_hash(&label.payment_id),
                            Label { is_fraud: label.is_fraud, reported_at_ms },
                        ));
                        state.progress.max_event_time_ms = state.progress.max_event_time_ms.max(reported_at_ms);
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
            advance(log, &topics.labels, p as u32, state, &records);
            if state.progress.position > labels_committed[p] {
                transaction.set_position(&config.group_id, &topics.labels, p as u32, state.progress.position);
                labels_committed[p] = state.progress.position;
            }
            read_any |= !records.is_empty();
        }
        if !transaction.is_empty() {
            log.commit(transaction)?;
        }
        if !new_payments.is_empty() || !new_labels.is_empty() {
            // Inputs older than payments some partition already scored came too late for them.
            let late_before_ms = stage.slowest_payer_ms().map_or(i64::MIN, |w| w.saturating_sub(lateness_ms));
            let late = new_payments.iter().filter(|(_, _, t)| *t < late_before_ms).count()
                + new_labels.iter().filter(|(_, l)| l.reported_at_ms < late_before_ms).count();
            pipeline.metrics.terminal_late_inputs.inc_by(late as u64);
            let mut index = stage.index.write().expect("terminal index lock");
            index.add_payments(&new_payments);
            for &(id, label) in &new_labels {
                let result = match index.add_label(id, label) {
                    LabelApplied::Attached => "attached",
                    LabelApplied::Pending => "pending",
                };
                pipeline.metrics.labels.with_label_values(&[result]).inc();
            }
        }
        stage.publish(payments.iter().chain(&labels).map(|s| s.progress));
        let read_through_ms = payments.iter().chain(&labels).map(|s| s.progress.max_event_time_ms).min();
        pipeline.metrics.terminal_read_through_ms.set(read_through_ms.unwrap_or(0).max(0));

        rounds += 1;
        if rounds.is_multiple_of(EXPIRY_INTERVAL_ROUNDS)
            && let Some(slowest) = stage.slowest_payer_ms()
        {
            stage.index.write().expect("terminal index lock").expire(slowest.saturating_sub(horizon_slack_ms));
        }
        let (_, indexed, pending) = stage.read().sizes();
        pipeline.metrics.terminal_index_payments.set(indexed as i64);
        pipeline.metrics.terminal_index_pending_labels.set(pending as i64);

        if read_any {
            rounds_since_snapshot += 1;
        }
        if done {
            break;
        }
        if rounds_since_snapshot >= config.snapshot_interval_batches {
            save_snapshot(pipeline, topics, stage, &payments, &labels)?;
            rounds_since_snapshot = 0;
        }
        if !read_any {
            log.wait_for_commit(sequence, Duration::from_millis(config.idle_wait_ms.min(10)));
        }
    }
    save_snapshot(pipeline, topics, stage, &payments, &labels)
}

/// Moves a partition's position past `records`.
/// Moves an input's position past what was read (and past offsets without records).
fn advance(log: &dyn Log, topic: &Topic, partition: u32, state: &mut InputState, records: &[crate::log::Record]) {
    if let Some(last) = records.last() {
        state.progress.position = last.offset + 1;
    }
    state.progress.position = log.resume_offset(topic, partition, state.progress.position);
}

fn save_snapshot(
    pipeline: &Pipeline,
    topics: &PipelineTopics,
    stage: &TerminalStage,
    payments: &[InputState],
    labels: &[InputState],
) -> Result<(), RuntimeError> {
    let started = Instant::now();
    let snapshot = IndexSnapshot {
        payments: payments.iter().map(|s| s.progress).collect(),
        labels: labels.iter().map(|s| s.progress).collect(),
        index: stage.read().to_snapshot_bytes(),
    };
    let state = postcard::to_stdvec(&snapshot).expect("encoding to a Vec cannot fail");
    pipeline.snapshots.save(&snapshot_name(&pipeline.config.group_id), &Snapshot { changelog_offset: 0, state })?;
    let mut transaction = Transaction::new();
    for (p, state) in payments.iter().enumerate() {
        transaction.set_position(TERMINAL_INDEX_GROUP, &topics.payments, p as u32, state.progress.position);
    }
    for (p, state) in labels.iter().enumerate() {
        transaction.set_position(TERMINAL_INDEX_GROUP, &topics.labels, p as u32, state.progress.position);
    }
    pipeline.log.commit(transaction)?;
    pipeline.metrics.snapshot_seconds.observe(started.elapsed().as_secs_f64());
    Ok(())
}
