//! A seeded, deterministic simulation of the pipeline with crashes: each seed makes a
//! stream of payment events (card and wallet payments, top-ups, authorizations and their
//! captures and voids, refunds, chargebacks; retries, conflicting reuses of ids, malformed
//! records, event-time jitter), a pipeline shape (partitions, batch size, snapshot
//! interval, how the snapshotter gets each batch's ops: in process, through a feed that
//! may drop most, or read back from the changelog) and crash points (the process dies
//! before its k-th commit, or while the snapshotter writes its k-th snapshot, leaving it
//! torn or half-written), then runs the
//! real runtime on the embedded log through every crash and recovery and checks after
//! each one:
//! - every input is decided once, or is a retry of a decided payment, or is dead-lettered
//!   once, and what was processed is a prefix of each partition;
//! - every ledger transaction balances; each approved payment, capture, refund,
//!   chargeback and top-up has exactly one, authorizations and voids none, nothing else
//!   any (but settlement payouts);
//! - no wallet is ever below zero, in the order its postings were committed; refunds and
//!   chargebacks never return more than was captured; captures stay within their
//!   authorization;
//! - every closed settlement equals the sum of the postings of its payments, captures,
//!   refunds and chargebacks from every payer partition (gross, fees, refunds, net), is
//!   paid out exactly once (`reconcile`), is closed on its merchant's partition, and no
//!   merchant window is emitted twice (one settlement per merchant and window).
//!
//! One worker thread, so a seed's input and outputs replay exactly; where a crash lands
//! among the snapshotter's saves depends on thread timing. `PAYSTREAM_SIM_SEEDS`
//! (default 1000) sets how many seeds run; `PAYSTREAM_SIM_SEED=N` runs only seed N.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use paystream_domain::partitioner::partition_for_key;
use paystream_domain::{
    Decision, LedgerTransaction, LegKind, Outcome, PaymentKind, Settlement, TransactionKind, TransferLeg,
};
use paystream_operators::{OperatorConfig, default_model};
use paystream_pipeline::ensure_topics;
use paystream_pipeline::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use paystream_pipeline::log::fault::CommitFault;
use paystream_pipeline::log::{Log, Transaction};
use paystream_pipeline::{Pipeline, PipelineConfig, RunControl, RunMode};
use paystream_storage::{FileSnapshotStore, Snapshot, SnapshotStore, StorageError};
use serde_json::Value;

const START_MS: i64 = 1_522_540_800_000;
const HOUR_MS: i64 = 3_600_000;
/// The log time of every record: a year after the scenario starts, after every event of
/// it (the producers' clock).
const LOG_TIME_MS: i64 = START_MS + 365 * 24 * HOUR_MS;
/// The event time of a payment from a producer whose clock is ten years ahead.
const FUTURE_MS: i64 = LOG_TIME_MS + 10 * 365 * 24 * HOUR_MS;

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Scenario {
    partitions: u32,
    batch_records_max: usize,
    snapshot_interval_batches: u32,
    /// (payer, value) in publication order.
    records: Vec<(String, Vec<u8>)>,
    /// Records published before the first run; the rest before the last.
    published_first: usize,
    /// Each run but the last dies before its k-th commit…
    crashes: Vec<i64>,
    /// … or during its snapshotter's k-th save, if that comes first.
    snapshot_crashes: Vec<Option<TornSave>>,
    /// Batches the worker may hand its snapshotter in process: 0 and 1 make it read most
    /// of them back from the changelog…
    snapshot_feed_batches_max: usize,
    /// … and with sparse offsets (as on Kafka) the crashing runs' snapshotters read them
    /// all back.
    sparse_offsets: bool,
}

/// A crash while a snapshot is written.
#[derive(Clone, Copy, Debug)]
struct TornSave {
    /// Saves that complete before it.
    saves: i64,
    /// The new snapshot was installed but its file is cut short (the disk lost its
    /// tail); otherwise the process died while writing the temporary file.
    installed: bool,
    /// Where the bytes stop, in 1/256 of the file.
    cut_256ths: u64,
}

