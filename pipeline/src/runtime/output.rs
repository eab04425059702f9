//! A partition's outputs into the batch's transaction: decisions, postings, settlements,
//! transfer legs, settlement entries, dead letters and the state changelog.

use paystream_operators::state::encode_ops;
use paystream_operators::{InputRecord, OutputBatch};
use serde::Serialize;

use super::task::WorkerContext;
use crate::clock::now_ms;
use crate::error::RuntimeError;
use crate::log::{Record, Topic, Transaction};

impl WorkerContext<'_> {
    /// Adds `out` to the transaction; returns the bytes of its changelog record, if it has
    /// one (it changed the partition's state).
    pub(super) fn write_outputs(
        &self,
        partition: u32,
        out: &OutputBatch,
        transaction: &mut Transaction,
    ) -> Result<Option<u64>, RuntimeError> {
        let topics = self.run.topics;
        let now = now_ms();
        for decision in &out.decisions {
            transaction.send_with(&topics.decisions, decision.payer_account_id.as_bytes(), now, |buf| {
                decision.write_json(buf);
                Ok::<(), RuntimeError>(())
            })?;
        }
        for ledger in &out.ledger {
            let key = paystream_operators::ledger::record_key(ledger);
            transaction.send_with(&topics.ledger, key.as_bytes(), now, |buf| {
                ledger.write_json(buf);
                Ok::<(), RuntimeError>(())
            })?;
        }
        for settlement in &out.settlements {
            send_json(transaction, &topics.settlements, settlement.merchant_id.as_bytes(), now, settlement)?;
        }
        for leg in &out.transfer_legs {
            send_json(transaction, &topics.transfers, leg.key().as_bytes(), now, leg)?;
        }
        let key = partition.to_le_bytes();
        for (target, record) in paystream_operators::settlement::encode_inputs(&out.settlement_inputs) {
            transaction.send_to_partition(&topics.settlement_entries, target, &key, &record, now)?;
        }
        for letter in &out.dead_letters {
            transaction.send_to_partition_with(
                &topics.dead_letters,
                partition % topics.dead_letters.partitions,
                &[],
                now,
                |buf| serde_json::to_writer(buf, letter).map_err(RuntimeError::from),
            )?;
        }
        if out.state_ops.is_empty() {
            return Ok(None);
        }
        let ops = encode_ops(&out.state_ops);
        transaction.send_to_partition(&topics.changelog, partition, &partition.to_le_bytes(), &ops, now)?;
        Ok(Some(ops.len() as u64))
    }
}

/// Log records as the operators take them.
pub(super) fn input_records(records: &[Record]) -> Vec<InputRecord<'_>> {
    records
        .iter()
        .map(|r| InputRecord { offset: r.offset, key: &r.key, value: &r.value, timestamp_ms: r.timestamp_ms })
        .collect()
}

pub(super) fn send_json<T: Serialize>(
    transaction: &mut Transaction,
    topic: &Topic,
    key: &[u8],
    timestamp_ms: i64,
    value: &T,
) -> Result<(), RuntimeError> {
    transaction.send_with(topic, key, timestamp_ms, |buf| serde_json::to_writer(buf, value).map_err(RuntimeError::from))
}
