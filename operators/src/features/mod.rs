//! The fraud features of [`paystream_models::features`], computed online in event time
//! from payments and the fraud-label stream. The same code computes them for training
//! (`paystream train` / `backtest` through [`ReferenceFeatures`]) and in the live
//! pipeline (customer windows in each payer partition's state, the terminal index shared
//! by every partition), so there is no training/serving skew.
//!
//! One feature row, one implementation: [`paystream_models::features`] names the 22
//! features every model reads (the fraud handbook's 15 and 7 of paystream's); this module
//! computes them and nothing else does. `paystream train` and `backtest` replay a data
//! set through [`ReferenceFeatures`] (the same [`CustomerWindows`] and [`TerminalIndex`]);
//! `paystream run` computes them inside the operator chain. `cli/tests/fraud_pipeline.rs`
//! checks it: a model trained by `backtest` and loaded by `run` over four partitions gives
//! every test transaction the backtest's score.
//!
//! - `TX_AMOUNT`, `TX_DURING_WEEKEND` (Saturday or Sunday), `TX_DURING_NIGHT` (hour ≤ 6);
//! - per customer ([`CustomerWindows`]), for w = 1, 7, 30 days: the number of payments in
//!   (t − w, t] and their average amount (the payment itself included); the amount over
//!   the previous 30-day average and over the previous 30 days' largest amount, the
//!   previous 14 days' payments above 3 times that average (a drained card pays several),
//!   hours since the previous payment, new terminal;
//! - per terminal ([`TerminalIndex`]), for w = 1, 7, 30 days and label delay d: the
//!   number of payments in (t − d − w, t − d] and the risk = frauds / payments there (0
//!   when there are none), where a payment counts as fraud only if its label was
//!   *reported* at or before t; the payments in (t − 1 day, t) (velocity); and the
//!   payments in (f, t − d] after the newest such fraud f in (t − d − 30 days, t − d]
//!   (−1 without one).
//!
//! Windows are exact, not bucketed: each key keeps its recent payments in event-time
//! order (late ones land in their place), and a window is a pair of positions in that
//! order — its count is their difference, a customer's amount sum the difference of
//! running sums. Each key also keeps where its windows start for a payment at its
//! newest time, so a payment reads the few entries around each window edge, not every
//! entry of 30 days; a count walks from such a hint (exact from any hint) and falls back
//! to a binary search when the hint is far, so a busy key (a shared terminal, the
//! "no terminal" key of account transfers) costs O(log n), never O(n), per payment
//! (`windows.rs`).
//! "New terminal" is one lookup of the (customer, terminal) pair's newest use for a
//! payment in event-time order, a scan of the customer's 30 days for a late one. Frauds
//! are listed apart per terminal (few), so counting risk reads no genuine payment.
//! Terminal features are an *as-of* query: the index may already hold later
//! payments and labels; the answer for time t depends only on what happened by t, so
//! it is the same whatever order payments and labels were indexed in, as long as the
//! index holds every payment before t and every label reported by t. The index is
//! idempotent: a payment or label indexed twice counts once, so replays never count
//! twice. A property test checks every feature against its definition by brute force,
//! with late payments, labels in any order and window edges hit exactly
//! (`features_match_their_definitions`).
//!
//! Lateness: a payment older than its partition's newest (earlier payments of the same
//! batch included) by more than `feature_allowed_lateness_ms` may get inexact features.
//! It is counted (`paystream_late_feature_payments_total`) and, by default
//! ([`LatePaymentPolicy::Review`](crate::LatePaymentPolicy::Review)), decided at
//! least `review` with reason `late_event_features_inexact`; its score stays the model's.
//!
//! Where they run: customer windows are partition state (`customer.rs`); one terminal
//! index per process is shared by the workers (`terminal.rs`), and the runtime's terminal
//! stage (`pipeline/src/connectors/terminal_index/`) decides how far it is complete before
//! a batch is scored, indexes, expires and snapshots it. The payments path reads a batch's
//! terminal features in a pass of its own and its customer features after, in an order
//! its types enforce (`processor/payments.rs`).
//!
//! Keys are 64-bit hashes of the identifiers (xxh3): no string per entry. Two customers (or terminals) whose ids collide in 64 bits would
//! share windows; at 10⁸ keys the chance that any pair collides is about 3 × 10⁻⁴, and
//! a collision changes features, never money.
//!
//! Memory is the cost of a feature update: a payment touches about a dozen cache lines
//! spread over tables of millions of entries. The big tables are
//! [`HashedTable`](crate::hashed_table::HashedTable)s, whose slot address follows from
//! the key alone, so a replay hints a payment's slots, then its entries, a few payments
//! before observing it ([`ReferenceFeatures::prefetch_ahead`]) and the misses overlap
//! instead of queuing: slots [`PREFETCH_SLOTS_DISTANCE_PAYMENTS`] payments ahead, their
//! entries (read from the slots, in cache by then) [`PREFETCH_ENTRIES_DISTANCE_PAYMENTS`]
//! ahead. Hints of entries cover every cache line an entry spans. The pipeline's payments
//! path gets its batch parsed ahead (`PartitionProcessor::plan_payments`), so it hints the
//! state of the payments ahead the same way ([`prefetch_customers_ahead`], and
//! [`prefetch_terminals_ahead`] in the terminal pass; `TerminalIndex::add_payments` for
//! the runtime's indexing). Measured gains: benches/README.md.
//!
//! Bytes: per customer, 24 per payment in its last 30 days (plus the allowed lateness),
//! at most [`CUSTOMER_HISTORY_ENTRIES_MAX`] entries, plus a 64-byte slot per customer
//! and a 16-byte slot per (customer, terminal) pair used in 30 days; per terminal, 16
//! per payment kept (the runtime expires payments older than every window of the
//! slowest partition), a 64-byte slot per terminal, a 24-byte slot per payment in the
//! payment-id table, and 24 per fraud. Tables are kept at most half full, so a slot
//! costs 2–4 times its size. Pure: no IO, no clock.

