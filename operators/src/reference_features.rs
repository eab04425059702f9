//! The 15 reference features of the fraud handbook (ch. 3), computed online in event
//! time from payments and the delayed fraud-label stream:
//!
//! - `TX_AMOUNT`, `TX_DURING_WEEKEND` (Saturday or Sunday), `TX_DURING_NIGHT` (hour ≤ 6);
//! - per customer, for w = 1, 7, 30 days: the number of payments in (t − w, t] and their
//!   average amount (the payment itself included);
//! - per terminal, for w = 1, 7, 30 days and delay d: the number of payments in
//!   (t − d − w, t − d] and the risk = frauds / payments there (0 when there are none),
//!   where a payment counts as fraud only once its label event has been observed.
//!
//! Windows are exact (per-key deques of recent events, bounded by the longest window),
//! not bucketed. State per customer: 16 bytes per payment in the last 30 days; per
//! terminal: 32 bytes per payment in the last d + 30 days. Pure: no IO, no clock. The
//! caller feeds events in event-time order, each label before any payment whose event
//! time is at or after the label's `reported_at`.

use std::collections::{HashMap, VecDeque};

use paystream_domain::time::MILLIS_PER_DAY;

pub const REFERENCE_FEATURE_COUNT: usize = 15;

/// Names in the order of the feature vector (the handbook's column names).
pub const REFERENCE_FEATURE_NAMES: [&str; REFERENCE_FEATURE_COUNT] = [
    "TX_AMOUNT",
    "TX_DURING_WEEKEND",
    "TX_DURING_NIGHT",
    "CUSTOMER_ID_NB_TX_1DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW",
    "CUSTOMER_ID_NB_TX_7DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW",
    "CUSTOMER_ID_NB_TX_30DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW",
    "TERMINAL_ID_NB_TX_1DAY_WINDOW",
    "TERMINAL_ID_RISK_1DAY_WINDOW",
    "TERMINAL_ID_NB_TX_7DAY_WINDOW",
    "TERMINAL_ID_RISK_7DAY_WINDOW",
    "TERMINAL_ID_NB_TX_30DAY_WINDOW",
    "TERMINAL_ID_RISK_30DAY_WINDOW",
];

/// Online features beyond the reference 15, each computable from what the stream has
/// delivered by the payment's event time.
pub const EXTRA_FEATURE_COUNT: usize = 4;
pub const EXTRA_FEATURE_NAMES: [&str; EXTRA_FEATURE_COUNT] = [
    // Amount over the customer's average of the previous 30 days (1 without history).
    "AMOUNT_TO_CUSTOMER_AVG_30DAY_RATIO",
    // Hours since the customer's previous payment (capped at 720).
    "CUSTOMER_HOURS_SINCE_PREVIOUS_TX",
    // 1 when the customer has not paid at this terminal in the previous 30 days.
    "CUSTOMER_NEW_TERMINAL_30DAY",
    // Payments at the terminal in the last day, undelayed (terminal velocity).
    "TERMINAL_ID_NB_TX_1DAY_NOW",
];
pub const EXTENDED_FEATURE_COUNT: usize = REFERENCE_FEATURE_COUNT + EXTRA_FEATURE_COUNT;
const HOURS_SINCE_PREVIOUS_MAX: f64 = 720.0;

const WINDOW_DAYS: [i64; 3] = [1, 7, 30];
const LONGEST_WINDOW_MS: i64 = 30 * MILLIS_PER_DAY;

#[derive(Clone, Copy, Debug)]
struct TerminalEntry {
    event_time_ms: i64,
    payment_id_hash: u128,
    /// `Some` once the payment's label has been observed.
    is_fraud: Option<bool>,
}

/// Online state of the reference features.
pub struct ReferenceFeatures {
    label_delay_ms: i64,
    /// Per customer: (event time, amount in minor units), in event-time order.
    /// Per customer: (event time, amount in minor units, terminal hash), in event-time order.
    customers: HashMap<String, VecDeque<(i64, i64, u64)>>,
    /// Per terminal: recent payments in event-time order.
    terminals: HashMap<String, VecDeque<TerminalEntry>>,
}

/// The entry of `key`, allocating the key only when it is new.
fn entry<'a, V: Default>(map: &'a mut HashMap<String, V>, key: &str) -> &'a mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

/// Inserts `item` keeping `deque` sorted by `time`; late events land in their place.
fn insert_by_time<T: Copy>(deque: &mut VecDeque<T>, item: T, time: impl Fn(&T) -> i64) {
    let at = deque.partition_point(|e| time(e) <= time(&item));
    deque.insert(at, item);
}

impl ReferenceFeatures {
    /// `label_delay_ms`: the handbook's d (7 days in the reference protocol).
    pub fn new(label_delay_ms: i64) -> ReferenceFeatures {
        ReferenceFeatures { label_delay_ms, customers: HashMap::new(), terminals: HashMap::new() }
    }

