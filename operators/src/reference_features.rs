//! The fraud features of [`paystream_models::features`], computed online in event time
//! from payments and the fraud-label stream. The same code computes them for training
//! (`paystream train` / `backtest` through [`ReferenceFeatures`]) and in the live
//! pipeline (customer windows in each payer partition's state, the terminal index shared
//! by every partition), so there is no training/serving skew.
//!
//! - `TX_AMOUNT`, `TX_DURING_WEEKEND` (Saturday or Sunday), `TX_DURING_NIGHT` (hour ≤ 6);
//! - per customer ([`CustomerWindows`]), for w = 1, 7, 30 days: the number of payments in
//!   (t − w, t] and their average amount (the payment itself included); the amount over
//!   the previous 30-day average, hours since the previous payment, new terminal;
//! - per terminal ([`TerminalIndex`]), for w = 1, 7, 30 days and label delay d: the
//!   number of payments in (t − d − w, t − d] and the risk = frauds / payments there (0
//!   when there are none), where a payment counts as fraud only if its label was
//!   *reported* at or before t; and the payments in (t − 1 day, t) (velocity).
//!
//! Windows are exact, not bucketed: each key keeps its recent payments in event-time
//! order (late ones land in their place), and a window is a pair of positions in that
//! order — its count is their difference, a customer's amount sum the difference of
//! running sums. Each key also keeps where its windows start for a payment at its
//! newest time, so a payment reads the few entries around each window edge, not every
//! entry of 30 days; a count walks from such a hint (exact from any hint) and falls back
//! to a binary search when the hint is far, so a busy key (a shared terminal, the
//! "no terminal" key of account transfers) costs O(log n), never O(n), per payment.
//! "New terminal" is one lookup of the (customer, terminal) pair's newest use for a
//! payment in event-time order, a scan of the customer's 30 days for a late one. Frauds
//! are listed apart per terminal (few), so counting risk reads no genuine payment.
//! Terminal features are an *as-of* query: the index may already hold later
//! payments and labels; the answer for time t depends only on what happened by t, so
//! it is the same whatever order payments and labels were indexed in, as long as the
//! index holds every payment before t and every label reported by t.
//!
//! Keys are 64-bit hashes of the identifiers (xxh3): no string per entry. Two customers (or terminals) whose ids collide in 64 bits would
//! share windows; at 10⁸ keys the chance that any pair collides is about 3 × 10⁻⁴, and
//! a collision changes features, never money.
//!
//! Memory is the cost of a feature update: a payment touches about a dozen cache lines
//! spread over tables of millions of entries. The big tables are [`HashedTable`]s, whose
//! slot address follows from the key alone, so a replay hints a payment's slots, then
//! its entries, a few payments before observing it ([`ReferenceFeatures::prefetch_ahead`]) and
//! the misses overlap instead of queuing.
//!
//! Bytes: per customer, 24 per payment in its last 30 days (plus the allowed lateness),
//! at most [`CUSTOMER_HISTORY_ENTRIES_MAX`] entries, plus a 64-byte slot per customer
//! and a 16-byte slot per (customer, terminal) pair used in 30 days; per terminal, 16
//! per payment kept (the runtime expires payments older than every window of the
//! slowest partition), a 64-byte slot per terminal, a 24-byte slot per payment in the
//! payment-id table, and 24 per fraud. Tables are kept at most half full, so a slot
//! costs 2–4 times its size. Pure: no IO, no clock.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use paystream_domain::time::MILLIS_PER_DAY;
pub use paystream_models::features::{
    EXTRA_FEATURE_NAMES, FEATURE_COUNT, FEATURE_NAMES, FeatureRow, REFERENCE_FEATURE_COUNT, REFERENCE_FEATURE_NAMES,
    index,
};
use serde::{Deserialize, Serialize};

use crate::hashed_table::{HashedTable, prefetch, prefetch_all};

