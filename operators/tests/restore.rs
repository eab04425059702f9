//! A partition restored from any snapshot plus the changelog after it behaves exactly
//! like the partition that never stopped: the operators' crash-recovery invariant.

// Amounts in minor units are written like 220_00 (= 220.00), not 22_000.
#![allow(clippy::inconsistent_digit_grouping)]

use std::sync::Arc;

use paystream_operators::state::decode_ops;
use paystream_operators::{
    InputRecord, LATE_PAYMENT_REASON, LatePaymentPolicy, OperatorConfig, OutputBatch, PartitionProcessor, TerminalView,
    default_model,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Event {
    id: u32,
    payer: u8,
    merchant: u8,
    cents: u32,
    /// Minutes since 2018-04-01; mostly increasing, sometimes late.
    minute: u32,
    /// 0: a new card payment; 1: retry of an earlier id; 2: conflicting reuse of an
    /// earlier id; 3: garbage bytes; 4: a top-up; 5: a wallet payment; 6: a refund of the
    /// event before; 7: an authorization; 8: a capture of the event before; 9: a void of
    /// the event before; 10: a chargeback of the event before; 11: a payment to another
    /// account (a transfer leg).
    kind: u8,
}

/// `kind`, `original` and `channel` of a payment event.
fn event_json(event: &Event, id: u32, cents: u32, kind: &str, original: Option<u32>, channel: &str) -> Vec<u8> {
    let time = 1_522_540_800_000i64 + i64::from(event.minute) * 60_000;
    let payee = if kind == "top_up" {
        String::new()
    } else {
        format!(r#""merchant_id":"m{}","terminal_id":"t","#, event.merchant)
    };
    let original = original.map(|o| format!(r#""original_payment_id":"p{o}","#)).unwrap_or_default();
    format!(
        r#"{{"type":"{kind}","payment_id":"p{id}",{original}"payer_account_id":"c{}",{payee}"amount":"{}.{:02}","currency":"EUR","event_time":"{}","channel":"{channel}"}}"#,
        event.payer,
        cents / 100,
        cents % 100,
        paystream_domain::time::format_rfc3339_ms(time)
    )
    .into_bytes()
}

fn json(event: &Event, id: u32, cents: u32) -> Vec<u8> {
    event_json(event, id, cents, "payment", None, "card_not_present")
}

fn records(events: &[Event]) -> Vec<Vec<u8>> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let before = i.checked_sub(1).map(|b| &events[b]);
            match (e.kind, before) {
                (1, Some(b)) => json(b, b.id, b.cents),
                (2, Some(b)) => json(e, b.id, e.cents + 1),
                (3, _) => b"{not json".to_vec(),
                (4, _) => event_json(e, e.id, e.cents * 3, "top_up", None, "bank_transfer"),
                (5, _) => event_json(e, e.id, e.cents, "payment", None, "wallet"),
                (6, Some(b)) => event_json(b, e.id, e.cents % 500 + 1, "refund", Some(b.id), "card_not_present"),
                (7, _) => event_json(e, e.id, e.cents, "authorize", None, "wallet"),
                (8, Some(b)) => event_json(b, e.id, e.cents % 3_000 + 1, "capture", Some(b.id), "wallet"),
                (9, Some(b)) => event_json(b, e.id, b.cents, "void", Some(b.id), "wallet"),
                (10, Some(b)) => event_json(b, e.id, b.cents, "chargeback", Some(b.id), "card_not_present"),
                (11, _) => {
                    // To another account: its leg comes back to this partition in the next
                    // batch (the test's stand-in for the payee's partition).
                    let time = 1_522_540_800_000i64 + i64::from(e.minute) * 60_000;
                    let currency = if e.cents % 7 == 0 { "USD" } else { "EUR" };
                    format!(
                        r#"{{"payment_id":"p{}","payer_account_id":"c{}","payee_account_id":"c{}","amount":"{}.{:02}","currency":"{currency}","event_time":"{}","channel":"card_present"}}"#,
                        e.id,
                        e.payer,
                        (e.payer + 1) % 6,
                        e.cents / 100,
                        e.cents % 100,
                        paystream_domain::time::format_rfc3339_ms(time)
                    )
                    .into_bytes()
                }
                _ => json(e, e.id, e.cents),
            }
        })
        .collect()
}

fn event() -> impl Strategy<Value = Event> {
    (0u32..1_000_000, 0u8..6, 0u8..4, 1u32..40_000, 0u32..3, 0u8..20).prop_map(
        |(id, payer, merchant, cents, step, kind)| Event {
            id,
            payer,
            merchant,
            cents,
            minute: step,
            kind: if kind <= 11 { kind } else { 0 },
        },
    )
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    proptest::collection::vec(event(), 1..300).prop_map(|mut events| {
        // Turn steps into times: hours apart, mostly forward, so windows close.
        let mut minute = 0u32;
        for (i, e) in events.iter_mut().enumerate() {
            minute += e.minute * 180;
            e.minute = if i % 17 == 5 { minute.saturating_sub(3_000) } else { minute };
            e.id = i as u32 * 1_000 + e.id % 1_000;
        }
        events
    })
}

/// What one batch wrote to the internal topics, read by the next: transfer legs and
/// settlement inputs (one partition: all its own).
#[derive(Clone, Default)]
struct Written {
    legs: Vec<Vec<u8>>,
    settlement_inputs: Vec<Vec<u8>>,
}

fn as_inputs(records: &[Vec<u8>], first_offset: u64) -> Vec<InputRecord<'_>> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| InputRecord { offset: first_offset + i as u64, key: b"", value: r, timestamp_ms: 0 })
        .collect()
}

