//! The payments API's rules as pure functions: no IO, no clock, no randomness.

pub mod cursor;
pub mod idempotency;
pub mod order;

pub use cursor::Cursor;
pub use idempotency::{IdempotencyVerdict, StoredKey, judge_key, request_hash, validate_key};
pub use order::{FollowUpBody, Order, OrderKind, Original, PaymentBody, TopUpBody, payment_id};
