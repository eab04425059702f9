//! Random sequences of transfers, holds, posts, voids, expiries, retries and conflicting
//! reuses of ids keep every invariant of the accounts: postings balance (posted and
//! pending), no limited account goes past its limit, each transfer applies at most once
//! (a retry returns the first outcome and moves nothing), and the balances equal a
//! model recomputed from the outcomes.

use std::collections::HashMap;

use paystream_domain::Currency;
use paystream_operators::ledger::accounts::{
    Account, AccountKind, Accounts, Resolution, Transfer, TransferError, TransferKind, TransferOutcome,
};
use proptest::prelude::*;

const ACCOUNTS: [&str; 5] = ["bank", "wallet:a", "wallet:b", "merchant:m", "clearing"];

#[derive(Clone, Debug)]
enum Op {
    Single { debit: usize, credit: usize, amount: i64 },
    Hold { debit: usize, credit: usize, amount: i64, timeout_ms: i64 },
    Post { hold: usize, amount: i64 },
    Void { hold: usize },
    Expire,
    Retry { earlier: usize },
    Conflict { earlier: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..5usize, 0..5usize, 1i64..5_000).prop_map(|(debit, credit, amount)| Op::Single { debit, credit, amount }),
        3 => (0..5usize, 0..5usize, 1i64..5_000, 1i64..400)
            .prop_map(|(debit, credit, amount, timeout_ms)| Op::Hold { debit, credit, amount, timeout_ms }),
        2 => (0..64usize, 1i64..6_000).prop_map(|(hold, amount)| Op::Post { hold, amount }),
        1 => (0..64usize).prop_map(|hold| Op::Void { hold }),
        1 => Just(Op::Expire),
        2 => (0..256usize).prop_map(|earlier| Op::Retry { earlier }),
        1 => (0..256usize).prop_map(|earlier| Op::Conflict { earlier }),
    ]
}

fn setup() -> Accounts {
    let mut accounts = Accounts::new(i64::MAX / 4);
    let eur = Currency::EUR;
    accounts.open(Account::new("bank", eur, AccountKind::External, "bank"));
    accounts.open(Account::new("wallet:a", eur, AccountKind::CustomerWallet, "a"));
    let mut overdraft = Account::new("wallet:b", eur, AccountKind::CustomerWallet, "b");
    overdraft.overdraft_limit_minor = Some(1_000);
    accounts.open(overdraft);
    accounts.open(Account::new("merchant:m", eur, AccountKind::Merchant, "m"));
    accounts.open(Account::new("clearing", eur, AccountKind::Clearing, "paystream"));
    accounts
}

/// The balances the outcomes imply.
#[derive(Default)]
struct Model {
    posted: HashMap<String, (i64, i64)>,
    /// Open holds: id → (debit, credit, amount).
    holds: HashMap<String, (String, String, i64)>,
}

impl Model {
    fn post(&mut self, debit: &str, credit: &str, amount: i64) {
        self.posted.entry(debit.to_string()).or_default().0 += amount;
        self.posted.entry(credit.to_string()).or_default().1 += amount;
    }