    /// The features of a payment at its event time; then remembers the payment.
    /// `amount_minor` is in cents (the feature `TX_AMOUNT` is in major units).
    pub fn observe_payment(
        &mut self,
        payment_id: &str,
        customer: &str,
        terminal: &str,
        event_time_ms: i64,
        amount_minor: i64,
    ) -> [f64; REFERENCE_FEATURE_COUNT] {
        self.observe(payment_id, customer, terminal, event_time_ms, amount_minor, None)
    }

    /// The 15 reference features followed by [`EXTRA_FEATURE_NAMES`]; then remembers the
    /// payment. The extra features look only at what the stream delivered before it.
    pub fn observe_payment_extended(
        &mut self,
        payment_id: &str,
        customer: &str,
        terminal: &str,
        event_time_ms: i64,
        amount_minor: i64,
    ) -> [f64; EXTENDED_FEATURE_COUNT] {
        let mut extra = [0.0; EXTRA_FEATURE_COUNT];
        let reference = self.observe(payment_id, customer, terminal, event_time_ms, amount_minor, Some(&mut extra));
        let mut features = [0.0; EXTENDED_FEATURE_COUNT];
        features[..REFERENCE_FEATURE_COUNT].copy_from_slice(&reference);
        features[REFERENCE_FEATURE_COUNT..].copy_from_slice(&extra);
        features
    }

    /// One lookup and one pass per key: the windows over the events before this payment
    /// (plus the payment itself), the extra features if asked for, then the insertion.
    fn observe(
        &mut self,
        payment_id: &str,
        customer: &str,
        terminal: &str,
        event_time_ms: i64,
        amount_minor: i64,
        extra: Option<&mut [f64; EXTRA_FEATURE_COUNT]>,
    ) -> [f64; REFERENCE_FEATURE_COUNT] {
        let mut features = [0.0; REFERENCE_FEATURE_COUNT];
        features[0] = amount_minor as f64 / 100.0;
        let day = event_time_ms.div_euclid(MILLIS_PER_DAY);
        // 1970-01-01 was a Thursday: (day + 3) mod 7 is 0 on Mondays.
        features[1] = f64::from(u8::from((day + 3).rem_euclid(7) >= 5));
        features[2] = f64::from(u8::from(event_time_ms.rem_euclid(MILLIS_PER_DAY) / 3_600_000 <= 6));

        let terminal_hash = xxhash_rust::xxh3::xxh3_64(terminal.as_bytes());
        let history = entry(&mut self.customers, customer);
        // Earlier events (by event time, ties included), newest first.
        let mut windows = [(0u32, 0i64); 3];
        let mut hours_since_previous = HOURS_SINCE_PREVIOUS_MAX;
        let mut seen_terminal = false;
        let before = history.partition_point(|(t, _, _)| *t <= event_time_ms);
        for (t, amount, hash) in history.range(..before).rev() {
            let age = event_time_ms - t;
            if age >= LONGEST_WINDOW_MS {
                break;
            }
            hours_since_previous = hours_since_previous.min(age as f64 / 3_600_000.0);
            seen_terminal |= *hash == terminal_hash;
            for (window, days) in windows.iter_mut().zip(WINDOW_DAYS) {
                if age < days * MILLIS_PER_DAY {
                    window.0 += 1;
                    window.1 += amount;
                }
            }
        }
        let (previous_count, previous_sum) = windows[2];
        insert_by_time(history, (event_time_ms, amount_minor, terminal_hash), |e| e.0);
        while history.front().is_some_and(|(t, _, _)| *t <= event_time_ms - LONGEST_WINDOW_MS) {
            history.pop_front();
        }
        for (i, (count, sum)) in windows.into_iter().enumerate() {
            // The windows include this payment.
            let (count, sum) = (count + 1, sum + amount_minor);
            features[3 + 2 * i] = f64::from(count);
            features[4 + 2 * i] = sum as f64 / f64::from(count) / 100.0;
        }

        let entries = entry(&mut self.terminals, terminal);
        let delayed_end = event_time_ms - self.label_delay_ms;
        let mut windows = [(0u32, 0u32); 3];
        let newest = entries.partition_point(|e| e.event_time_ms <= delayed_end);
        for e in entries.range(..newest).rev() {
            let age = delayed_end - e.event_time_ms;
            if age >= LONGEST_WINDOW_MS {
                break;
            }
            for (window, days) in windows.iter_mut().zip(WINDOW_DAYS) {
                if age < days * MILLIS_PER_DAY {
                    window.0 += 1;
                    window.1 += u32::from(e.is_fraud == Some(true));
                }
            }
        }
        for (i, (count, frauds)) in windows.into_iter().enumerate() {
            features[9 + 2 * i] = f64::from(count);
            features[10 + 2 * i] = if count == 0 { 0.0 } else { f64::from(frauds) / f64::from(count) };
        }
        if let Some(extra) = extra {
            let before = entries.partition_point(|e| e.event_time_ms <= event_time_ms);
            let velocity =
                entries.range(..before).rev().take_while(|e| e.event_time_ms > event_time_ms - MILLIS_PER_DAY).count();
            extra[0] = if previous_count == 0 || previous_sum <= 0 {
                1.0
            } else {
                amount_minor as f64 / (previous_sum as f64 / f64::from(previous_count))
            };
            extra[1] = hours_since_previous;
            extra[2] = f64::from(u8::from(!seen_terminal));
            extra[3] = velocity as f64;
        }
        let entry = TerminalEntry {
            event_time_ms,
            payment_id_hash: xxhash_rust::xxh3::xxh3_128(payment_id.as_bytes()),
            is_fraud: None,
        };
        insert_by_time(entries, entry, |e| e.event_time_ms);
        let horizon = event_time_ms - self.label_delay_ms - LONGEST_WINDOW_MS;
        while entries.front().is_some_and(|e| e.event_time_ms <= horizon) {
            entries.pop_front();
        }
        features
    }