/// One batch: the payments, then the transfer legs and settlement inputs `internal`
/// (written by the batch before), as the runtime runs them; returns the outputs as
/// lines, the changelog record and what this batch wrote to the internal topics.
fn process(
    processor: &mut PartitionProcessor,
    batch: &[Vec<u8>],
    first_offset: u64,
    internal: &Written,
) -> (Vec<String>, Vec<u8>, Written) {
    let mut out = OutputBatch::default();
    processor.process_batch("payments", &as_inputs(batch, first_offset), TerminalView::NONE, &mut out);
    processor.process_transfer_legs("paystream-transfers", &as_inputs(&internal.legs, first_offset), &mut out);
    let entries = as_inputs(&internal.settlement_inputs, first_offset);
    processor.process_settlement_inputs("paystream-settlement-entries", &entries, &mut out);
    let written = Written {
        legs: out.transfer_legs.iter().map(|l| serde_json::to_vec(l).unwrap()).collect(),
        settlement_inputs: paystream_operators::settlement::encode_inputs(&out.settlement_inputs)
            .into_iter()
            .map(|(_, record)| record)
            .collect(),
    };
    let mut lines = Vec::new();
    lines.extend(out.decisions.iter().map(|d| serde_json::to_string(d).unwrap()));
    lines.extend(out.ledger.iter().map(|t| serde_json::to_string(t).unwrap()));
    lines.extend(out.settlements.iter().map(|s| serde_json::to_string(s).unwrap()));
    lines.extend(out.dead_letters.iter().map(|l| serde_json::to_string(l).unwrap()));
    lines.push(format!("retries {}", out.counters.retries));
    lines.extend(out.transfer_legs.iter().map(|l| serde_json::to_string(l).unwrap()));
    lines.extend(out.settlement_inputs.iter().map(|(p, i)| format!("{p} {i:?}")));
    (lines, paystream_operators::state::encode_ops(&out.state_ops), written)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn restore_from_any_snapshot_continues_identically(
        events in events(),
        batch_size in 1usize..40,
        snapshot_after in 0usize..10,
        crash_after in 0usize..10,
    ) {
        let config = Arc::new(OperatorConfig { settlement_window_ms: 6 * 3_600_000, ..OperatorConfig::default() });
        let records = records(&events);
        let batches: Vec<&[Vec<u8>]> = records.chunks(batch_size).collect();
        let snapshot_at = snapshot_after.min(batches.len());
        let crash_at = (snapshot_at + crash_after).min(batches.len());

        // The partition that never stops.
        let mut live = PartitionProcessor::new(config.clone(), default_model(&config), 0);
        let mut live_outputs = Vec::new();
        let mut changelog = Vec::new();
        // written[i]: what batch i wrote to the internal topics, read by batch i + 1.
        let mut written: Vec<Written> = Vec::new();
        let mut snapshot = live.snapshot();
        let mut offset = 0u64;
        for (i, batch) in batches.iter().enumerate() {
            if i == snapshot_at {
                snapshot = live.snapshot();
            }
            let internal = if i == 0 { Written::default() } else { written[i - 1].clone() };
            let (lines, ops, wrote) = process(&mut live, batch, offset, &internal);
            offset += batch.len() as u64;
            live_outputs.push(lines);
            changelog.push(ops);
            written.push(wrote);
        }
        if snapshot_at == batches.len() {
            snapshot = live.snapshot();
        }

        // Crash after `crash_at` batches were committed: restore = snapshot + changelog
        // of batches [snapshot_at, crash_at), then process the rest.
        let mut restored = PartitionProcessor::new(config.clone(), default_model(&config), 0);
        restored.restore_snapshot(&snapshot).unwrap();
        for ops in &changelog[snapshot_at..crash_at] {
            decode_ops(ops).unwrap();
            restored.apply_changelog(ops).unwrap();
        }
        let mut offset: u64 = batches[..crash_at].iter().map(|b| b.len() as u64).sum();
        for (i, batch) in batches.iter().enumerate().skip(crash_at) {
            // What was written before the crash is in the log; after, the restored run
            // wrote it (equal to the live one, as the lines compared below include it).
            let internal = if i == 0 { Written::default() } else { written[i - 1].clone() };
            let (lines, ops, _) = process(&mut restored, batch, offset, &internal);
            offset += batch.len() as u64;
            prop_assert_eq!(&lines, &live_outputs[i], "batch {} differs after restore", i);
            prop_assert_eq!(&ops, &changelog[i]);
        }
        prop_assert_eq!(restored.state().remembered_payment_ids(), live.state().remembered_payment_ids());
        prop_assert_eq!(restored.state().customer_windows(), live.state().customer_windows());
        prop_assert_eq!(restored.state().settlement().open_window_count(), live.state().settlement().open_window_count());
        let balances = |p: &PartitionProcessor| {
            let mut accounts: Vec<_> = p.state().ledger().accounts().iter().cloned().collect();
            accounts.sort_by(|a, b| a.id.cmp(&b.id));
            accounts
        };
        prop_assert_eq!(balances(&restored), balances(&live));
        prop_assert_eq!(restored.state().ledger().records(), live.state().ledger().records());
    }
}

