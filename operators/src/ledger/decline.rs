//! Why the ledger refuses an event: the reason code first among a `decline` decision's
//! reasons ([`DeclineReason::as_str`]; `schemas/decision.v1.schema.json` names each).

use super::accounts::{Resolution, TransferError};

/// A reason the ledger declines an event with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeclineReason {
    InsufficientFunds,
    CurrencyMismatch,
    AuthorizationExpired,
    AuthorizationClosed,
    CaptureExceedsAuthorization,
    ExceedsCapturedAmount,
    AmountMismatch,
    OriginalNotFound,
    OriginalMismatch,
    OriginalNotAnAuthorization,
    TransferNotRefundable,
    BalanceOverflow,
    LedgerRefused,
}

impl DeclineReason {
    /// Every reason.
    pub const ALL: [DeclineReason; 13] = [
        DeclineReason::InsufficientFunds,
        DeclineReason::CurrencyMismatch,
        DeclineReason::AuthorizationExpired,
        DeclineReason::AuthorizationClosed,
        DeclineReason::CaptureExceedsAuthorization,
        DeclineReason::ExceedsCapturedAmount,
        DeclineReason::AmountMismatch,
        DeclineReason::OriginalNotFound,
        DeclineReason::OriginalMismatch,
        DeclineReason::OriginalNotAnAuthorization,
        DeclineReason::TransferNotRefundable,
        DeclineReason::BalanceOverflow,
        DeclineReason::LedgerRefused,
    ];

    /// The reason code, as decisions carry it.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeclineReason::InsufficientFunds => "insufficient_funds",
            DeclineReason::CurrencyMismatch => "currency_mismatch",
            DeclineReason::AuthorizationExpired => "authorization_expired",
            DeclineReason::AuthorizationClosed => "authorization_closed",
            DeclineReason::CaptureExceedsAuthorization => "capture_exceeds_authorization",
            DeclineReason::ExceedsCapturedAmount => "exceeds_captured_amount",
            DeclineReason::AmountMismatch => "amount_mismatch",
            DeclineReason::OriginalNotFound => "original_not_found",
            DeclineReason::OriginalMismatch => "original_mismatch",
            DeclineReason::OriginalNotAnAuthorization => "original_not_an_authorization",
            DeclineReason::TransferNotRefundable => "transfer_not_refundable",
            DeclineReason::BalanceOverflow => "balance_overflow",
            DeclineReason::LedgerRefused => "ledger_refused",
        }
    }

    /// The reason whose code is `code`, if it is one.
    pub fn from_code(code: &str) -> Option<DeclineReason> {
        DeclineReason::ALL.into_iter().find(|reason| reason.as_str() == code)
    }

    /// Why the ledger's accounts refused a transfer.
    pub fn of_transfer_error(error: &TransferError) -> DeclineReason {
        match error {
            TransferError::ExceedsLimit { .. } | TransferError::UnknownAccount(_) => DeclineReason::InsufficientFunds,
            TransferError::CurrencyMismatch { .. } => DeclineReason::CurrencyMismatch,
            TransferError::PendingResolved { resolution: Resolution::Expired, .. } => {
                DeclineReason::AuthorizationExpired
            }
            TransferError::PendingResolved { .. } => DeclineReason::AuthorizationClosed,
            TransferError::UnknownPending(_) => DeclineReason::OriginalNotFound,
            TransferError::PostExceedsHold { .. } => DeclineReason::CaptureExceedsAuthorization,
            TransferError::Overflow(_) => DeclineReason::BalanceOverflow,
            TransferError::InvalidAmount(_)
            | TransferError::SameAccount(_)
            | TransferError::InvalidTimeout(_)
            | TransferError::IdConflict(_) => DeclineReason::LedgerRefused,
        }
    }
}

impl std::fmt::Display for DeclineReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision_schema_names_every_decline_reason() {
        let schema = include_str!("../../../schemas/decision.v1.schema.json");
        for reason in DeclineReason::ALL {
            assert!(schema.contains(reason.as_str()), "schemas/decision.v1.schema.json does not name {reason}");
        }
    }

    #[test]
    fn codes_are_distinct_and_read_back() {
        for reason in DeclineReason::ALL {
            assert_eq!(DeclineReason::from_code(reason.as_str()), Some(reason));
        }
        assert_eq!(DeclineReason::from_code("late_event_features_inexact"), None);
    }
}
