//! One conformance suite for every record store: the embedded (in-memory) store and
//! PostgreSQL (this machine's server; `PAYSTREAM_TEST_POSTGRES_URL` overrides
//! `postgres://paystream:paystream@127.0.0.1:5432/test`). Each PostgreSQL test works in a schema of
//! its own.

use std::borrow::Cow;
use std::sync::Arc;

use paystream_domain::{
    Currency, Decision, Direction, LedgerPosting, LedgerTransaction, Outcome, PaymentKind, TransactionKind,
};
use paystream_storage::StorageError;
use paystream_storage::records::{MemoryRecordStore, OutputSlice, RecordStore, SliceApplied};
use paystream_storage_postgres::{Blocking, PostgresRecordStore};

fn postgres(test: &str) -> Blocking<PostgresRecordStore> {
    let schema = format!("test_{test}_{}", paystream_testkit::unique_suffix());
    Blocking::<PostgresRecordStore>::connect(&paystream_testkit::postgres_url(), &schema).unwrap_or_else(|e| {
        panic!("PostgreSQL must be running for these tests ({}): {e}", paystream_testkit::postgres_url())
    })
}

fn stores(test: &str) -> Vec<(&'static str, Box<dyn RecordStore>)> {
    vec![("memory", Box::new(MemoryRecordStore::default())), ("postgres", Box::new(postgres(test)))]
}

/// A payment of `cents` from `payer` to merchant `m`: its decision and, when approved,
/// its ledger transaction (payer debited... credited, merchant and fees).
fn payment(
    id: u32,
    payer: &str,
    cents: i64,
    outcome: Outcome,
    currency: Currency,
) -> (Decision, Option<LedgerTransaction>) {
    let time = paystream_domain::time::format_rfc3339_ms(1_522_540_800_000 + i64::from(id) * 60_000);
    let refund = id % 5 == 4;
    let decision = Decision {
        kind: if refund { PaymentKind::Refund } else { PaymentKind::Payment },
        payment_id: format!("p{id}"),
        original_payment_id: refund.then(|| format!("p{}", id - 1)),
        payer_account_id: payer.to_string(),
        merchant_id: Some("m1".into()),
        amount: paystream_domain::money::format_minor_units(cents, currency.minor_unit_digits()),
        currency,
        event_time: time.clone(),
        outcome,
        score: 0.25,
        reasons: vec![Cow::Borrowed("TX_AMOUNT"), Cow::Borrowed("TERMINAL_ID_RISK_7DAY_WINDOW")],
        model_version: Arc::from("gbt-test"),
        velocity: None,
    };
    let fee = cents / 100;
    let ledger = (outcome == Outcome::Approve).then(|| LedgerTransaction {
        transaction_id: format!("t{id}"),
        kind: if refund { TransactionKind::Refund } else { TransactionKind::Payment },
        payment_id: format!("p{id}"),
        original_payment_id: refund.then(|| format!("p{}", id - 1)),
        event_time: time,
        currency,
        postings: vec![
            LedgerPosting { account_id: format!("wallet:{payer}"), direction: Direction::Credit, amount_minor: cents },
            LedgerPosting { account_id: "merchant:m1".into(), direction: Direction::Debit, amount_minor: cents - fee },
            LedgerPosting { account_id: "fees:paystream".into(), direction: Direction::Debit, amount_minor: fee },
        ],
        settlement_id: None,
    });
    (decision, ledger)
}

fn slice(partition: u32, from: u64, payments: &[(u32, &str, i64, Outcome)]) -> OutputSlice {
    let mut slice = OutputSlice {
        topic: "decisions".into(),
        partition,
        from_offset: from,
        to_offset: from + payments.len() as u64,
        ..OutputSlice::default()
    };
    for &(id, payer, cents, outcome) in payments {
        let currency = if id % 5 == 0 { Currency::from_code("JPY").unwrap() } else { Currency::EUR };
        let (decision, ledger) = payment(id, payer, cents, outcome, currency);
        slice.decisions.push(decision);
        slice.ledger.extend(ledger);
    }
    slice
}