#[test]
fn each_input_is_decided_retried_or_dead_lettered() {
    let config = Arc::new(OperatorConfig::default());
    let mut processor = PartitionProcessor::new(config.clone(), default_model(&config), 0);
    let e = |id: u32, cents: u32, kind: u8| Event { id, payer: 1, merchant: 1, cents, minute: id, kind };
    let events = vec![e(1, 100, 0), e(1, 200, 1), e(3, 300, 2), e(4, 400, 3), e(5, 500, 0)];
    let records = records(&events);
    let inputs: Vec<InputRecord<'_>> = records
        .iter()
        .enumerate()
        .map(|(i, r)| InputRecord { offset: i as u64, key: b"", value: r, timestamp_ms: 0 })
        .collect();
    let mut out = OutputBatch::default();
    processor.process_batch("payments", &inputs, TerminalView::NONE, &mut out);
    assert_eq!(out.decisions.len(), 2, "p1 and p5");
    assert_eq!(out.counters.retries, 1, "the retry of p1");
    let reasons: Vec<_> = out.dead_letters.iter().map(|l| (l.source_offset, l.reason.as_str())).collect();
    assert_eq!(reasons, vec![(2, "duplicate_payment_conflict"), (3, "malformed_json")]);
    assert_eq!(out.ledger.len(), 2);
    for transaction in &out.ledger {
        assert_eq!(transaction.postings.iter().map(|p| p.signed_minor_units()).sum::<i64>(), 0);
    }
}

#[test]
fn payments_too_late_for_exact_features_go_to_review_unless_configured_otherwise() {
    let e = |id: u32, minute: u32| Event { id, payer: 1, merchant: 1, cents: 100, minute, kind: 0 };
    // p3 is 4 hours older than p2: beyond the default hour of allowed lateness; p4 is
    // 30 minutes late: within it.
    let events = vec![e(1, 0), e(2, 300), e(3, 60), e(4, 270)];
    let records = records(&events);
    let inputs: Vec<InputRecord<'_>> = records
        .iter()
        .enumerate()
        .map(|(i, r)| InputRecord { offset: i as u64, key: b"", value: r, timestamp_ms: 0 })
        .collect();
    for (policy, expected) in [(LatePaymentPolicy::Review, "review"), (LatePaymentPolicy::Score, "approve")] {
        let config = Arc::new(OperatorConfig { late_payments: policy, ..OperatorConfig::default() });
        let mut processor = PartitionProcessor::new(config.clone(), default_model(&config), 0);
        let mut out = OutputBatch::default();
        processor.process_batch("payments", &inputs, TerminalView::NONE, &mut out);
        let outcome = |id: &str| out.decisions.iter().find(|d| d.payment_id == id).unwrap();
        assert_eq!(out.counters.late_feature_payments, 1, "{policy:?}");
        assert_eq!(serde_json::to_value(outcome("p3").outcome).unwrap(), expected, "{policy:?}");
        assert_eq!(serde_json::to_value(outcome("p4").outcome).unwrap(), "approve", "{policy:?}");
        if policy == LatePaymentPolicy::Review {
            assert_eq!(outcome("p3").reasons[0], LATE_PAYMENT_REASON);
            assert_eq!(outcome("p3").score, 0.0, "the model's score is kept");
            assert!(out.ledger.iter().all(|t| t.payment_id != "p3"), "a payment in review moves no money");
        }
    }
}

