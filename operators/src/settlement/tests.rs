//! Windows, marks, payouts and reconciliation by hand.

use paystream_domain::{Currency, Direction, LedgerPosting, LedgerTransaction, Settlement, TransactionKind};

use super::*;

const W: i64 = 1_000;

fn entry(merchant: &str, gross: i64, fee: i64) -> SettlementEntry {
    SettlementEntry {
        entry_id: format!("pay:{merchant}/{gross}"),
        merchant_id: merchant.into(),
        currency: Currency::EUR,
        kind: EntryKind::Payment,
        gross_minor: gross,
        fee_minor: fee,
        event_time_ms: 0,
        window_start_ms: 0,
        late: false,
        source_partition: 0,
    }
}

/// One partition settling its own payments: the payer side places the entry at
/// `time_ms`, the merchant side adds it.
fn put(state: &mut SettlementState, entry: SettlementEntry, time_ms: i64) -> (Placement, i64) {
    let (placement, start) = state.place(time_ms, W);
    let entry =
        SettlementEntry { event_time_ms: time_ms, window_start_ms: start, late: placement == Placement::Late, ..entry };
    assert_eq!(state.add(&entry), (start, false));
    (placement, start)
}

/// The single partition's watermark less lateness reaches `closed_through_ms`: its
/// horizon moves and its own mark closes what it passed.
fn close(state: &mut SettlementState, closed_through_ms: i64, partition: u32) -> Vec<Settlement> {
    let horizon = window_start(closed_through_ms, W);
    state.advance_horizon(horizon);
    state.mark(0, horizon, 1, W, partition)
}

#[test]
fn windows_close_by_watermark_and_late_payments_move_forward() {
    let mut state = SettlementState::default();
    assert_eq!(put(&mut state, entry("m1", 100, 2), 10), (Placement::OnTime, 0));
    put(&mut state, entry("m2", 50, 1), 999);
    put(&mut state, entry("m1", 70, 1), 1_500);
    assert!(close(&mut state, 999, 0).is_empty(), "window [0,1000) ends after 999");
    let closed = close(&mut state, 1_200, 0);
    assert_eq!(closed.len(), 2);
    assert_eq!((closed[0].merchant_id.as_str(), closed[0].net_minor), ("m1", 98));
    assert_eq!(closed[0].net, "0.98");
    assert_eq!((closed[1].merchant_id.as_str(), closed[1].gross_minor), ("m2", 50));
    // An event in the closed window lands in [1000, 2000), marked late.
    assert_eq!(put(&mut state, entry("m1", 30, 0), 5), (Placement::Late, 1_000));
    let closed = close(&mut state, 2_000, 0);
    assert_eq!(closed.len(), 1);
    assert_eq!((closed[0].payment_count, closed[0].late_payment_count, closed[0].gross_minor), (2, 1, 100));
    assert_eq!(closed[0].window_start, "1970-01-01T00:00:01.000Z");
}

/// Two payer partitions, one merchant partition (2): a window closes only when both
/// sources' marks have passed it; each source places late entries by its own horizon.
#[test]
fn a_window_closes_when_every_source_has_passed_it() {
    let mut merchant_side = SettlementState::default();
    let mut sources = [SettlementState::default(), SettlementState::default()];
    fn send(
        merchant_side: &mut SettlementState,
        sources: &[SettlementState],
        source: u32,
        time_ms: i64,
        gross: i64,
    ) -> (i64, bool) {
        let (placement, start) = sources[source as usize].place(time_ms, W);
        let entry = SettlementEntry {
            event_time_ms: time_ms,
            window_start_ms: start,
            late: placement == Placement::Late,
            source_partition: source,
            ..entry("m", gross, 0)
        };
        merchant_side.add(&entry)
    }
    assert_eq!(send(&mut merchant_side, &sources, 0, 100, 10), (0, false));
    assert_eq!(send(&mut merchant_side, &sources, 1, 900, 20), (0, false));
    assert_eq!(send(&mut merchant_side, &sources, 0, 1_100, 40), (1_000, false));
    // Source 0 is past window 0; source 1 has sent no mark: nothing closes.
    assert!(sources[0].advance_horizon(1_000));
    assert!(merchant_side.mark(0, 1_000, 2, W, 2).is_empty());
    // Source 1 still sends entries for window 0: on time by its own horizon.
    assert_eq!(send(&mut merchant_side, &sources, 1, 950, 80), (0, false));
    assert!(sources[1].advance_horizon(1_000));
    let closed = merchant_side.mark(1, 1_000, 2, W, 2);
    assert_eq!(closed.len(), 1);
    assert_eq!(
        (closed[0].payment_count, closed[0].gross_minor, closed[0].late_payment_count, closed[0].source_partition),
        (3, 110, 0, 2)
    );
    assert_eq!(closed[0].settlement_id, "m/EUR/1970-01-01T00:00:00.000Z");
    // Now source 1's entry for window 0 is late: it names window 1, and lands there.
    assert_eq!(sources[1].place(990, W), (Placement::Late, 1_000));
    assert_eq!(send(&mut merchant_side, &sources, 1, 990, 5), (1_000, false));
    assert!(sources[0].advance_horizon(3_000));
    assert!(merchant_side.mark(0, 3_000, 2, W, 2).is_empty(), "source 1 holds window 1 open");
    assert!(sources[1].advance_horizon(2_000));
    let closed = merchant_side.mark(1, 2_000, 2, W, 2);
    assert_eq!(
        closed.iter().map(|s| (s.window_start.as_str(), s.gross_minor, s.late_payment_count)).collect::<Vec<_>>(),
        [("1970-01-01T00:00:01.000Z", 45, 1)]
    );
    // A mark that does not move the earliest closes nothing more; marks never go back.
    assert!(merchant_side.mark(1, 1_000, 2, W, 2).is_empty());
    assert_eq!(merchant_side.marks, [3_000, 2_000]);
}

