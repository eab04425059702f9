//! The records of `paystream-settlement-entries`: settlement inputs batched per target
//! partition, postcard-encoded and versioned like the changelog, at most
//! [`SETTLEMENT_INPUTS_PER_RECORD_MAX`] inputs each (what one JSON record per entry costs:
//! benches/README.md, "one settlement per merchant and window").

use std::collections::BTreeMap;

use paystream_domain::{RejectReason, Rejection};
use serde::{Deserialize, Serialize};

use super::entry::SettlementInput;
use crate::limits::SETTLEMENT_INPUTS_PER_RECORD_MAX;

/// Bumped whenever the encoding of settlement input records changes incompatibly.
pub const SETTLEMENT_INPUTS_FORMAT_VERSION: u16 = 1;

/// The records a batch writes to `paystream-settlement-entries`: per target partition,
/// its inputs in the order they were made (entries before the marks after them), at
/// most [`SETTLEMENT_INPUTS_PER_RECORD_MAX`] per record; postcard, versioned like the
/// changelog (an internal topic: one record per batch and partition, not one JSON
/// record per payment).
pub fn encode_inputs(inputs: &[(u32, SettlementInput)]) -> Vec<(u32, Vec<u8>)> {
    #[derive(Serialize)]
    struct RecordRef<'a> {
        version: u16,
        inputs: &'a [&'a SettlementInput],
    }
    let mut by_target: BTreeMap<u32, Vec<&SettlementInput>> = BTreeMap::new();
    for (target, input) in inputs {
        by_target.entry(*target).or_default().push(input);
    }
    let mut records = Vec::new();
    for (target, inputs) in by_target {
        for chunk in inputs.chunks(SETTLEMENT_INPUTS_PER_RECORD_MAX) {
            let record = RecordRef { version: SETTLEMENT_INPUTS_FORMAT_VERSION, inputs: chunk };
            records.push((target, postcard::to_stdvec(&record).expect("encoding to a Vec cannot fail")));
        }
    }
    records
}

/// The inputs of one record written by [`encode_inputs`]; an error says why not.
pub fn decode_inputs(bytes: &[u8]) -> Result<Vec<SettlementInput>, String> {
    #[derive(Deserialize)]
    struct Record {
        _version: u16,
        inputs: Vec<SettlementInput>,
    }
    let (version, _) = postcard::take_from_bytes::<u16>(bytes).map_err(|e| e.to_string())?;
    if version != SETTLEMENT_INPUTS_FORMAT_VERSION {
        return Err(format!(
            "settlement input format {version}, this paystream reads {SETTLEMENT_INPUTS_FORMAT_VERSION}"
        ));
    }
    let record: Record = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
    Ok(record.inputs)
}

/// The inputs of one settlement record, or why it is not one paystream wrote: it does
/// not decode, or holds a negative amount or a mark from a partition beyond the
/// input's `partitions`.
pub fn read_inputs(bytes: &[u8], partitions: u32) -> Result<Vec<SettlementInput>, Rejection> {
    let inputs = decode_inputs(bytes)
        .map_err(|why| Rejection::new(RejectReason::UnsupportedSchema, format!("settlement inputs: {why}")))?;
    for input in &inputs {
        match input {
            SettlementInput::Entry(entry) if entry.gross_minor < 0 || entry.fee_minor < 0 => {
                let detail = format!("settlement entry {}: negative amount", entry.entry_id);
                return Err(Rejection::new(RejectReason::NonPositiveAmount, detail));
            }
            SettlementInput::Mark { source_partition, .. } if *source_partition >= partitions => {
                let detail = format!("settlement mark from partition {source_partition}; the input has {partitions}");
                return Err(Rejection::new(RejectReason::WrongPartition, detail));
            }
            SettlementInput::Entry(_) | SettlementInput::Mark { .. } => {}
        }
    }
    Ok(inputs)
}
