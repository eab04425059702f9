//! A worker: restores its partitions, then turns over them until told to stop — each
//! turn reads every partition's next payments, transfer legs and settlement entries,
//! runs the operators and hands one transaction to the committer. Beside it run its
//! committer (`commit.rs`) and its snapshotter (`snapshotter.rs`); it waits for neither.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use paystream_operators::{OutputBatch, PartitionProcessor};

use super::commit::{CommitJob, CommitTracker};
use super::feed::FeedSender;
use super::input::{InputBuffer, InternalInput};
use super::snapshotter::KeptChangelog;
use super::task::{PartitionTask, Turn, WorkerContext};
use crate::connectors::velocity::{VelocityConnection, VelocitySource};
use crate::control::{RunMode, RunReport, joined, spawn_stopping_on_error};
use crate::error::RuntimeError;
use crate::limits::{COMMIT_QUEUE_DEPTH_MAX, LAG_UPDATE_INTERVAL};
use crate::log::Transaction;

impl WorkerContext<'_> {
    pub(super) fn run_worker(&self, partitions: &[u32]) -> Result<RunReport, RuntimeError> {
        let topics = self.run.topics;
        let mut tasks = Vec::with_capacity(partitions.len());
        let mut restored_offsets = Vec::with_capacity(partitions.len());
        let (_, model) = self.model.current();
        for &partition in partitions {
            let mut processor = PartitionProcessor::new(self.operator_config.clone(), model.clone(), partition);
            restored_offsets.push(self.restore(&mut processor)?);
            let next_offset = self.start_position(&topics.payments, partition)?;
            if let (Some(stage), Some(watermark)) = (self.stage, processor.state().max_event_time_ms()) {
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
        self.run.control.worker_restored();

        self.update_lag(&tasks)?;
        let tracker = CommitTracker::default();
        let kept = KeptChangelog::new(tasks.len());
        let (mut feed, fed) = if self.run.log.dense_offsets() {
            let (feed, fed) = FeedSender::new(restored_offsets, self.run.config.snapshot_feed_batches_max);
            (feed, Some(fed))
        } else {
            (FeedSender::none(), None)
        };
        let stop_snapshots = AtomicBool::new(false);
        let (sender, receiver) = std::sync::mpsc::sync_channel::<CommitJob>(COMMIT_QUEUE_DEPTH_MAX);
        std::thread::scope(|scope| {
            let committer = std::thread::Builder::new()
                .name("paystream-committer".into())
                .spawn_scoped(scope, || self.commit_loop(receiver, &tracker))
                .expect("spawn committer thread");
            let snapshotter = spawn_stopping_on_error(scope, "paystream-snapshotter".into(), self.run.control, || {
                self.snapshot_loop(partitions, &kept, fed, &tracker, &stop_snapshots)
            });
            let worked = self.process_loop(&mut tasks, &sender, &tracker, &kept, &mut feed);
            drop(sender);
            drop(feed);
            let committed = joined(committer);
            stop_snapshots.store(true, Ordering::Release);
            let snapshotted = joined(snapshotter);
            let (mut report, committed) = (worked?, committed?);
            snapshotted?;
            // Every batch is durable now: the final snapshot matches the changelog's end.
            self.snapshot(&tasks)?;
            report.input_records = committed.input_records;
            report.commits = committed.commits;
            Ok(report)
        })
    }

    /// Reads, processes and hands batches to the committer until told to stop.
    fn process_loop(
        &self,
        tasks: &mut [PartitionTask],
        sender: &std::sync::mpsc::SyncSender<CommitJob>,
        tracker: &CommitTracker,
        kept: &KeptChangelog,
        feed: &mut FeedSender,
    ) -> Result<RunReport, RuntimeError> {
        let config = self.run.config;
        let mut velocity = self.velocity.map(VelocitySource::connection).transpose()?;
        let mut model_generation = self.model.generation();
        let mut report = RunReport::default();
        let mut out = OutputBatch::default();
        let mut submitted = 0u64;
        let mut fetched_records = 0u64;
        let worker_started = Instant::now();
        let mut lag_updated = Instant::now();
        let worker_rate_max =
            config.input_records_per_second_max.map(|rate| (rate as f64 / self.workers as f64).max(1.0));
        while self.keep_running() {
            if let Some(rate) = worker_rate_max {
                let due = Duration::from_secs_f64(fetched_records as f64 / rate);
                if let Some(wait) = due.checked_sub(worker_started.elapsed()) {
                    std::thread::sleep(wait.min(Duration::from_millis(config.idle_wait_ms)));
                    continue;
                }
            }
            if self.model.generation() != model_generation {
                let (generation, model) = self.model.current();
                for task in tasks.iter_mut() {
                    task.processor.set_model(model.clone());
                }
                model_generation = generation;
            }
            let sequence = self.run.log.commit_sequence();
            let mut job =
                CommitJob { transaction: Transaction::new(), timestamps: Vec::new(), started: Instant::now() };
            let mut turn = Turn::default();
            for (index, task) in tasks.iter_mut().enumerate() {
                out.clear();
                if let Some(changelog_bytes) =
                    self.process_partition(task, &mut velocity, &mut out, &mut job, &mut turn)?
                {
                    self.count_outputs(&out, &mut report);
                    if let Some(bytes) = changelog_bytes {
                        // Into the job sent next: the (submitted + 1)-th.
                        feed.send(index, submitted + 1, bytes, std::mem::take(&mut out.state_ops));
                    }
                }
            }
            if job.transaction.is_empty() {
                if self.idle_turn(tasks, tracker, submitted, sequence, &turn)? {
                    break;
                }
                continue;
            }
            // The snapshots' changelog positions ride with a batch the worker commits anyway.
            for (index, task) in tasks.iter().enumerate() {
                if let Some(keep_from) = kept.take(index) {
                    self.protect_changelog(&mut job.transaction, task.processor.partition(), keep_from);
                }
            }
            fetched_records += job.timestamps.len() as u64;
            self.idle.busy(self.worker);
            if sender.send(job).is_err() {
                break; // the committer failed; its error is reported by the caller
            }
            submitted += 1;
            if config.commit_each_batch_before_the_next && tracker.wait_for(submitted).is_err() {
                break; // the committer failed; its error is reported by the caller
            }
            // Lag asks the log for every partition's end (a broker round trip on Kafka): a
            // gauge, refreshed once per interval, not per batch.
            if lag_updated.elapsed() >= LAG_UPDATE_INTERVAL {
                self.update_lag(tasks)?;
                lag_updated = Instant::now();
            }
            let remembered: usize = tasks.iter().map(|t| t.processor.state().remembered_payment_ids()).sum();
            self.run.metrics.remembered_payment_ids.set(remembered as i64);
        }
        Ok(report)
    }

    /// One partition's share of a turn: its next payments, then the transfer legs for its
    /// accounts and the settlement entries and marks for its merchants, all into `job`'s
    /// transaction with the outputs in `out`. Returns, if the partition advanced, the
    /// bytes of its changelog record if it wrote one.
    fn process_partition(
        &self,
        task: &mut PartitionTask,
        velocity: &mut Option<VelocityConnection<'_>>,
        out: &mut OutputBatch,
        job: &mut CommitJob,
        turn: &mut Turn,
    ) -> Result<Option<Option<u64>>, RuntimeError> {
        let (config, topics) = (self.run.config, self.run.topics);
        let partition = task.processor.partition();
        let consumed = self.process_payments(task, velocity, out, turn)?;
        let mut advanced = false;
        if consumed > 0 {
            let records = &task.fetched.records()[..consumed];
            let next_offset = records[consumed - 1].offset + 1;
            job.timestamps.extend(records.iter().map(|r| r.timestamp_ms));
            task.fetched.consume(consumed);
            if let (Some(stage), Some(watermark)) = (self.stage, task.processor.state().max_event_time_ms()) {
                stage.set_payer_watermark(partition, watermark);
            }
            job.transaction.set_position(&config.group_id, &topics.payments, partition, next_offset);
            task.next_offset = next_offset;
            advanced = true;
        } else if task.fetched.is_empty() {
            // No payments: take on the other partitions' settlement horizon rather than
            // hold their windows open (nothing if already there).
            task.processor.settlement_idle(out);
            advanced |= !out.state_ops.is_empty();
        }
        let processor = &mut task.processor;
        let transaction = &mut job.transaction;
        advanced |= self.read_internal(&mut task.legs, &topics.transfers, partition, transaction, |inputs| {
            processor.process_transfer_legs(&topics.transfers.name, inputs, out)
        })?;
        let entries = &topics.settlement_entries;
        advanced |= self.read_internal(&mut task.entries, entries, partition, transaction, |inputs| {
            processor.process_settlement_inputs(&entries.name, inputs, out)
        })?;
        if !advanced {
            return Ok(None);
        }
        Ok(Some(self.write_outputs(partition, out, transaction)?))
    }

    /// Adds a partition's outputs to the report and the metrics.
    fn count_outputs(&self, out: &OutputBatch, report: &mut RunReport) {
        let metrics = self.run.metrics;
        report.counters.add(&out.counters);
        report.dead_letters += out.dead_letters.len() as u64;
        metrics.add_counters(&out.counters);
        let scores = metrics.fraud_scores.local();
        for decision in &out.decisions {
            scores.observe(f64::from(decision.score));
        }
        scores.flush();
        for letter in &out.dead_letters {
            metrics.dead_letter(letter.reason);
        }
    }

    /// A turn that found nothing to commit: true if the run may stop (until idle, every
    /// worker idle), else waits for new input as the turn says.
    fn idle_turn(
        &self,
        tasks: &[PartitionTask],
        tracker: &CommitTracker,
        submitted: u64,
        sequence: u64,
        turn: &Turn,
    ) -> Result<bool, RuntimeError> {
        if self.mode == RunMode::UntilIdle && self.run.control.input_closed() {
            // Idle: nothing of ours committing (it may hold legs for our own partitions),
            // all our input read — and the same for every worker.
            let commits_seen = self.idle.commits();
            if tracker.wait_for(submitted).is_err() {
                return Ok(true); // the committer failed; its error is reported by the caller
            }
            if self.caught_up(tasks)? && self.idle.idle(self.worker, commits_seen) {
                return Ok(true);
            }
        }
        if turn.indexed {
            // Read on: the index moves with every worker's reading.
        } else if turn.waiting {
            // The terminal index is behind: other workers move it, soon.
            std::thread::sleep(Duration::from_millis(1));
        } else {
            self.run.log.wait_for_commit(sequence, self.run.idle_wait());
        }
        Ok(false)
    }

    fn update_lag(&self, tasks: &[PartitionTask]) -> Result<(), RuntimeError> {
        let topics = self.run.topics;
        for task in tasks {
            let end = self.run.log.offsets(&topics.payments, task.processor.partition())?.end;
            self.run
                .metrics
                .lag_records
                .with_label_values(&[&*topics.payments.name, &task.processor.partition().to_string()])
                .set(end.saturating_sub(self.run.log.resume_offset(
                    &topics.payments,
                    task.processor.partition(),
                    task.next_offset,
                )) as i64);
        }
        Ok(())
    }
}
