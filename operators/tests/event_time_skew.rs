//! A payment whose event time is further ahead of its record's log timestamp than the
//! allowed clock skew is dead-lettered `event_time_in_future` and moves nothing: not the
//! partition's event time, so the payments after it are not made late.

use std::sync::Arc;

use paystream_domain::RejectReason;
use paystream_domain::time::{MILLIS_PER_MINUTE, format_rfc3339_ms, parse_rfc3339_ms};
use paystream_operators::{
    InputRecord, LATE_PAYMENT_REASON, OperatorConfig, OutputBatch, PartitionProcessor, TerminalView, default_model,
};

/// The log time of every record: 2018-04-02T00:00:00Z.
const LOG_TIME_MS: i64 = 1_522_627_200_000;

fn payment(id: &str, event_time: &str) -> Vec<u8> {
    format!(
        r#"{{"payment_id":"{id}","payer_account_id":"c1","merchant_id":"m1","terminal_id":"t","amount":"10.00","currency":"EUR","event_time":"{event_time}","channel":"card_present"}}"#
    )
    .into_bytes()
}

fn process(processor: &mut PartitionProcessor, records: &[Vec<u8>], log_time_ms: i64) -> OutputBatch {
    let inputs: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(i, value)| InputRecord { offset: i as u64, key: b"c1", value, timestamp_ms: log_time_ms })
        .collect();
    let mut out = OutputBatch::default();
    processor.process_batch("payments", &inputs, TerminalView::NONE, &mut out);
    out
}

#[test]
fn a_payment_from_a_clock_in_the_future_is_dead_lettered_and_moves_no_event_time() {
    let config = Arc::new(OperatorConfig::default());
    assert_eq!(config.max_event_time_skew_ms, 5 * MILLIS_PER_MINUTE);
    let mut processor = PartitionProcessor::new(config.clone(), default_model(&config), 0);
    let at = |minutes: i64| format_rfc3339_ms(LOG_TIME_MS + minutes * MILLIS_PER_MINUTE);
    let out = process(
        &mut processor,
        &[
            payment("early", &at(-10)),
            payment("poison", "9999-12-31T23:59:59Z"),
            payment("skewed", &at(4)),
            payment("too-far", &at(6)),
        ],
        LOG_TIME_MS,
    );
    let decided: Vec<&str> = out.decisions.iter().map(|d| d.payment_id.as_str()).collect();
    assert_eq!(decided, ["early", "skewed"], "within the skew is accepted");
    let rejected: Vec<_> = out.dead_letters.iter().map(|l| (l.reason, l.source_offset)).collect();
    assert_eq!(rejected, [(RejectReason::EventTimeInFuture, 1), (RejectReason::EventTimeInFuture, 3)]);
    assert!(out.dead_letters[0].detail.contains("9999-12-31T23:59:59.000Z"), "{}", out.dead_letters[0].detail);
    assert_eq!(
        processor.state().max_event_time_ms(),
        Some(parse_rfc3339_ms(&at(4)).unwrap()),
        "the partition's event time is the accepted payments' newest"
    );

    // The next payments are on time: nothing in the year 9999 made them late.
    let out = process(&mut processor, &[payment("next", &at(1))], LOG_TIME_MS + MILLIS_PER_MINUTE);
    assert_eq!(out.decisions.len(), 1);
    assert!(!out.decisions[0].reasons.iter().any(|r| r == LATE_PAYMENT_REASON), "{:?}", out.decisions[0].reasons);
}

#[test]
fn without_a_log_time_and_for_history_the_event_time_is_not_bounded() {
    let config = Arc::new(OperatorConfig::default());
    let mut processor = PartitionProcessor::new(config.clone(), default_model(&config), 0);
    // A replay of history: event times years before the log time are accepted.
    let out = process(&mut processor, &[payment("old", "2001-01-01T00:00:00Z")], LOG_TIME_MS);
    assert_eq!((out.decisions.len(), out.dead_letters.len()), (1, 0));
    // A record whose log time is unknown (0) is not bounded.
    let out = process(&mut processor, &[payment("unknown", "2030-01-01T00:00:00Z")], 0);
    assert_eq!((out.decisions.len(), out.dead_letters.len()), (1, 0));
}
