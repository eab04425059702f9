//! The indexer thread: reads the labels topic into the terminal index, expires old
//! payments and snapshots the index with the input positions it covers. It encodes a
//! snapshot itself (under the index's read lock) and hands the bytes to a writer thread,
//! so reading labels never waits for a snapshot's disk write.

use std::time::Duration;

use paystream_domain::{DeadLetter, FraudLabel};
use paystream_operators::features::{Label, LabelApplied, payment_hash};
use paystream_storage::Snapshot;

use super::stage::{
    EXPIRY_INTERVAL_ROUNDS, IndexSnapshot, InputProgress, LONGEST_WINDOW_MS, TERMINAL_INDEX_GROUP, TerminalStage,
    read_position, snapshot_name,
};
use crate::clock::now_ms;
use crate::context::RunContext;
use crate::control::joined;
use crate::error::RuntimeError;
use crate::log::Transaction;

/// Reads the labels topic into the index, expires old payments and snapshots the index,
/// until the workers are done (the workers index the payments).
pub(crate) fn run_indexer(run: &RunContext<'_>, stage: &TerminalStage) -> Result<(), RuntimeError> {
    std::thread::scope(|scope| index_loop(run, stage, scope))
}

fn index_loop<'scope>(
    run: &'scope RunContext<'_>,
    stage: &TerminalStage,
    scope: &'scope std::thread::Scope<'scope, '_>,
) -> Result<(), RuntimeError> {
    let (config, log, topics, metrics) = (run.config, run.log, run.topics, run.metrics);
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
    // The input positions of the snapshot kept before the newest (its fallback): at first
    // those of the snapshot the index was restored from.
    let mut kept_before = stage.restored_from.clone();
    let mut inputs_at_snapshot: u64 = kept_before.iter().map(|p| p.position).sum();
    // The snapshot being written on its own thread, if any.
    let mut writing: Option<std::thread::ScopedJoinHandle<'scope, Result<(), RuntimeError>>> = None;
    loop {
        // Read after the flag, so the last round sees everything the workers committed.
        let done = run.finishing();
        let sequence = log.commit_sequence();
        let read_any = read_labels(run, stage, &mut labels, &mut labels_committed, &mut new_labels)?;
        add_labels(run, stage, &new_labels);
        for (input, progress) in label_inputs.clone().zip(&labels) {
            stage.publish(input, *progress);
        }
        let read_through_ms = (0..stage.indexed_positions.len()).map(|i| stage.progress(i).max_event_time_ms).min();
        let read_through_s = read_through_ms.unwrap_or(0).max(0) as f64 / 1_000.0;
        metrics.terminal_read_through_timestamp_seconds.set(read_through_s);

        rounds += 1;
        if rounds.is_multiple_of(EXPIRY_INTERVAL_ROUNDS)
            && let Some(slowest) = stage.slowest_payer_ms()
        {
            stage.write().expire(slowest.saturating_sub(horizon_slack_ms));
        }
        let (_, indexed, pending) = stage.read().sizes();
        metrics.terminal_index_payments.set(indexed as i64);
        metrics.terminal_index_pending_labels.set(pending as i64);

        // Snapshot by the rounds in which anything (payments or labels) moved, not by
        // idle rounds.
        let payments_positions: u64 = (0..stage.payments_partitions).map(|i| stage.progress(i).position).sum();
        if read_any || payments_positions != payments_positions_before {
            payments_positions_before = payments_positions;
            rounds_since_snapshot += 1;
        }
        if done {
            break;
        }
        // And by the input read since the last, against the index's size (as partitions
        // weigh their changelog against their last snapshot).
        let inputs: u64 = (0..stage.indexed_positions.len()).map(|i| stage.progress(i).position).sum();
        let inputs_min = (indexed + pending) as u64 * u64::from(config.snapshot_changelog_min_percent) / 100;
        let due = rounds_since_snapshot >= config.snapshot_interval_batches
            && inputs.saturating_sub(inputs_at_snapshot) >= inputs_min;
        // One snapshot written at a time; a due one waits for the one before.
        if due && writing.as_ref().is_none_or(|w| w.is_finished()) {
            if let Some(previous) = writing.take() {
                joined(previous)?;
            }
            let (covered, state) = encode_snapshot(stage);
            inputs_at_snapshot = covered.iter().map(|p| p.position).sum();
            let protected = std::mem::replace(&mut kept_before, covered.clone());
            let payments_partitions = stage.payments_partitions;
            writing = Some(
                std::thread::Builder::new()
                    .name("paystream-index-snapshot".into())
                    .spawn_scoped(scope, move || write_snapshot(run, payments_partitions, state, &protected))
                    .expect("spawn the index snapshot writer"),
            );
            rounds_since_snapshot = 0;
        }
        if !read_any {
            log.wait_for_commit(sequence, Duration::from_millis(config.idle_wait_ms.min(10)));
        }
    }
    if let Some(previous) = writing.take() {
        joined(previous)?;
    }
    let (covered, state) = encode_snapshot(stage);
    write_snapshot(run, stage.payments_partitions, state, &std::mem::replace(&mut kept_before, covered))
}

