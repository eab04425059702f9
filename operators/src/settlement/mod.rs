//! Settlement: net amounts per merchant and currency per event-time window, one
//! settlement per merchant and window across every input partition.
//!
//! Approved merchant payments and captures (gross, fees) and refunds and chargebacks
//! accumulate per (merchant, currency, event-time window of `settlement_window_ms`,
//! default one day). The pipeline is keyed by payer, so a merchant's payments arrive on
//! every partition; a merchant is settled on its own partition
//! ([`merchant_partition`]: Kafka's `murmur2(merchant) mod N`), fed by the payer
//! partitions through the internal topic `paystream-settlement-entries` (partitioned like
//! the payments, keyed by merchant). Two sides:
//! - **payer side** (the partition that posts a payment, in the batch's transaction;
//!   `payer.rs`, `processor/settlement.rs`): the entry's window is its own event-time
//!   window, unless that is before the partition's *horizon* — the first window ending
//!   after its watermark less `settlement_allowed_lateness_ms` (default one hour) — then
//!   the horizon's window, marked late (`late_payment_count` on the settlement,
//!   `paystream_late_settlement_payments_total`). The ledger transaction names that
//!   settlement ([`settlement_id`]: `<merchant>/<currency>/<window start>`) and the entry
//!   ([`SettlementInput::Entry`]: its transaction id, merchant, currency, kind, amount,
//!   fee, window, late, source partition) goes to the merchant's partition. No state
//!   changes: the window follows from the horizon. When its horizon moves (at most once
//!   per window length of event time) the partition writes a mark
//!   ([`SettlementInput::Mark`]: "no more entries from me for windows before this") to
//!   every partition, after the batch's entries (same transaction, so on each partition
//!   the entries come first). A batch writes one record per target partition
//!   ([`encode_inputs`], `inputs.rs`).
//! - **merchant side** (`merchant.rs`): the worker owning partition `q` reads `q`'s
//!   entries and marks as a third input (`PartitionProcessor::process_settlement_inputs`),
//!   committing its position with the state it changed (ops `SettleEntry`,
//!   `SettlementMark`). A window closes when every source partition's mark has passed it;
//!   it is emitted once as a settlement (net = gross − fees − refunds − chargebacks;
//!   `source_partition` = `q`, the partition that settled it) and paid out
//!   ([`payout_transactions`], `payout.rs`): merchant → settlement account → bank.
//! - **idle partitions** would hold every window open (their watermark does not move).
//!   A partition with no payments to process takes on the earliest of the other sources'
//!   marks that is later than its own horizon ([`SettlementState::idle_horizon`], op
//!   `SettlementHorizon`) and sends its marks: repeated, idle partitions converge on the
//!   most advanced source's horizon, and windows close at the least advanced *active*
//!   one's. A payment arriving later on such a partition for an earlier window goes to the
//!   horizon's window, late: it is late against the rest of the pipeline.
//!
//! Invariant: no entry reaches a closed window. A source never writes an entry for a
//! window before its own last mark, a window closes only when every source's mark has
//! passed it, and on each partition a source's entries precede the mark that passes their
//! window (same transaction, same partition, in order). If one arrives anyway (only if
//! the window length or lateness changed between runs), it goes to the oldest open window
//! and is counted (`paystream_misplaced_settlement_entries_total`); reconcile then
//! reports the settlement its transaction names. Entries are not deduplicated by id: only
//! paystream writes the topic, each entry in the transaction that posted it, and the
//! merchant side's position commits with its state. Marks cost N inputs per partition per
//! window length.
//!
//! Every ledger transaction names its settlement, so `paystream reconcile`
//! ([`reconcile`], `reconcile.rs`) checks each emitted settlement against exactly its
//! postings and its payouts.

mod entry;
mod ids;
mod inputs;
mod merchant;
mod payer;
mod payout;
mod reconcile;
mod windows;

pub use entry::{EntryKind, SettlementEntry, SettlementInput, SettlementTotals};
pub use ids::{merchant_partition, settlement_id, settlement_id_suffix, settlement_id_with_suffix, window_start};
pub use inputs::{SETTLEMENT_INPUTS_FORMAT_VERSION, decode_inputs, encode_inputs, read_inputs};
pub use payout::{merchant_account, payout_transactions};
pub use reconcile::{Reconciler, Reconciliation, reconcile};
pub use windows::{Placement, SettlementState};

pub use crate::limits::{SETTLEMENT_INPUTS_PER_RECORD_MAX, SETTLEMENT_LEGS_PER_TRANSACTION_MAX};

#[cfg(test)]
mod tests;
