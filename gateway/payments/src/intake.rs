//! The pipeline as the payments API sees it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// What happened to a payment in the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionNotice {
    pub payment_id: String,
    /// `approved`, `in_review`, `declined` (decisions) or `rejected` (dead-lettered).
    pub status: &'static str,
    pub reasons: Vec<String>,
    pub decided_at_ms: i64,
}

/// One ledger transaction's movement of one user's wallet, in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletPosting {
    pub transaction_id: String,
    /// The wallet's owner (the ledger's `wallet:<user id>`).
    pub user_id: String,
    pub currency: String,
    /// Into the wallet positive, out of it negative (its credits less its debits).
    pub amount_minor: i64,
    /// The ledger transaction's type (`top_up`, `payment`, `refund`, …).
    pub kind: String,
    pub payment_id: String,
    pub event_time: String,
    pub recorded_at_ms: i64,
}

/// What the pipeline reports that the payments store records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipelineNotice {
    Decision(DecisionNotice),
    Posting(WalletPosting),
}

pub type IntakeFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// Publishes payment events and reports their decisions.
///
/// Implementations MUST make `submit` return only once the event is durable in the log,
/// MUST deliver a notice for a payment id registered with `watch` before `submit`
/// (so a fast decision is never missed), and MUST bound the waiters they keep.
pub trait PaymentIntake: Send + Sync {
    /// Starts watching `payment_id`; the receiver gets its notice. `None` when too many
    /// are watched already (the caller answers 202 without waiting).
    fn watch(&self, payment_id: &str) -> Option<tokio::sync::oneshot::Receiver<DecisionNotice>>;
    /// Stops watching (the caller gave up waiting).
    fn unwatch(&self, payment_id: &str);
    /// Publishes `event` (a payment event, JSON) keyed by `payer`.
    fn submit<'a>(&'a self, payer: &'a str, event: Vec<u8>, timestamp_ms: i64) -> IntakeFuture<'a, ()>;
    /// Decisions on payments made through the API, and every wallet's postings, for the
    /// store to record (the receiver is taken once, by the service's recorder task).
    fn notices(&self) -> Option<tokio::sync::mpsc::Receiver<PipelineNotice>>;
}

/// How long a request waits for its decision unless `Prefer: wait=N` says otherwise.
pub const DECISION_WAIT_DEFAULT: Duration = Duration::from_secs(2);
/// The longest `Prefer: wait=N` honoured: below the gateway's request timeout (10 s by
/// default), so a long wait ends in 202 with a `Location`, never in a 504.
pub const DECISION_WAIT_MAX: Duration = Duration::from_secs(8);
