//! Features by hand and by their definitions, as-of queries, window counts.

use std::collections::VecDeque;

use super::windows::{count_at_or_before, count_near};
use super::*;

const DAY: i64 = MILLIS_PER_DAY;
const HOUR: i64 = 3_600_000;
/// 2018-04-02, a Monday, at midnight.
const MONDAY: i64 = 1_522_627_200_000;

fn feature(features: &FeatureRow, name: &str) -> f64 {
    features[FEATURE_NAMES.iter().position(|n| *n == name).unwrap()]
}

#[test]
fn customer_windows_by_hand() {
    let mut state = ReferenceFeatures::new(7 * DAY);
    state.observe_payment("p1", "c", "t", MONDAY, 10_00);
    state.observe_payment("p2", "c", "t", MONDAY + 12 * HOUR, 20_00);
    state.observe_payment("p3", "c", "t", MONDAY + 5 * DAY, 30_00);
    // Day 5 + 13 h: the 1-day window (t − 1d, t] holds p3 and this payment;
    // 7 days hold p1..p3 and this; 30 days the same.
    let f = state.observe_payment("p4", "c", "t", MONDAY + 5 * DAY + 13 * HOUR, 60_00);
    assert_eq!(feature(&f, "CUSTOMER_ID_NB_TX_1DAY_WINDOW"), 2.0);
    assert_eq!(feature(&f, "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"), 45.0);
    assert_eq!(feature(&f, "CUSTOMER_ID_NB_TX_7DAY_WINDOW"), 4.0);
    assert_eq!(feature(&f, "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW"), 30.0);
    assert_eq!(feature(&f, "TX_AMOUNT"), 60.0);
    // Exactly 7 days after p1: p1 is at the open end of (t − 7d, t], so out.
    let f = state.observe_payment("p5", "c", "t", MONDAY + 7 * DAY, 1_00);
    assert_eq!(feature(&f, "CUSTOMER_ID_NB_TX_7DAY_WINDOW"), 4.0, "p2, p3, p4, p5");
    assert_eq!(feature(&f, "CUSTOMER_ID_NB_TX_30DAY_WINDOW"), 5.0);
}

#[test]
fn terminal_risk_uses_only_delayed_labels_that_arrived() {
    let mut state = ReferenceFeatures::new(7 * DAY);
    // Day 0: two payments at terminal t, one fraud; day 3: one genuine.
    state.observe_payment("a", "c1", "t", MONDAY + HOUR, 5_00);
    state.observe_payment("b", "c2", "t", MONDAY + 2 * HOUR, 5_00);
    state.observe_payment("c", "c3", "t", MONDAY + 3 * DAY, 5_00);
    // Day 7 + 1.5 h: the delayed 1-day window is (day −0.9375, day 0 + 1.5 h]: holds
    // a only. a's label has not arrived: count 1, risk 0.
    let f = state.observe_payment("x", "c4", "t", MONDAY + 7 * DAY + 90 * 60_000, 5_00);
    assert_eq!(feature(&f, "TERMINAL_ID_NB_TX_1DAY_WINDOW"), 1.0);
    assert_eq!(feature(&f, "TERMINAL_ID_RISK_1DAY_WINDOW"), 0.0);
    // Labels arrive (reported 7 days after each payment): a is fraud, b genuine.
    assert_eq!(state.observe_label("a", true, MONDAY + 7 * DAY + HOUR), LabelApplied::Attached);
    assert_eq!(state.observe_label("b", false, MONDAY + 7 * DAY + 2 * HOUR), LabelApplied::Attached);
    assert_eq!(state.observe_label("nope", true, MONDAY + 7 * DAY), LabelApplied::Pending);
    // Day 7 + 2 h: window holds a and b: risk 1/2. The 7-day window the same.
    let f = state.observe_payment("y", "c5", "t", MONDAY + 7 * DAY + 2 * HOUR, 5_00);
    assert_eq!(feature(&f, "TERMINAL_ID_NB_TX_1DAY_WINDOW"), 2.0);
    assert_eq!(feature(&f, "TERMINAL_ID_RISK_1DAY_WINDOW"), 0.5);
    assert_eq!(feature(&f, "TERMINAL_ID_NB_TX_7DAY_WINDOW"), 2.0);
    // Day 10 + 1 h: 1-day window (day 2 + 1 h, day 3 + 1 h] holds c only (no label: risk
    // 0); the 7-day window (day −4, day 3 + 1 h] holds a, b, c: risk 1/3.
    let f = state.observe_payment("z", "c6", "t", MONDAY + 10 * DAY + HOUR, 5_00);
    assert_eq!(feature(&f, "TERMINAL_ID_NB_TX_1DAY_WINDOW"), 1.0);
    assert_eq!(feature(&f, "TERMINAL_ID_RISK_1DAY_WINDOW"), 0.0);
    assert_eq!(feature(&f, "TERMINAL_ID_NB_TX_7DAY_WINDOW"), 3.0);
    assert!((feature(&f, "TERMINAL_ID_RISK_7DAY_WINDOW") - 1.0 / 3.0).abs() < 1e-12);
    // The payments observed after day 7 are not in any delayed window yet.
    assert_eq!(feature(&f, "TERMINAL_ID_NB_TX_30DAY_WINDOW"), 3.0);
}

