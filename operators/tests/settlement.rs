//! One settlement per merchant and window across partitions, as a property: several
//! payer partitions post merchant payments and refunds; their settlement entries and
//! marks reach the merchants' partitions in any interleaving the log allows (each target
//! partition reads its records in the order they were committed, sources interleaved
//! at random), partitions without input take on the others' horizon at random moments.
//! Whatever the order: every merchant window is settled once, on its merchant's
//! partition, equal to the sum of its postings from every payer partition (`reconcile`),
//! no entry reaches a closed window, and once every partition is idle nothing is left
//! open before the most advanced horizon.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use paystream_domain::partitioner::partition_for_key;
use paystream_domain::{LedgerTransaction, Outcome, Settlement};
use paystream_operators::settlement::{encode_inputs, merchant_partition, reconcile};
use paystream_operators::{InputRecord, OperatorConfig, OutputBatch, PartitionProcessor, TerminalView, default_model};
use proptest::prelude::*;

const START_MS: i64 = 1_522_540_800_000;
const HOUR_MS: i64 = 3_600_000;

/// A generated event: (payer, merchant, cents, minutes after the previous event, jitter
/// back in minutes, refund of an earlier event of the same payer).
#[derive(Clone, Debug)]
struct Event {
    payer: u8,
    merchant: u8,
    cents: u32,
    gap_minutes: u32,
    jitter_minutes: u32,
    refund: bool,
}

fn event() -> impl Strategy<Value = Event> {
    (0u8..10, 0u8..6, 1u32..30_000, 0u32..30, 0u32..180, proptest::bool::weighted(0.15)).prop_map(
        |(payer, merchant, cents, gap_minutes, jitter_minutes, refund)| Event {
            payer,
            merchant,
            cents,
            gap_minutes,
            jitter_minutes,
            refund,
        },
    )
}