#[test]
fn an_idle_source_takes_on_the_earliest_later_mark_and_a_misplaced_entry_is_counted() {
    let mut state = SettlementState::default();
    assert_eq!(state.idle_horizon(1), None, "no marks yet");
    // Partition 1 of 3 received marks from 0 and 2 (and its own, ignored).
    state.mark(0, 5_000, 3, W, 1);
    state.mark(1, 9_000, 3, W, 1);
    state.mark(2, 3_000, 3, W, 1);
    assert_eq!(state.idle_horizon(1), Some(3_000));
    assert!(state.advance_horizon(3_000));
    assert_eq!(state.idle_horizon(1), Some(5_000));
    assert!(state.advance_horizon(5_000));
    assert_eq!(state.idle_horizon(1), None, "nothing later than its own horizon");
    assert_eq!(state.place(4_500, W), (Placement::Late, 5_000));
    // The merchant side closed windows before 3,000: an entry naming window 1,000
    // (only after a configuration change) goes to window 3,000, counted late.
    let stale = SettlementEntry { window_start_ms: 1_000, ..entry("m", 7, 0) };
    assert_eq!(state.add(&stale), (3_000, true));
    assert_eq!(state.open_windows().next().unwrap().1.late_payment_count, 1);
}

#[test]
fn reconcile_matches_settlements_to_their_postings_and_reports_differences() {
    use paystream_domain::{Direction, LedgerPosting};
    let posting = |account: &str, direction, amount_minor| LedgerPosting {
        account_id: account.to_string(),
        direction,
        amount_minor,
    };
    let transaction = |id: &str, gross: i64, fee: i64, settlement: &str| LedgerTransaction {
        transaction_id: format!("pay:{id}"),
        kind: TransactionKind::Payment,
        payment_id: id.to_string(),
        original_payment_id: None,
        event_time: "1970-01-01T00:00:00.000Z".into(),
        currency: Currency::EUR,
        postings: vec![
            posting("customer:c", Direction::Debit, gross),
            posting("merchant:m1", Direction::Credit, gross - fee),
            posting("fees", Direction::Credit, fee),
        ],
        settlement_id: Some(settlement.to_string()),
    };
    let refund = |id: &str, original: &str, amount: i64, settlement: &str| LedgerTransaction {
        transaction_id: format!("refund:{id}"),
        kind: TransactionKind::Refund,
        payment_id: id.to_string(),
        original_payment_id: Some(original.to_string()),
        event_time: "1970-01-01T00:00:00.000Z".into(),
        currency: Currency::EUR,
        postings: vec![
            posting("merchant:m1", Direction::Debit, amount),
            posting("customer:c", Direction::Credit, amount),
        ],
        settlement_id: Some(settlement.to_string()),
    };
    let mut state = SettlementState::default();
    let (_, start) = put(&mut state, entry("m1", 100, 2), 10);
    put(&mut state, entry("m1", 50, 1), 20);
    put(&mut state, SettlementEntry { kind: EntryKind::Refund, ..entry("m1", 30, 0) }, 30);
    let id = settlement_id("m1", Currency::EUR, start);
    let closed = close(&mut state, W, 0);
    assert_eq!(closed[0].settlement_id, id);
    assert_eq!((closed[0].refund_count, closed[0].refunds_minor, closed[0].net_minor), (1, 30, 117));
    let payouts = payout_transactions(&closed, "settlement", "bank", 0);
    assert_eq!(payouts.len(), 2);
    assert_eq!(payouts[0].transaction_id, "settle:/EUR/1970-01-01T00:00:00.000Z/p0");
    assert_eq!(payouts[0].postings[0], posting("merchant:m1", Direction::Debit, 117));
    assert_eq!(payouts[1].postings[1], posting("bank", Direction::Credit, 117));
    let mut ledger = vec![
        transaction("a", 100, 2, &id),
        transaction("b", 50, 1, &id),
        refund("r", "a", 30, &id),
        transaction("c", 9, 0, "open"),
    ];
    ledger.extend(payouts);
    let report = reconcile(&ledger, &closed);
    assert_eq!(report, Reconciliation { settlements: 1, transactions: 4, open_transactions: 1, mismatches: vec![] });

    let mut tampered = closed.clone();
    tampered[0].fees_minor += 1;
    tampered[0].net_minor -= 1;
    tampered.push(tampered[0].clone());
    let report = reconcile(&ledger[..1], &tampered);
    assert_eq!(
        report.mismatches,
        [
            format!("{id}: payment_count is 2, its postings sum to 1"),
            format!("{id}: refund_count is 1, its postings sum to 0"),
            format!("{id}: gross_minor is 150, its postings sum to 100"),
            format!("{id}: fees_minor is 4, its postings sum to 2"),
            format!("{id}: refunds_minor is 30, its postings sum to 0"),
            format!("{id}: net_minor is 116, its postings sum to 98"),
            format!("{id}: settled (merchant → settlement) is 116, its postings sum to 0"),
            format!("{id}: emitted more than once"),
            "payouts /EUR/1970-01-01T00:00:00.000Z: paid 0 to the bank, its settlements' nets sum to 232".to_string(),
        ]
    );
    assert_eq!(
        reconcile(&[], &closed).mismatches,
        [
            format!("{id}: no ledger transaction names it"),
            "payouts /EUR/1970-01-01T00:00:00.000Z: paid 0 to the bank, its settlements' nets sum to 117".into()
        ]
    );
}