#[test]
fn calendar_flags_follow_the_handbook() {
    let mut state = ReferenceFeatures::new(7 * DAY);
    let saturday_6am = MONDAY + 5 * DAY + 6 * HOUR + 59 * 60_000;
    let f = state.observe_payment("p", "c", "t", saturday_6am, 1);
    assert_eq!((feature(&f, "TX_DURING_WEEKEND"), feature(&f, "TX_DURING_NIGHT")), (1.0, 1.0));
    let f = state.observe_payment("q", "c", "t", MONDAY + 7 * HOUR, 1);
    assert_eq!((feature(&f, "TX_DURING_WEEKEND"), feature(&f, "TX_DURING_NIGHT")), (0.0, 0.0));
}

#[test]
fn extra_features_by_hand() {
    let mut state = ReferenceFeatures::new(7 * DAY);
    let extra = |f: &FeatureRow, name: &str| {
        f[REFERENCE_FEATURE_COUNT + EXTRA_FEATURE_NAMES.iter().position(|n| *n == name).unwrap()]
    };
    let f = state.observe_payment("p1", "c", "t1", MONDAY, 10_00);
    assert_eq!(extra(&f, "AMOUNT_TO_CUSTOMER_AVG_30DAY_RATIO"), 1.0);
    assert_eq!(extra(&f, "CUSTOMER_HOURS_SINCE_PREVIOUS_TX"), 720.0);
    assert_eq!(extra(&f, "CUSTOMER_NEW_TERMINAL_30DAY"), 1.0);
    assert_eq!(extra(&f, "TERMINAL_ID_NB_TX_1DAY_NOW"), 0.0);
    state.observe_payment("p2", "c", "t2", MONDAY + HOUR, 30_00);
    state.observe_payment("p3", "other", "t1", MONDAY + 2 * HOUR, 5_00);
    let f = state.observe_payment("p4", "c", "t1", MONDAY + 3 * HOUR, 100_00);
    assert_eq!(extra(&f, "AMOUNT_TO_CUSTOMER_AVG_30DAY_RATIO"), 5.0, "100 / mean(10, 30)");
    assert_eq!(extra(&f, "CUSTOMER_HOURS_SINCE_PREVIOUS_TX"), 2.0);
    assert_eq!(extra(&f, "CUSTOMER_NEW_TERMINAL_30DAY"), 0.0);
    assert_eq!(extra(&f, "TERMINAL_ID_NB_TX_1DAY_NOW"), 2.0, "p1 and p3 at t1");
    assert_eq!(f[0], 100.0, "the reference features come first");
}

