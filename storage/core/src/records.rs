//! Record stores: the pipeline's decisions and ledger postings as queryable records
//! (payment history, account balances) — in memory ([`MemoryRecordStore`], the embedded
//! default) or in PostgreSQL (`paystream-storage-postgres`).
//!
//! Exactly once: records arrive as [`OutputSlice`]s, the records of one output topic
//! partition between two offsets. A store keeps, per topic partition, the offset it has
//! applied through, and applies a slice only if it starts there — rows and position
//! change together (one SQL transaction), so a slice replayed after a crash is
//! recognised and skipped, and a gap is an error, never silently skipped data.

use std::collections::{BTreeMap, HashMap};

use paystream_domain::{Decision, LedgerTransaction, Money};

use crate::error::StorageError;

/// The records of one output topic partition in offsets `[from_offset, to_offset)`.
#[derive(Clone, Debug, Default)]
pub struct OutputSlice {
    pub topic: String,
    pub partition: u32,
    pub from_offset: u64,
    pub to_offset: u64,
    pub decisions: Vec<Decision>,
    pub ledger: Vec<LedgerTransaction>,
}

/// What [`RecordStore::apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SliceApplied {
    Applied,
    /// The store had applied it before (a replay after a crash): nothing changed.
    AlreadyApplied,
}

/// A decision as a store keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredDecision {
    /// `payment`, `authorize`, `capture`, `void`, `refund`, `chargeback` or `top_up`.
    pub kind: String,
    pub original_payment_id: Option<String>,
    pub payment_id: String,
    pub payer_account_id: String,
    pub merchant_id: Option<String>,
    pub amount_minor: i64,
    pub currency: String,
    pub event_time_ms: i64,
    pub outcome: String,
    pub score: f32,
    pub reasons: Vec<String>,
    pub model_version: String,
}

/// Whole-store figures, for checks: record counts, postings summed per currency (zero
/// when the ledger balances) and balances summed per currency (the same).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreTotals {
    pub decisions: u64,
    pub postings: u64,
    pub posting_sums_minor: BTreeMap<String, i128>,
    pub balance_sums_minor: BTreeMap<String, i128>,
}

pub trait RecordStore: Send {
    /// Applies a slice exactly once (see the module docs).
    fn apply(&mut self, slice: &OutputSlice) -> Result<SliceApplied, StorageError>;
    /// The offset of `topic` partition `partition` the store has applied through.
    fn position(&mut self, topic: &str, partition: u32) -> Result<u64, StorageError>;
    fn decision(&mut self, payment_id: &str) -> Result<Option<StoredDecision>, StorageError>;
    /// Debits minus credits of an account in one currency, in minor units.
    fn balance_minor(&mut self, account_id: &str, currency: &str) -> Result<i64, StorageError>;
    fn totals(&mut self) -> Result<StoreTotals, StorageError>;
}

/// Where a slice stands against the stored position (every store decides the same).
pub fn check_sequence(slice: &OutputSlice, position: u64) -> Result<SliceApplied, StorageError> {
    if slice.from_offset > slice.to_offset {
        return Err(StorageError::Sequence {
            topic: slice.topic.clone(),
            partition: slice.partition,
            why: format!("slice [{}, {}) is reversed", slice.from_offset, slice.to_offset),
        });
    }
    if slice.from_offset == position {
        Ok(SliceApplied::Applied)
    } else if slice.to_offset <= position {
        Ok(SliceApplied::AlreadyApplied)
    } else {
        Err(StorageError::Sequence {
            topic: slice.topic.clone(),
            partition: slice.partition,
            why: format!(
                "slice [{}, {}) does not start at the applied position {position} ({})",
                slice.from_offset,
                slice.to_offset,
                if slice.from_offset > position { "a gap" } else { "a partial overlap" }
            ),
        })
    }
}

/// A decision's amount in minor units (decisions carry the exact decimal string).
pub fn decision_amount_minor(decision: &Decision) -> Result<i64, StorageError> {
    Money::parse(&decision.amount, decision.currency)
        .map(|m| m.minor_units())
        .map_err(|e| StorageError::InvalidRecord(format!("decision {}: amount: {e}", decision.payment_id)))
}

/// An event time as milliseconds since the epoch; an invalid one is the record's fault.
pub fn event_time_ms(what: &str, id: &str, time: &str) -> Result<i64, StorageError> {
    paystream_domain::time::parse_rfc3339_ms(time)
        .map_err(|e| StorageError::InvalidRecord(format!("{what} {id}: event_time: {e}")))
}