mod customer;
mod keys;
mod terminal;
mod windows;

pub use customer::CustomerWindows;
pub use keys::{
    PaymentKeys, PreHashed, PreHashedMap, TerminalIndexEntry, key_hash, payment_hash, payment_keys,
    terminal_index_entry,
};
pub use paystream_models::features::{
    EXTRA_FEATURE_NAMES, FEATURE_COUNT, FEATURE_NAMES, FeatureRow, REFERENCE_FEATURE_COUNT, REFERENCE_FEATURE_NAMES,
    index,
};
pub use terminal::{Label, LabelApplied, TerminalFeatures, TerminalIndex};
pub use windows::{PREFETCH_ENTRIES_DISTANCE_PAYMENTS, PREFETCH_SLOTS_DISTANCE_PAYMENTS};

pub use crate::limits::CUSTOMER_HISTORY_ENTRIES_MAX;
use paystream_domain::time::MILLIS_PER_DAY;
use windows::{LONGEST_WINDOW_MS, prefetch_two_stages};

use paystream_domain::time::MILLIS_PER_HOUR;

/// `TX_AMOUNT`, `TX_DURING_WEEKEND`, `TX_DURING_NIGHT`.
pub fn calendar_features(event_time_ms: i64, amount_minor: i64, row: &mut FeatureRow) {
    row[index::TX_AMOUNT] = amount_minor as f64 / 100.0;
    let day = event_time_ms.div_euclid(MILLIS_PER_DAY);
    // 1970-01-01 was a Thursday: (day + 3) mod 7 is 0 on Mondays.
    row[index::TX_DURING_WEEKEND] = f64::from(u8::from((day + 3).rem_euclid(7) >= 5));
    row[index::TX_DURING_NIGHT] = f64::from(u8::from(event_time_ms.rem_euclid(MILLIS_PER_DAY) / MILLIS_PER_HOUR <= 6));
}

/// The feature row of a payment as of its event time: calendar, customer windows (the
/// payment included), and terminal windows when there is a terminal index (zeros
/// otherwise). Training, backtests and the live operator all build rows here.
pub fn feature_row(
    customers: &CustomerWindows,
    terminals: Option<&TerminalIndex>,
    (customer_hash, terminal_hash): (u64, u64),
    event_time_ms: i64,
    amount_minor: i64,
    label_delay_ms: i64,
) -> FeatureRow {
    let mut row = [0.0; FEATURE_COUNT];
    calendar_features(event_time_ms, amount_minor, &mut row);
    customers.compute(customer_hash, terminal_hash, event_time_ms, amount_minor, &mut row);
    if let Some(terminals) = terminals {
        terminals.compute(terminal_hash, event_time_ms, label_delay_ms, &mut row);
    }
    row
}

/// For an operator computing the customer features of `keys` (customer hash, terminal
/// hash) in order, call before payment `i`: hints what computing those of the payments
/// ahead will read, in the two stages of [`ReferenceFeatures::prefetch_ahead`] (the
/// terminal half is [`prefetch_terminals_ahead`]). Changes nothing.
pub fn prefetch_customers_ahead(customers: &CustomerWindows, keys: &[(u64, u64)], i: usize) {
    prefetch_two_stages(
        keys,
        i,
        |&(customer_hash, terminal_hash)| customers.prefetch_slots(customer_hash, terminal_hash),
        |&(customer_hash, _)| customers.prefetch_entries(customer_hash),
    );
}