#[test]
fn a_negative_net_is_collected_from_the_merchant_and_huge_nets_split_over_postings() {
    let mut state = SettlementState::default();
    put(&mut state, entry("m", 10, 1), 0);
    put(&mut state, SettlementEntry { kind: EntryKind::Chargeback, ..entry("m", 25, 0) }, 0);
    let closed = close(&mut state, W, 0);
    assert_eq!((closed[0].chargeback_count, closed[0].net_minor), (1, -16));
    let payouts = payout_transactions(&closed, "settlement", "bank", 0);
    let signed: Vec<_> = payouts[1].postings.iter().map(|p| (p.account_id.as_str(), p.signed_minor_units())).collect();
    assert_eq!(signed, [("settlement", 16), ("bank", -16)].map(|(a, v)| (a, -v)));
    let ledger: Vec<_> = payouts.clone();
    let mut chargeback = ledger[0].clone();
    chargeback.kind = TransactionKind::Chargeback;
    chargeback.settlement_id = Some(closed[0].settlement_id.clone());
    chargeback.postings = vec![
        paystream_domain::LedgerPosting {
            account_id: "merchant:m".into(),
            direction: Direction::Debit,
            amount_minor: 25,
        },
        paystream_domain::LedgerPosting {
            account_id: "customer:c".into(),
            direction: Direction::Credit,
            amount_minor: 25,
        },
    ];
    let mut payment = chargeback.clone();
    payment.kind = TransactionKind::Payment;
    payment.postings = vec![
        paystream_domain::LedgerPosting {
            account_id: "customer:c".into(),
            direction: Direction::Debit,
            amount_minor: 10,
        },
        paystream_domain::LedgerPosting {
            account_id: "merchant:m".into(),
            direction: Direction::Credit,
            amount_minor: 9,
        },
        paystream_domain::LedgerPosting { account_id: "fees".into(), direction: Direction::Credit, amount_minor: 1 },
    ];
    let all = [vec![payment, chargeback], ledger].concat();
    assert_eq!(reconcile(&all, &closed).mismatches, Vec::<String>::new());

    let mut state = SettlementState::default();
    for _ in 0..3 {
        put(&mut state, entry("m", i64::MAX, 0), 0);
    }
    let closed = close(&mut state, W, 0);
    let payouts = payout_transactions(&closed, "settlement", "bank", 0);
    assert_eq!(payouts[0].postings.len(), 6);
    let debits: i128 = payouts[0].postings.iter().map(|p| i128::from(p.signed_minor_units().max(0))).sum();
    assert_eq!(debits, 3 * i128::from(i64::MAX));
    assert!(payouts.iter().all(|t| t.postings.iter().map(|p| i128::from(p.signed_minor_units())).sum::<i128>() == 0));
}