const HOURS_SINCE_PREVIOUS_MAX: f64 = 720.0;
const LONGEST_WINDOW_MS: i64 = 30 * MILLIS_PER_DAY;
/// Most payments remembered per customer: a customer paying more often than this over
/// 30 days has its oldest payments forgotten early (its 30-day count saturates here).
pub const CUSTOMER_HISTORY_ENTRIES_MAX: usize = 4_096;

/// Hasher for keys that already are uniform hashes.
#[derive(Clone, Copy, Default)]
pub struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used by u64 keys; correct (if slow) for anything else.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub type PreHashedMap<K, V> = HashMap<K, V, BuildHasherDefault<PreHashed>>;

/// The 64-bit key of a customer or terminal id.
pub fn key_hash(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

/// The key of a payment id in the terminal index (64 bits: among the ~10⁶ payments an
/// index holds at a time, two ids collide with a chance of about 3 × 10⁻⁸).
pub fn payment_hash(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes()).rotate_left(17) // not the key hash of the same string
}

/// `TX_AMOUNT`, `TX_DURING_WEEKEND`, `TX_DURING_NIGHT`.
pub fn calendar_features(event_time_ms: i64, amount_minor: i64, row: &mut FeatureRow) {
    row[index::TX_AMOUNT] = amount_minor as f64 / 100.0;
    let day = event_time_ms.div_euclid(MILLIS_PER_DAY);
    // 1970-01-01 was a Thursday: (day + 3) mod 7 is 0 on Mondays.
    row[index::TX_DURING_WEEKEND] = f64::from(u8::from((day + 3).rem_euclid(7) >= 5));
    row[index::TX_DURING_NIGHT] = f64::from(u8::from(event_time_ms.rem_euclid(MILLIS_PER_DAY) / 3_600_000 <= 6));
}

/// How many leading entries of `deque` (sorted by `time`) have `time(e) <= t`; O(1) in
/// the common case of a `t` at or after the newest entry.
fn count_at_or_before<T>(deque: &VecDeque<T>, t: i64, time: impl Fn(&T) -> i64) -> usize {
    /// Entries probed from the back before a binary search: the terminal index usually
    /// runs only a little ahead of the payment being scored.
    const BACKWARD_PROBES_MAX: usize = 8;
    let len = deque.len();
    for (skipped, e) in deque.iter().rev().take(BACKWARD_PROBES_MAX).enumerate() {
        if time(e) <= t {
            return len - skipped;
        }
    }
    if len <= BACKWARD_PROBES_MAX {
        return 0;
    }
    // Binary search over the entries not probed, across the deque's two slices.
    let limit = len - BACKWARD_PROBES_MAX;
    let (front, back) = deque.as_slices();
    if front.len() >= limit {
        front[..limit].partition_point(|e| time(e) <= t)
    } else if front.last().is_none_or(|e| time(e) <= t) {
        front.len() + back[..limit - front.len()].partition_point(|e| time(e) <= t)
    } else {
        front.partition_point(|e| time(e) <= t)
    }
}

/// Entries walked from a hint before [`count_near`] falls back to a binary search.
const HINT_WALK_STEPS_MAX: usize = 16;

/// Entries from just before a hint that [`count_near`] compares without branching on
/// them: a window edge moves about one entry per payment, so the answer is nearly always
/// among them, and a loop walking to it would mispredict its exit at every edge.
const HINT_SPAN_ENTRIES: usize = 4;

/// How many of `entries` (sorted by `time`) are at or before `limit`, reading from `hint`
/// (a position near the answer, e.g. kept by [`insert_in_time_order`]): a payment reads
/// the few entries around each window edge, not all of them. Any hint gives the right
/// count; a far one costs a walk, then a binary search.
fn count_near<T>(entries: &VecDeque<T>, hint: usize, limit: i64, time: impl Fn(&T) -> i64) -> usize {
    let len = entries.len();
    let from = hint.min(len).saturating_sub(1);
    // Sorted: the span's entries at or before `limit` are a prefix of it, so the answer
    // is `from` plus how many of them are.
    let mut count = 0;
    for j in 0..HINT_SPAN_ENTRIES {
        count += usize::from(entries.get(from + j).is_some_and(|e| time(e) <= limit));
    }
    let answer = from + count;
    let before_span = count == 0 && from > 0;
    let past_span = count == HINT_SPAN_ENTRIES && answer < len;
    if before_span || past_span { walk_to_count(entries, answer, limit, time) } else { answer }
}