/// The index with the input positions it covers, encoded: the input positions (payments,
/// then labels) and the snapshot's bytes.
fn encode_snapshot(stage: &TerminalStage) -> (Vec<InputProgress>, Vec<u8>) {
    // Positions first, then the index: workers add payments before publishing a position,
    // so the index holds at least what the positions say (more is harmless: idempotent).
    let inputs: Vec<InputProgress> = (0..stage.indexed_positions.len()).map(|i| stage.progress(i)).collect();
    let (payments, labels) = inputs.split_at(stage.payments_partitions);
    let snapshot =
        IndexSnapshot { payments: payments.to_vec(), labels: labels.to_vec(), index: stage.read().to_snapshot_bytes() };
    let state = postcard::to_stdvec(&snapshot).expect("encoding to a Vec cannot fail");
    (inputs, state)
}

/// Saves an encoded index snapshot, then commits as the index group's positions
/// `protected`: those of the snapshot kept before it, the fallback should the newest not
/// read back, so retention keeps the input either needs.
fn write_snapshot(
    run: &RunContext<'_>,
    payments_partitions: usize,
    state: Vec<u8>,
    protected: &[InputProgress],
) -> Result<(), RuntimeError> {
    let topics = run.topics;
    run.save_snapshot(&snapshot_name(&run.config.group_id), &Snapshot { changelog_offset: 0, state })?;
    let (payments, labels) = protected.split_at(payments_partitions);
    let mut transaction = Transaction::new();
    for (p, progress) in payments.iter().enumerate() {
        transaction.set_position(TERMINAL_INDEX_GROUP, &topics.payments, p as u32, progress.position);
    }
    for (p, progress) in labels.iter().enumerate() {
        transaction.set_position(TERMINAL_INDEX_GROUP, &topics.labels, p as u32, progress.position);
    }
    run.log.commit(transaction)?;
    Ok(())
}

/// Reads every label partition not ahead of the payments into `new_labels` (cleared
/// first), dead-letters bad labels not dead-lettered before, and commits the dead
/// letters with the pipeline group's label positions. Returns whether it read any record.
fn read_labels(
    run: &RunContext<'_>,
    stage: &TerminalStage,
    labels: &mut [InputProgress],
    labels_committed: &mut [u64],
    new_labels: &mut Vec<(u64, Label)>,
) -> Result<bool, RuntimeError> {
    let (config, log, topics, metrics) = (run.config, run.log, run.topics, run.metrics);
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
                    new_labels
                        .push((payment_hash(&label.payment_id), Label { is_fraud: label.is_fraud, reported_at_ms }));
                    progress.max_event_time_ms = progress.max_event_time_ms.max(reported_at_ms);
                }
                Err(rejection) if record.offset >= labels_committed[p] => {
                    metrics.dead_letter(rejection.reason);
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
    Ok(read_any)
}

/// Adds `new_labels` to the index, counting those later than features already served.
fn add_labels(run: &RunContext<'_>, stage: &TerminalStage, new_labels: &[(u64, Label)]) {
    let metrics = run.metrics;
    if !new_labels.is_empty() {
        let late_before_ms = stage.late_before_ms();
        let late = new_labels.iter().filter(|(_, l)| l.reported_at_ms < late_before_ms).count();
        metrics.terminal_late_inputs.inc_by(late as u64);
        let mut index = stage.write();
        for &(id, label) in new_labels {
            let result = match index.add_label(id, label) {
                LabelApplied::Attached => "attached",
                LabelApplied::Pending => "pending",
            };
            metrics.labels.with_label_values(&[result]).inc();
        }
    }
}
