//! Customer features ([`CustomerWindows`]): per customer, for w = 1, 7, 30 days, the
//! payments in (t − w, t] and their average amount, the amount over the previous 30-day
//! average and over the previous 30 days' largest, the previous 14 days' payments above
//! 3 times that average, hours since the previous payment, and whether the terminal is
//! new to the customer. Kept in each payer partition's state.
//!
//! Keyed by payer, like the pipeline, so this state is partition-local. It MUST change
//! only through `StateOp::Seen` (see [`crate::state`]): it is then in the changelog and
//! the snapshots, and restores exactly. Per customer, its payments in event-time order
//! with running amount sums, the kept window starts of its newest payment, and one
//! (customer, terminal) entry for each pair's newest use, for "new terminal".

use std::collections::VecDeque;

use paystream_models::features::{FeatureRow, index};
use serde::{Deserialize, Serialize};

use super::windows::{LONGEST_WINDOW_MS, WINDOWS_MS, counts_near, insert_in_time_order, pop_oldest, prefetch_entries};
use crate::hashed_table::{HashedTable, prefetch};
use crate::limits::{CUSTOMER_HISTORY_ENTRIES_MAX, SINCE_PREVIOUS_PAYMENT_HOURS_MAX, WINDOW_AMOUNT_MINOR_MAX};
use paystream_domain::time::{MILLIS_PER_DAY, MILLIS_PER_HOUR};

/// How far back [`CustomerWindows::compute`] counts payments above 3 times the average.
const ABOVE_AVERAGE_WINDOW_MS: i64 = 14 * MILLIS_PER_DAY;
/// "Above average" is above this many times the previous 30 days' average.
const ABOVE_AVERAGE_FACTOR: i128 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct CustomerEntry {
    event_time_ms: i64,
    /// Running sum of the (capped) amounts through this payment, wrapping: differences
    /// are exact since no window sum reaches 2⁶³.
    running_sum_minor: i64,
    terminal_hash: u64,
}

/// One customer's recent payments, oldest first: a window's count is a difference of
/// positions, its sum a difference of running sums. For a payment in event-time order
/// the window starts are kept ([`insert_in_time_order`]), so it reads a few entries; a
/// late one counts event times (a binary search on a long history).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct CustomerHistory {
    /// By event time (ties in arrival order).
    entries: VecDeque<CustomerEntry>,
    /// The running sum before the oldest payment kept.
    base_sum_minor: i64,
    /// Per window in [`WINDOWS_MS`]: how many entries are at or before the
    /// newest one's time minus the window.
    starts: [u32; 3],
}

impl CustomerHistory {
    /// The running sum through the first `k` payments.
    fn sum_through(&self, k: usize) -> i64 {
        if k == 0 { self.base_sum_minor } else { self.entries[k - 1].running_sum_minor }
    }

    fn insert(&mut self, event_time_ms: i64, amount_minor: i64, terminal_hash: u64) {
        let amount = amount_minor.clamp(0, WINDOW_AMOUNT_MINOR_MAX);
        let entry = CustomerEntry { event_time_ms, running_sum_minor: 0, terminal_hash };
        let at = insert_in_time_order(&mut self.entries, &mut self.starts, WINDOWS_MS, entry, |e| e.event_time_ms);
        let before = self.sum_through(at);
        // Its own running sum, and later (late insert) payments' sums include it too.
        self.entries[at].running_sum_minor = before;
        for entry in self.entries.range_mut(at..) {
            entry.running_sum_minor = entry.running_sum_minor.wrapping_add(amount);
        }
    }

    fn pop_front(&mut self) {
        if let Some(entry) = pop_oldest(&mut self.entries, &mut self.starts) {
            self.base_sum_minor = entry.running_sum_minor;
        }
    }
}

/// Per-customer windows: the state of the customer features, kept by the partition that
/// owns the customer (the pipeline is keyed by payer).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerWindows {
    customers: HashedTable<CustomerHistory>,
    /// The newest event time of each (customer, terminal) pair ([`pair_key`]) seen in
    /// the last 30 days: "new terminal" for a payment in event-time order in one lookup.
    terminal_uses: HashedTable<i64>,
}

