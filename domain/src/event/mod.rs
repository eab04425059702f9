//! Event types of paystream, version 1, and their JSON wire format.
//!
//! Inputs: [`Payment`] (topic `payments`) and [`FraudLabel`] (topic `labels`).
//! Outputs: [`Decision`], [`LedgerTransaction`] (its postings), [`Settlement`] and
//! [`DeadLetter`]. JSON Schemas of each live in `schemas/` at the repository root.
//!
//! Codemap: `payment.rs` (the validated [`Payment`] and its parts), `wire.rs` (its JSON
//! form [`PaymentWire`] and the validation rules), `rejection.rs` (input limits and
//! [`RejectReason`]s), `label.rs`, `decision.rs`, `ledger.rs` (transactions, postings,
//! transfer legs), `settlement.rs` and `dead_letter.rs`. Every type is re-exported here.

mod dead_letter;
mod decision;
mod label;
mod ledger;
mod payment;
mod rejection;
mod settlement;
mod wire;

pub use dead_letter::{DEAD_LETTER_COPY_BYTES_MAX, DeadLetter};
pub use decision::{Decision, Outcome, Velocity};
pub use label::{FraudLabel, FraudLabelWire};
pub use ledger::{Direction, LedgerPosting, LedgerTransaction, LegKind, TransactionKind, TransferLeg};
pub use payment::{Channel, Geo, Payee, Payment, PaymentKind};
pub use rejection::{IDENTIFIER_BYTES_MAX, INPUT_RECORD_BYTES_MAX, RejectReason, Rejection};
pub use settlement::Settlement;
pub use wire::{PAYMENT_SCHEMA_V1, PaymentWire};

#[cfg(test)]
mod schema_tests {
    use super::*;

    const SCHEMAS: [&str; 6] = [
        include_str!("../../../schemas/payment.v1.schema.json"),
        include_str!("../../../schemas/label.v1.schema.json"),
        include_str!("../../../schemas/decision.v1.schema.json"),
        include_str!("../../../schemas/ledger-transaction.v1.schema.json"),
        include_str!("../../../schemas/settlement.v1.schema.json"),
        include_str!("../../../schemas/dead-letter.v1.schema.json"),
    ];

    #[test]
    fn schemas_are_json_and_the_payment_example_is_accepted() {
        for schema in SCHEMAS {
            let _: serde_json::Value = serde_json::from_str(schema).expect("schema files are JSON");
        }
        let payment: serde_json::Value = serde_json::from_str(SCHEMAS[0]).unwrap();
        for example in payment["examples"].as_array().unwrap() {
            Payment::from_json(example.to_string().as_bytes()).expect("schema example is a valid payment");
        }
        let dead_letter: serde_json::Value = serde_json::from_str(SCHEMAS[5]).unwrap();
        let reasons: Vec<&str> = dead_letter["properties"]["reason"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        let ours: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(reasons, ours, "the dead-letter schema lists every reason");
    }
}
