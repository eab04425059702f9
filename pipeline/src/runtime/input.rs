//! A partition's read-ahead: the payments fetched and parsed but not processed yet, and
//! the positions in the internal topics (transfer legs, settlement entries).

use std::time::Instant;

use paystream_domain::{Payment, Rejection};

use crate::log::Record;

/// A record parsed ahead of processing (`None` once processed).
pub(super) type ParsedPayment = Option<Result<Payment, Rejection>>;

/// A partition of an internal topic the workers write and read (transfer legs,
/// settlement entries): a second and third input of the partition's owner.
pub(super) struct InternalInput {
    /// The first offset not yet processed (committed with the batch).
    pub(super) next_offset: u64,
    /// When the worker last looked and found nothing (`None`: look now).
    pub(super) idle_since: Option<Instant>,
}

impl InternalInput {
    pub(super) fn new(next_offset: u64) -> InternalInput {
        InternalInput { next_offset, idle_since: None }
    }
}

/// A partition's payments read ahead of processing, from `next_offset` on, in offset
/// order; `parsed[i]` is `records[i]` parsed (taken when processed).
#[derive(Default)]
pub(super) struct InputBuffer {
    pub(super) records: Vec<Record>,
    pub(super) parsed: Vec<ParsedPayment>,
    /// Records before this were processed.
    pub(super) start: usize,
}

impl InputBuffer {
    pub(super) fn len(&self) -> usize {
        self.records.len() - self.start
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn records(&self) -> &[Record] {
        &self.records[self.start..]
    }

    /// The offset after the last record held.
    pub(super) fn end_offset(&self) -> Option<u64> {
        self.records().last().map(|r| r.offset + 1)
    }

    /// Appends `records` and their parses (`parsed[i]` of `records[i]`).
    pub(super) fn push(&mut self, records: Vec<Record>, mut parsed: Vec<ParsedPayment>) {
        assert_eq!(parsed.len(), records.len(), "one parse per record");
        // Drop what was processed once it is most of the buffer (each record moves at
        // most about once).
        if self.start > 0 && self.start >= self.len() {
            self.records.drain(..self.start);
            self.parsed.drain(..self.start);
            self.start = 0;
        }
        self.parsed.append(&mut parsed);
        self.records.extend(records);
    }

    /// The first `n` records held and their parses.
    pub(super) fn front(&mut self, n: usize) -> (&[Record], &mut [ParsedPayment]) {
        (&self.records[self.start..self.start + n], &mut self.parsed[self.start..self.start + n])
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.records.len() {
            self.records.clear();
            self.parsed.clear();
            self.start = 0;
        }
    }
}
