//! Validate operator: what the domain's parsing did not check — that a payment was sent
//! to its payer's partition — and the checks of a transfer leg. A failure is the
//! rejection to dead-letter the record with.

use paystream_domain::partitioner::partition_for_key;
use paystream_domain::time::parse_rfc3339_ms;
use paystream_domain::{Payment, RejectReason, Rejection, TransferLeg};

/// A parsed payment, if it belongs to `partition` of `input_partitions` (when known): a
/// payer's state (dedupe, windows) lives on the partition its id hashes to.
pub fn validate_payment(
    parsed: Result<Payment, Rejection>,
    input_partitions: Option<u32>,
    partition: u32,
) -> Result<Payment, Rejection> {
    let payment = parsed?;
    if let Some(partitions) = input_partitions {
        let home = partition_for_key(payment.payer_account_id.as_bytes(), partitions);
        if home != partition {
            let detail = format!(
                "payer {:?} belongs to partition {home} of {partitions}, not {partition}: produce with the payer as key \
                 and Kafka's default (murmur2) partitioner",
                payment.payer_account_id
            );
            return Err(Rejection::new(RejectReason::WrongPartition, detail));
        }
    }
    Ok(payment)
}

/// A transfer leg from its record, with its event time. Its id is remembered by event
/// time like a payment's: without one it could be forgotten at once and applied twice.
pub fn validate_transfer_leg(record: &[u8]) -> Result<(TransferLeg, i64), Rejection> {
    let leg: TransferLeg = serde_json::from_slice(record)
        .map_err(|error| Rejection::new(RejectReason::MalformedJson, format!("transfer leg: {error}")))?;
    if leg.amount_minor <= 0 {
        let detail = format!("transfer leg {}: amount", leg.leg_id);
        return Err(Rejection::new(RejectReason::NonPositiveAmount, detail));
    }
    match parse_rfc3339_ms(&leg.event_time) {
        Ok(event_time_ms) => Ok((leg, event_time_ms)),
        Err(error) => {
            let detail = format!("transfer leg {}: event_time: {error}", leg.leg_id);
            Err(Rejection::new(RejectReason::InvalidTimestamp, detail))
        }
    }
}