/// The events as payment records per payer partition, in publication order. Jitter up to
/// 3 h (beyond the 1 h lateness) makes some entries late on their payer's partition.
fn records(events: &[Event], partitions: u32) -> Vec<VecDeque<Vec<u8>>> {
    let mut by_partition = vec![VecDeque::new(); partitions as usize];
    let mut clock_ms = START_MS;
    let mut paid: Vec<(u8, u8, u32, String)> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        clock_ms += i64::from(e.gap_minutes) * 60_000;
        let time = paystream_domain::time::format_rfc3339_ms(clock_ms - i64::from(e.jitter_minutes) * 60_000);
        let earlier = paid.iter().rev().find(|(payer, ..)| *payer == e.payer).cloned();
        let (payer, merchant, cents, kind) = match earlier {
            Some((payer, merchant, cents, id)) if e.refund => {
                (payer, merchant, 1 + e.cents % cents, format!(r#""type":"refund","original_payment_id":"{id}","#))
            }
            _ => {
                paid.push((e.payer, e.merchant, e.cents, format!("p{i}")));
                (e.payer, e.merchant, e.cents, String::new())
            }
        };
        let value = format!(
            r#"{{{kind}"payment_id":"p{i}","payer_account_id":"c{payer}","merchant_id":"m{merchant}","terminal_id":"t{merchant}","amount":"{}.{:02}","currency":"EUR","event_time":"{time}","channel":"card_not_present"}}"#,
            cents / 100,
            cents % 100,
        );
        let partition = partition_for_key(format!("c{payer}").as_bytes(), partitions);
        by_partition[partition as usize].push_back(value.into_bytes());
    }
    by_partition
}

/// The partitions, their unread payments and settlement inputs, and what they emitted.
struct Cluster {
    processors: Vec<PartitionProcessor>,
    payments: Vec<VecDeque<Vec<u8>>>,
    /// Per target partition, the settlement input records committed to it, in commit order.
    inboxes: Vec<VecDeque<Vec<u8>>>,
    ledger: Vec<LedgerTransaction>,
    settlements: Vec<Settlement>,
    misplaced: u64,
    approved_merchant_events: usize,
    /// State changes committed so far (a round without any changed nothing).
    changes: usize,
}

impl Cluster {
    /// What one partition's step emitted, committed at once (as one transaction).
    fn commit(&mut self, out: OutputBatch) {
        assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
        for (target, record) in encode_inputs(&out.settlement_inputs) {
            self.inboxes[target as usize].push_back(record);
        }
        self.approved_merchant_events +=
            out.decisions.iter().filter(|d| d.outcome == Outcome::Approve && d.merchant_id.is_some()).count();
        self.misplaced += out.counters.misplaced_settlement_entries;
        self.changes += out.state_ops.len();
        self.ledger.extend(out.ledger);
        self.settlements.extend(out.settlements);
    }

    /// Partition `p` processes up to `count` payments; with none left, it is idle.
    fn payments(&mut self, p: usize, count: usize) {
        let mut out = OutputBatch::default();
        let take = count.min(self.payments[p].len());
        if take == 0 {
            self.processors[p].settlement_idle(&mut out);
        } else {
            let batch: Vec<Vec<u8>> = self.payments[p].drain(..take).collect();
            let inputs: Vec<InputRecord<'_>> =
                batch.iter().map(|value| InputRecord { offset: 0, key: b"", value, timestamp_ms: 0 }).collect();
            self.processors[p].process_batch("payments", &inputs, TerminalView::NONE, &mut out);
        }
        self.commit(out);
    }

    /// Partition `p` reads up to `count` of its settlement inputs.
    fn entries(&mut self, p: usize, count: usize) {
        let take = count.min(self.inboxes[p].len());
        let batch: Vec<Vec<u8>> = self.inboxes[p].drain(..take).collect();
        let inputs: Vec<InputRecord<'_>> =
            batch.iter().map(|value| InputRecord { offset: 0, key: b"", value, timestamp_ms: 0 }).collect();
        let mut out = OutputBatch::default();
        self.processors[p].process_settlement_inputs("paystream-settlement-entries", &inputs, &mut out);
        self.commit(out);
    }

    fn busy(&self) -> bool {
        self.payments.iter().chain(&self.inboxes).any(|queue| !queue.is_empty())
    }
}

/// What the cases exercised, so the property cannot hold by doing nothing.
#[derive(Debug, Default)]
struct Coverage {
    settlements: usize,
    late_entries: u64,
    /// Settlements closed on another partition than some of their payments'.
    multi_partition_runs: usize,
}

#[test]
fn every_merchant_window_is_settled_once_whatever_the_interleaving() {
    let coverage = std::cell::RefCell::new(Coverage::default());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 96, ..ProptestConfig::default() });
    let strategy = (
        proptest::collection::vec(event(), 1..150),
        1u32..5,
        proptest::collection::vec((0usize..4, proptest::bool::ANY, 1usize..12), 0..400),
    );
    let result = runner.run(&strategy, |(events, partitions, steps)| {
        let cluster = settle_interleaved(&events, partitions, steps)?;
        let mut coverage = coverage.borrow_mut();
        coverage.settlements += cluster.settlements.len();
        coverage.late_entries += cluster.settlements.iter().map(|s| s.late_payment_count).sum::<u64>();
        coverage.multi_partition_runs += usize::from(partitions > 1 && !cluster.settlements.is_empty());
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    let coverage = coverage.into_inner();
    eprintln!("{coverage:?}");
    assert!(
        coverage.settlements > 100 && coverage.late_entries > 20 && coverage.multi_partition_runs > 10,
        "{coverage:?}"
    );
}

/// Runs one case and checks the property; returns the cluster for coverage.
fn settle_interleaved(
    events: &[Event],
    partitions: u32,
    steps: Vec<(usize, bool, usize)>,
) -> Result<Cluster, TestCaseError> {
    let config = Arc::new(OperatorConfig {
        settlement_window_ms: 2 * HOUR_MS,
        input_partitions: Some(partitions),
        // Late payments are scored (by default they go to review and move no money, so
        // only refunds could be late for settlement).
        late_payments: paystream_operators::LatePaymentPolicy::Score,
        ..OperatorConfig::default()
    });
    let processors =
        (0..partitions).map(|p| PartitionProcessor::new(config.clone(), default_model(&config), p)).collect();
    let mut cluster = Cluster {
        processors,
        payments: records(events, partitions),
        inboxes: vec![VecDeque::new(); partitions as usize],
        ledger: Vec::new(),
        settlements: Vec::new(),
        misplaced: 0,
        approved_merchant_events: 0,
        changes: 0,
    };
    // Random interleaving first: payments (or idleness) and deliveries, anywhere.
    for (partition, read_entries, count) in steps {
        let p = partition % partitions as usize;
        if read_entries { cluster.entries(p, count) } else { cluster.payments(p, count) }
    }
    // Then drain, round-robin, until nothing is in flight and a whole round changes
    // nothing, as the runtime stops (idle partitions converge on the most advanced
    // horizon: a bounded number of rounds).
    let mut settled = false;
    for _ in 0..1_000 {
        let changes_before = cluster.changes;
        for p in 0..partitions as usize {
            cluster.payments(p, 7);
            cluster.entries(p, 5);
        }
        if !cluster.busy() && cluster.changes == changes_before {
            settled = true;
            break;
        }
    }
    prop_assert!(settled, "the partitions never went idle");

    prop_assert_eq!(cluster.misplaced, 0, "an entry reached a closed window");
    let mut windows = HashSet::new();
    for settlement in &cluster.settlements {
        prop_assert!(
            windows.insert((settlement.merchant_id.clone(), settlement.window_start.clone())),
            "{} settled twice",
            settlement.settlement_id
        );
        prop_assert_eq!(settlement.source_partition, merchant_partition(&settlement.merchant_id, partitions));
    }
    let report = reconcile(&cluster.ledger, &cluster.settlements);
    prop_assert_eq!(report.mismatches, Vec::<String>::new());
    // Every approved merchant event is in a settlement or an open window, once.
    let open: usize = cluster
        .processors
        .iter()
        .flat_map(|p| p.state().settlement().open_windows())
        .map(|(_, t)| (t.payment_count + t.refund_count + t.chargeback_count) as usize)
        .sum();
    let settled: usize =
        cluster.settlements.iter().map(|s| (s.payment_count + s.refund_count + s.chargeback_count) as usize).sum();
    prop_assert_eq!(settled + open, cluster.approved_merchant_events);
    prop_assert_eq!(report.transactions, cluster.approved_merchant_events);
    // All idle: every partition reached the most advanced horizon, and every window
    // before it is closed.
    let horizons: Vec<Option<i64>> = cluster.processors.iter().map(|p| p.state().settlement().horizon_ms()).collect();
    if let Some(max) = horizons.iter().flatten().max() {
        prop_assert!(horizons.iter().all(|h| *h == Some(*max)), "{horizons:?}");
        for processor in &cluster.processors {
            for ((start, merchant, _), _) in processor.state().settlement().open_windows() {
                prop_assert!(start >= max, "{merchant} window {start} still open before {max}");
            }
        }
    }
    Ok(cluster)
}

/// A settlement record paystream did not write is dead-lettered whole, with its reason,
/// and nothing of it is applied; the records around it are.
#[test]
fn a_foreign_settlement_record_is_dead_lettered_whole() {
    use paystream_domain::Currency;
    use paystream_operators::settlement::{EntryKind, SettlementEntry, SettlementInput};
    let config = Arc::new(OperatorConfig { input_partitions: Some(2), ..OperatorConfig::default() });
    let mut processor = PartitionProcessor::new(config.clone(), default_model(&config), 0);
    let entry = |id: &str, gross_minor: i64| {
        SettlementInput::Entry(SettlementEntry {
            entry_id: id.into(),
            merchant_id: "m".into(),
            currency: Currency::EUR,
            kind: EntryKind::Payment,
            gross_minor,
            fee_minor: 0,
            event_time_ms: START_MS,
            window_start_ms: START_MS,
            late: false,
            source_partition: 1,
        })
    };
    let record = |inputs: Vec<SettlementInput>| {
        let inputs: Vec<(u32, SettlementInput)> = inputs.into_iter().map(|input| (0, input)).collect();
        let mut records = encode_inputs(&inputs);
        assert_eq!(records.len(), 1);
        records.remove(0).1
    };
    let records = [
        record(vec![entry("ok", 100)]),
        record(vec![entry("fine", 5), entry("negative", -1)]),
        record(vec![SettlementInput::Mark { source_partition: 7, open_from_ms: START_MS }]),
        b"not a settlement record".to_vec(),
    ];
    let inputs: Vec<InputRecord<'_>> = records
        .iter()
        .enumerate()
        .map(|(i, value)| InputRecord { offset: i as u64, key: b"", value, timestamp_ms: 0 })
        .collect();
    let mut out = OutputBatch::default();
    processor.process_settlement_inputs("paystream-settlement-entries", &inputs, &mut out);
    let letters: Vec<_> = out.dead_letters.iter().map(|l| (l.source_offset, l.reason.as_str())).collect();
    assert_eq!(letters, [(1, "non_positive_amount"), (2, "wrong_partition"), (3, "unsupported_schema")]);
    let windows: Vec<_> =
        processor.state().settlement().open_windows().map(|(_, t)| (t.payment_count, t.gross_minor)).collect();
    assert_eq!(windows, [(1, 100)], "only the first record applied; none of the second");
}
