//! Payment operators: validate → deduplicate → features → score → decide → ledger →
//! settlement, run per input partition by [`PartitionProcessor`]. Payments and
//! authorizations go through every operator; captures, voids, refunds, chargebacks and
//! top-ups skip features and scoring and are decided by the ledger alone.
//!
//! Invariants:
//! - Operators do no IO and read no clock: outputs are a pure function of (input batch,
//!   the partition's state, event time). The runtime owns reading, writing, commits.
//! - Every state change is a [`StateOp`]. Processing applies each op as it makes it and
//!   hands it to the runtime, which commits the ops (the changelog) atomically with the
//!   outputs and input positions. Restoring applies the same ops through the same code,
//!   so a restored partition equals the live one.
//! - Every input record ends as exactly one of: a decision, a counted retry of an
//!   already decided payment, or a dead letter with its reason.
//! - The steps of a batch of payments run in order by their types ([`PaymentBatch`]).
//!
//! Modules, each using only the ones before it:
//! - `error`, `limits`, `id_hash`, `config`, `counters`, `velocity`: shared;
//! - stages, each a pure function of its input and its own state: [`validate`],
//!   [`dedupe`], [`features`], [`decide`] (score and decide), [`ledger`] (accounts,
//!   postings, decline reasons, transfer legs), [`settlement`] (payer side, merchant
//!   side, payouts, reconciliation);
//! - [`state`]: the partition's state and its changes ([`StateOp`]), with their encodings;
//! - `batch`: what the runtime hands in and gets back;
//! - `processor`: [`PartitionProcessor`], which runs the stages over a batch and applies
//!   the ops they make.

// Amounts in minor units are written like 220_00 (= 220.00), not 22_000.
#![allow(clippy::inconsistent_digit_grouping)]

mod batch;
mod config;
mod counters;
pub mod decide;
pub mod dedupe;
mod error;
pub mod features;
pub mod hashed_table;
mod id_hash;
pub mod ledger;
pub mod limits;
mod processor;
pub mod settlement;
pub mod state;
pub mod validate;
mod velocity;

pub use batch::{InputRecord, OutputBatch, TerminalView};
pub use config::{FeeSchedule, LatePaymentPolicy, OperatorConfig, VelocityConfig};
pub use counters::{BatchCounters, OperatorId, RecordCounts};
pub use decide::LATE_PAYMENT_REASON;
pub use error::OperatorError;
pub use features::{TerminalIndexEntry, terminal_index_entry};
pub use id_hash::{IdHashBuilder, IdHashMap, IdHasher};
pub use processor::{
    FeaturizedBatch, ParsedPayment, PartitionProcessor, PaymentBatch, TerminalFeaturesRead, default_model,
};
pub use state::{PartitionState, StateOp};
pub use velocity::{
    DEVICE_VELOCITY_REASON, MERCHANT_VELOCITY_REASON, VELOCITY_BUCKET_MS, VELOCITY_BUCKETS, VELOCITY_WINDOW_MS,
    VelocityEvent, VelocityTotals,
};
