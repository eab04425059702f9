//! The ledger operator in the pipeline's operator chain: wallets and their limits,
//! two-phase payments (authorize → capture / void / expiry), refunds and chargebacks
//! linked to their original, top-ups, settlement payouts — by hand, and as invariants
//! over random event sequences (proptest).

// Amounts in minor units are written like 220_00 (= 220.00), not 22_000.
#![allow(clippy::inconsistent_digit_grouping)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use paystream_domain::{Decision, LedgerTransaction, Outcome, Settlement, TransactionKind};
use paystream_operators::settlement::{encode_inputs, reconcile};
use paystream_operators::{InputRecord, OperatorConfig, OutputBatch, PartitionProcessor, TerminalView, default_model};
use proptest::prelude::*;

const HOUR_MS: i64 = 3_600_000;
const START_MS: i64 = 1_522_540_800_000; // 2018-04-01T00:00:00Z

/// One event on the payments topic, as JSON.
#[allow(clippy::too_many_arguments)]
fn event(
    kind: &str,
    id: &str,
    original: Option<&str>,
    payer: &str,
    merchant: Option<&str>,
    amount: &str,
    currency: &str,
    hour: i64,
    channel: &str,
) -> Vec<u8> {
    let original = original.map(|o| format!(r#""original_payment_id":"{o}","#)).unwrap_or_default();
    let payee = merchant.map(|m| format!(r#""merchant_id":"{m}","terminal_id":"t1","#)).unwrap_or_default();
    let time = paystream_domain::time::format_rfc3339_ms(START_MS + hour * HOUR_MS);
    format!(
        r#"{{"type":"{kind}","payment_id":"{id}",{original}"payer_account_id":"{payer}",{payee}"amount":"{amount}","currency":"{currency}","event_time":"{time}","channel":"{channel}"}}"#
    )
    .into_bytes()
}

struct Run {
    processor: PartitionProcessor,
    decisions: Vec<Decision>,
    ledger: Vec<LedgerTransaction>,
    settlements: Vec<Settlement>,
    holds_expired: u64,
    offset: u64,
}

impl Run {
    fn new(config: OperatorConfig) -> Run {
        let config = Arc::new(config);
        let processor = PartitionProcessor::new(config.clone(), default_model(&config), 0);
        Run {
            processor,
            decisions: Vec::new(),
            ledger: Vec::new(),
            settlements: Vec::new(),
            holds_expired: 0,
            offset: 0,
        }
    }

    fn process(&mut self, records: &[Vec<u8>]) {
        let inputs: Vec<InputRecord<'_>> = records
            .iter()
            .enumerate()
            .map(|(i, value)| InputRecord { offset: self.offset + i as u64, key: b"", value, timestamp_ms: 0 })
            .collect();
        self.offset += records.len() as u64;
        let mut out = OutputBatch::default();
        self.processor.process_batch("payments", &inputs, TerminalView::NONE, &mut out);
        // One partition: its settlement entries and marks come back to it, as the
        // runtime delivers them.
        let entries: Vec<Vec<u8>> = encode_inputs(&std::mem::take(&mut out.settlement_inputs))
            .into_iter()
            .map(|(partition, record)| {
                assert_eq!(partition, 0);
                record
            })
            .collect();
        let entries: Vec<InputRecord<'_>> = entries
            .iter()
            .enumerate()
            .map(|(i, value)| InputRecord { offset: i as u64, key: b"", value, timestamp_ms: 0 })
            .collect();
        self.processor.process_settlement_inputs("paystream-settlement-entries", &entries, &mut out);
        assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
        self.decisions.extend(out.decisions);
        self.ledger.extend(out.ledger);
        self.settlements.extend(out.settlements);
        self.holds_expired += out.counters.holds_expired;
    }

    /// The outcome and first reason of the decision on `id`.
    fn decided(&self, id: &str) -> (Outcome, Option<&str>) {
        let decision = self.decisions.iter().find(|d| d.payment_id == id).unwrap_or_else(|| panic!("no decision {id}"));
        (decision.outcome, decision.reasons.first().map(|r| &**r))
    }

    /// Credits − debits of `account` over every posting so far.
    fn balance(&self, account: &str) -> i64 {
        self.ledger
            .iter()
            .flat_map(|t| &t.postings)
            .filter(|p| p.account_id == account)
            .map(|p| -p.signed_minor_units())
            .sum()
    }

    fn state_balance(&self, account: &str) -> Option<i64> {
        self.processor.state().ledger().accounts().get(account).map(|a| a.balance_minor())
    }
}

const APPROVE: (Outcome, Option<&str>) = (Outcome::Approve, None);

fn decline(reason: &str) -> (Outcome, Option<&str>) {
    (Outcome::Decline, Some(reason))
}

/// A credit line for one wallet: c1 may go 50.00 below zero, c2 (the default) not at
/// all; lowered to 10.00 on a restart with a new configuration, c1's next wallet debit
/// is checked against the new limit (one `SetOverdraft` op, logged and restored).
#[test]
fn per_account_overdraft_limits_and_their_changes() {
    let config = |limit: i64| OperatorConfig {
        wallet_overdrafts: [("c1".to_string(), limit)].into_iter().collect(),
        ..OperatorConfig::default()
    };
    let pay = |id: &str, payer: &str, amount: &str, hour: i64| {
        event("payment", id, None, payer, Some("m1"), amount, "EUR", hour, "wallet")
    };
    let top_up =
        |id: &str, payer: &str, amount: &str| event("top_up", id, None, payer, None, amount, "EUR", 0, "bank_transfer");
    let mut run = Run::new(config(50_00));
    run.process(&[
        top_up("t1", "c1", "10.00"),
        top_up("t2", "c2", "10.00"),
        pay("p1", "c1", "55.00", 1),
        pay("p2", "c2", "15.00", 1),
        pay("p3", "c1", "5.01", 1),
    ]);
    assert_eq!(run.decided("p1"), APPROVE);
    assert_eq!(run.decided("p2"), decline("insufficient_funds"));
    assert_eq!(run.decided("p3"), decline("insufficient_funds"), "c1 is at -45.00 of -50.00");
    assert_eq!((run.balance("wallet:c1"), run.state_balance("wallet:c1")), (-45_00, Some(-45_00)));

    // Restart with c1's line lowered to 10.00: restore, then c1 pays again.
    let snapshot = run.processor.snapshot();
    let lowered = Arc::new(config(10_00));
    run.processor = PartitionProcessor::new(lowered.clone(), default_model(&lowered), 0);
    run.processor.restore_snapshot(&snapshot).unwrap();
    let mut out = OutputBatch::default();
    let records = [top_up("t3", "c1", "40.00"), pay("p4", "c1", "6.00", 2), pay("p5", "c1", "4.00", 2)];
    let inputs: Vec<InputRecord<'_>> = records
        .iter()
        .enumerate()
        .map(|(i, value)| InputRecord { offset: 10 + i as u64, key: b"", value, timestamp_ms: 0 })
        .collect();
    run.processor.process_batch("payments", &inputs, TerminalView::NONE, &mut out);
    let outcomes: Vec<_> = out.decisions.iter().map(|d| (d.payment_id.as_str(), d.outcome)).collect();
    // -45 + 40 = -5.00: 6.00 more would be -11.00, beyond -10.00; 4.00 is within.
    assert_eq!(outcomes, [("t3", Outcome::Approve), ("p4", Outcome::Decline), ("p5", Outcome::Approve)]);
    let set: Vec<_> =
        out.state_ops.iter().filter(|op| matches!(op, paystream_operators::StateOp::SetOverdraft { .. })).collect();
    assert_eq!(set.len(), 1, "{set:?}");
    // The op restores the new limit.
    let mut replayed = PartitionProcessor::new(lowered.clone(), default_model(&lowered), 0);
    replayed.restore_snapshot(&snapshot).unwrap();
    replayed.apply_changelog(&paystream_operators::state::encode_ops(&out.state_ops)).unwrap();
    let limit = |p: &PartitionProcessor| p.state().ledger().accounts().get("wallet:c1").unwrap().overdraft_limit_minor;
    assert_eq!((limit(&replayed), limit(&run.processor)), (Some(10_00), Some(10_00)));
    assert!(
        OperatorConfig { wallet_overdrafts: [("c9".into(), -1)].into_iter().collect(), ..config(0) }
            .validate()
            .is_err()
    );
}

#[test]
fn wallets_holds_captures_refunds_and_expiry_by_hand() {
    let mut run = Run::new(OperatorConfig::default());
    let pay =
        |id: &str, amount: &str, hour: i64| event("payment", id, None, "c1", Some("m1"), amount, "EUR", hour, "wallet");
    let follow = |kind: &str, id: &str, original: &str, amount: &str, hour: i64| {
        event(kind, id, Some(original), "c1", Some("m1"), amount, "EUR", hour, "wallet")
    };
    run.process(&[
        pay("early", "1.00", 0),
        event("top_up", "t1", None, "c1", None, "100.00", "EUR", 0, "bank_transfer"),
        pay("p1", "30.00", 1),
        pay("p2", "80.00", 1),
        event("authorize", "a1", None, "c1", Some("m1"), "50.00", "EUR", 2, "wallet"),
        pay("p3", "30.00", 2),
        follow("capture", "cap1", "a1", "40.00", 3),
        follow("void", "v1", "a1", "50.00", 3),
        follow("refund", "r1", "p1", "20.00", 4),
        follow("refund", "r2", "p1", "10.01", 4),
        follow("chargeback", "cb1", "p1", "10.00", 4),
    ]);
    assert_eq!(run.decided("early"), decline("insufficient_funds"), "no wallet before the first top-up");
    assert_eq!(run.decided("t1"), APPROVE);
    assert_eq!(run.decided("p1"), APPROVE);
    assert_eq!(run.decided("p2"), decline("insufficient_funds"), "70.00 left");
    assert_eq!(run.decided("a1"), APPROVE, "holds 50.00 of the 70.00");
    assert_eq!(run.decided("p3"), decline("insufficient_funds"), "20.00 available while the hold stands");
    assert_eq!(run.decided("cap1"), APPROVE, "40.00 posted, 10.00 released");
    assert_eq!(run.decided("v1"), decline("authorization_closed"));
    assert_eq!(run.decided("r1"), APPROVE);
    assert_eq!(run.decided("r2"), decline("exceeds_captured_amount"), "10.00 of p1 is left to return");
    assert_eq!(run.decided("cb1"), APPROVE);
    // 100 − 30 − 40 + 20 + 10
    assert_eq!(run.balance("wallet:c1"), 60_00);
    assert_eq!(run.state_balance("wallet:c1"), Some(60_00));
    let refund = run.ledger.iter().find(|t| t.payment_id == "r1").unwrap();
    assert_eq!((refund.kind, refund.original_payment_id.as_deref()), (TransactionKind::Refund, Some("p1")));
    assert!(run.ledger.iter().all(|t| t.payment_id != "a1"), "an authorization posts nothing");
    let capture = run.ledger.iter().find(|t| t.payment_id == "cap1").unwrap();
    assert_eq!((capture.kind, capture.postings[0].amount_minor), (TransactionKind::Capture, 40_00));

    // A hold not captured in 7 days (+ the hour of lateness) expires; its capture is refused.
    run.process(&[
        event("authorize", "a2", None, "c1", Some("m1"), "25.00", "EUR", 5, "card_present"),
        event("authorize", "a3", None, "c1", Some("m1"), "5.00", "EUR", 5, "wallet"),
    ]);
    assert_eq!(run.processor.state().ledger().accounts().get("wallet:c1").unwrap().available_minor(), Some(55_00));
    run.process(&[pay("p4", "1.00", 5 + 7 * 24 + 2)]);
    assert_eq!(run.holds_expired, 2);
    assert_eq!(run.processor.state().ledger().accounts().get("wallet:c1").unwrap().available_minor(), Some(59_00));
    run.process(&[
        event("capture", "cap2", Some("a2"), "c1", Some("m1"), "25.00", "EUR", 5 + 7 * 24 + 2, "card_present"),
        follow("void", "v3", "a3", "4.00", 5 + 7 * 24 + 2),
    ]);
    assert_eq!(run.decided("cap2"), decline("authorization_expired"));
    assert_eq!(run.decided("v3"), decline("amount_mismatch"), "a void names the authorized amount");

    // Links are checked: unknown originals, other parties, captures of payments.
    run.process(&[
        follow("refund", "r9", "nothing", "1.00", 200),
        event("refund", "r10", Some("p1"), "c1", Some("m2"), "1.00", "EUR", 200, "wallet"),
        follow("capture", "cap9", "p4", "1.00", 200),
        event("top_up", "t2", None, "c1", None, "5.00", "USD", 200, "card_not_present"),
    ]);
    assert_eq!(run.decided("r9"), decline("original_not_found"));
    assert_eq!(run.decided("r10"), decline("original_mismatch"));
    assert_eq!(run.decided("cap9"), decline("original_not_an_authorization"));
    assert_eq!(run.decided("t2"), decline("currency_mismatch"), "the wallet holds EUR");

    // Every closed settlement reconciles with its postings and payouts.
    let report = reconcile(&run.ledger, &run.settlements);
    assert!(report.settlements > 0);
    assert_eq!(report.mismatches, Vec::<String>::new());
    let payouts = run.ledger.iter().filter(|t| t.kind == TransactionKind::Payout).count();
    assert!(payouts > 0);
}

#[test]
fn an_overdraft_limit_lets_a_wallet_go_below_zero_that_far() {
    let mut run = Run::new(OperatorConfig { wallet_overdraft_minor: 10_00, ..OperatorConfig::default() });
    run.process(&[
        event("top_up", "t1", None, "c1", None, "5.00", "EUR", 0, "bank_transfer"),
        event("payment", "p1", None, "c1", Some("m1"), "15.00", "EUR", 0, "wallet"),
        event("payment", "p2", None, "c1", Some("m1"), "0.01", "EUR", 0, "wallet"),
    ]);
    assert_eq!(run.decided("p1"), APPROVE);
    assert_eq!(run.decided("p2"), decline("insufficient_funds"));
    assert_eq!(run.balance("wallet:c1"), -10_00);
}

/// A random event: kind, payer, the earlier event it refers to, amount, time step.
#[derive(Clone, Debug)]
struct Step {
    kind: u8,
    payer: u8,
    merchant: u8,
    refers_back: usize,
    cents: u32,
    hours: i64,
    wallet: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (0u8..9, 0u8..3, 0u8..3, 1usize..6, 1u32..20_000, 0i64..30, any::<bool>()).prop_map(
        |(kind, payer, merchant, refers_back, cents, hours, wallet)| Step {
            kind,
            payer,
            merchant,
            refers_back,
            cents,
            hours,
            wallet,
        },
    )
}

/// The events of `steps`, with their ids; a retry or conflict reuses an earlier id.
fn events(steps: &[Step]) -> Vec<Vec<u8>> {
    let mut hour = 0;
    // (id, bytes, step, hour of the event the bytes describe)
    let mut made: Vec<(String, Vec<u8>, Step, i64)> = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        hour += s.hours;
        let id = format!("e{i}");
        let payer = format!("c{}", s.payer);
        let merchant = format!("m{}", s.merchant);
        let amount = format!("{}.{:02}", s.cents / 100, s.cents % 100);
        let channel = if s.wallet { "wallet" } else { "card_present" };
        let earlier = i.checked_sub(s.refers_back).map(|e| made[e].clone());
        let mut event_hour = hour;
        let bytes = match (s.kind, &earlier) {
            (0, _) => event("top_up", &id, None, &payer, None, &amount, "EUR", hour, "bank_transfer"),
            (1, _) => event("payment", &id, None, &payer, Some(&merchant), &amount, "EUR", hour, channel),
            (2, _) => event("authorize", &id, None, &payer, Some(&merchant), &amount, "EUR", hour, channel),
            (kind @ 3..=6, Some((original, _, o, _))) => {
                let kind = ["capture", "void", "refund", "chargeback"][usize::from(kind - 3)];
                let amount =
                    if kind == "void" { format!("{}.{:02}", o.cents / 100, o.cents % 100) } else { amount.clone() };
                let payer = format!("c{}", o.payer);
                let merchant = format!("m{}", o.merchant);
                event(kind, &id, Some(original), &payer, Some(&merchant), &amount, "EUR", hour, channel)
            }
            // A retry, within the 7 days payment ids are remembered (later, the id is new again).
            (7, Some((_, bytes, _, then))) if hour - then < 6 * 24 => {
                event_hour = *then;
                bytes.clone()
            }
            _ => event("payment", &id, None, &payer, Some(&merchant), &amount, "EUR", hour, channel),
        };
        made.push((id, bytes, s.clone(), event_hour));
    }
    made.into_iter().map(|(_, bytes, _, _)| bytes).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Whatever arrives: every transaction balances; no wallet is ever below zero, in
    /// the order postings are written; each event is applied at most once; returns never
    /// exceed what was captured; each capture is within its authorization; every closed
    /// settlement equals the sum of its postings and is paid out exactly; and partition
    /// state agrees with the postings on every wallet.
    #[test]
    fn ledger_invariants_hold_for_any_sequence(steps in proptest::collection::vec(step(), 1..120), batch in 1usize..20) {
        let config = OperatorConfig { settlement_window_ms: 12 * HOUR_MS, ..OperatorConfig::default() };
        let mut run = Run::new(config);
        for chunk in events(&steps).chunks(batch) {
            run.process(chunk);
        }
        let mut wallet_balances: HashMap<&str, i64> = HashMap::new();
        let mut applied = HashSet::new();
        let mut captured: HashMap<&str, i64> = HashMap::new();
        let mut returned: HashMap<&str, i64> = HashMap::new();
        for t in &run.ledger {
            prop_assert_eq!(t.postings.iter().map(|p| i128::from(p.signed_minor_units())).sum::<i128>(), 0);
            prop_assert!(applied.insert(t.transaction_id.as_str()), "{} applied twice", t.transaction_id);
            for p in &t.postings {
                if p.account_id.starts_with("wallet:") {
                    let balance = wallet_balances.entry(p.account_id.as_str()).or_default();
                    *balance -= p.signed_minor_units();
                    prop_assert!(*balance >= 0, "{} went to {}", p.account_id, balance);
                }
            }
            let amount = t.postings[0].amount_minor;
            match t.kind {
                TransactionKind::Payment => *captured.entry(t.payment_id.as_str()).or_default() += amount,
                TransactionKind::Capture => {
                    *captured.entry(t.original_payment_id.as_deref().unwrap()).or_default() += amount
                }
                TransactionKind::Refund | TransactionKind::Chargeback => {
                    let original = t.original_payment_id.as_deref().unwrap();
                    let total = returned.entry(original).or_default();
                    *total += amount;
                    prop_assert!(*total <= captured.get(original).copied().unwrap_or(0), "{} over-returned", original);
                }
                _ => {}
            }
        }
        for d in &run.decisions {
            if d.kind == paystream_domain::PaymentKind::Capture && d.outcome == Outcome::Approve {
                let original = d.original_payment_id.as_deref().unwrap();
                let authorization = run.decisions.iter().find(|a| a.payment_id == original).unwrap();
                let cents = |text: &str| paystream_domain::Money::parse(text, d.currency).unwrap().minor_units();
                prop_assert!(cents(&d.amount) <= cents(&authorization.amount));
            }
        }
        let decided: HashSet<&str> = run.decisions.iter().map(|d| d.payment_id.as_str()).collect();
        prop_assert_eq!(decided.len(), run.decisions.len(), "each event decided once");
        for (wallet, balance) in &wallet_balances {
            prop_assert_eq!(run.state_balance(wallet), Some(*balance));
        }
        let report = reconcile(&run.ledger, &run.settlements);
        prop_assert_eq!(report.mismatches, Vec::<String>::new());
    }
}

/// A payment to another account crosses partitions through `clearing:transfers`: the
/// payer's partition posts the debit side and writes a credit leg; the payee's partition
/// applies it once into the payee's wallet — or, if the wallet holds another currency,
/// writes a return leg that the payer's partition applies back into the payer's funding.
/// Money is conserved in every committed state: the clearing account holds exactly the
/// legs in flight.
#[test]
fn payments_to_other_accounts_cross_partitions_through_clearing_exactly_once() {
    let mut payer_side = Run::new(OperatorConfig::default());
    let mut payee_side = Run::new(OperatorConfig::default());
    let to = |id: &str, payee: &str, amount: &str, currency: &str| {
        format!(
            r#"{{"payment_id":"{id}","payer_account_id":"c1","payee_account_id":"{payee}","amount":"{amount}","currency":"{currency}","event_time":"2018-04-01T01:00:00Z","channel":"wallet"}}"#
        )
        .into_bytes()
    };
    payer_side.process(&[
        event("top_up", "t1", None, "c1", None, "100.00", "EUR", 0, "bank_transfer"),
        event("top_up", "t2", None, "c1", None, "100.00", "USD", 0, "card_present"),
        to("x1", "c2", "40.00", "EUR"),
    ]);
    payee_side.process(&[event("top_up", "t3", None, "c3", None, "1.00", "USD", 0, "bank_transfer")]);
    assert_eq!(payer_side.decided("x1"), APPROVE);
    assert_eq!(payer_side.decided("t2"), decline("currency_mismatch"), "c1's wallet holds EUR");
    let clearing = |runs: &[&Run]| runs.iter().map(|r| r.balance("clearing:transfers")).sum::<i64>();
    // 40.00 less the 1.2 % fee is in clearing, on its way.
    assert_eq!(clearing(&[&payer_side, &payee_side]), 39_52);
    assert_eq!(payer_side.balance("wallet:c1"), 60_00);

    let mut legs = Vec::new();
    // The leg the payer's batch wrote (the runtime sends it to the payee's partition),
    // made again by a processor fed the same events.
    let credit = {
        let mut out = paystream_operators::OutputBatch::default();
        let mut fresh =
            PartitionProcessor::new(Arc::new(OperatorConfig::default()), default_model(&OperatorConfig::default()), 0);
        let inputs = [to("x1", "c2", "40.00", "EUR")];
        let mut top = event("top_up", "t1", None, "c1", None, "100.00", "EUR", 0, "bank_transfer");
        let records = [std::mem::take(&mut top), inputs[0].clone()];
        let records: Vec<InputRecord<'_>> = records
            .iter()
            .enumerate()
            .map(|(i, value)| InputRecord { offset: i as u64, key: b"", value, timestamp_ms: 0 })
            .collect();
        fresh.process_batch("payments", &records, TerminalView::NONE, &mut out);
        assert_eq!(out.transfer_legs.len(), 1);
        serde_json::to_vec(&out.transfer_legs[0]).unwrap()
    };
    legs.push(credit.clone());
    let apply = |run: &mut Run, legs: &[Vec<u8>]| {
        let inputs: Vec<InputRecord<'_>> = legs
            .iter()
            .enumerate()
            .map(|(i, value)| InputRecord { offset: i as u64, key: b"", value, timestamp_ms: 0 })
            .collect();
        let mut out = paystream_operators::OutputBatch::default();
        run.processor.process_transfer_legs("paystream-transfers", &inputs, &mut out);
        run.ledger.extend(out.ledger);
        assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
        (out.transfer_legs, out.counters)
    };
    // A leg that is not one (unreadable, or without a time to remember its id by) is
    // dead-lettered, not applied.
    let mut timeless: paystream_domain::TransferLeg = serde_json::from_slice(&credit).unwrap();
    timeless.leg_id = "x0/credit".into();
    timeless.event_time = "soon".into();
    let bad = [b"{nope".to_vec(), serde_json::to_vec(&timeless).unwrap()];
    let inputs: Vec<InputRecord<'_>> = bad
        .iter()
        .enumerate()
        .map(|(i, value)| InputRecord { offset: i as u64, key: b"", value, timestamp_ms: 0 })
        .collect();
    let mut out = paystream_operators::OutputBatch::default();
    payee_side.processor.process_transfer_legs("paystream-transfers", &inputs, &mut out);
    let reasons: Vec<_> = out.dead_letters.iter().map(|l| l.reason.as_str()).collect();
    assert_eq!(reasons, ["malformed_json", "invalid_timestamp"]);
    assert!(out.ledger.is_empty());
    // Applied once, even when delivered twice.
    let (returns, counters) = apply(&mut payee_side, &[credit.clone(), credit]);
    assert!(returns.is_empty());
    assert_eq!((counters.transfer_credits, counters.retries), (1, 1));
    assert_eq!(payee_side.balance("wallet:c2"), 39_52);
    assert_eq!(payee_side.state_balance("wallet:c2"), Some(39_52));
    assert_eq!(clearing(&[&payer_side, &payee_side]), 0, "nothing in flight");

    // c3's wallet holds USD: an EUR transfer comes back.
    let to_c3 = {
        let mut leg: paystream_domain::TransferLeg = serde_json::from_slice(&legs[0]).unwrap();
        leg.leg_id = "x2/credit".into();
        leg.payment_id = "x2".into();
        leg.payee_account_id = "c3".into();
        leg
    };
    payer_side.ledger.push(LedgerTransaction {
        transaction_id: "pay:x2".into(),
        kind: TransactionKind::Payment,
        payment_id: "x2".into(),
        original_payment_id: None,
        event_time: to_c3.event_time.clone(),
        currency: paystream_domain::Currency::EUR,
        postings: vec![
            paystream_domain::LedgerPosting {
                account_id: "wallet:c1".into(),
                direction: paystream_domain::Direction::Debit,
                amount_minor: to_c3.amount_minor,
            },
            paystream_domain::LedgerPosting {
                account_id: "clearing:transfers".into(),
                direction: paystream_domain::Direction::Credit,
                amount_minor: to_c3.amount_minor,
            },
        ],
        settlement_id: None,
    });
    let (returns, counters) = apply(&mut payee_side, &[serde_json::to_vec(&to_c3).unwrap()]);
    assert_eq!(counters.transfer_credits, 0);
    assert_eq!(returns.len(), 1);
    assert_eq!(
        (returns[0].kind, returns[0].reason.as_deref()),
        (paystream_domain::LegKind::Return, Some("currency_mismatch"))
    );
    assert_eq!(clearing(&[&payer_side, &payee_side]), 39_52, "the return is in flight");
    let (more, counters) = apply(&mut payer_side, &[serde_json::to_vec(&returns[0]).unwrap()]);
    assert!(more.is_empty());
    assert_eq!(counters.transfer_returns, 1);
    assert_eq!(clearing(&[&payer_side, &payee_side]), 0);
    let back = payer_side.ledger.iter().find(|t| t.kind == TransactionKind::TransferReturn).unwrap();
    assert_eq!(back.postings[1].account_id, "wallet:c1", "back where it came from");
    // Transfers are not refunded by the payer's side: the money is in another wallet.
    payer_side.process(&[
        br#"{"type":"refund","payment_id":"r1","original_payment_id":"x1","payer_account_id":"c1","payee_account_id":"c2","amount":"1.00","currency":"EUR","event_time":"2018-04-01T02:00:00Z","channel":"wallet"}"#
            .to_vec(),
    ]);
    assert_eq!(payer_side.decided("r1"), decline("transfer_not_refundable"));
}
