//! The typed steps of a batch of payments with velocity: the featurized batch lists what
//! the feature store must count, and finishing it with the store's answers decides by
//! the velocity rules.

use std::sync::Arc;

use paystream_domain::Outcome;
use paystream_domain::time::format_rfc3339_ms;
use paystream_operators::{
    DEVICE_VELOCITY_REASON, InputRecord, OperatorConfig, OutputBatch, PartitionProcessor, TerminalView, VelocityConfig,
    VelocityTotals, default_model,
};

/// 2018-04-02, a Monday.
const DAY0_MS: i64 = 1_522_627_200_000;

fn payment(id: &str, device: Option<&str>) -> Vec<u8> {
    let device = device.map(|d| format!(r#","device_id":"{d}""#)).unwrap_or_default();
    format!(
        r#"{{"payment_id":"{id}","payer_account_id":"c1","merchant_id":"m1","terminal_id":"t","amount":"10.00","currency":"EUR","event_time":"{}","channel":"card_present"{device}}}"#,
        format_rfc3339_ms(DAY0_MS)
    )
    .into_bytes()
}

#[test]
fn velocity_events_are_listed_and_their_totals_decide() {
    let velocity = VelocityConfig { enabled: true, device_tx_1h_review_min: Some(3), merchant_tx_1h_review_min: None };
    let config = Arc::new(OperatorConfig { velocity, ..OperatorConfig::default() });
    let mut processor = PartitionProcessor::new(config.clone(), default_model(&config), 0);
    let records = [payment("p1", Some("d1")), b"not json".to_vec(), payment("p2", None)];
    let inputs: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(i, r)| InputRecord { offset: i as u64, key: b"c1", value: r, timestamp_ms: 0 })
        .collect();
    let mut parsed = vec![None; records.len()];
    let mut out = OutputBatch::default();

    let read = processor.plan_payments("payments", &inputs, &mut parsed).read_terminal_features(TerminalView::NONE);
    assert_eq!(read.ready(), 3, "nothing waits without an index");
    let batch = read.featurize(&mut out);
    let entities: Vec<_> = batch.velocity_events().iter().map(|e| (e.entity.as_str(), e.event_id.as_str())).collect();
    assert_eq!(entities, [("merchant:m1", "p1"), ("device:d1", "p1"), ("merchant:m1", "p2")]);
    assert_eq!(out.dead_letters.len(), 1, "the bad record is dead-lettered while featurizing");
    assert!(out.decisions.is_empty(), "nothing is decided before the batch is finished");

    let totals = [
        VelocityTotals { count: 1, amount_minor: 10_00 },
        VelocityTotals { count: 3, amount_minor: 30_00 },
        VelocityTotals { count: 2, amount_minor: 20_00 },
    ];
    assert_eq!(batch.finish(Some(&totals), &mut out), 3);
    assert_eq!(out.decisions.len(), 2);
    let (p1, p2) = (&out.decisions[0], &out.decisions[1]);
    assert_eq!((p1.outcome, p1.reasons.first().map(|r| &**r)), (Outcome::Review, Some(DEVICE_VELOCITY_REASON)));
    assert_eq!(p1.velocity.and_then(|v| v.device_tx_1h), Some(3));
    assert_eq!(p2.velocity.and_then(|v| v.merchant_tx_1h), Some(2));
    assert_eq!(p2.velocity.and_then(|v| v.device_tx_1h), None);
    assert!(parsed.iter().all(Option::is_none), "consumed payments are taken");
}

#[test]
#[should_panic(expected = "one velocity answer per velocity event")]
fn finishing_with_too_few_velocity_answers_is_a_bug() {
    let velocity = VelocityConfig { enabled: true, ..VelocityConfig::default() };
    let config = Arc::new(OperatorConfig { velocity, ..OperatorConfig::default() });
    let mut processor = PartitionProcessor::new(config.clone(), default_model(&config), 0);
    let records = [payment("p1", Some("d1"))];
    let inputs = [InputRecord { offset: 0, key: b"c1", value: &records[0], timestamp_ms: 0 }];
    let mut parsed = vec![None];
    let mut out = OutputBatch::default();
    let batch = processor
        .plan_payments("payments", &inputs, &mut parsed)
        .read_terminal_features(TerminalView::NONE)
        .featurize(&mut out);
    batch.finish(Some(&[]), &mut out);
}