#[test]
fn slices_apply_exactly_once_and_balances_follow_the_postings() {
    for (name, mut store) in stores("once") {
        let first = slice(0, 0, &[(1, "a", 10_00, Outcome::Approve), (2, "b", 25_00, Outcome::Decline)]);
        let second = slice(0, 2, &[(3, "a", 5_00, Outcome::Approve), (5, "a", 700, Outcome::Approve)]);
        let other_partition = slice(1, 0, &[(4, "c", 99_99, Outcome::Review)]);
        assert_eq!(store.apply(&first).unwrap(), SliceApplied::Applied, "{name}");
        assert_eq!(store.apply(&other_partition).unwrap(), SliceApplied::Applied, "{name}");
        assert_eq!(store.apply(&second).unwrap(), SliceApplied::Applied, "{name}");
        let totals = store.totals().unwrap();
        // A replay after a crash changes nothing.
        assert_eq!(store.apply(&first).unwrap(), SliceApplied::AlreadyApplied, "{name}");
        assert_eq!(store.apply(&second).unwrap(), SliceApplied::AlreadyApplied, "{name}");
        assert_eq!(store.totals().unwrap(), totals, "{name}");
        // A gap or a partial overlap is refused, and changes nothing either.
        let gap = slice(0, 6, &[(6, "a", 1_00, Outcome::Approve)]);
        assert!(matches!(store.apply(&gap), Err(StorageError::Sequence { .. })), "{name}");
        let overlap = slice(0, 3, &[(7, "a", 1_00, Outcome::Approve), (8, "a", 1_00, Outcome::Approve)]);
        assert!(matches!(store.apply(&overlap), Err(StorageError::Sequence { .. })), "{name}");
        // An invalid record fails the whole slice.
        let mut bad = slice(0, 4, &[(9, "a", 3_00, Outcome::Approve), (11, "a", 3_00, Outcome::Approve)]);
        bad.decisions[1].amount = "3.001".into();
        assert!(matches!(store.apply(&bad), Err(StorageError::InvalidRecord(_))), "{name}");
        assert_eq!(store.totals().unwrap(), totals, "{name}: nothing of a failed slice is kept");
        assert_eq!(store.position("decisions", 0).unwrap(), 4, "{name}");
        assert_eq!(store.position("decisions", 1).unwrap(), 1, "{name}");
        assert_eq!(store.position("decisions", 7).unwrap(), 0, "{name}");

        assert_eq!(totals.decisions, 5, "{name}");
        assert_eq!(totals.postings, 9, "{name}: three approved payments, three postings each");
        assert!(totals.posting_sums_minor.values().all(|s| *s == 0), "{name}: {totals:?}");
        assert!(totals.balance_sums_minor.values().all(|s| *s == 0), "{name}: {totals:?}");
        assert_eq!(store.balance_minor("wallet:a", "EUR").unwrap(), -15_00, "{name}");
        assert_eq!(store.balance_minor("wallet:a", "JPY").unwrap(), -700, "{name}");
        assert_eq!(store.balance_minor("merchant:m1", "EUR").unwrap(), 10_00 - 10 + 5_00 - 5, "{name}");
        assert_eq!(store.balance_minor("wallet:b", "EUR").unwrap(), 0, "{name}: declined payments move no money");
        let decision = store.decision("p5").unwrap().unwrap();
        assert_eq!((decision.amount_minor, decision.currency.as_str()), (700, "JPY"), "{name}");
        assert_eq!(decision.event_time_ms, 1_522_540_800_000 + 5 * 60_000, "{name}");
        assert_eq!(decision.reasons, ["TX_AMOUNT", "TERMINAL_ID_RISK_7DAY_WINDOW"], "{name}");
        assert_eq!((decision.outcome.as_str(), decision.model_version.as_str()), ("approve", "gbt-test"), "{name}");
        assert!(store.decision("nope").unwrap().is_none(), "{name}");
    }
}

#[test]
fn every_store_agrees_with_the_embedded_one_on_a_long_random_sequence() {
    let mut stores = stores("agree");
    let mut next = paystream_testkit::xorshift(0x9e37_79b9_7f4a_7c15);
    let mut offsets = [0u64; 3];
    let mut id = 0u32;
    let payers = ["a", "b", "c", "d", "e", "f"];
    for _ in 0..60 {
        let partition = (next() % 3) as usize;
        let count = 1 + next() % 40;
        let payments: Vec<(u32, &str, i64, Outcome)> = (0..count)
            .map(|_| {
                id += 1;
                let outcome =
                    [Outcome::Approve, Outcome::Approve, Outcome::Review, Outcome::Decline][(next() % 4) as usize];
                (id, payers[(next() % 6) as usize], 1 + (next() % 1_000_000) as i64, outcome)
            })
            .collect();
        let s = slice(partition as u32, offsets[partition], &payments);
        offsets[partition] = s.to_offset;
        let replay = next().is_multiple_of(5);
        for (name, store) in stores.iter_mut() {
            assert_eq!(store.apply(&s).unwrap(), SliceApplied::Applied, "{name}");
            if replay {
                assert_eq!(store.apply(&s).unwrap(), SliceApplied::AlreadyApplied, "{name}");
            }
        }
    }
    let (reference, others) = stores.split_first_mut().unwrap();
    let expected = reference.1.totals().unwrap();
    for (name, store) in others {
        assert_eq!(store.totals().unwrap(), expected, "{name}");
        for payer in payers {
            for currency in ["EUR", "JPY"] {
                let account = format!("wallet:{payer}");
                assert_eq!(
                    store.balance_minor(&account, currency).unwrap(),
                    reference.1.balance_minor(&account, currency).unwrap(),
                    "{name}: {account} {currency}"
                );
            }
        }
        for probe in [1, id / 2, id] {
            assert_eq!(
                store.decision(&format!("p{probe}")).unwrap(),
                reference.1.decision(&format!("p{probe}")).unwrap(),
                "{name}"
            );
        }
    }
}
