//! Ledger postings: the balanced transaction of every money movement (each balances:
//! debits = credits).

use paystream_domain::{
    Currency, Direction, LedgerPosting, LedgerTransaction, LegKind, Money, Payment, PaymentKind, TransactionKind,
    TransferLeg,
};

use super::funding::{Funding, TRANSFERS_CLEARING_ACCOUNT, account, customer_account, payee_account, wallet_account};

pub(crate) fn posting(account_id: String, direction: Direction, amount_minor: i64) -> LedgerPosting {
    LedgerPosting { account_id, direction, amount_minor }
}

/// The transaction id: `<prefix>:<payment id>`, prefix `pay` for payments and the kind
/// otherwise.
fn transaction_id(kind: TransactionKind, payment_id: &str) -> String {
    let prefix = match kind {
        TransactionKind::Payment => "pay:",
        TransactionKind::Capture => "capture:",
        TransactionKind::Refund => "refund:",
        TransactionKind::Chargeback => "chargeback:",
        TransactionKind::TopUp => "top_up:",
        TransactionKind::Settlement => "settle:",
        TransactionKind::Payout => "payout:",
        TransactionKind::TransferIn => "transfer_in:",
        TransactionKind::TransferReturn => "transfer_return:",
    };
    account(prefix, payment_id)
}

/// The fee of `amount_minor` at `fee_basis_points` ([`Money::checked_basis_points`]: half
/// away from zero; ≤ the amount because rates are ≤ 10 000 basis points, checked in the
/// config, so it cannot overflow).
pub fn fee_minor(amount_minor: i64, fee_basis_points: u32) -> i64 {
    Money::from_minor_units(amount_minor, Currency::EUR)
        .checked_basis_points(fee_basis_points)
        .map(|fee| fee.minor_units())
        .unwrap_or(0)
}

/// A payment or capture: `amount_minor` from `funding` to the payee, less the fee.
/// Returns the transaction and its fee. `event_time` is already formatted (RFC 3339).
pub fn post_payment(
    payment: &Payment,
    funding: Funding,
    amount_minor: i64,
    event_time: &str,
    fee_basis_points: u32,
    fees_account_id: &str,
) -> (LedgerTransaction, i64) {
    let fee = fee_minor(amount_minor, fee_basis_points);
    let mut postings = Vec::with_capacity(3);
    postings.push(posting(funding.posting_account(&payment.payer_account_id), Direction::Debit, amount_minor));
    postings.push(posting(payee_account(payment), Direction::Credit, amount_minor - fee));
    if fee > 0 {
        postings.push(posting(fees_account_id.to_string(), Direction::Credit, fee));
    }
    let kind = if payment.kind == PaymentKind::Capture { TransactionKind::Capture } else { TransactionKind::Payment };
    (transaction(payment, kind, event_time, postings), fee)
}

/// A refund or chargeback: the payee gives `amount_minor` back to `funding`.
pub fn post_refund(payment: &Payment, funding: Funding, event_time: &str) -> LedgerTransaction {
    let amount_minor = payment.amount.minor_units();
    let postings = vec![
        posting(payee_account(payment), Direction::Debit, amount_minor),
        posting(funding.posting_account(&payment.payer_account_id), Direction::Credit, amount_minor),
    ];
    let kind =
        if payment.kind == PaymentKind::Chargeback { TransactionKind::Chargeback } else { TransactionKind::Refund };
    transaction(payment, kind, event_time, postings)
}

/// A top-up: the payer's external account into the payer's wallet.
pub fn post_top_up(payment: &Payment, event_time: &str) -> LedgerTransaction {
    let amount_minor = payment.amount.minor_units();
    let postings = vec![
        posting(customer_account(&payment.payer_account_id), Direction::Debit, amount_minor),
        posting(wallet_account(&payment.payer_account_id), Direction::Credit, amount_minor),
    ];
    transaction(payment, TransactionKind::TopUp, event_time, postings)
}

/// A transfer leg applied: the clearing account into the payee's wallet (credit legs) or
/// back to the payer's funding (return legs).
pub fn post_transfer_leg(leg: &TransferLeg) -> LedgerTransaction {
    let (kind, prefix, credited) = match leg.kind {
        LegKind::Credit => (TransactionKind::TransferIn, "transfer_in:", wallet_account(&leg.payee_account_id)),
        LegKind::Return => (TransactionKind::TransferReturn, "transfer_return:", leg.payer_funding_account.clone()),
    };
    LedgerTransaction {
        transaction_id: account(prefix, &leg.payment_id),
        kind,
        payment_id: leg.payment_id.clone(),
        original_payment_id: None,
        event_time: leg.event_time.clone(),
        currency: leg.currency,
        postings: vec![
            posting(TRANSFERS_CLEARING_ACCOUNT.to_string(), Direction::Debit, leg.amount_minor),
            posting(credited, Direction::Credit, leg.amount_minor),
        ],
        settlement_id: None,
    }
}

