//! The payments API: a customer pays a merchant (merchant id + terminal id) or another
//! account, or tops up the wallet; each request carries an `Idempotency-Key`. The payment
//! is published to the pipeline's input topic keyed by the payer, and the request waits
//! (bounded) for the pipeline's decision: 201 with the outcome, or 202 with a
//! `Location` to poll.
//!
//! - [`model`]: pure rules — the request into a payment event, the payment id derived
//!   from (client, key), idempotency verdicts, cursors.
//! - [`store`]: payments and idempotency records on SQLite or PostgreSQL.
//! - [`intake`]: the pipeline seen from the API — publish an event, wait for its
//!   decision — and [`log_intake`], its implementation on the pipeline's log (embedded
//!   or Kafka), which tails `decisions` and `dead-letters`.
//! - [`service`], [`routes`]: the operations and the HTTP API.

pub mod error;
pub mod intake;
pub mod log_intake;
pub mod model;
pub mod routes;
pub mod service;
pub mod store;

pub use error::PaymentsError;
pub use intake::{DecisionNotice, PaymentIntake};
pub use log_intake::LogIntake;
pub use routes::router;
pub use service::PaymentsService;
pub use store::PaymentsStore;