#[test]
fn idle_keys_expire_only_once_outside_every_window() {
    let mut state = ReferenceFeatures::new(7 * DAY);
    state.observe_payment("p1", "old", "t-old", MONDAY, 1_00);
    state.observe_payment("p2", "new", "t-new", MONDAY + 20 * DAY, 1_00);
    assert_eq!(state.expire_idle(MONDAY + 29 * DAY), 0, "everything is still inside a window");
    // Day 30: the old customer's payment left its 30-day window; its terminal is still
    // inside the delayed terminal windows (up to d + 30 = 37 days).
    assert_eq!(state.expire_idle(MONDAY + 30 * DAY), 1);
    assert_eq!(state.tracked_keys(), (1, 2));
    assert_eq!(state.expire_idle(MONDAY + 37 * DAY), 1);
    assert_eq!(state.tracked_keys(), (1, 1));
    // Expiry never changes a feature: the new customer's windows are intact.
    let f = state.observe_payment("p3", "new", "t-new", MONDAY + 37 * DAY, 3_00);
    assert_eq!(feature(&f, "CUSTOMER_ID_NB_TX_30DAY_WINDOW"), 2.0);
    assert_eq!(feature(&f, "TERMINAL_ID_NB_TX_30DAY_WINDOW"), 1.0);
}

#[test]
fn late_events_land_in_their_place() {
    let mut state = ReferenceFeatures::new(7 * DAY);
    state.observe_payment("p2", "c", "t", MONDAY + 2 * DAY, 10_00);
    // Late: an hour before day 2's payment.
    let f = state.observe_payment("p1", "c", "t", MONDAY + 2 * DAY - HOUR, 30_00);
    // Its own 1-day window (t − 1d, t] does not contain the later p2.
    assert_eq!(feature(&f, "CUSTOMER_ID_NB_TX_1DAY_WINDOW"), 1.0);
    let f = state.observe_payment("p3", "c", "t", MONDAY + 2 * DAY + HOUR, 20_00);
    assert_eq!(feature(&f, "CUSTOMER_ID_NB_TX_1DAY_WINDOW"), 3.0);
    assert_eq!(feature(&f, "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"), 20.0);
}

#[test]
fn count_at_or_before_matches_a_linear_count_on_wrapped_deques() {
    for len in 0..40usize {
        // Rotate so the deque wraps around its buffer, with duplicate times.
        let mut deque: VecDeque<i64> = VecDeque::with_capacity(64);
        for i in 0..50 {
            deque.push_back(i);
            deque.pop_front();
        }
        deque.extend((0..len as i64).map(|i| i / 3 * 10));
        for t in -5..(len as i64 / 3 * 10 + 15) {
            let expected = deque.iter().filter(|e| **e <= t).count();
            assert_eq!(count_at_or_before(&deque, t, |e| *e), expected, "len {len}, t {t}, {:?}", deque.as_slices());
        }
    }
}

proptest::proptest! {
    /// Whatever the hint — at the answer, a few entries off, far off, past the end —
    /// the count is exact, on deques that wrap around their buffer.
    #[test]
    fn count_near_is_exact_from_any_hint(
        gaps in proptest::collection::vec(0i64..3, 0..60),
        rotation in 0usize..64,
        hint in 0usize..70,
        limit in -2i64..90,
    ) {
        let mut deque: VecDeque<i64> = VecDeque::with_capacity(64);
        for i in 0..rotation {
            deque.push_back(i as i64);
            deque.pop_front();
        }
        let mut time = 0;
        for gap in gaps {
            time += gap; // 0: equal times
            deque.push_back(time);
        }
        let expected = deque.iter().filter(|e| **e <= limit).count();
        proptest::prop_assert_eq!(count_near(&deque, hint, limit, |e| *e), expected);
    }
}

