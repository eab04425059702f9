//! Terminal features ([`TerminalIndex`]): per terminal, for w = 1, 7, 30 days and label
//! delay d, the payments in (t − d − w, t − d] and the share of them that were fraud as
//! reported by t, the payments in (t − 1 day, t), and the payments in (f, t − d] after
//! the newest fraud f in the 30-day window. One index is shared by every partition.
//!
//! The index needs every partition's payments at a terminal and the label stream, so it
//! is not partition state: one `TerminalIndex` per process, shared by the workers behind
//! an `RwLock`, filled by the workers with their own partitions' payments
//! ([`TerminalIndex::add_payments`]) and by the runtime's indexer with labels
//! (`pipeline/src/connectors/terminal_index/`, which also states when the index is
//! complete enough to score, and how it is snapshotted and restored). A run that needs it
//! reads every input partition, so it refuses a consumer group.
//!
//! For the as-of query (see the module docs of `features`) it keeps each payment with its
//! latest label and the label's report time; frauds are also listed apart per terminal.
//! The features of a batch are read in one pass ([`TerminalFeatures`], written into each
//! row after).

use std::collections::VecDeque;

use paystream_domain::time::MILLIS_PER_DAY;
use paystream_models::features::{FeatureRow, index};
use serde::{Deserialize, Serialize};

use super::keys::{PreHashedMap, TerminalIndexEntry};
use super::windows::{
    PREFETCH_SLOTS_DISTANCE_PAYMENTS, WINDOWS_MS, count_at_or_before, counts_near, insert_in_time_order, pop_oldest,
    prefetch_entries, prefetch_two_stages,
};
use crate::error::{OperatorError, STATE_FORMAT_VERSION, check_version};
use crate::hashed_table::{HashedTable, prefetch};

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
    /// [`payment_hash`](super::payment_hash) of the payment id.
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
/// are written into its row: 36 bytes, so a batch's can be read from the index in a pass
/// of their own (the runtime holds the index's lock for that pass alone).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TerminalFeatures {
    /// (payments, frauds) in (t − d − w, t − d] for w = 1, 7, 30 days.
    windows: [(u32, u32); 3],
    /// Payments in (t − 1 day, t).
    velocity: u32,
    /// Payments in (f, t − d] after the newest fraud f in (t − d − 30 days, t − d]
    /// reported by t; none without such a fraud.
    since_known_fraud: Option<u32>,
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
        row[index::TERMINAL_NB_TX_SINCE_KNOWN_FRAUD] = self.since_known_fraud.map_or(-1.0, f64::from);
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

    /// Indexes `payments`, hinting each one's slots and entries a few payments ahead (as
    /// [`ReferenceFeatures::prefetch_ahead`](super::ReferenceFeatures::prefetch_ahead)):
    /// the index is larger than the caches.
    pub fn add_payments(&mut self, payments: &[TerminalIndexEntry]) {
        for (i, entry) in payments.iter().enumerate() {
            prefetch_two_stages(
                payments,
                i,
                |ahead| self.prefetch_slots(ahead.payment_hash, ahead.terminal_hash),
                |ahead| self.prefetch_entries(ahead.terminal_hash),
            );
            self.add_payment(entry.payment_hash, entry.terminal_hash, entry.event_time_ms);
        }
    }

    /// Hints the slots of this payment in the index's tables (stage 1 of
    /// [`ReferenceFeatures::prefetch_ahead`](super::ReferenceFeatures::prefetch_ahead); changes nothing).
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
        let mut since_known_fraud = None;
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
            let mut newest_fraud_ms = None;
            for fraud in frauds.iter().filter(|f| f.reported_at_ms <= t && f.event_time_ms < t) {
                if fraud.event_time_ms > delayed_end {
                    break; // sorted by event time: the rest are later still
                }
                for (window, start_ms) in windows.iter_mut().zip(window_starts_ms) {
                    window.1 += u32::from(fraud.event_time_ms > start_ms);
                }
                if fraud.event_time_ms > w30 {
                    newest_fraud_ms = Some(fraud.event_time_ms);
                }
            }
            // Few payments have a known fraud at their terminal: a search for those alone.
            since_known_fraud =
                newest_fraud_ms.map(|f| end.saturating_sub(count_at_or_before(entries, f, |e| e.event_time_ms)) as u32);
        }
        TerminalFeatures { windows, velocity, since_known_fraud }
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
        postcard::to_stdvec(&(STATE_FORMAT_VERSION, self)).expect("encoding to a Vec cannot fail")
    }

    pub fn from_snapshot_bytes(bytes: &[u8]) -> Result<TerminalIndex, OperatorError> {
        let what = "terminal index snapshot";
        check_version(bytes, what)?;
        let (_, mut index): (u16, TerminalIndex) =
            postcard::from_bytes(bytes).map_err(|source| OperatorError::CorruptState { what, source })?;
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