/// For a loop computing the terminal features of `keys` (customer hash, terminal hash)
/// in order, call before payment `i`: the terminal half of [`prefetch_customers_ahead`].
pub fn prefetch_terminals_ahead(terminals: &TerminalIndex, keys: &[(u64, u64)], i: usize) {
    prefetch_two_stages(
        keys,
        i,
        |&(_, terminal_hash)| terminals.prefetch_terminal_slot(terminal_hash),
        |&(_, terminal_hash)| terminals.prefetch_entries(terminal_hash),
    );
}

/// Customer windows and terminal index together, for replaying a whole data set in
/// event-time order (training and backtests).
pub struct ReferenceFeatures {
    label_delay_ms: i64,
    customers: CustomerWindows,
    terminals: TerminalIndex,
}

impl ReferenceFeatures {
    /// `label_delay_ms`: the handbook's d (7 days in the reference protocol).
    pub fn new(label_delay_ms: i64) -> ReferenceFeatures {
        ReferenceFeatures {
            label_delay_ms,
            customers: CustomerWindows::default(),
            terminals: TerminalIndex::new(label_delay_ms),
        }
    }

    /// The features of a payment at its event time (`amount_minor` in cents); then
    /// remembers the payment. Labels reported by the event time must have been observed.
    pub fn observe_payment(
        &mut self,
        payment_id: &str,
        customer: &str,
        terminal: &str,
        event_time_ms: i64,
        amount_minor: i64,
    ) -> FeatureRow {
        self.observe(PaymentKeys::new(payment_id, customer, terminal), event_time_ms, amount_minor)
    }

    /// [`ReferenceFeatures::observe_payment`] with the ids already hashed.
    pub fn observe(&mut self, keys: PaymentKeys, event_time_ms: i64, amount_minor: i64) -> FeatureRow {
        let PaymentKeys { payment_hash, customer_hash, terminal_hash } = keys;
        let row = feature_row(
            &self.customers,
            Some(&self.terminals),
            (customer_hash, terminal_hash),
            event_time_ms,
            amount_minor,
            self.label_delay_ms,
        );
        self.customers.add(customer_hash, terminal_hash, event_time_ms, amount_minor, 0);
        self.terminals.add_payment(payment_hash, terminal_hash, event_time_ms);
        row
    }

    /// Call before observing payment `i` of `keys`: hints the memory that observing the
    /// payments ahead of it will touch, in two stages — the table slots of the payment
    /// [`PREFETCH_SLOTS_DISTANCE_PAYMENTS`] ahead (addresses known from the keys), and
    /// the entries of the one [`PREFETCH_ENTRIES_DISTANCE_PAYMENTS`] ahead (addresses read
    /// from its slots, in cache by then). Changes nothing.
    pub fn prefetch_ahead(&self, keys: &[PaymentKeys], i: usize) {
        prefetch_two_stages(
            keys,
            i,
            |keys| {
                self.customers.prefetch_slots(keys.customer_hash, keys.terminal_hash);
                self.terminals.prefetch_slots(keys.payment_hash, keys.terminal_hash);
            },
            |keys| {
                self.customers.prefetch_entries(keys.customer_hash);
                self.terminals.prefetch_entries(keys.terminal_hash);
            },
        );
    }

    /// Records a fraud label reported at `reported_at_ms`.
    pub fn observe_label(&mut self, payment_id: &str, is_fraud: bool, reported_at_ms: i64) -> LabelApplied {
        self.terminals.add_label(payment_hash(payment_id), Label { is_fraud, reported_at_ms })
    }

    /// Forgets customers and terminal payments outside every window of a payment at or
    /// after `watermark_ms`; features are unchanged as long as no later payment has an
    /// event time before the watermark. Returns how many keys and payments were dropped.
    pub fn expire_idle(&mut self, watermark_ms: i64) -> usize {
        self.customers.expire_idle(watermark_ms)
            + self.terminals.expire(watermark_ms - self.label_delay_ms - LONGEST_WINDOW_MS)
    }

    /// (customers, terminals) currently tracked.
    pub fn tracked_keys(&self) -> (usize, usize) {
        (self.customers.len(), self.terminals.sizes().0)
    }
}

#[cfg(test)]
mod tests;
