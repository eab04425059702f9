//! Exact event-time windows over sorted entries: counts from hints kept per key, with a
//! binary search when the hint is far, and the two-stage prefetch schedule.
//!
//! A window is a pair of positions in a key's entries, found from the window starts the
//! key keeps for its newest payment. A window edge moves about one entry per payment, so
//! [`count_near`] compares the few entries from just before the kept start without
//! branching on them, and walks only to an edge outside them, then binary-searches: exact
//! from any start, O(log n) per payment for a busy key.

use std::collections::VecDeque;

use paystream_domain::time::MILLIS_PER_DAY;

use crate::hashed_table::prefetch_all;
use crate::limits::{BACKWARD_PROBES_ENTRIES_MAX, HINT_WALK_ENTRIES_MAX};

/// The longest window of customer and terminal features: 30 days.
pub(crate) const LONGEST_WINDOW_MS: i64 = 30 * MILLIS_PER_DAY;

/// The window lengths w of customer and terminal features: 1, 7 and 30 days.
pub(crate) const WINDOWS_MS: [i64; 3] = [MILLIS_PER_DAY, 7 * MILLIS_PER_DAY, LONGEST_WINDOW_MS];

/// How many leading entries of `deque` (sorted by `time`) have `time(e) <= t`; O(1) in
/// the common case of a `t` at or after the newest entry.
pub(crate) fn count_at_or_before<T>(deque: &VecDeque<T>, t: i64, time: impl Fn(&T) -> i64) -> usize {
    let len = deque.len();
    for (skipped, e) in deque.iter().rev().take(BACKWARD_PROBES_ENTRIES_MAX).enumerate() {
        if time(e) <= t {
            return len - skipped;
        }
    }
    if len <= BACKWARD_PROBES_ENTRIES_MAX {
        return 0;
    }
    // Binary search over the entries not probed, across the deque's two slices.
    let limit = len - BACKWARD_PROBES_ENTRIES_MAX;
    let (front, back) = deque.as_slices();
    if front.len() >= limit {
        front[..limit].partition_point(|e| time(e) <= t)
    } else if front.last().is_none_or(|e| time(e) <= t) {
        front.len() + back[..limit - front.len()].partition_point(|e| time(e) <= t)
    } else {
        front.partition_point(|e| time(e) <= t)
    }
}

/// Entries from just before a hint that [`count_near`] compares without branching on
/// them: a window edge moves about one entry per payment, so the answer is nearly always
/// among them, and a loop walking to it would mispredict its exit at every edge.
const HINT_SPAN_ENTRIES: usize = 4;

/// How many of `entries` (sorted by `time`) are at or before `limit`, reading from `hint`
/// (a position near the answer, e.g. kept by [`insert_in_time_order`]): a payment reads
/// the few entries around each window edge, not all of them. Any hint gives the right
/// count; a far one costs a walk, then a binary search.
pub(crate) fn count_near<T>(entries: &VecDeque<T>, hint: usize, limit: i64, time: impl Fn(&T) -> i64) -> usize {
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
pub(crate) fn walk_to_count<T>(entries: &VecDeque<T>, hint: usize, limit: i64, time: impl Fn(&T) -> i64) -> usize {
    let mut k = hint.min(entries.len());
    for _ in 0..HINT_WALK_ENTRIES_MAX {
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
pub(crate) fn counts_near<T, const N: usize>(
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
pub(crate) fn insert_in_time_order<T, const N: usize>(
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
pub(crate) fn pop_oldest<T, const N: usize>(entries: &mut VecDeque<T>, starts: &mut [u32; N]) -> Option<T> {
    let oldest = entries.pop_front()?;
    for start in starts {
        *start = start.saturating_sub(1);
    }
    Some(oldest)
}

/// Hints the entries a payment at a key's newest time reads and writes: the newest one
/// and those at its window starts.
pub(crate) fn prefetch_entries<T, const N: usize>(entries: &VecDeque<T>, starts: &[u32; N]) {
    entries.back().map(prefetch_all);
    for start in starts {
        // [`count_near`] reads the entries from the one before the start on.
        let from = (*start as usize).saturating_sub(1);
        for j in 0..HINT_SPAN_ENTRIES {
            entries.get(from + j).map(prefetch_all);
        }
    }
}

/// How many payments ahead a replay hints table slots, then entries
/// ([`ReferenceFeatures::prefetch_ahead`](super::ReferenceFeatures::prefetch_ahead)): far
/// enough for each miss to arrive before its line is read, near enough that the lines
/// are still in L1 then.
pub const PREFETCH_SLOTS_DISTANCE_PAYMENTS: usize = 8;
pub const PREFETCH_ENTRIES_DISTANCE_PAYMENTS: usize = 4;

/// The two-stage hint schedule, for a loop over `keys` about to handle item `i`: the
/// slots of the item [`PREFETCH_SLOTS_DISTANCE_PAYMENTS`] ahead (addresses known from
/// its keys), then the entries of the one [`PREFETCH_ENTRIES_DISTANCE_PAYMENTS`] ahead
/// (addresses read from its slots, in cache by then).
pub(crate) fn prefetch_two_stages<K>(keys: &[K], i: usize, slots: impl FnOnce(&K), entries: impl FnOnce(&K)) {
    if let Some(key) = keys.get(i + PREFETCH_SLOTS_DISTANCE_PAYMENTS) {
        slots(key);
    }
    if let Some(key) = keys.get(i + PREFETCH_ENTRIES_DISTANCE_PAYMENTS) {
        entries(key);
    }
}