/// [`count_near`] the slow way: walks from `hint`, then binary-searches.
#[cold]
fn walk_to_count<T>(entries: &VecDeque<T>, hint: usize, limit: i64, time: impl Fn(&T) -> i64) -> usize {
    let mut k = hint.min(entries.len());
    for _ in 0..HINT_WALK_STEPS_MAX {
        if entries.get(k).is_some_and(|e| time(e) <= limit) {
            k += 1;
        } else if k > 0 && time(&entries[k - 1]) > limit {
            k -= 1;
        } else {
            return k;
        }
    }
    count_at_or_before(entries, limit, &time)
}

/// [`count_near`] for several (hint, limit) pairs.
fn counts_near<T, const N: usize>(
    entries: &VecDeque<T>,
    hints: [usize; N],
    limits: [i64; N],
    time: impl Fn(&T) -> i64,
) -> [usize; N] {
    std::array::from_fn(|i| count_near(entries, hints[i], limits[i], &time))
}

/// Inserts `item` into `entries` in time order (late ones in their place, after equal
/// times) and keeps `starts[i]` = how many entries are at or before (newest entry's
/// time − `offsets[i]`), the hints of [`counts_near`]. Returns where `item` went.
fn insert_in_time_order<T, const N: usize>(
    entries: &mut VecDeque<T>,
    starts: &mut [u32; N],
    offsets: [i64; N],
    item: T,
    time: impl Fn(&T) -> i64,
) -> usize {
    let inserted_ms = time(&item);
    let at = count_at_or_before(entries, inserted_ms, &time);
    if at == entries.len() {
        entries.push_back(item);
    } else {
        entries.insert(at, item);
    }
    let newest = entries.back().map_or(i64::MIN, &time);
    for (start, offset) in starts.iter_mut().zip(offsets) {
        let boundary = newest.saturating_sub(offset);
        // Before the boundary moves: the entry inserted counts if it is at or before it.
        let hint = *start as usize + usize::from(inserted_ms <= boundary);
        *start = count_near(entries, hint, boundary, &time) as u32;
    }
    at
}

/// Removes the oldest of `entries`, keeping the `starts` of [`insert_in_time_order`]: the
/// oldest entry is inside a start's prefix whenever that prefix is not empty.
fn pop_oldest<T, const N: usize>(entries: &mut VecDeque<T>, starts: &mut [u32; N]) -> Option<T> {
    let oldest = entries.pop_front()?;
    for start in starts {
        *start = start.saturating_sub(1);
    }
    Some(oldest)
}

/// Hints the entries a payment at a key's newest time reads and writes: the newest one
/// and those at its window starts.
fn prefetch_entries<T, const N: usize>(entries: &VecDeque<T>, starts: &[u32; N]) {
    entries.back().map(prefetch_all);
    for start in starts {
        // [`count_near`] reads the entries from the one before the start on.
        let from = (*start as usize).saturating_sub(1);
        for j in 0..HINT_SPAN_ENTRIES {
            entries.get(from + j).map(prefetch_all);
        }
    }
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

/// Largest amount one payment adds to a customer's window sums (minor units). With at
/// most [`CUSTOMER_HISTORY_ENTRIES_MAX`] payments in a window, sums stay below 2⁶²: the
/// running sums never overflow. A larger payment counts as this much in the averages
/// (a feature, never money).
const WINDOW_AMOUNT_MINOR_MAX: i64 = 1 << 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct CustomerEntry {
    event_time_ms: i64,
    /// Running sum of the (capped) amounts through this payment, wrapping: differences
    /// are exact since no window sum reaches 2⁶³.
    running_sum_minor: i64,
    terminal_hash: u64,
}

/// The window lengths w of customer and terminal features: 1, 7 and 30 days.
const WINDOWS_MS: [i64; 3] = [MILLIS_PER_DAY, 7 * MILLIS_PER_DAY, LONGEST_WINDOW_MS];

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
        let mut hours_since_previous = HOURS_SINCE_PREVIOUS_MAX;
        let mut seen_terminal = false;
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
            if through > month {
                hours_since_previous = (t - history.entries[through - 1].event_time_ms) as f64 / 3_600_000.0;
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
        row[index::CUSTOMER_HOURS_SINCE_PREVIOUS_TX] = hours_since_previous;
        row[index::CUSTOMER_NEW_TERMINAL_30DAY] = f64::from(u8::from(!seen_terminal));
    }

    /// Hints the slots of this key pair's tables (stage 1 of [`ReferenceFeatures::prefetch_ahead`];
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

/// A fraud label as the terminal index keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    pub is_fraud: bool,
    pub reported_at_ms: i64,
}