/// The key of a (customer, terminal) pair: a mix of two uniform 64-bit hashes.
fn pair_key(customer_hash: u64, terminal_hash: u64) -> u64 {
    customer_hash ^ terminal_hash.rotate_left(29).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl CustomerWindows {
    /// Fills the customer features of a payment at `event_time_ms`: the windows hold the
    /// customer's earlier payments (by event time, ties included) and this one.
    pub fn compute(
        &self,
        customer_hash: u64,
        terminal_hash: u64,
        event_time_ms: i64,
        amount_minor: i64,
        row: &mut FeatureRow,
    ) {
        // (count, sum) of the earlier payments in (t − w, t] for w = 1, 7, 30 days.
        let mut windows = [(0u32, 0i64); 3];
        let mut hours_since_previous = SINCE_PREVIOUS_PAYMENT_HOURS_MAX;
        let mut seen_terminal = false;
        // The largest earlier amount in (t − 30 d, t], and the earlier payments in
        // (t − 14 d, t] above 3 times the 30-day average.
        let (mut largest, mut above_average) = (0i64, 0u32);
        if let Some(history) = self.customers.get(customer_hash) {
            let t = event_time_ms;
            let in_order = history.entries.back().is_none_or(|e| t >= e.event_time_ms);
            // Positions of t and of each window's start (t − w), walked from the kept starts.
            let [s1, s7, s30] = history.starts.map(|s| s as usize);
            let [w1, w7, w30] = WINDOWS_MS.map(|w| t - w);
            let [through, day, week, month] =
                counts_near(&history.entries, [history.entries.len(), s1, s7, s30], [t, w1, w7, w30], |e| {
                    e.event_time_ms
                });
            let sum_through = history.sum_through(through);
            for (window, from) in windows.iter_mut().zip([day, week, month]) {
                *window = ((through - from) as u32, sum_through.wrapping_sub(history.sum_through(from)));
            }
            let (count, sum) = windows[2];
            let recent_ms = t - ABOVE_AVERAGE_WINDOW_MS;
            // One pass over the 30 days (at most CUSTOMER_HISTORY_ENTRIES_MAX entries):
            // each amount is the difference of running sums.
            let mut before = history.sum_through(month);
            for entry in history.entries.range(month..through) {
                let amount = entry.running_sum_minor.wrapping_sub(before);
                before = entry.running_sum_minor;
                largest = largest.max(amount);
                // amount > 3 × sum / count, exactly.
                let above = i128::from(amount) * i128::from(count) > ABOVE_AVERAGE_FACTOR * i128::from(sum);
                above_average += u32::from(entry.event_time_ms > recent_ms && above);
            }
            if through > month {
                hours_since_previous = (t - history.entries[through - 1].event_time_ms) as f64 / MILLIS_PER_HOUR as f64;
            }
            seen_terminal = if in_order {
                let last_use = self.terminal_uses.get(pair_key(customer_hash, terminal_hash));
                last_use.is_some_and(|last| *last > t - LONGEST_WINDOW_MS)
            } else {
                history.entries.range(month..through).any(|e| e.terminal_hash == terminal_hash)
            };
        }
        let (previous_count, previous_sum) = windows[2];
        for (i, (count, sum)) in windows.into_iter().enumerate() {
            // The windows include this payment.
            let (count, sum) = (count + 1, sum.saturating_add(amount_minor));
            row[index::CUSTOMER_WINDOWS + 2 * i] = f64::from(count);
            row[index::CUSTOMER_WINDOWS + 1 + 2 * i] = sum as f64 / f64::from(count) / 100.0;
        }
        row[index::AMOUNT_TO_CUSTOMER_AVG_30DAY_RATIO] = if previous_count == 0 || previous_sum <= 0 {
            1.0
        } else {
            amount_minor as f64 / (previous_sum as f64 / f64::from(previous_count))
        };
        row[index::AMOUNT_TO_CUSTOMER_MAX_30DAY_RATIO] =
            if largest <= 0 { 1.0 } else { amount_minor as f64 / largest as f64 };
        row[index::CUSTOMER_NB_TX_ABOVE_3X_AVG_14DAY] = f64::from(above_average);
        row[index::CUSTOMER_HOURS_SINCE_PREVIOUS_TX] = hours_since_previous;
        row[index::CUSTOMER_NEW_TERMINAL_30DAY] = f64::from(u8::from(!seen_terminal));
    }

    /// Hints the slots of this key pair's tables (stage 1 of
    /// [`ReferenceFeatures::prefetch_ahead`](super::ReferenceFeatures::prefetch_ahead);
    /// changes nothing).
    pub fn prefetch_slots(&self, customer_hash: u64, terminal_hash: u64) {
        self.customers.prefetch(customer_hash);
        self.terminal_uses.prefetch(pair_key(customer_hash, terminal_hash));
    }

    /// Hints the customer's entries that [`CustomerWindows::compute`] and
    /// [`CustomerWindows::add`] will read (stage 2; changes nothing).
    pub fn prefetch_entries(&self, customer_hash: u64) {
        if let Some(history) = self.customers.get(customer_hash) {
            prefetch_entries(&history.entries, &history.starts);
            history.entries.front().map(prefetch); // `add` checks whether it expired
        }
    }

    /// Remembers a payment. Payments older than the customer's newest by more than 30
    /// days plus `lateness_ms` are forgotten (a payment up to `lateness_ms` late still
    /// sees its exact windows).
    pub fn add(
        &mut self,
        customer_hash: u64,
        terminal_hash: u64,
        event_time_ms: i64,
        amount_minor: i64,
        lateness_ms: i64,
    ) {
        let last_use =
            self.terminal_uses.entry_or_insert_with(pair_key(customer_hash, terminal_hash), || event_time_ms);
        *last_use = (*last_use).max(event_time_ms);
        let history = self.customers.entry_or_default(customer_hash);
        history.insert(event_time_ms, amount_minor, terminal_hash);
        let newest = history.entries.back().expect("just inserted").event_time_ms;
        let horizon = newest.saturating_sub(LONGEST_WINDOW_MS).saturating_sub(lateness_ms);
        while history.entries.len() > CUSTOMER_HISTORY_ENTRIES_MAX
            || history.entries.front().is_some_and(|e| e.event_time_ms <= horizon)
        {
            history.pop_front();
        }
    }

    /// Forgets customers with no payment inside any window of a payment at or after
    /// `watermark_ms`. Returns how many were dropped.
    pub fn expire_idle(&mut self, watermark_ms: i64) -> usize {
        let before = self.customers.len();
        let horizon = watermark_ms.saturating_sub(LONGEST_WINDOW_MS);
        self.customers.retain(|_, history| history.entries.back().is_some_and(|e| e.event_time_ms > horizon));
        self.terminal_uses.retain(|_, last| *last > horizon);
        before - self.customers.len()
    }

    pub fn len(&self) -> usize {
        self.customers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.customers.is_empty()
    }
}
