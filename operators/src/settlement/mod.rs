//! Settlement: net amounts per merchant and currency per event-time window, one
//! settlement per merchant and window across every input partition.
//!
//! Two sides, joined by the internal topic `paystream-settlement-entries` (partitioned
//! like the payments, keyed by merchant):
//! - **payer side** (the partition that posted a payment): decides the entry's window —
//!   its own, or, if that window is before the partition's *horizon*, the horizon's
//!   window, marked late — names that settlement in the ledger transaction, and writes the
//!   entry to the merchant's partition ([`SettlementInput::Entry`]). When its horizon
//!   moves it writes a mark to every partition ([`SettlementInput::Mark`]): "no more
//!   entries from me for windows before this". The horizon is the partition's watermark
//!   less the allowed lateness, window-aligned; an idle partition may take on the others'
//!   ([`SettlementState::idle_horizon`]), so it never holds windows open.
//! - **merchant side**: adds entries to their windows and closes a window when every
//!   source partition's mark has passed it; a closed window is one settlement, paid out by
//!   two ledger transactions ([`payout_transactions`]): merchant → settlement account →
//!   bank.
//!
//! Because a source writes its entries before the mark that passes their window (same
//! transaction, same partition, in order), an entry never arrives for a closed window;
//! if one does (a configuration change between runs), it goes to the oldest open window
//! and is counted (`misplaced`) — reconcile then reports the settlement its transaction
//! names.

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