/// An indexed payment whose latest label says fraud.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Fraud {
    event_time_ms: i64,
    payment_hash: u64,
    reported_at_ms: i64,
}

/// A payment at a terminal: its labels are kept apart (few are fraud).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct TerminalEntry {
    event_time_ms: i64,
    /// [`payment_hash`] of the payment id.
    payment_hash: u64,
}

/// One terminal's payments by event time (ties in indexing order), with where its
/// windows start for a payment at its newest one's time ([`TerminalIndex::window_offsets`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct TerminalPayments {
    entries: VecDeque<TerminalEntry>,
    starts: [u32; 5],
}

/// A payment's terminal features as [`TerminalIndex::features`] finds them, before they
/// are written into its row: 28 bytes, so a batch's can be read from the index in a pass
/// of their own (the runtime holds the index's lock for that pass alone).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TerminalFeatures {
    /// (payments, frauds) in (t − d − w, t − d] for w = 1, 7, 30 days.
    windows: [(u32, u32); 3],
    /// Payments in (t − 1 day, t).
    velocity: u32,
}

impl TerminalFeatures {
    /// Writes the terminal features (counts, risks, velocity) into `row`.
    pub fn write_to(&self, row: &mut FeatureRow) {
        for (i, (count, frauds)) in self.windows.into_iter().enumerate() {
            row[index::TERMINAL_WINDOWS + 2 * i] = f64::from(count);
            row[index::TERMINAL_WINDOWS + 1 + 2 * i] =
                if count == 0 { 0.0 } else { f64::from(frauds) / f64::from(count) };
        }
        row[index::TERMINAL_NB_TX_1DAY_NOW] = f64::from(self.velocity);
    }
}

/// What [`TerminalIndex::add_label`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelApplied {
    /// Attached to its payment.
    Attached,
    /// The payment is not indexed (yet): kept until it arrives or expires.
    Pending,
}

/// Every payment of every partition per terminal, with the labels reported for them:
/// the state of the terminal features. Idempotent: adding a payment or a label again
/// changes nothing, so replays never count twice. The latest reported label of a
/// payment wins, whatever order labels arrive in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalIndex {
    /// The label delay d the window starts are kept for (any d is answered exactly; this
    /// one fastest).
    label_delay_ms: i64,
    terminals: HashedTable<TerminalPayments>,
    /// Per terminal, its indexed payments whose latest label says fraud, by event time
    /// (a small map: only terminals with frauds in the windows).
    frauds: PreHashedMap<u64, Vec<Fraud>>,
    /// Payment id → (terminal, event time), to find a label's payment. Not in
    /// snapshots: rebuilt from the entries.
    #[serde(skip)]
    payments: HashedTable<(u64, i64)>,
    /// Labels whose payment is not indexed yet.
    pending_labels: PreHashedMap<u64, Label>,
    /// Report times of indexed payments whose latest label says genuine (so an older
    /// fraud label arriving later does not win). Empty unless genuine labels are sent.
    genuine_labels: PreHashedMap<u64, i64>,
}

impl Default for TerminalIndex {
    /// For the reference label delay, 7 days.
    fn default() -> TerminalIndex {
        TerminalIndex::new(7 * MILLIS_PER_DAY)
    }
}