#[test]
fn terminal_index_is_an_as_of_query_and_idempotent() {
    let (t, d) = (key_hash("t"), 7 * DAY);
    let mut index = TerminalIndex::default();
    // A label that arrives before its payment waits for it.
    let fraud = Label { is_fraud: true, reported_at_ms: MONDAY + 8 * DAY };
    assert_eq!(index.add_label(payment_hash("a"), fraud), LabelApplied::Pending);
    assert!(index.add_payment(payment_hash("a"), t, MONDAY));
    assert!(!index.add_payment(payment_hash("a"), t, MONDAY), "a replayed payment is not indexed twice");
    assert_eq!(index.add_label(payment_hash("a"), fraud), LabelApplied::Attached);
    // Payments far in the future are already indexed: they must not count before their time.
    assert!(index.add_payment(payment_hash("later"), t, MONDAY + 20 * DAY));
    let mut row = [0.0; FEATURE_COUNT];
    // Day 7 + 1 h: a is in the delayed 1-day window, but its label is reported only on day 8.
    index.compute(t, MONDAY + 7 * DAY + HOUR, d, &mut row);
    assert_eq!((row[index::TERMINAL_WINDOWS], row[index::TERMINAL_WINDOWS + 1]), (1.0, 0.0));
    assert_eq!(row[index::TERMINAL_NB_TX_1DAY_NOW], 0.0);
    // Day 8: the label counts (reported at exactly t).
    index.compute(t, MONDAY + 8 * DAY, d, &mut row);
    assert_eq!((row[index::TERMINAL_WINDOWS + 2], row[index::TERMINAL_WINDOWS + 3]), (1.0, 1.0));
    // Velocity counts payments strictly before t within a day.
    index.compute(t, MONDAY + 20 * DAY + HOUR, d, &mut row);
    assert_eq!(row[index::TERMINAL_NB_TX_1DAY_NOW], 1.0);
    index.compute(t, MONDAY + 20 * DAY, d, &mut row);
    assert_eq!(row[index::TERMINAL_NB_TX_1DAY_NOW], 0.0, "the payment at t itself is not velocity");
    assert_eq!(index.sizes(), (1, 2, 0));
    let restored = TerminalIndex::from_snapshot_bytes(&index.to_snapshot_bytes()).unwrap();
    assert_eq!(restored, index, "the payment map is rebuilt from the entries");
    assert!(TerminalIndex::from_snapshot_bytes(b"junk").is_err());
    assert_eq!(index.expire(MONDAY), 1);
    assert_eq!(index.sizes(), (1, 1, 0));
    index.add_label(payment_hash("never-seen"), fraud);
    assert_eq!(index.expire(MONDAY + 9 * DAY), 0);
    assert_eq!(index.sizes(), (1, 1, 0), "pending labels reported before the horizon go too");
}

