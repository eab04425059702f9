//! Domain types of paystream: money, currencies, event time, and the v1 events and their
//! validation.
//!
//! Invariants: this crate does no IO, reads no clock and has no async; money is integer
//! minor units with checked arithmetic, never `f64`.

pub mod currency;
pub mod error;
pub mod event;
pub mod json;
pub mod money;
pub mod partitioner;
pub mod time;

pub use currency::Currency;
pub use error::{MoneyError, TimeError};
pub use event::{
    Channel, DeadLetter, Decision, Direction, FraudLabel, LedgerPosting, LedgerTransaction, LegKind, Outcome, Payee,
    Payment, PaymentKind, RejectReason, Rejection, Settlement, TransactionKind, TransferLeg, Velocity,
};
pub use money::Money;