#[test]
fn settlements_closing_together_are_paid_out_in_one_batch_per_window() {
    let mut state = SettlementState::default();
    for merchant in ["a", "b", "c"] {
        put(&mut state, entry(merchant, 100, 1), 0);
    }
    put(&mut state, entry("a", 50, 0), W + 1);
    let closed = close(&mut state, 2 * W, 0);
    assert_eq!(closed.len(), 4);
    let payouts = payout_transactions(&closed, "settlement", "bank", 0);
    let ids: Vec<_> = payouts.iter().map(|t| t.transaction_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "settle:/EUR/1970-01-01T00:00:00.000Z/p0",
            "payout:/EUR/1970-01-01T00:00:00.000Z/p0",
            "settle:/EUR/1970-01-01T00:00:01.000Z/p0",
            "payout:/EUR/1970-01-01T00:00:01.000Z/p0",
        ]
    );
    assert_eq!(payouts[0].postings.len(), 4, "three merchant legs and the settlement account's");
    assert_eq!(payouts[1].postings[1].amount_minor, 297);
    let mut ledger = payouts.clone();
    for settlement in &closed {
        let gross = settlement.gross_minor as i64;
        let fee = settlement.fees_minor as i64;
        ledger.push(LedgerTransaction {
            transaction_id: format!("pay:{}", settlement.settlement_id),
            kind: TransactionKind::Payment,
            payment_id: settlement.settlement_id.clone(),
            original_payment_id: None,
            event_time: settlement.window_start.clone(),
            currency: Currency::EUR,
            postings: vec![
                LedgerPosting { account_id: "customer:c".into(), direction: Direction::Debit, amount_minor: gross },
                LedgerPosting {
                    account_id: merchant_account(&settlement.merchant_id),
                    direction: Direction::Credit,
                    amount_minor: gross - fee,
                },
                LedgerPosting { account_id: "fees".into(), direction: Direction::Credit, amount_minor: fee },
            ],
            settlement_id: Some(settlement.settlement_id.clone()),
        });
    }
    assert_eq!(reconcile(&ledger, &closed).mismatches, Vec::<String>::new());
    // A payout leg moved to another merchant is found.
    ledger[0].postings[0].account_id = "merchant:z".into();
    let mismatches = reconcile(&ledger, &closed).mismatches;
    assert!(mismatches.iter().any(|m| m.contains("settles z/EUR")), "{mismatches:?}");
}

#[test]
fn inputs_travel_per_target_in_order_in_bounded_records() {
    let mark = |source| SettlementInput::Mark { source_partition: source, open_from_ms: 7 };
    let mut inputs: Vec<(u32, SettlementInput)> = (0..SETTLEMENT_INPUTS_PER_RECORD_MAX as i64 + 5)
        .map(|i| (1, SettlementInput::Entry(entry("m", i, 0))))
        .collect();
    inputs.push((0, SettlementInput::Entry(entry("n", 1, 0))));
    inputs.extend([(0, mark(3)), (1, mark(3))]);
    let records = encode_inputs(&inputs);
    let targets: Vec<u32> = records.iter().map(|(target, _)| *target).collect();
    assert_eq!(targets, [0, 1, 1], "partition 1's inputs take two records");
    let decoded: Vec<Vec<SettlementInput>> = records.iter().map(|(_, r)| decode_inputs(r).unwrap()).collect();
    assert_eq!(decoded[0], [SettlementInput::Entry(entry("n", 1, 0)), mark(3)]);
    assert_eq!(decoded[1].len(), SETTLEMENT_INPUTS_PER_RECORD_MAX);
    assert_eq!(decoded[2].last(), Some(&mark(3)), "the mark after the entries");
    let all: Vec<SettlementInput> = decoded[1..].concat();
    let sent: Vec<SettlementInput> = inputs.iter().filter(|(t, _)| *t == 1).map(|(_, i)| i.clone()).collect();
    assert_eq!(all, sent);
    let mut other_version = records[0].1.clone();
    other_version[0] = 9;
    assert!(decode_inputs(&other_version).unwrap_err().contains("format 9"));
    assert!(decode_inputs(b"").is_err());
    assert!(decode_inputs(&records[0].1[..3]).is_err());
}

#[test]
fn totals_never_overflow() {
    let mut state = SettlementState::default();
    put(&mut state, entry("m", i64::MAX, 0), 0);
    put(&mut state, entry("m", i64::MAX, 0), 0);
    let closed = close(&mut state, W, 3);
    assert_eq!(closed[0].gross_minor, 2 * i128::from(i64::MAX));
    assert_eq!(closed[0].gross, "184467440737095516.14");
}
