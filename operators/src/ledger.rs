//! Ledger operator: the balanced postings of an approved payment.
//!
//! Payer account debited the amount; payee (merchant or account) credited the amount
//! less the fee; the fees account credited the fee. Debits equal credits, always.

use paystream_domain::{Direction, LedgerPosting, LedgerTransaction, Payee, Payment};

pub fn customer_account(payer_account_id: &str) -> String {
    account("customer:", payer_account_id)
}

fn account(prefix: &str, id: &str) -> String {
    let mut account = String::with_capacity(prefix.len() + id.len());
    account.push_str(prefix);
    account.push_str(id);
    account
}

fn posting(account_id: String, direction: Direction, amount_minor: i64) -> LedgerPosting {
    LedgerPosting { account_id, direction, amount_minor }
}

/// Returns the transaction and the fee (minor units). `event_time` is the payment's
/// event time, already formatted (RFC 3339) by the caller.
pub fn post_payment(
    payment: &Payment,
    event_time: &str,
    fee_basis_points: u32,
    fees_account_id: &str,
) -> (LedgerTransaction, i64) {
    let amount = payment.amount;
    // fee <= amount because basis points <= 10 000 (checked in the config), so neither
    // this nor the subtraction below can overflow.
    let fee_minor = amount.checked_basis_points(fee_basis_points).map(|m| m.minor_units()).unwrap_or(0);
    let payee_account = match &payment.payee {
        Payee::Merchant { merchant_id, .. } => account("merchant:", merchant_id),
        Payee::Account { account_id } => account("account:", account_id),
    };
    let mut postings = Vec::with_capacity(3);
    postings.push(posting(customer_account(&payment.payer_account_id), Direction::Debit, amount.minor_units()));
    postings.push(posting(payee_account, Direction::Credit, amount.minor_units() - fee_minor));
    if fee_minor > 0 {
        postings.push(posting(fees_account_id.to_string(), Direction::Credit, fee_minor));
    }
    let transaction = LedgerTransaction {
        transaction_id: account("pay:", &payment.payment_id),
        payment_id: payment.payment_id.clone(),
        event_time: event_time.to_string(),
        currency: amount.currency(),
        postings,
        settlement_id: None,
    };
    (transaction, fee_minor)
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

    #[test]
    fn postings_by_hand() {
        let (t, fee) = post_payment(&payment("100.00"), "2018-04-01T00:00:00.000Z", 120, "fees");
        assert_eq!(fee, 120);
        let accounts: Vec<_> = t.postings.iter().map(|p| (p.account_id.as_str(), p.signed_minor_units())).collect();
        assert_eq!(accounts, vec![("customer:C", 10_000), ("merchant:M", -9_880), ("fees", -120)]);
    }

    proptest! {
        #[test]
        fn every_transaction_balances(minor in 1i64..=i64::MAX, bps in 0u32..=10_000) {
            let text = paystream_domain::money::format_minor_units(minor, 2);
            let (t, fee) = post_payment(&payment(&text), "2018-04-01T00:00:00.000Z", bps, "fees");
            prop_assert_eq!(t.postings.iter().map(|p| i128::from(p.signed_minor_units())).sum::<i128>(), 0);
            prop_assert!(fee >= 0 && fee <= minor);
            prop_assert!(t.postings.iter().all(|p| p.amount_minor >= 0));
        }
    }
}
