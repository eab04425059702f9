//! Terminal features in the operator chain: read from the index in a step of their own
//! (`PaymentBatch::read_terminal_features`, the only step a runtime holds the index's lock for), up to
//! the first payment the index is not complete for, and written into the rows the model
//! scores exactly as `feature_row` computes them.

use std::sync::{Arc, Mutex};

use paystream_domain::time::{MILLIS_PER_DAY, format_rfc3339_ms};
use paystream_models::features::{FeatureRow, index};
use paystream_models::{FraudModel, Score};
use paystream_operators::features::{Label, TerminalIndex, key_hash, payment_hash};
use paystream_operators::{InputRecord, OperatorConfig, OutputBatch, PartitionProcessor, TerminalView};

/// 2018-04-02, a Monday.
const DAY0_MS: i64 = 1_522_627_200_000;
const HOUR_MS: i64 = MILLIS_PER_DAY / 24;

/// Reads terminal features and keeps every row it is given.
#[derive(Default)]
struct RowRecorder {
    rows: Mutex<Vec<FeatureRow>>,
}

impl FraudModel for RowRecorder {
    fn version(&self) -> &str {
        "row-recorder"
    }
    fn uses_terminal_features(&self) -> bool {
        true
    }
    fn score_batch(&self, rows: &[FeatureRow], scores: &mut Vec<Score>) {
        self.rows.lock().unwrap().extend_from_slice(rows);
        scores.extend(rows.iter().map(|_| Score::new(0.0)));
    }
}

fn payment(id: &str, event_time_ms: i64) -> Vec<u8> {
    format!(
        r#"{{"payment_id":"{id}","payer_account_id":"c1","merchant_id":"m1","terminal_id":"t","amount":"10.00","currency":"EUR","event_time":"{}","channel":"card_present"}}"#,
        format_rfc3339_ms(event_time_ms)
    )
    .into_bytes()
}

/// Terminal t: x1 (fraud, reported on day 3) at day 0.5, x2 at day 1.5, x3 at day 9.9.
fn index(label_delay_ms: i64) -> TerminalIndex {
    let mut index = TerminalIndex::new(label_delay_ms);
    let t = key_hash("t");
    index.add_payment(payment_hash("x1"), t, DAY0_MS + 12 * HOUR_MS);
    index.add_payment(payment_hash("x2"), t, DAY0_MS + 36 * HOUR_MS);
    index.add_payment(payment_hash("x3"), t, DAY0_MS + 9 * MILLIS_PER_DAY + 21 * HOUR_MS + HOUR_MS * 3 / 5);
    index.add_label(payment_hash("x1"), Label { is_fraud: true, reported_at_ms: DAY0_MS + 3 * MILLIS_PER_DAY });
    index
}

/// The terminal part of a row: (count, risk) for 1, 7 and 30 days, then velocity.
fn terminal_part(row: &FeatureRow) -> [f64; 7] {
    let w = index::TERMINAL_WINDOWS;
    [row[w], row[w + 1], row[w + 2], row[w + 3], row[w + 4], row[w + 5], row[index::TERMINAL_NB_TX_1DAY_NOW]]
}

#[test]
fn terminal_features_are_read_up_to_the_complete_bound_and_scored_as_computed() {
    let config = Arc::new(OperatorConfig::default());
    let index = index(config.label_delay_ms);
    // p1 and p2 are before the bound (day 11), p3 after it.
    let records = [
        payment("p1", DAY0_MS + 9 * MILLIS_PER_DAY + HOUR_MS),
        payment("p2", DAY0_MS + 10 * MILLIS_PER_DAY),
        payment("p3", DAY0_MS + 12 * MILLIS_PER_DAY),
    ];
    let inputs: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(i, r)| InputRecord { offset: i as u64, key: b"c1", value: r, timestamp_ms: 0 })
        .collect();
    let view = TerminalView { index: Some(&index), complete_through_ms: DAY0_MS + 11 * MILLIS_PER_DAY };

    // The two steps, as the runtime runs them.
    let split = Arc::new(RowRecorder::default());
    let mut processor = PartitionProcessor::new(config.clone(), split.clone(), 0);
    let mut parsed: Vec<_> = vec![None; records.len()];
    let read = processor.plan_payments("payments", &inputs, &mut parsed).read_terminal_features(view);
    assert_eq!(read.ready(), 2, "p3 waits for the index");
    let mut out = OutputBatch::default();
    let featurized = read.featurize(&mut out);
    assert_eq!(featurized.consumed(), 2);
    assert_eq!(featurized.finish(None, &mut out), 2);
    assert!(parsed[..2].iter().all(Option::is_none), "consumed payments are taken");
    assert!(parsed[2].as_ref().is_some_and(Result::is_ok), "p3 stays parsed for the next try");
    assert_eq!(out.decisions.len(), 2);

    let rows = split.rows.lock().unwrap().clone();
    // By hand (d = 7 days). p1 at day 9 + 1 h: delayed end day 2 + 1 h; the day window
    // (day 1 + 1 h, day 2 + 1 h] holds x2; the 7 and 30 day windows hold x1 (fraud,
    // reported by then) and x2; nothing in the day before p1 (x3 is later).
    assert_eq!(terminal_part(&rows[0]), [1.0, 0.0, 2.0, 0.5, 2.0, 0.5, 0.0]);
    // p2 at day 10: the day window (day 2, day 3] is empty; x3 is in the day before.
    assert_eq!(terminal_part(&rows[1]), [0.0, 0.0, 2.0, 0.5, 2.0, 0.5, 1.0]);

    // One call gives the same rows, and so does the function training uses.
    let whole = Arc::new(RowRecorder::default());
    let mut processor = PartitionProcessor::new(config.clone(), whole.clone(), 0);
    let mut out = OutputBatch::default();
    assert_eq!(processor.process_batch("payments", &inputs, view, &mut out), 2);
    assert_eq!(*whole.rows.lock().unwrap(), rows);
    for (row, event_time_ms) in rows.iter().zip([DAY0_MS + 9 * MILLIS_PER_DAY + HOUR_MS, DAY0_MS + 10 * MILLIS_PER_DAY])
    {
        let mut expected = [0.0; paystream_models::features::FEATURE_COUNT];
        index.compute(key_hash("t"), event_time_ms, config.label_delay_ms, &mut expected);
        assert_eq!(terminal_part(row), terminal_part(&expected));
    }
}

#[test]
fn without_an_index_terminal_features_are_zero_and_nothing_waits() {
    let config = Arc::new(OperatorConfig::default());
    let model = Arc::new(RowRecorder::default());
    let mut processor = PartitionProcessor::new(config, model.clone(), 0);
    let records = [payment("p1", DAY0_MS), b"not json".to_vec(), payment("p2", DAY0_MS + HOUR_MS)];
    let inputs: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(i, r)| InputRecord { offset: i as u64, key: b"c1", value: r, timestamp_ms: 0 })
        .collect();
    let mut out = OutputBatch::default();
    assert_eq!(processor.process_batch("payments", &inputs, TerminalView::NONE, &mut out), 3);
    assert_eq!(out.decisions.len(), 2);
    assert_eq!(out.dead_letters.len(), 1, "the bad record is dead-lettered, not dropped");
    let rows = model.rows.lock().unwrap();
    assert!(rows.iter().all(|row| terminal_part(row) == [0.0; 7]));
}
