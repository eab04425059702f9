//! Validate operator: what the domain's parsing did not check — that a payment was sent
//! to its payer's partition — and the checks of a transfer leg. A failure is the
//! rejection to dead-letter the record with.

use paystream_domain::partitioner::partition_for_key;
use paystream_domain::time::{format_rfc3339_ms, parse_rfc3339_ms};
use paystream_domain::{Payment, RejectReason, Rejection, TransferLeg};

/// Refuses an event time more than `max_skew_ms` ahead of the record's log timestamp
/// (`log_time_ms`; 0 or less: unknown, not bounded). A producer's clock can be wrong or
/// hostile: one event in the year 9999 would otherwise move its partition's event time
/// there, making every later payment late and holding settlement windows open. Old event
/// times are accepted (replays of history); the lateness policy handles those behind
/// their partition.
pub fn check_event_time(event_time_ms: i64, log_time_ms: i64, max_skew_ms: i64) -> Result<(), Rejection> {
    if log_time_ms <= 0 || event_time_ms <= log_time_ms.saturating_add(max_skew_ms) {
        return Ok(());
    }
    let detail = format!(
        "event time {} is {} ms after the record's log time {}, beyond the allowed clock skew of {max_skew_ms} ms",
        format_rfc3339_ms(event_time_ms),
        event_time_ms.saturating_sub(log_time_ms),
        format_rfc3339_ms(log_time_ms)
    );
    Err(Rejection::new(RejectReason::EventTimeInFuture, detail))
}

/// A parsed payment, if its event time is not too far ahead of its log time
/// ([`check_event_time`]) and it belongs to `partition` of `input_partitions` (when
/// known): a payer's state (dedupe, windows) lives on the partition its id hashes to.
pub fn validate_payment(
    parsed: Result<Payment, Rejection>,
    input_partitions: Option<u32>,
    partition: u32,
    log_time_ms: i64,
    max_skew_ms: i64,
) -> Result<Payment, Rejection> {
    let payment = parsed?;
    check_event_time(payment.event_time_ms, log_time_ms, max_skew_ms)?;
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