proptest::proptest! {
    /// The windows as their definitions state them, by brute force over every payment
    /// and label: customers with late payments (within the lateness), terminals with
    /// labels arriving in any order (the latest reported wins), windows of every size.
    #[test]
    fn features_match_their_definitions(
        payments in proptest::collection::vec((0u8..3, 0u8..4, 0i64..12, 0i64..80, 1i64..100_000), 1..200),
        labels in proptest::collection::vec((0usize..150, proptest::bool::ANY, 0u32..400), 0..60),
        long_history in proptest::bool::ANY,
    ) {
        let (d, lateness) = (7 * DAY, 2 * DAY);
        // (customer, terminal, time, amount): each step moves time on by up to 11 hours;
        // a payment is late by up to 47 hours (within the lateness) 60 % of the time.
        // Whole hours, so payments often sit exactly on window edges. A long history
        // pads terminal 0 and customer 0 40 days earlier, past the hint walk (binary search).
        let mut time = MONDAY + 40 * DAY;
        let mut newest = time;
        let mut all: Vec<(u8, u8, i64, i64)> = Vec::new();
        if long_history {
            for i in 0..200 {
                all.push((0, 0, MONDAY + i * 4 * HOUR, 1_00));
            }
            time += 10 * DAY;
            newest = time;
        }
        for (customer, terminal, step, back, amount) in &payments {
            time += step * HOUR;
            let late_by = if *back >= 32 { (back - 32) * HOUR } else { 0 };
            let t = (time - late_by).max(newest - lateness);
            newest = newest.max(t);
            // One amount in four is 8 times larger: some are above 3 times the average.
            let amount = if amount % 4 == 0 { amount * 8 } else { *amount };
            all.push((*customer, *terminal, t, amount));
        }
        let mut customers = CustomerWindows::default();
        // Window starts kept for the d queried, or for another (any hint is exact).
        let mut index = TerminalIndex::new(if long_history { d } else { 0 });
        for (i, (c, term, t, amount)) in all.iter().enumerate() {
            let (ch, th) = (key_hash(&format!("c{c}")), key_hash(&format!("t{term}")));
            let mut row = [0.0; FEATURE_COUNT];
            customers.compute(ch, th, *t, *amount, &mut row);
            // Brute force over the customer's earlier payments in (t − 30 d, t].
            let earlier: Vec<&(u8, u8, i64, i64)> =
                all[..i].iter().filter(|p| p.0 == *c && p.2 <= *t && p.2 > t - 30 * DAY).collect();
            for (w, days) in [1, 7, 30].into_iter().enumerate() {
                let inside: Vec<_> = earlier.iter().filter(|p| p.2 > t - days * DAY).collect();
                let count = inside.len() as f64 + 1.0;
                let sum = inside.iter().map(|p| p.3).sum::<i64>() + amount;
                proptest::prop_assert_eq!(row[index::CUSTOMER_WINDOWS + 2 * w], count);
                proptest::prop_assert_eq!(row[index::CUSTOMER_WINDOWS + 2 * w + 1], sum as f64 / count / 100.0);
            }
            let previous = earlier.iter().map(|p| p.2).max();
            proptest::prop_assert_eq!(
                row[index::CUSTOMER_HOURS_SINCE_PREVIOUS_TX],
                previous.map_or(720.0, |p| (t - p) as f64 / 3_600_000.0)
            );
            let seen = earlier.iter().any(|p| p.1 == *term);
            proptest::prop_assert_eq!(row[index::CUSTOMER_NEW_TERMINAL_30DAY], f64::from(u8::from(!seen)));
            let largest = earlier.iter().map(|p| p.3).max().filter(|m| *m > 0);
            proptest::prop_assert_eq!(
                row[index::AMOUNT_TO_CUSTOMER_MAX_30DAY_RATIO],
                largest.map_or(1.0, |m| *amount as f64 / m as f64)
            );
            let (count, sum) = (earlier.len() as i128, earlier.iter().map(|p| i128::from(p.3)).sum::<i128>());
            let above = earlier.iter().filter(|p| p.2 > t - 14 * DAY && i128::from(p.3) * count > 3 * sum).count();
            proptest::prop_assert_eq!(row[index::CUSTOMER_NB_TX_ABOVE_3X_AVG_14DAY], above as f64);
            customers.add(ch, th, *t, *amount, lateness);
            index.add_payment(payment_hash(&format!("p{i}")), th, *t);
        }
        // Labels, in the order given, with distinct report times (a tie's winner
        // depends on arrival order).
        let mut reported: Vec<(usize, bool, i64)> = Vec::new();
        for (n, (payment, is_fraud, hours)) in labels.iter().enumerate() {
            let payment = payment % all.len();
            let at = all[payment].2 + i64::from(*hours) * HOUR + n as i64;
            index.add_label(payment_hash(&format!("p{payment}")), Label { is_fraud: *is_fraud, reported_at_ms: at });
            reported.push((payment, *is_fraud, at));
        }
        let latest = |payment: usize| reported.iter().filter(|r| r.0 == payment).max_by_key(|r| r.2).copied();
        // Probe times from the first payment to 40 days after the last.
        let first = all.iter().map(|p| p.2).min().expect("payments");
        let span = newest + 40 * DAY - first;
        for term in 0..4u8 {
            for probe in 0..60i64 {
                let t = first + span * probe / 60 + probe * 7 * HOUR % DAY;
                let mut row = [0.0; FEATURE_COUNT];
                index.compute(key_hash(&format!("t{term}")), t, d, &mut row);
                let at_terminal: Vec<(usize, i64)> = all.iter().enumerate()
                    .filter(|(_, p)| p.1 == term && p.2 < t).map(|(i, p)| (i, p.2)).collect();
                for (w, days) in [1, 7, 30].into_iter().enumerate() {
                    let inside: Vec<_> = at_terminal.iter().filter(|(_, pt)| *pt <= t - d && *pt > t - d - days * DAY).collect();
                    let frauds = inside.iter()
                        .filter(|(i, _)| latest(*i).is_some_and(|(_, fraud, at)| fraud && at <= t)).count();
                    proptest::prop_assert_eq!(row[index::TERMINAL_WINDOWS + 2 * w], inside.len() as f64);
                    let risk = if inside.is_empty() { 0.0 } else { frauds as f64 / inside.len() as f64 };
                    proptest::prop_assert_eq!(row[index::TERMINAL_WINDOWS + 2 * w + 1], risk);
                }
                let velocity = at_terminal.iter().filter(|(_, pt)| *pt > t - DAY).count();
                proptest::prop_assert_eq!(row[index::TERMINAL_NB_TX_1DAY_NOW], velocity as f64);
                let newest_fraud = at_terminal.iter()
                    .filter(|(_, pt)| *pt <= t - d && *pt > t - d - 30 * DAY)
                    .filter(|(i, _)| latest(*i).is_some_and(|(_, fraud, at)| fraud && at <= t))
                    .map(|(_, pt)| *pt).max();
                let since = newest_fraud
                    .map_or(-1.0, |f| at_terminal.iter().filter(|(_, pt)| *pt > f && *pt <= t - d).count() as f64);
                proptest::prop_assert_eq!(row[index::TERMINAL_NB_TX_SINCE_KNOWN_FRAUD], since);
            }
        }
    }

    /// The live pipeline indexes payments and labels in whatever order its inputs
    /// deliver them, possibly far ahead of the payment being scored; the backtest
    /// replays them in event-time order. Both give the same terminal features.
    #[test]
    fn terminal_features_do_not_depend_on_indexing_order(
        events in proptest::collection::vec((0u8..3, 0u32..600, proptest::option::of((proptest::bool::ANY, 0u32..400))), 1..120),
        shuffle_seed in 0u64..u64::MAX,
    ) {
        let d = 7 * DAY;
        // (id, terminal, time, label: (fraud, reported)) with times in steps of an hour.
        let mut time = MONDAY;
        let payments: Vec<(String, String, i64, Option<Label>)> = events
            .iter()
            .enumerate()
            .map(|(i, (terminal, step, label))| {
                time += i64::from(*step) * 60_000 * 30;
                let label = label.map(|(is_fraud, hours)| Label { is_fraud, reported_at_ms: time + i64::from(hours) * HOUR * 2 });
                (format!("p{i}"), format!("t{terminal}"), time, label)
            })
            .collect();
        // In event-time order, each label observed before the first payment at or after its report.
        let mut sequential = ReferenceFeatures::new(d);
        let mut reports: Vec<(i64, &str, Label)> =
            payments.iter().filter_map(|(id, _, _, l)| l.map(|l| (l.reported_at_ms, id.as_str(), l))).collect();
        reports.sort_by_key(|r| r.0);
        let mut next_report = 0;
        let mut expected = Vec::new();
        for (id, terminal, t, _) in &payments {
            while next_report < reports.len() && reports[next_report].0 <= *t {
                let (_, label_id, label) = reports[next_report];
                sequential.observe_label(label_id, label.is_fraud, label.reported_at_ms);
                next_report += 1;
            }
            expected.push(sequential.observe_payment(id, "c", terminal, *t, 1_00));
        }
        // Everything indexed first, in a shuffled order, labels and payments mixed.
        let mut operations: Vec<(usize, bool)> = (0..payments.len()).flat_map(|i| [(i, false), (i, true)]).collect();
        let mut state = shuffle_seed | 1;
        for i in (1..operations.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            operations.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut live = TerminalIndex::default();
        for (i, is_label) in operations {
            let (id, terminal, t, label) = &payments[i];
            if is_label {
                if let Some(label) = label { live.add_label(payment_hash(id), *label); }
            } else {
                live.add_payment(payment_hash(id), key_hash(terminal), *t);
            }
        }
        for ((_, terminal, t, _), expected) in payments.iter().zip(&expected) {
            let mut row = [0.0; FEATURE_COUNT];
            live.compute(key_hash(terminal), *t, d, &mut row);
            for i in (0..FEATURE_COUNT).filter(|&i| paystream_models::features::is_terminal_feature(i)) {
                proptest::prop_assert_eq!(row[i], expected[i], "{}", FEATURE_NAMES[i]);
            }
        }
    }
}