fn payment(id: &str, payer: &str, merchant: u64, cents: u64, time_ms: i64) -> Vec<u8> {
    event("payment", id, None, payer, Some(merchant), cents, time_ms, "card_not_present")
}

/// A payment event of any kind (`merchant` None: a top-up).
#[allow(clippy::too_many_arguments)]
fn event(
    kind: &str,
    id: &str,
    original: Option<&str>,
    payer: &str,
    merchant: Option<u64>,
    cents: u64,
    time_ms: i64,
    channel: &str,
) -> Vec<u8> {
    let original = original.map(|o| format!(r#""original_payment_id":"{o}","#)).unwrap_or_default();
    let payee = merchant.map(|m| format!(r#""merchant_id":"m{m}","terminal_id":"t{m}","#)).unwrap_or_default();
    format!(
        r#"{{"type":"{kind}","payment_id":"{id}",{original}"payer_account_id":"{payer}",{payee}"amount":"{}.{:02}","currency":"EUR","event_time":"{}","channel":"{channel}"}}"#,
        cents / 100,
        cents % 100,
        paystream_domain::time::format_rfc3339_ms(time_ms)
    )
    .into_bytes()
}

/// A valid event of the scenario that later ones may refer to.
#[derive(Clone)]
struct Made {
    id: String,
    payer: String,
    merchant: u64,
    cents: u64,
    channel: &'static str,
}

fn scenario(seed: u64) -> Scenario {
    let mut rng = Rng::new(seed);
    let count = 40 + rng.below(160) as usize;
    let mut records: Vec<(String, Vec<u8>)> = Vec::with_capacity(count);
    let mut clock_ms = START_MS;
    let mut paid: Vec<Made> = Vec::new();
    let mut authorized: Vec<Made> = Vec::new();
    for i in 0..count {
        clock_ms += rng.below(40 * 60_000) as i64;
        // Jitter within the allowed lateness (1 h): no settlement window closes early.
        let time_ms = clock_ms - rng.below(30 * 60_000) as i64;
        let payer = format!("c{}", rng.below(12));
        let roll = rng.below(100);
        let record = match roll {
            0..6 if !records.is_empty() => records[rng.below(records.len() as u64) as usize].clone(),
            6..10 if !records.is_empty() => {
                // An earlier id with other content: a conflict, or garbage if it was garbage.
                let (payer, earlier) = records[rng.below(records.len() as u64) as usize].clone();
                let id = serde_json::from_slice::<Value>(&earlier)
                    .ok()
                    .and_then(|v| v["payment_id"].as_str().map(str::to_string))
                    .unwrap_or_else(|| format!("p{i}"));
                (payer.clone(), payment(&id, &payer, rng.below(4), 1 + rng.below(90_000), time_ms))
            }
            10..13 => (payer, b"{\"payment_id\": \"broken".to_vec()),
            13 => (payer.clone(), payment(&format!("p{i}"), &payer, rng.below(4), 1 + rng.below(90_000), FUTURE_MS)),
            14 => {
                let mut value = payment(&format!("p{i}"), &payer, rng.below(4), 100, time_ms);
                let text = String::from_utf8(value).unwrap().replace("\"1.00\"", "\"one euro\"");
                value = text.into_bytes();
                (payer, value)
            }
            15..25 => {
                let id = format!("p{i}");
                let value = event("top_up", &id, None, &payer, None, 1 + rng.below(200_000), time_ms, "bank_transfer");
                (payer, value)
            }
            25..48 => {
                // Wallet payments (declined without funds) and authorizations.
                let (kind, channel) = match roll {
                    25..38 => ("payment", "wallet"),
                    38..44 => ("authorize", "wallet"),
                    _ => ("authorize", "card_present"),
                };
                let made =
                    Made { id: format!("p{i}"), payer, merchant: rng.below(4), cents: 1 + rng.below(60_000), channel };
                let value = event(kind, &made.id, None, &made.payer, Some(made.merchant), made.cents, time_ms, channel);
                let record = (made.payer.clone(), value);
                if kind == "authorize" {
                    authorized.push(made)
                } else {
                    paid.push(made)
                }
                record
            }
            48..60 if !authorized.is_empty() => {
                // A capture (sometimes more than authorized) or a void of an earlier authorization.
                let a = authorized[rng.below(authorized.len() as u64) as usize].clone();
                let (kind, cents) = match roll {
                    48..56 => ("capture", 1 + rng.below(a.cents + a.cents / 10)),
                    _ => ("void", a.cents),
                };
                let id = format!("p{i}");
                let value = event(kind, &id, Some(&a.id), &a.payer, Some(a.merchant), cents, time_ms, a.channel);
                if kind == "capture" {
                    // Refunds name the authorization: it is the payment they return.
                    paid.push(Made { cents, ..a.clone() });
                }
                (a.payer, value)
            }
            68..74 => {
                // A payment to another payer's account: credited on the payee's partition
                // through a transfer leg; in USD (card-funded) it comes back from a payee
                // whose wallet holds EUR.
                let payee = format!("c{}", rng.below(12));
                let usd = roll == 73;
                let channel = if usd || roll < 70 { "card_not_present" } else { "wallet" };
                let currency = if usd { "USD" } else { "EUR" };
                let cents = 1 + rng.below(30_000);
                let value = format!(
                    r#"{{"payment_id":"p{i}","payer_account_id":"{payer}","payee_account_id":"{payee}","amount":"{}.{:02}","currency":"{currency}","event_time":"{}","channel":"{channel}"}}"#,
                    cents / 100,
                    cents % 100,
                    paystream_domain::time::format_rfc3339_ms(time_ms)
                )
                .into_bytes();
                (payer, value)
            }
            60..68 if !paid.is_empty() => {
                // A refund or chargeback of (part of) an earlier payment or capture; some
                // return more than is left.
                let p = paid[rng.below(paid.len() as u64) as usize].clone();
                let kind = if roll < 66 { "refund" } else { "chargeback" };
                let cents = 1 + rng.below(p.cents);
                let original = p.id.clone();
                let value = event(
                    kind,
                    &format!("p{i}"),
                    Some(&original),
                    &p.payer,
                    Some(p.merchant),
                    cents,
                    time_ms,
                    p.channel,
                );
                (p.payer, value)
            }
            _ => {
                let made = Made {
                    id: format!("p{i}"),
                    payer,
                    merchant: rng.below(4),
                    cents: 1 + rng.below(90_000),
                    channel: "card_not_present",
                };
                let value = payment(&made.id, &made.payer, made.merchant, made.cents, time_ms);
                let record = (made.payer.clone(), value);
                paid.push(made);
                record
            }
        };
        records.push(record);
    }
    let crashes: Vec<i64> = (0..1 + rng.below(4)).map(|_| 1 + rng.below(5) as i64).collect();
    let snapshot_crashes = crashes
        .iter()
        .map(|_| {
            (rng.below(2) == 0).then(|| TornSave {
                saves: rng.below(4) as i64,
                installed: rng.below(2) == 0,
                cut_256ths: rng.below(256),
            })
        })
        .collect();
    Scenario {
        partitions: 1 + rng.below(4) as u32,
        batch_records_max: 1 + rng.below(40) as usize,
        snapshot_interval_batches: 1 + rng.below(6) as u32,
        published_first: rng.below(count as u64 + 1) as usize,
        records,
        crashes,
        snapshot_crashes,
        snapshot_feed_batches_max: [0, 1, 256][rng.below(3) as usize],
        sparse_offsets: rng.below(4) == 0,
    }
}

fn config(scenario: &Scenario) -> PipelineConfig {
    // Authorizations expire after 6 hours, so some do within a scenario.
    let operators = OperatorConfig { authorization_timeout_ms: 6 * HOUR_MS, ..OperatorConfig::default() };
    PipelineConfig {
        operators,
        partitions: scenario.partitions,
        workers: 1,
        batch_records_max: scenario.batch_records_max,
        snapshot_interval_batches: scenario.snapshot_interval_batches,
        snapshot_changelog_min_percent: 0,
        snapshot_feed_batches_max: scenario.snapshot_feed_batches_max,
        idle_wait_ms: 1,
        commit_each_batch_before_the_next: true,
        // Look for legs before every batch: no wall clock in what a batch reads.
        leg_poll_interval_ms: 0,
        ..PipelineConfig::default()
    }
}

fn publish(log: &EmbeddedLog, scenario: &Scenario, records: &[(String, Vec<u8>)], rng: &mut Rng) {
    let topics = ensure_topics(log, &config(scenario)).unwrap();
    for chunk in records.chunks(1 + rng.below(30) as usize) {
        let mut transaction = Transaction::new();
        for (payer, value) in chunk {
            transaction.send(&topics.payments, payer.as_bytes(), value, LOG_TIME_MS).unwrap();
        }
        log.commit(transaction).unwrap();
    }
}

fn values(log: &EmbeddedLog, topic: &str) -> Vec<(u32, u64, Vec<u8>)> {
    let topic = log.topic(topic).unwrap();
    let mut out = Vec::new();
    for partition in 0..topic.partitions {
        for record in log.fetch(&topic, partition, 0, usize::MAX).unwrap() {
            out.push((partition, record.offset, record.value.to_vec()));
        }
    }
    out
}

/// The invariants, from the topics alone; `complete`: all input must be processed.
fn check(seed: u64, log: &EmbeddedLog, complete: bool) -> Coverage {
    let fail = |what: String| -> ! { panic!("seed {seed}: {what} (replay: PAYSTREAM_SIM_SEED={seed})") };
    let payments = values(log, "payments");
    let decisions: Vec<Decision> =
        values(log, "decisions").iter().map(|(_, _, v)| serde_json::from_slice(v).unwrap()).collect();
    let letters: Vec<Value> =
        values(log, "dead-letters").iter().map(|(_, _, v)| serde_json::from_slice(v).unwrap()).collect();
    let ledger: Vec<LedgerTransaction> =
        values(log, "ledger").iter().map(|(_, _, v)| serde_json::from_slice(v).unwrap()).collect();
    let settlements: Vec<Settlement> =
        values(log, "settlements").iter().map(|(_, _, v)| serde_json::from_slice(v).unwrap()).collect();
    let legs: Vec<TransferLeg> =
        values(log, "paystream-transfers").iter().map(|(_, _, v)| serde_json::from_slice(v).unwrap()).collect();

    let mut decided: HashMap<&str, &Decision> = HashMap::new();
    for decision in &decisions {
        if decided.insert(&decision.payment_id, decision).is_some() {
            fail(format!("payment {} decided twice", decision.payment_id));
        }
        // Jitter stays within the allowed lateness, so only a partition's event time
        // moved by a rejected payment (one from the future) could make a payment late.
        if decision.reasons.iter().any(|r| r == paystream_operators::LATE_PAYMENT_REASON) {
            fail(format!("payment {} decided late: a rejected event moved the watermark", decision.payment_id));
        }
    }
    let mut lettered: HashSet<(u64, u64)> = HashSet::new();
    for letter in &letters {
        let key = (letter["source_partition"].as_u64().unwrap(), letter["source_offset"].as_u64().unwrap());
        if !lettered.insert(key) {
            fail(format!("input {key:?} dead-lettered twice"));
        }
    }
    // Each partition's processed inputs are a prefix; in it, every input is a decision
    // (the first valid occurrence of its id) or a dead letter; retries of decided ids
    // leave no trace, so they neither extend nor break the prefix.
    let mut first: HashSet<String> = HashSet::new();
    let mut gap: HashMap<u32, u64> = HashMap::new();
    for (partition, offset, value) in &payments {
        let id = serde_json::from_slice::<Value>(value).ok().and_then(|v| v["payment_id"].as_str().map(String::from));
        let processed = if lettered.contains(&(u64::from(*partition), *offset)) {
            true
        } else {
            match id {
                Some(id) if decided.contains_key(id.as_str()) => {
                    if !first.insert(id) {
                        continue; // a retry
                    }
                    true
                }
                _ => false,
            }
        };
        match (processed, gap.get(partition)) {
            (true, Some(unprocessed)) => {
                fail(format!("partition {partition}: input {offset} processed, but {unprocessed} before it was not"))
            }
            (false, None) if complete => fail(format!("partition {partition}: input {offset} never processed")),
            (false, None) => {
                gap.insert(*partition, *offset);
            }
            _ => {}
        }
    }
    if first.len() != decided.len() {
        fail("a decision has no input".into());
    }

    let partitions = log.topic("payments").unwrap().partitions;
    let approved: HashSet<&str> =
        decisions.iter().filter(|d| d.outcome == Outcome::Approve).map(|d| d.payment_id.as_str()).collect();
    let mut posted: HashSet<&str> = HashSet::new();
    let mut applied_legs: HashSet<&str> = HashSet::new();
    let mut wallets: HashMap<&str, i64> = HashMap::new();
    let mut captured: HashMap<&str, i64> = HashMap::new();
    let mut returned: HashMap<&str, i64> = HashMap::new();
    // (merchant, partition, window start) → (gross, fees, refunds + chargebacks, net) from the postings.
    let mut by_window: HashMap<WindowKey, WindowSums> = HashMap::new();
    // The payer partitions whose payments each merchant window holds.
    let mut sources: HashMap<WindowKey, HashSet<u32>> = HashMap::new();
    // In topic order: per partition, the order of commits.
    for transaction in &ledger {
        let sum: i128 = transaction.postings.iter().map(|p| i128::from(p.signed_minor_units())).sum();
        if sum != 0 {
            fail(format!("ledger transaction {} does not balance", transaction.transaction_id));
        }
        for posting in &transaction.postings {
            if posting.account_id.starts_with("wallet:") {
                let balance = wallets.entry(&posting.account_id).or_default();
                *balance -= posting.signed_minor_units();
                if *balance < 0 {
                    fail(format!(
                        "{} went below zero ({balance}) at {}",
                        posting.account_id, transaction.transaction_id
                    ));
                }
            }
        }
        if matches!(transaction.kind, TransactionKind::Settlement | TransactionKind::Payout) {
            continue; // checked by reconcile below
        }
        if matches!(transaction.kind, TransactionKind::TransferIn | TransactionKind::TransferReturn) {
            if !applied_legs.insert(transaction.transaction_id.as_str()) {
                fail(format!("transfer leg {} applied twice", transaction.transaction_id));
            }
            continue; // checked against the legs below
        }
        if !posted.insert(&transaction.payment_id) || !approved.contains(transaction.payment_id.as_str()) {
            fail(format!("event {} posted twice or without approval", transaction.payment_id));
        }
        let amount = transaction.postings[0].amount_minor;
        match transaction.kind {
            TransactionKind::Payment => *captured.entry(&transaction.payment_id).or_default() += amount,
            TransactionKind::Capture => {
                let authorization = transaction.original_payment_id.as_deref().unwrap();
                let total = captured.entry(authorization).or_default();
                *total += amount;
                let authorized = decided[authorization].amount.replace('.', "").parse::<i64>().unwrap();
                if *total > authorized {
                    fail(format!("authorization {authorization} captured {total} of {authorized}"));
                }
            }
            TransactionKind::Refund | TransactionKind::Chargeback => {
                let original = transaction.original_payment_id.as_deref().unwrap();
                // A capture's returns count against its authorization.
                let original = decided[original].original_payment_id.as_deref().unwrap_or(original);
                let total = returned.entry(original).or_default();
                *total += amount;
                if *total > captured.get(original).copied().unwrap_or(0) {
                    fail(format!("payment {original} returned {total}, more than captured"));
                }
            }
            _ => {}
        }
        let Some(decision) = decided.get(transaction.payment_id.as_str()) else { continue };
        let Some(merchant) = &decision.merchant_id else { continue };
        let partition = partition_for_key(decision.payer_account_id.as_bytes(), partitions);
        let time_ms = paystream_domain::time::parse_rfc3339_ms(&transaction.event_time).unwrap();
        let window = time_ms.div_euclid(24 * HOUR_MS) * 24 * HOUR_MS;
        let entry = by_window.entry((merchant.clone(), window)).or_default();
        sources.entry((merchant.clone(), window)).or_default().insert(partition);
        let merchant_account = format!("merchant:{merchant}");
        let to_merchant: i128 = transaction
            .postings
            .iter()
            .filter(|p| p.account_id == merchant_account)
            .map(|p| -i128::from(p.signed_minor_units()))
            .sum();
        if matches!(transaction.kind, TransactionKind::Payment | TransactionKind::Capture) {
            entry.0 += i128::from(amount);
            entry.1 += i128::from(amount) - to_merchant;
        } else {
            entry.2 -= to_merchant;
        }
        entry.3 += to_merchant;
    }
    // Transfers between partitions: the clearing account holds exactly the legs written
    // and not yet applied (a credit leg is settled by its transfer_in, or by the return
    // leg its refusal wrote; a return leg by its transfer_return) — in every committed
    // state, and nothing once the run is complete.
    let returned: HashSet<&str> =
        legs.iter().filter(|l| l.kind == LegKind::Return).map(|l| l.payment_id.as_str()).collect();
    let mut in_flight: i128 = 0;
    for leg in &legs {
        let settled = match leg.kind {
            LegKind::Credit => {
                applied_legs.contains(format!("transfer_in:{}", leg.payment_id).as_str())
                    || returned.contains(leg.payment_id.as_str())
            }
            LegKind::Return => applied_legs.contains(format!("transfer_return:{}", leg.payment_id).as_str()),
        };
        if !settled {
            in_flight += i128::from(leg.amount_minor);
        }
    }
    let clearing: i128 = ledger
        .iter()
        .flat_map(|t| &t.postings)
        .filter(|p| p.account_id == "clearing:transfers")
        .map(|p| -i128::from(p.signed_minor_units()))
        .sum();
    if clearing != in_flight {
        fail(format!("clearing:transfers holds {clearing}, the legs in flight {in_flight}"));
    }
    if complete && in_flight != 0 {
        fail(format!("{in_flight} still in flight after the run"));
    }
    for decision in &decisions {
        let moves_money = !matches!(decision.kind, PaymentKind::Authorize | PaymentKind::Void);
        let approved = decision.outcome == Outcome::Approve;
        if (approved && moves_money) != posted.contains(decision.payment_id.as_str()) {
            fail(format!(
                "{:?} {} ({:?}) has no ledger transaction, or one it should not",
                decision.kind, decision.payment_id, decision.outcome
            ));
        }
    }
    let mut windows = HashSet::new();
    for settlement in &settlements {
        let start = paystream_domain::time::parse_rfc3339_ms(&settlement.window_start).unwrap();
        let key = (settlement.merchant_id.clone(), start);
        if !windows.insert(key.clone()) {
            fail(format!("settlement window {key:?} emitted twice"));
        }
        if settlement.source_partition != partition_for_key(settlement.merchant_id.as_bytes(), partitions) {
            fail(format!("settlement {key:?} closed on partition {}, not its merchant's", settlement.source_partition));
        }
        if settlement.late_payment_count != 0 {
            fail("a payment was late for settlement, which this simulation never sends".into());
        }
        let sums = by_window.get(&key).copied().unwrap_or_default();
        let stated = (
            settlement.gross_minor,
            settlement.fees_minor,
            settlement.refunds_minor + settlement.chargebacks_minor,
            settlement.net_minor,
        );
        if stated != sums {
            fail(format!("settlement {key:?} is not the sum of its postings: {settlement:?} vs {sums:?}"));
        }
    }
    let reconciliation = paystream_operators::settlement::reconcile(&ledger, &settlements);
    if !reconciliation.mismatches.is_empty() {
        fail(format!("reconcile: {:?}", reconciliation.mismatches));
    }
    Coverage {
        crashes: 0,
        torn_snapshots: 0,
        decisions: decisions.len(),
        dead_letters: letters.len(),
        future_events: letters.iter().filter(|l| l["reason"] == "event_time_in_future").count(),
        retries: payments.len() - decisions.len() - letters.len(),
        settlements: settlements.len(),
        cross_partition_settlements: settlements
            .iter()
            .filter(|s| {
                let start = paystream_domain::time::parse_rfc3339_ms(&s.window_start).unwrap();
                sources.get(&(s.merchant_id.clone(), start)).is_some_and(|payers| payers.len() > 1)
            })
            .count(),
        ledger_declines: decisions
            .iter()
            .filter(|d| {
                d.reasons.first().is_some_and(|r| paystream_operators::ledger::DeclineReason::from_code(r).is_some())
            })
            .count(),
        returns: ledger
            .iter()
            .filter(|t| matches!(t.kind, TransactionKind::Refund | TransactionKind::Chargeback))
            .count(),
        captures: ledger.iter().filter(|t| t.kind == TransactionKind::Capture).count(),
        transfers_in: ledger.iter().filter(|t| t.kind == TransactionKind::TransferIn).count(),
        transfers_returned: ledger.iter().filter(|t| t.kind == TransactionKind::TransferReturn).count(),
        payouts: ledger.iter().filter(|t| t.kind == TransactionKind::Payout).count(),
    }
}

/// (merchant, window start): one settlement, whichever partitions its payments came from.
type WindowKey = (String, i64);
/// (gross, fees, refunds + chargebacks, net).
type WindowSums = (i128, i128, i128, i128);

/// What the seeds exercised, so the simulation cannot pass by doing nothing.
#[derive(Debug, Default)]
struct Coverage {
    crashes: usize,
    /// Crashes while a snapshot was written (it was left torn or half-written).
    torn_snapshots: usize,
    decisions: usize,
    dead_letters: usize,
    /// Payments dead-lettered because their event time was ahead of the log's.
    future_events: usize,
    retries: usize,
    settlements: usize,
    /// Settlements holding payments of more than one payer partition.
    cross_partition_settlements: usize,
    ledger_declines: usize,
    returns: usize,
    captures: usize,
    payouts: usize,
    transfers_in: usize,
    transfers_returned: usize,
}

/// A snapshot store that dies during one save: it leaves that snapshot torn or
/// half-written, and from then on every commit fails (the process is dead).
struct SnapshotFault {
    inner: FileSnapshotStore,
    dir: std::path::PathBuf,
    torn: TornSave,
    saves_left: AtomicI64,
    log: Arc<CommitFault<Arc<EmbeddedLog>>>,
}

impl SnapshotStore for SnapshotFault {
    fn save(&self, name: &str, snapshot: &Snapshot) -> Result<u64, StorageError> {
        if self.saves_left.fetch_sub(1, Ordering::SeqCst) != 0 {
            return self.inner.save(name, snapshot);
        }
        self.log.fail_now();
        let cut = |len: usize| len * self.torn.cut_256ths as usize / 256;
        if self.torn.installed {
            self.inner.save(name, snapshot)?;
            let (_, newest) = self.inner.generations(name)?.remove(0);
            let bytes = std::fs::read(&newest).unwrap();
            std::fs::write(&newest, &bytes[..cut(bytes.len())]).unwrap();
        } else {
            let generation = self.inner.generations(name)?.first().map_or(1, |(g, _)| g + 1);
            let tmp = self.dir.join(format!("{name}.{generation:020}.snapshot.tmp"));
            let state = &snapshot.state;
            std::fs::write(tmp, &state[..cut(state.len())]).unwrap();
        }
        Err(StorageError::Io {
            context: "injected fault: the process died while writing a snapshot".into(),
            source: std::io::Error::other("torn"),
        })
    }

    fn load(&self, name: &str) -> Result<Option<Snapshot>, StorageError> {
        self.inner.load(name)
    }
}

/// How a run ended.
#[derive(PartialEq)]
enum Ended {
    Finished,
    CrashedCommitting,
    CrashedSnapshotting,
}

/// Runs the pipeline through to the end or the injected crash.
fn run(
    seed: u64,
    dir: &Path,
    log: &Arc<EmbeddedLog>,
    scenario: &Scenario,
    crash: Option<(i64, Option<TornSave>)>,
) -> Ended {
    let snapshot_dir = dir.join("snapshots");
    let store = FileSnapshotStore::open(&snapshot_dir).unwrap();
    let (log, snapshots): (Arc<dyn Log>, Arc<dyn SnapshotStore>) = match crash {
        Some((commits, torn)) => {
            let mut log = CommitFault::after(log.clone(), commits);
            if scenario.sparse_offsets {
                log = log.with_sparse_offsets();
            }
            let log = Arc::new(log);
            let snapshots: Arc<dyn SnapshotStore> = match torn {
                Some(torn) => Arc::new(SnapshotFault {
                    inner: store,
                    dir: snapshot_dir,
                    torn,
                    saves_left: AtomicI64::new(torn.saves),
                    log: log.clone(),
                }),
                None => Arc::new(store),
            };
            (log, snapshots)
        }
        None => (log.clone(), Arc::new(store)),
    };
    let commits = crash.map(|(commits, _)| commits);
    let pipeline = Pipeline::new(log, snapshots, default_model(&OperatorConfig::default()), config(scenario));
    match (pipeline.run(RunMode::UntilIdle, &RunControl::new(true)), commits) {
        (Ok(_), _) => Ended::Finished,
        (Err(error), Some(_)) if error.to_string().contains("injected fault") => {
            if error.to_string().contains("writing a snapshot") {
                Ended::CrashedSnapshotting
            } else {
                Ended::CrashedCommitting
            }
        }
        (Err(error), _) => panic!("seed {seed}: the run failed: {error} (replay: PAYSTREAM_SIM_SEED={seed})"),
    }
}

fn simulate(seed: u64) -> Coverage {
    let scenario = scenario(seed);
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let config =
            EmbeddedLogConfig { fsync: false, compression: false, ..EmbeddedLogConfig::new(dir.path().join("log")) };
        Arc::new(EmbeddedLog::open(config).unwrap())
    };
    let mut rng = Rng::new(seed ^ 0xA5A5);
    let log = open();
    publish(&log, &scenario, &scenario.records[..scenario.published_first], &mut rng);
    let (mut crashes, mut torn_snapshots) = (0, 0);
    for (&commits, &torn) in scenario.crashes.iter().zip(&scenario.snapshot_crashes) {
        let ended = run(seed, dir.path(), &log, &scenario, Some((commits, torn)));
        crashes += usize::from(ended != Ended::Finished);
        torn_snapshots += usize::from(ended == Ended::CrashedSnapshotting);
        check(seed, &log, false);
    }
    publish(&log, &scenario, &scenario.records[scenario.published_first..], &mut rng);
    // A restart reopens the log as a new process would.
    drop(log);
    let log = open();
    run(seed, dir.path(), &log, &scenario, None);
    Coverage { crashes, torn_snapshots, ..check(seed, &log, true) }
}

#[test]
fn crashes_at_random_commits_keep_every_invariant() {
    if let Some(seed) = std::env::var("PAYSTREAM_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        eprintln!("seed {seed}: {:?}", simulate(seed));
        return;
    }
    let seeds: u64 = std::env::var("PAYSTREAM_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000);
    let mut total = Coverage::default();
    for seed in 0..seeds {
        let coverage = simulate(seed);
        total.crashes += coverage.crashes;
        total.torn_snapshots += coverage.torn_snapshots;
        total.decisions += coverage.decisions;
        total.future_events += coverage.future_events;
        total.dead_letters += coverage.dead_letters;
        total.retries += coverage.retries;
        total.settlements += coverage.settlements;
        total.cross_partition_settlements += coverage.cross_partition_settlements;
        total.ledger_declines += coverage.ledger_declines;
        total.returns += coverage.returns;
        total.captures += coverage.captures;
        total.payouts += coverage.payouts;
        total.transfers_in += coverage.transfers_in;
        total.transfers_returned += coverage.transfers_returned;
    }
    eprintln!("{seeds} seeds: {total:?}");
    // Most seeds crash at least once; every kind of input and closed windows occur.
    assert!(total.crashes as u64 >= seeds / 2, "{total:?}");
    assert!(total.torn_snapshots as u64 >= seeds / 10, "{total:?}");
    assert!(total.dead_letters > 0 && total.retries > 0 && total.settlements > 0, "{total:?}");
    assert!(total.future_events > 0, "{total:?}");
    assert!(total.cross_partition_settlements > 0, "{total:?}");
    assert!(total.ledger_declines > 0 && total.returns > 0 && total.captures > 0 && total.payouts > 0, "{total:?}");
    assert!(total.transfers_in > 0 && total.transfers_returned > 0, "{total:?}");
}