#[test]
fn fees_follow_the_schedule_merchant_then_channel_then_default() {
    use paystream_operators::FeeSchedule;
    // The test payments are card-not-present payments to merchants m0..m3.
    let schedule: FeeSchedule = serde_json::from_str(
        r#"{"default_basis_points": 100, "channels": {"card_not_present": 50, "card_present": 20}, "merchants": {"m2": 10}}"#,
    )
    .unwrap();
    let config = Arc::new(OperatorConfig { fees: schedule, ..OperatorConfig::default() });
    config.validate().unwrap();
    let mut processor = PartitionProcessor::new(config.clone(), default_model(&config), 0);
    let e = |id: u32, merchant: u8| Event { id, payer: 1, merchant, cents: 100_00, minute: id, kind: 0 };
    let records = records(&[e(1, 1), e(2, 2)]);
    let inputs: Vec<InputRecord<'_>> = records
        .iter()
        .enumerate()
        .map(|(i, r)| InputRecord { offset: i as u64, key: b"", value: r, timestamp_ms: 0 })
        .collect();
    let mut out = OutputBatch::default();
    processor.process_batch("payments", &inputs, TerminalView::NONE, &mut out);
    let fee = |payment: &str| {
        let t = out.ledger.iter().find(|t| t.payment_id == payment).unwrap();
        t.postings.iter().find(|p| p.account_id == config.fees_account_id).map_or(0, |p| p.amount_minor)
    };
    assert_eq!(fee("p1"), 50, "m1 has no rate of its own: the card-not-present channel's 0.5 %");
    assert_eq!(fee("p2"), 10, "m2's own rate, 0.1 %, wins over the channel's");
    // Rates above 100 % and unknown channels are refused.
    let too_high = OperatorConfig { fees: FeeSchedule::flat(10_001), ..OperatorConfig::default() };
    assert!(too_high.validate().unwrap_err().to_string().contains("10001"));
    assert!(serde_json::from_str::<FeeSchedule>(r#"{"default_basis_points": 1, "channels": {"pigeon": 5}}"#).is_err());
}

/// With the input's partition count known, a payment whose payer hashes (murmur2, as
/// Kafka's default partitioner) to another partition is dead-lettered, not processed
/// with the wrong partition's state; payers of this partition go through.
#[test]
fn payments_on_the_wrong_partition_are_dead_lettered() {
    use paystream_domain::partitioner::partition_for_key;
    let config = Arc::new(OperatorConfig { input_partitions: Some(4), ..OperatorConfig::default() });
    let mut processor = PartitionProcessor::new(config.clone(), default_model(&config), 2);
    let events: Vec<Event> = (0..6u8)
        .map(|payer| Event { id: u32::from(payer), payer, merchant: 0, cents: 1_00, minute: 1, kind: 0 })
        .collect();
    let records = records(&events);
    let inputs: Vec<InputRecord<'_>> = records
        .iter()
        .enumerate()
        .map(|(i, r)| InputRecord { offset: i as u64, key: b"", value: r, timestamp_ms: 0 })
        .collect();
    let mut out = OutputBatch::default();
    processor.process_batch("payments", &inputs, TerminalView::NONE, &mut out);
    let home: Vec<bool> = (0..6u8).map(|p| partition_for_key(format!("c{p}").as_bytes(), 4) == 2).collect();
    assert!(home.iter().any(|h| *h) && home.iter().any(|h| !*h), "the test needs payers of both kinds");
    for (payer, home) in home.iter().enumerate() {
        let decided = out.decisions.iter().any(|d| d.payer_account_id == format!("c{payer}"));
        let letter = out.dead_letters.iter().find(|l| l.source_offset == payer as u64);
        assert_eq!(decided, *home, "payer c{payer}");
        assert_eq!(letter.map(|l| l.reason.as_str()), (!home).then_some("wrong_partition"), "payer c{payer}");
    }
}
