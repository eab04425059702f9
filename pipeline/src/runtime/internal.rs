//! The internal inputs of a partition's owner — transfer legs and settlement entries
//! other partitions wrote for it — and whether every input of a worker is read.

use std::time::{Duration, Instant};

use paystream_operators::InputRecord;

use super::input::InternalInput;
use super::output::input_records;
use super::task::{PartitionTask, WorkerContext};
use crate::error::RuntimeError;
use crate::log::{Record, Topic, Transaction};

impl WorkerContext<'_> {
    /// Reads an internal input's next records, hands them to `process` and moves the
    /// group's position past them in `transaction`; false if there were none.
    pub(super) fn read_internal(
        &self,
        input: &mut InternalInput,
        topic: &Topic,
        partition: u32,
        transaction: &mut Transaction,
        process: impl FnOnce(&[InputRecord<'_>]),
    ) -> Result<bool, RuntimeError> {
        let records = self.fetch_internal(input, topic, partition)?;
        let Some(last) = records.last() else { return Ok(false) };
        process(&input_records(&records));
        input.next_offset = last.offset + 1;
        transaction.set_position(&self.run.config.group_id, topic, partition, input.next_offset);
        Ok(true)
    }

    /// The next records of an internal input (transfer legs, settlement entries): none
    /// without asking the log while the partition was found idle less than
    /// `leg_poll_interval_ms` ago; then only if its end moved.
    pub(super) fn fetch_internal(
        &self,
        input: &mut InternalInput,
        topic: &Topic,
        partition: u32,
    ) -> Result<Vec<Record>, RuntimeError> {
        let interval = Duration::from_millis(self.run.config.leg_poll_interval_ms);
        if input.idle_since.is_some_and(|since| since.elapsed() < interval) {
            return Ok(Vec::new());
        }
        let next = self.run.log.resume_offset(topic, partition, input.next_offset);
        let records = if next < self.run.log.offsets(topic, partition)?.end {
            self.run.log.fetch(topic, partition, input.next_offset, self.run.config.batch_records_max)?
        } else {
            Vec::new()
        };
        input.idle_since = records.is_empty().then(Instant::now);
        Ok(records)
    }

    /// Every input of the tasks processed: payments, transfer legs and settlement
    /// entries. (What this worker writes to another worker's partitions is that worker's;
    /// with `--until-idle` and several workers, a leg written after its target's worker
    /// stopped waits for the next run, in clearing, and an entry in its open window.)
    pub(super) fn caught_up(&self, tasks: &[PartitionTask]) -> Result<bool, RuntimeError> {
        let topics = self.run.topics;
        for task in tasks {
            let partition = task.processor.partition();
            let inputs = [
                (&topics.payments, task.next_offset),
                (&topics.transfers, task.legs.next_offset),
                (&topics.settlement_entries, task.entries.next_offset),
            ];
            // Up to what was written, not what is visible yet: a commit's markers trail it
            // on Kafka, and a worker that stopped before another's last legs or entries
            // showed up would leave that worker waiting for it forever.
            for (topic, next_offset) in inputs {
                if self.run.log.resume_offset(topic, partition, next_offset)
                    < self.run.log.written_end(topic, partition)?
                {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}