/// Net change of each (account, currency) balance in a slice; checked arithmetic.
pub fn balance_changes(ledger: &[LedgerTransaction]) -> Result<BTreeMap<(String, String), i64>, StorageError> {
    let mut changes: BTreeMap<(String, String), i64> = BTreeMap::new();
    for transaction in ledger {
        for posting in &transaction.postings {
            let key = (posting.account_id.clone(), transaction.currency.code().to_string());
            let slot = changes.entry(key).or_default();
            *slot = slot.checked_add(posting.signed_minor_units()).ok_or_else(|| {
                StorageError::InvalidRecord(format!("transaction {}: balance overflow", transaction.transaction_id))
            })?;
        }
    }
    Ok(changes)
}

/// The embedded record store: everything in memory (rebuilt from the output topics on
/// start). The reference the PostgreSQL store is tested against.
#[derive(Debug, Default)]
pub struct MemoryRecordStore {
    positions: HashMap<(String, u32), u64>,
    decisions: HashMap<String, StoredDecision>,
    postings: u64,
    posting_sums_minor: BTreeMap<String, i128>,
    balances: HashMap<(String, String), i64>,
}

impl RecordStore for MemoryRecordStore {
    fn apply(&mut self, slice: &OutputSlice) -> Result<SliceApplied, StorageError> {
        let position = self.position(&slice.topic, slice.partition)?;
        if check_sequence(slice, position)? == SliceApplied::AlreadyApplied {
            return Ok(SliceApplied::AlreadyApplied);
        }
        // Validate everything before changing anything: a slice applies whole or not at all.
        let mut decisions = Vec::with_capacity(slice.decisions.len());
        for d in &slice.decisions {
            decisions.push(StoredDecision {
                kind: d.kind.as_str().to_string(),
                original_payment_id: d.original_payment_id.clone(),
                payment_id: d.payment_id.clone(),
                payer_account_id: d.payer_account_id.clone(),
                merchant_id: d.merchant_id.clone(),
                amount_minor: decision_amount_minor(d)?,
                currency: d.currency.code().to_string(),
                event_time_ms: event_time_ms("decision", &d.payment_id, &d.event_time)?,
                outcome: d.outcome.as_str().to_string(),
                score: d.score,
                reasons: d.reasons.iter().map(|r| r.to_string()).collect(),
                model_version: d.model_version.to_string(),
            });
        }
        for t in &slice.ledger {
            event_time_ms("transaction", &t.transaction_id, &t.event_time)?;
        }
        let changes = balance_changes(&slice.ledger)?;
        let mut balances = Vec::with_capacity(changes.len());
        for ((account, currency), change) in changes {
            let old = self.balances.get(&(account.clone(), currency.clone())).copied().unwrap_or(0);
            let new = old
                .checked_add(change)
                .ok_or_else(|| StorageError::InvalidRecord(format!("account {account}: balance overflow")))?;
            balances.push(((account, currency), new));
        }
        for decision in decisions {
            self.decisions.entry(decision.payment_id.clone()).or_insert(decision);
        }
        for t in &slice.ledger {
            self.postings += t.postings.len() as u64;
            let sum: i128 = t.postings.iter().map(|p| i128::from(p.signed_minor_units())).sum();
            *self.posting_sums_minor.entry(t.currency.code().to_string()).or_default() += sum;
        }
        self.balances.extend(balances);
        self.positions.insert((slice.topic.clone(), slice.partition), slice.to_offset);
        Ok(SliceApplied::Applied)
    }

    fn position(&mut self, topic: &str, partition: u32) -> Result<u64, StorageError> {
        Ok(self.positions.get(&(topic.to_string(), partition)).copied().unwrap_or(0))
    }

    fn decision(&mut self, payment_id: &str) -> Result<Option<StoredDecision>, StorageError> {
        Ok(self.decisions.get(payment_id).cloned())
    }

    fn balance_minor(&mut self, account_id: &str, currency: &str) -> Result<i64, StorageError> {
        Ok(self.balances.get(&(account_id.to_string(), currency.to_string())).copied().unwrap_or(0))
    }

    fn totals(&mut self) -> Result<StoreTotals, StorageError> {
        let mut balance_sums_minor: BTreeMap<String, i128> = BTreeMap::new();
        for ((_, currency), balance) in &self.balances {
            *balance_sums_minor.entry(currency.clone()).or_default() += i128::from(*balance);
        }
        Ok(StoreTotals {
            decisions: self.decisions.len() as u64,
            postings: self.postings,
            posting_sums_minor: self.posting_sums_minor.clone(),
            balance_sums_minor,
        })
    }
}
