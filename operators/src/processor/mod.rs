//! [`PartitionProcessor`]: the operator chain of one input partition and its state. It
//! runs the stages (`validate`, `dedupe`, `features`, `decide`, `ledger`, `settlement`)
//! over a batch and applies the state changes they make as [`StateOp`](crate::StateOp)s,
//! each logged in the batch's changelog as it is applied.
//!
//! - payments: [`PartitionProcessor::plan_payments`] and the typed steps of
//!   [`PaymentBatch`] (or [`PartitionProcessor::process_batch`] in one call);
//! - transfer legs: [`PartitionProcessor::process_transfer_legs`];
//! - settlement inputs: [`PartitionProcessor::process_settlement_inputs`] and
//!   [`PartitionProcessor::settlement_idle`].

mod ledger;
mod partition;
mod payments;
mod scratch;
mod settlement;
mod transfer_legs;

pub use partition::{PartitionProcessor, default_model};
pub use payments::{FeaturizedBatch, ParsedPayment, PaymentBatch, TerminalFeaturesRead};
