//! Deduplicate operator: ids seen within a retention window of event time, for payments
//! and transfer legs alike ([`deduplicate`]). A retry (same id, same content) is counted
//! and not processed again; a conflict (same id, other content) is dead-lettered.
//!
//! Bytes per remembered id: 16 (id hash) + 8 (content hash) + 8 (event time) in the map
//! plus 32 in the eviction queue, ~64 bytes with hash-table overhead ≈ 100.

use std::collections::VecDeque;

use paystream_domain::{Payment, RejectReason, Rejection};
use serde::{Deserialize, Serialize};

use crate::id_hash::IdHashMap;

/// What the dedupe state knows about a payment id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    New,
    /// Same id, same content: a retry. Counted and not processed again.
    Retry,
    /// Same id, different content: rejected to the dead-letter topic.
    Conflict,
}

/// What identifies an event for deduplication: its id, and its content to tell a retry
/// from a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DedupeKey {
    pub id_hash: u128,
    pub content_hash: u64,
}

impl DedupeKey {
    /// A payment (or capture, refund, …) by its payment id.
    pub fn of_payment(payment: &Payment) -> DedupeKey {
        DedupeKey {
            id_hash: xxhash_rust::xxh3::xxh3_128(payment.payment_id.as_bytes()),
            content_hash: payment.content_hash(),
        }
    }

    /// A transfer leg by its leg id (prefixed: it never equals a payment id's hash),
    /// its content by its record's bytes.
    pub fn of_transfer_leg(leg_id: &str, record: &[u8]) -> DedupeKey {
        DedupeKey {
            id_hash: xxhash_rust::xxh3::xxh3_128(format!("leg:{leg_id}").as_bytes()),
            content_hash: xxhash_rust::xxh3::xxh3_64(record),
        }
    }
}

/// Whether an event is new: `Ok(true)` if so, `Ok(false)` for a retry (counted in
/// `retries`), and for a conflict the rejection to dead-letter it with, naming it as
/// `what` (e.g. `payment_id "p1"`).
pub fn deduplicate(
    state: &DedupeState,
    key: DedupeKey,
    retries: &mut u64,
    what: impl FnOnce() -> String,
) -> Result<bool, Rejection> {
    match state.check(key.id_hash, key.content_hash) {
        Seen::New => Ok(true),
        Seen::Retry => {
            *retries += 1;
            Ok(false)
        }
        Seen::Conflict => {
            let detail = format!("{} was seen before with different content", what());
            Err(Rejection::new(RejectReason::DuplicatePaymentConflict, detail))
        }
    }
}

#[derive(Default)]
pub struct DedupeState {
    entries: IdHashMap<(u64, i64)>,
    /// (event time, id) in insertion order, for eviction by event time.
    order: VecDeque<(i64, u128)>,
}

#[derive(Serialize, Deserialize)]
pub struct DedupeSnapshot {
    /// (id hash, content hash, event time) in insertion order.
    entries: Vec<(u128, u64, i64)>,
}

impl DedupeState {
    pub fn check(&self, id_hash: u128, content_hash: u64) -> Seen {
        match self.entries.get(&id_hash) {
            None => Seen::New,
            Some((seen, _)) if *seen == content_hash => Seen::Retry,
            Some(_) => Seen::Conflict,
        }
    }

    pub fn insert(&mut self, id_hash: u128, content_hash: u64, event_time_ms: i64) {
        if self.entries.insert(id_hash, (content_hash, event_time_ms)).is_none() {
            self.order.push_back((event_time_ms, id_hash));
        }
    }

    /// Forgets ids whose event time is before `horizon_ms`. The queue is in arrival
    /// order, which is close to event-time order; an id that arrived early with an old
    /// event time is forgotten once the ones before it are.
    pub fn evict_before(&mut self, horizon_ms: i64) {
        while let Some(&(event_time_ms, id_hash)) = self.order.front() {
            if event_time_ms >= horizon_ms {
                break;
            }
            self.order.pop_front();
            self.entries.remove(&id_hash);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn snapshot(&self) -> DedupeSnapshot {
        let entries = self
            .order
            .iter()
            .map(|(_, id)| {
                let (content, time) = self.entries[id];
                (*id, content, time)
            })
            .collect();
        DedupeSnapshot { entries }
    }

    pub fn restore(snapshot: DedupeSnapshot) -> DedupeState {
        let mut state = DedupeState::default();
        for (id, content, time) in snapshot.entries {
            state.insert(id, content, time);
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_conflicts_and_eviction() {
        let mut state = DedupeState::default();
        assert_eq!(state.check(1, 10), Seen::New);
        state.insert(1, 10, 1_000);
        state.insert(2, 20, 2_000);
        assert_eq!(state.check(1, 10), Seen::Retry);
        assert_eq!(state.check(1, 11), Seen::Conflict);
        state.evict_before(1_500);
        assert_eq!(state.check(1, 10), Seen::New);
        assert_eq!(state.check(2, 20), Seen::Retry);
        let restored = DedupeState::restore(state.snapshot());
        assert_eq!(restored.check(2, 20), Seen::Retry);
        assert_eq!(restored.len(), 1);
    }
}