impl TerminalIndex {
    /// An empty index, fastest for features with label delay `label_delay_ms`.
    pub fn new(label_delay_ms: i64) -> TerminalIndex {
        TerminalIndex {
            label_delay_ms,
            terminals: HashedTable::default(),
            frauds: PreHashedMap::default(),
            payments: HashedTable::default(),
            pending_labels: PreHashedMap::default(),
            genuine_labels: PreHashedMap::default(),
        }
    }

    /// How far before t each window's edge is, but the first (t − 1 ms, all payments before t):
    /// velocity's day, then d and d + w for each w in [`WINDOWS_MS`].
    fn window_offsets(label_delay_ms: i64) -> [i64; 5] {
        let d = label_delay_ms;
        let [w1, w7, w30] = WINDOWS_MS.map(|w| d + w);
        [MILLIS_PER_DAY, d, w1, w7, w30]
    }

    /// Indexes a payment; false when it already was.
    pub fn add_payment(&mut self, payment_hash: u64, terminal_hash: u64, event_time_ms: i64) -> bool {
        if !self.payments.insert_if_absent(payment_hash, (terminal_hash, event_time_ms)) {
            return false;
        }
        let TerminalPayments { entries, starts } = self.terminals.entry_or_default(terminal_hash);
        let offsets = TerminalIndex::window_offsets(self.label_delay_ms);
        let entry = TerminalEntry { event_time_ms, payment_hash };
        insert_in_time_order(entries, starts, offsets, entry, |e| e.event_time_ms);
        if let Some(label) = self.pending_labels.remove(&payment_hash) {
            self.place_label(payment_hash, terminal_hash, event_time_ms, label);
        }
        true
    }

    /// Indexes `payments` (payment hash, terminal hash, event time), hinting each one's
    /// slots and entries a few payments ahead (as [`ReferenceFeatures::prefetch_ahead`]):
    /// the index is larger than the caches.
    pub fn add_payments(&mut self, payments: &[(u64, u64, i64)]) {
        for (i, &(payment_hash, terminal_hash, event_time_ms)) in payments.iter().enumerate() {
            prefetch_two_stages(
                payments,
                i,
                |&(payment_hash, terminal_hash, _)| self.prefetch_slots(payment_hash, terminal_hash),
                |&(_, terminal_hash, _)| self.prefetch_entries(terminal_hash),
            );
            self.add_payment(payment_hash, terminal_hash, event_time_ms);
        }
    }

    /// Hints the slots of this payment in the index's tables (stage 1 of
    /// [`ReferenceFeatures::prefetch_ahead`]; changes nothing).
    pub fn prefetch_slots(&self, payment_hash: u64, terminal_hash: u64) {
        self.terminals.prefetch(terminal_hash);
        self.payments.prefetch(payment_hash);
    }

    /// Hints the terminal's slot, which [`TerminalIndex::compute`] reads first (stage 1).
    pub fn prefetch_terminal_slot(&self, terminal_hash: u64) {
        self.terminals.prefetch(terminal_hash);
    }

    /// Hints the terminal's entries and frauds that [`TerminalIndex::compute`] and
    /// [`TerminalIndex::add_payment`] will read (stage 2; changes nothing).
    pub fn prefetch_entries(&self, terminal_hash: u64) {
        if let Some(terminal) = self.terminals.get(terminal_hash) {
            prefetch_entries(&terminal.entries, &terminal.starts);
        }
        if let Some(frauds) = self.frauds.get(&terminal_hash) {
            frauds.first().map(prefetch);
        }
    }