    fn check(&self, accounts: &Accounts) {
        let (mut debits, mut credits, mut pending_debits, mut pending_credits) = (0i128, 0i128, 0i128, 0i128);
        for account in accounts.iter() {
            let b = account.balances;
            debits += i128::from(b.debits_posted);
            credits += i128::from(b.credits_posted);
            pending_debits += i128::from(b.debits_pending);
            pending_credits += i128::from(b.credits_pending);
            if let Some(available) = account.available_minor() {
                assert!(available >= 0, "{} is past its limit: {account:?}", account.id);
            }
            let (d, c) = self.posted.get(&account.id).copied().unwrap_or_default();
            assert_eq!((b.debits_posted, b.credits_posted), (d, c), "posted balances of {}", account.id);
            let held_debit: i64 = self.holds.values().filter(|h| h.0 == account.id).map(|h| h.2).sum();
            let held_credit: i64 = self.holds.values().filter(|h| h.1 == account.id).map(|h| h.2).sum();
            assert_eq!((b.debits_pending, b.credits_pending), (held_debit, held_credit), "holds of {}", account.id);
        }
        assert_eq!(debits, credits, "posted debits equal credits");
        assert_eq!(pending_debits, pending_credits, "pending debits equal credits");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn every_sequence_keeps_the_invariants(ops in prop::collection::vec(op(), 1..120), funding in 0i64..20_000) {
        let mut accounts = setup();
        let mut model = Model::default();
        let mut time_ms = 0i64;
        let mut issued: Vec<(Transfer, Result<TransferOutcome, TransferError>)> = Vec::new();
        let mut holds: Vec<String> = Vec::new();
        let top_up = Transfer {
            id: "top-up".into(),
            kind: TransferKind::Single { debit: "bank".into(), credit: "wallet:a".into() },
            amount_minor: funding.max(1),
            currency: Currency::EUR,
            time_ms,
        };
        prop_assert_eq!(accounts.apply(&top_up), Ok(TransferOutcome::Posted));
        model.post("bank", "wallet:a", funding.max(1));

        for (i, op) in ops.iter().enumerate() {
            time_ms += 7;
            let id = format!("t{i}");
            let transfer = |kind, amount_minor| Transfer { id: id.clone(), kind, amount_minor, currency: Currency::EUR, time_ms };
            let request = match op {
                Op::Single { debit, credit, amount } => Some(transfer(
                    TransferKind::Single { debit: ACCOUNTS[*debit].into(), credit: ACCOUNTS[*credit].into() },
                    *amount,
                )),
                Op::Hold { debit, credit, amount, timeout_ms } => Some(transfer(
                    TransferKind::Pending {
                        debit: ACCOUNTS[*debit].into(),
                        credit: ACCOUNTS[*credit].into(),
                        timeout_ms: *timeout_ms,
                    },
                    *amount,
                )),
                Op::Post { hold, amount } if !holds.is_empty() => {
                    Some(transfer(TransferKind::Post { pending_id: holds[hold % holds.len()].clone() }, *amount))
                }
                Op::Void { hold } if !holds.is_empty() => {
                    Some(transfer(TransferKind::Void { pending_id: holds[hold % holds.len()].clone() }, 0))
                }
                Op::Expire => {
                    for expired in accounts.expire(time_ms) {
                        prop_assert!(model.holds.remove(&expired).is_some(), "expired {} twice or unknown", expired);
                    }
                    None
                }
                Op::Retry { earlier } if !issued.is_empty() => {
                    let (first, result) = &issued[earlier % issued.len()];
                    let again = accounts.apply(first);
                    // A retry returns the first outcome — unless the id may have been
                    // forgotten, which the long retention here rules out.
                    prop_assert_eq!(&again, result, "retry of {}", first.id);
                    None
                }
                Op::Conflict { earlier } if !issued.is_empty() => {
                    let (first, _) = &issued[earlier % issued.len()];
                    let mut other = first.clone();
                    other.amount_minor += 1;
                    prop_assert_eq!(accounts.apply(&other), Err(TransferError::IdConflict(first.id.clone())));
                    None
                }
                _ => None,
            };
            if let Some(request) = request {
                let result = accounts.apply(&request);
                match (&request.kind, &result) {
                    (TransferKind::Single { debit, credit }, Ok(TransferOutcome::Posted)) => {
                        model.post(debit, credit, request.amount_minor)
                    }
                    (TransferKind::Pending { debit, credit, .. }, Ok(TransferOutcome::Reserved { .. })) => {
                        model.holds.insert(request.id.clone(), (debit.clone(), credit.clone(), request.amount_minor));
                        holds.push(request.id.clone());
                    }
                    (TransferKind::Post { pending_id }, Ok(TransferOutcome::Captured { released_minor })) => {
                        let (debit, credit, held) = model.holds.remove(pending_id).expect("posted an open hold");
                        prop_assert_eq!(held - request.amount_minor, *released_minor);
                        model.post(&debit, &credit, request.amount_minor);
                    }
                    (TransferKind::Void { pending_id }, Ok(TransferOutcome::Voided)) => {
                        prop_assert!(model.holds.remove(pending_id).is_some(), "voided an open hold");
                    }
                    (
                        TransferKind::Post { pending_id } | TransferKind::Void { pending_id },
                        Err(TransferError::PendingResolved { resolution: Resolution::Expired, .. }),
                    ) => {
                        // Expired on arrival of this request, or earlier by expire().
                        model.holds.remove(pending_id);
                    }
                    (_, Err(_)) => {}
                    (kind, outcome) => prop_assert!(false, "unexpected {:?} for {:?}", outcome, kind),
                }
                issued.push((request, result));
            }
            model.check(&accounts);
        }
    }
}