    /// Forgets customers and terminals with no event recent enough to appear in any
    /// window of a payment at or after `watermark_ms`, so idle keys do not hold memory
    /// forever; features are unchanged as long as no later payment has an event time
    /// before the watermark (pass event time minus the allowed lateness). Returns how
    /// many keys were dropped.
    pub fn expire_idle(&mut self, watermark_ms: i64) -> usize {
        let before = self.customers.len() + self.terminals.len();
        self.customers
            .retain(|_, history| history.back().is_some_and(|(t, _, _)| *t > watermark_ms - LONGEST_WINDOW_MS));
        let horizon = watermark_ms - self.label_delay_ms - LONGEST_WINDOW_MS;
        self.terminals.retain(|_, entries| entries.back().is_some_and(|e| e.event_time_ms > horizon));
        before - self.customers.len() - self.terminals.len()
    }

    /// (customers, terminals) currently tracked.
    pub fn tracked_keys(&self) -> (usize, usize) {
        (self.customers.len(), self.terminals.len())
    }

    /// Records a fraud label for a payment seen at `terminal` at `payment_event_time_ms`.
    /// Returns false when the payment is unknown here (too old, or never seen).
    pub fn observe_label(
        &mut self,
        payment_id: &str,
        terminal: &str,
        payment_event_time_ms: i64,
        is_fraud: bool,
    ) -> bool {
        let Some(entries) = self.terminals.get_mut(terminal) else { return false };
        let hash = xxhash_rust::xxh3::xxh3_128(payment_id.as_bytes());
        let from = entries.partition_point(|e| e.event_time_ms < payment_event_time_ms);
        for entry in entries.range_mut(from..) {
            if entry.event_time_ms != payment_event_time_ms {
                break;
            }
            if entry.payment_id_hash == hash {
                entry.is_fraud = Some(is_fraud);
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = MILLIS_PER_DAY;
    const HOUR: i64 = 3_600_000;
    /// 2018-04-02, a Monday, at midnight.
    const MONDAY: i64 = 1_522_627_200_000;

    fn feature(features: &[f64; 15], name: &str) -> f64 {
        features[REFERENCE_FEATURE_NAMES.iter().position(|n| *n == name).unwrap()]
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
        // Labels arrive (7 days after each payment): a is fraud, b genuine.
        assert!(state.observe_label("a", "t", MONDAY + HOUR, true));
        assert!(state.observe_label("b", "t", MONDAY + 2 * HOUR, false));
        assert!(!state.observe_label("nope", "t", MONDAY + HOUR, true));
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
        let extra = |f: &[f64; EXTENDED_FEATURE_COUNT], name: &str| {
            f[REFERENCE_FEATURE_COUNT + EXTRA_FEATURE_NAMES.iter().position(|n| *n == name).unwrap()]
        };
        let f = state.observe_payment_extended("p1", "c", "t1", MONDAY, 10_00);
        assert_eq!(extra(&f, "AMOUNT_TO_CUSTOMER_AVG_30DAY_RATIO"), 1.0);
        assert_eq!(extra(&f, "CUSTOMER_HOURS_SINCE_PREVIOUS_TX"), 720.0);
        assert_eq!(extra(&f, "CUSTOMER_NEW_TERMINAL_30DAY"), 1.0);
        assert_eq!(extra(&f, "TERMINAL_ID_NB_TX_1DAY_NOW"), 0.0);
        state.observe_payment_extended("p2", "c", "t2", MONDAY + HOUR, 30_00);
        state.observe_payment_extended("p3", "other", "t1", MONDAY + 2 * HOUR, 5_00);
        let f = state.observe_payment_extended("p4", "c", "t1", MONDAY + 3 * HOUR, 100_00);
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
}