    /// Records a label (the latest reported one wins).
    pub fn add_label(&mut self, payment_hash: u64, label: Label) -> LabelApplied {
        let Some(&(terminal_hash, event_time_ms)) = self.payments.get(payment_hash) else {
            let slot = self.pending_labels.entry(payment_hash).or_insert(label);
            if slot.reported_at_ms <= label.reported_at_ms {
                *slot = label;
            }
            return LabelApplied::Pending;
        };
        let frauds = self.frauds.get_mut(&terminal_hash);
        let held_fraud =
            frauds.and_then(|frauds| Some((frauds.iter().position(|f| f.payment_hash == payment_hash)?, frauds)));
        let held_reported_ms = match &held_fraud {
            Some((i, frauds)) => Some(frauds[*i].reported_at_ms),
            None => self.genuine_labels.get(&payment_hash).copied(),
        };
        if held_reported_ms.is_some_and(|r| r > label.reported_at_ms) {
            return LabelApplied::Attached; // an older label than the one held
        }
        if let Some((i, frauds)) = held_fraud {
            frauds.remove(i);
        }
        self.place_label(payment_hash, terminal_hash, event_time_ms, label);
        LabelApplied::Attached
    }

    /// Attaches the latest label of an indexed payment that holds none.
    fn place_label(&mut self, payment_hash: u64, terminal_hash: u64, event_time_ms: i64, label: Label) {
        if label.is_fraud {
            self.genuine_labels.remove(&payment_hash);
            let frauds = self.frauds.entry(terminal_hash).or_default();
            let at = frauds.partition_point(|f| f.event_time_ms <= event_time_ms);
            frauds.insert(at, Fraud { event_time_ms, payment_hash, reported_at_ms: label.reported_at_ms });
        } else {
            self.genuine_labels.insert(payment_hash, label.reported_at_ms);
        }
    }

    /// Fills the terminal features of a payment at `event_time_ms`, as of that time.
    pub fn compute(&self, terminal_hash: u64, event_time_ms: i64, label_delay_ms: i64, row: &mut FeatureRow) {
        self.features(terminal_hash, event_time_ms, label_delay_ms).write_to(row);
    }

    /// The terminal features of a payment at `event_time_ms`, as of that time (what
    /// [`TerminalIndex::compute`] writes into a row).
    pub fn features(&self, terminal_hash: u64, event_time_ms: i64, label_delay_ms: i64) -> TerminalFeatures {
        // (payments, frauds) in (t − d − w, t − d] for w = 1, 7, 30 days, of those before t.
        let mut windows = [(0u32, 0u32); 3];
        let mut velocity = 0u32;
        if let Some(TerminalPayments { entries, starts }) = self.terminals.get(terminal_hash) {
            let t = event_time_ms;
            let delayed_end = t - label_delay_ms;
            let [day, d, d1, d7, d30] = starts.map(|s| s as usize);
            let window_starts_ms = WINDOWS_MS.map(|w| delayed_end - w);
            let [w1, w7, w30] = window_starts_ms;
            let [before, day_ago, end, one, seven, thirty] = counts_near(
                entries,
                [entries.len(), day, d, d1, d7, d30],
                [t - 1, t - MILLIS_PER_DAY, delayed_end, w1, w7, w30],
                |e| e.event_time_ms,
            );
            // Payments in (t − 1 day, t).
            velocity = before.saturating_sub(day_ago) as u32;
            let end = end.min(before);
            let starts = [one, seven, thirty];
            for (window, from) in windows.iter_mut().zip(starts) {
                window.0 = end.saturating_sub(from) as u32;
            }
            // A payment counts as fraud only if its label was reported by t.
            let frauds = self.frauds.get(&terminal_hash).map_or(&[][..], Vec::as_slice);
            for fraud in frauds.iter().filter(|f| f.reported_at_ms <= t && f.event_time_ms < t) {
                if fraud.event_time_ms > delayed_end {
                    break; // sorted by event time: the rest are later still
                }
                for (window, start_ms) in windows.iter_mut().zip(window_starts_ms) {
                    window.1 += u32::from(fraud.event_time_ms > start_ms);
                }
            }
        }
        TerminalFeatures { windows, velocity }
    }