fn transaction(
    payment: &Payment,
    kind: TransactionKind,
    event_time: &str,
    postings: Vec<LedgerPosting>,
) -> LedgerTransaction {
    LedgerTransaction {
        transaction_id: transaction_id(kind, &payment.payment_id),
        kind,
        payment_id: payment.payment_id.clone(),
        original_payment_id: payment.original_payment_id.clone(),
        event_time: event_time.to_string(),
        currency: payment.amount.currency(),
        postings,
        settlement_id: None,
    }
}

/// The key of a transaction's record on the `ledger` topic: the payer (as on the input
/// topic) for a payer's event — so one payer's transactions, and each wallet's, stay in
/// one partition in commit order — and the merchant account for a settlement's payout.
pub fn record_key(transaction: &LedgerTransaction) -> &str {
    transaction
        .postings
        .iter()
        .find_map(|p| p.account_id.strip_prefix("wallet:").or_else(|| p.account_id.strip_prefix("customer:")))
        .or_else(|| transaction.postings.first().map(|p| p.account_id.as_str()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn payment(amount: &str) -> Payment {
        let json = format!(
            r#"{{"payment_id":"p","payer_account_id":"C","merchant_id":"M","terminal_id":"T","amount":"{amount}","currency":"EUR","event_time":"2018-04-01T00:00:00Z","channel":"card_present"}}"#
        );
        Payment::from_json(json.as_bytes()).unwrap()
    }

    fn signed(t: &LedgerTransaction) -> Vec<(&str, i64)> {
        t.postings.iter().map(|p| (p.account_id.as_str(), p.signed_minor_units())).collect()
    }

    #[test]
    fn postings_by_hand() {
        let p = payment("100.00");
        let (t, fee) = post_payment(&p, Funding::External, 100_00, "2018-04-01T00:00:00.000Z", 120, "fees");
        assert_eq!(fee, 120);
        assert_eq!(signed(&t), vec![("customer:C", 10_000), ("merchant:M", -9_880), ("fees", -120)]);
        assert_eq!((t.transaction_id.as_str(), t.kind), ("pay:p", TransactionKind::Payment));
        let (t, _) = post_payment(&p, Funding::Wallet, 50_00, "2018-04-01T00:00:00.000Z", 0, "fees");
        assert_eq!(signed(&t), vec![("wallet:C", 5_000), ("merchant:M", -5_000)]);

        let refund = Payment::from_json(
            br#"{"type":"refund","payment_id":"r","original_payment_id":"p","payer_account_id":"C","merchant_id":"M","terminal_id":"T","amount":"30.00","currency":"EUR","event_time":"2018-04-02T00:00:00Z","channel":"card_present"}"#,
        )
        .unwrap();
        let t = post_refund(&refund, Funding::Wallet, "2018-04-02T00:00:00.000Z");
        assert_eq!(signed(&t), vec![("merchant:M", 3_000), ("wallet:C", -3_000)]);
        assert_eq!((t.kind, t.original_payment_id.as_deref()), (TransactionKind::Refund, Some("p")));

        let top_up = Payment::from_json(
            br#"{"type":"top_up","payment_id":"t","payer_account_id":"C","amount":"20.00","currency":"EUR","event_time":"2018-04-02T00:00:00Z","channel":"bank_transfer"}"#,
        )
        .unwrap();
        let t = post_top_up(&top_up, "2018-04-02T00:00:00.000Z");
        assert_eq!(signed(&t), vec![("customer:C", 2_000), ("wallet:C", -2_000)]);
        assert_eq!(t.transaction_id, "top_up:t");
    }

    #[test]
    fn fees_round_half_away_from_zero() {
        assert_eq!(fee_minor(1, 5_000), 1); // 0.5 → 1
        assert_eq!(fee_minor(1, 4_999), 0);
        assert_eq!(fee_minor(3, 5_000), 2); // 1.5 → 2
        assert_eq!(fee_minor(i64::MAX, 10_000), i64::MAX);
    }

    proptest! {
        #[test]
        fn every_transaction_balances(minor in 1i64..=i64::MAX, bps in 0u32..=10_000) {
            let text = paystream_domain::money::format_minor_units(minor, 2);
            let p = payment(&text);
            let (t, fee) = post_payment(&p, Funding::External, minor, "2018-04-01T00:00:00.000Z", bps, "fees");
            prop_assert_eq!(t.postings.iter().map(|p| i128::from(p.signed_minor_units())).sum::<i128>(), 0);
            prop_assert!(fee >= 0 && fee <= minor);
            prop_assert!(t.postings.iter().all(|p| p.amount_minor >= 0));
        }
    }
}
