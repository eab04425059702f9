//! One partition's payments through the operators: fetched (or indexed ahead for the
//! terminal index), scored with terminal and velocity features, decided and posted.

use paystream_domain::Payment;
use paystream_operators::validate::check_event_time;
use paystream_operators::{OutputBatch, TerminalView};

use super::output::input_records;
use super::task::{PartitionTask, Turn, UnindexedPayments, WorkerContext};
use crate::connectors::terminal_index::{TerminalStage, read_position};
use crate::connectors::velocity::VelocityConnection;
use crate::error::RuntimeError;
use crate::limits::PAYMENT_BUFFER_BATCHES;

impl WorkerContext<'_> {
    /// Runs the operators over the task's next payments (fetched if none are pending)
    /// into `out`; returns how many it consumed (fewer when the terminal index must catch
    /// up first: `turn.waiting` is set; `turn.indexed` when it read payments into the index).
    pub(super) fn process_payments(
        &self,
        task: &mut PartitionTask,
        velocity: &mut Option<VelocityConnection<'_>>,
        out: &mut OutputBatch,
        turn: &mut Turn,
    ) -> Result<usize, RuntimeError> {
        let (config, topics) = (self.run.config, self.run.topics);
        let payments_topic_name = &*topics.payments.name;
        let partition = task.processor.partition();
        match self.stage {
            Some(stage) => turn.indexed |= self.index_ahead(task, stage)?,
            None if task.fetched.is_empty() => {
                let records =
                    self.run.log.fetch(&topics.payments, partition, task.next_offset, config.batch_records_max)?;
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
        let batch = match self.stage {
            Some(stage) => {
                let ends = stage.input_ends(self.run.log, topics)?;
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
            Some(connection) => {
                let totals = connection.count(batch.velocity_events(), &self.run)?;
                batch.finish(Some(&totals), out)
            }
            None => batch.finish(None, out),
        };
        if consumed < n {
            turn.waiting = true;
            self.run.metrics.terminal_waits.inc();
        }
        Ok(consumed)
    }

    /// Reads one more batch of `task`'s payments into the terminal index, if it is due
    /// (never waits; see the `terminals` module doc): below the payer's position after a
    /// restart whose index snapshot is older; else into the buffer, parsed once for
    /// scoring too, until it holds `PAYMENT_BUFFER_BATCHES` batches; else past the buffer
    /// (indexed, not kept) while the partition is indexed no further than
    /// [`TerminalStage::read_until_ms`]. Returns whether it read any record.
    pub(super) fn index_ahead(&self, task: &mut PartitionTask, stage: &TerminalStage) -> Result<bool, RuntimeError> {
        let topics = self.run.topics;
        let batch = self.run.config.batch_records_max;
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
        let records = self.run.log.fetch(&topics.payments, partition, from, batch)?;
        let mut progress = indexed;
        let mut entries = Vec::new();
        let mut parsed = Vec::with_capacity(if keep { records.len() } else { 0 });
        let max_skew_ms = self.operator_config.max_event_time_skew_ms;
        for record in &records {
            let payment = Payment::from_json(&record.value);
            // What the payer will dead-letter moves nothing here either.
            if record.offset >= indexed.position
                && let Ok(payment) = &payment
                && check_event_time(payment.event_time_ms, record.timestamp_ms, max_skew_ms).is_ok()
            {
                entries.extend(paystream_operators::terminal_index_entry(payment));
                progress.max_event_time_ms = progress.max_event_time_ms.max(payment.event_time_ms);
            }
            if keep {
                parsed.push(Some(payment));
            }
        }
        progress.position =
            progress.position.max(read_position(self.run.log, &topics.payments, partition, from, &records));
        if (progress.position != indexed.position || !entries.is_empty())
            && !stage.try_index_payments(partition, &entries, progress)
        {
            self.run.metrics.terminal_index_deferred_batches.inc();
            task.unindexed = Some(UnindexedPayments { entries, progress });
        }
        let read = !records.is_empty();
        if keep {
            task.fetched.push(records, parsed);
        } else {
            self.run.metrics.terminal_index_only_records.inc_by(records.len() as u64);
        }
        // Deferred payments count as read: the worker's next turn comes at once and adds them.
        Ok(read || task.unindexed.is_some())
    }
}