    /// Forgets payments (and their labels) at or before `horizon_ms`, and pending labels
    /// reported by then (their payment, earlier still, can no longer matter). Pass the
    /// oldest event time any payment may still be scored at, minus d and 30 days.
    /// Returns how many payments were dropped.
    pub fn expire(&mut self, horizon_ms: i64) -> usize {
        let before = self.payments.len();
        let mut expired = Vec::new();
        self.terminals.retain(|_, TerminalPayments { entries, starts }| {
            while entries.front().is_some_and(|e| e.event_time_ms <= horizon_ms) {
                expired.push(pop_oldest(entries, starts).expect("checked").payment_hash);
            }
            !entries.is_empty()
        });
        // Their ids, hinted a few ahead: each is a miss in a table of every payment.
        for (i, payment_hash) in expired.iter().enumerate() {
            if let Some(next) = expired.get(i + PREFETCH_SLOTS_DISTANCE_PAYMENTS) {
                self.payments.prefetch(*next);
            }
            self.payments.remove(*payment_hash);
        }
        let payments = &self.payments;
        self.frauds.retain(|_, frauds| {
            frauds.retain(|f| f.event_time_ms > horizon_ms);
            !frauds.is_empty()
        });
        self.pending_labels.retain(|_, label| label.reported_at_ms > horizon_ms);
        self.genuine_labels.retain(|id, _| payments.contains_key(*id));
        before - self.payments.len()
    }

    /// Compact encoding (postcard, versioned with the partition state).
    pub fn to_snapshot_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(&(crate::state::STATE_FORMAT_VERSION, self)).expect("encoding to a Vec cannot fail")
    }

    pub fn from_snapshot_bytes(bytes: &[u8]) -> Result<TerminalIndex, crate::OperatorError> {
        let what = "terminal index snapshot";
        crate::state::check_version(bytes, what)?;
        let (_, mut index): (u16, TerminalIndex) =
            postcard::from_bytes(bytes).map_err(|source| crate::OperatorError::CorruptState { what, source })?;
        for (terminal_hash, terminal) in index.terminals.iter() {
            for e in &terminal.entries {
                index.payments.insert(e.payment_hash, (terminal_hash, e.event_time_ms));
            }
        }
        Ok(index)
    }

    /// (terminals, payments, pending labels) held.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.terminals.len(), self.payments.len(), self.pending_labels.len())
    }
}

/// A payment's ids, hashed once ([`payment_hash`], [`key_hash`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaymentKeys {
    pub payment_hash: u64,
    pub customer_hash: u64,
    pub terminal_hash: u64,
}

impl PaymentKeys {
    pub fn new(payment_id: &str, customer: &str, terminal: &str) -> PaymentKeys {
        PaymentKeys {
            payment_hash: payment_hash(payment_id),
            customer_hash: key_hash(customer),
            terminal_hash: key_hash(terminal),
        }
    }
}

/// How many payments ahead a replay hints table slots, then entries
/// ([`ReferenceFeatures::prefetch_ahead`]): far enough for each miss to arrive before its line
/// is read, near enough that the lines are still in L1 then.
pub const PREFETCH_SLOTS_DISTANCE_PAYMENTS: usize = 8;
pub const PREFETCH_ENTRIES_DISTANCE_PAYMENTS: usize = 4;

/// The two-stage hint schedule, for a loop over `keys` about to handle item `i`: the
/// slots of the item [`PREFETCH_SLOTS_DISTANCE_PAYMENTS`] ahead (addresses known from
/// its keys), then the entries of the one [`PREFETCH_ENTRIES_DISTANCE_PAYMENTS`] ahead
/// (addresses read from its slots, in cache by then).
fn prefetch_two_stages<K>(keys: &[K], i: usize, slots: impl FnOnce(&K), entries: impl FnOnce(&K)) {
    if let Some(key) = keys.get(i + PREFETCH_SLOTS_DISTANCE_PAYMENTS) {
        slots(key);
    }
    if let Some(key) = keys.get(i + PREFETCH_ENTRIES_DISTANCE_PAYMENTS) {
        entries(key);
    }
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
mod tests {
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
                assert_eq!(
                    count_at_or_before(&deque, t, |e| *e),
                    expected,
                    "len {len}, t {t}, {:?}",
                    deque.as_slices()
                );
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
                all.push((*customer, *terminal, t, *amount));
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
}
