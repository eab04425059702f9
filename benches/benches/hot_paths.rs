//! Criterion benchmarks of the pipeline's hot paths, per payment:
//! `cargo bench -p paystream-benches`.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use paystream_benches::payment_records;
use paystream_domain::Payment;
use paystream_domain::time::MILLIS_PER_DAY;
use paystream_operators::{InputRecord, OperatorConfig, OutputBatch, PartitionProcessor, TerminalView, default_model};
use paystream_pipeline::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use paystream_pipeline::log::{Log, Transaction};

/// The allocator the `paystream` binary uses, so figures match the pipeline's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 2_048;

fn validate(c: &mut Criterion) {
    let records = payment_records(BATCH);
    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("payment_from_json", |b| {
        b.iter(|| records.iter().filter(|r| Payment::from_json(r).is_ok()).count())
    });
    group.finish();
}

fn operator_chain(c: &mut Criterion) {
    let records = payment_records(200 * BATCH);
    let mut group = c.benchmark_group("operators");
    group.throughput(Throughput::Elements(BATCH as u64));
    // With every payment sent to review nothing reaches the ledger or settlement: the
    // difference between the two is what those operators cost (3 postings per payment).
    let all_review = OperatorConfig { review_score_min: 0.0, decline_score_min: 1.0, ..OperatorConfig::default() };
    for (name, config) in
        [("process_batch_2048", OperatorConfig::default()), ("process_batch_2048_no_ledger", all_review)]
    {
        let config = Arc::new(config);
        // Steady state: a processor that has seen the earlier batches, fed the next one.
        let mut processor = PartitionProcessor::new(config.clone(), default_model(&config), 0);
        let mut out = OutputBatch::default();
        let mut chunks = records.chunks(BATCH).cycle().enumerate();
        group.bench_function(name, |b| {
            b.iter(|| {
                let (n, chunk) = chunks.next().expect("cycle never ends");
                if n % 200 == 0 {
                    // Start over so payment ids are new, not retries (1 batch in 200).
                    processor = PartitionProcessor::new(config.clone(), default_model(&config), 0);
                }
                let inputs: Vec<InputRecord<'_>> = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, r)| InputRecord { offset: i as u64, key: b"", value: r, timestamp_ms: 0 })
                    .collect();
                out.clear();
                processor.process_batch("payments", &inputs, TerminalView::NONE, &mut out);
                out.decisions.len()
            })
        });
    }
    group.finish();
}

fn embedded_log(c: &mut Criterion) {
    let records = payment_records(BATCH);
    let dir = tempfile::tempdir().expect("temp dir");
    let log =
        EmbeddedLog::open(EmbeddedLogConfig { fsync: false, ..EmbeddedLogConfig::new(dir.path()) }).expect("open log");
    let topic = log.create_topic("payments", 4).expect("topic");
    let mut group = c.benchmark_group("embedded_log");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("commit_2048_records_compressed_no_fsync", |b| {
        b.iter(|| {
            let mut transaction = Transaction::new();
            for (i, record) in records.iter().enumerate() {
                transaction.send(&topic, &(i as u64).to_le_bytes(), record, 0).expect("send");
            }
            log.commit(transaction).expect("commit");
        })
    });
    group.bench_function("fetch_2048_records", |b| {
        let end = log.offsets(&topic, 0).expect("offsets").end;
        assert!(end >= BATCH as u64, "the commit benchmark fills partition 0 first");
        b.iter(|| {
            let fetched = log.fetch(&topic, 0, end - BATCH as u64, BATCH).expect("fetch").len();
            assert_eq!(fetched, BATCH);
            fetched
        })
    });
    group.finish();
}

/// After the last payment the data repeats this much later (ids and windows stay
/// consistent).
const PERIOD_MS: i64 = 60 * MILLIS_PER_DAY;
/// As in backtests: idle keys and old terminal payments expire every so many payments.
const EXPIRY_EVENTS: usize = 65_536;

/// Feature updates in event-time order, batch by batch, replaying the simulated data.
struct Replay<'a> {
    state: paystream_operators::features::ReferenceFeatures,
    next: usize,
    shift_ms: i64,
    transactions: &'a [paystream_simulator::Transaction],
    ids: &'a [(String, String, String)],
    config: &'a paystream_simulator::SimulatorConfig,
    /// Keys of this batch's payments and of the next few (hinted ahead).
    keys: Vec<paystream_operators::features::PaymentKeys>,
}
impl Replay<'_> {
    fn batch(&mut self, rows: &mut Vec<paystream_models::features::FeatureRow>) {
        rows.clear();
        self.keys.clear();
        for k in 0..BATCH + paystream_operators::features::PREFETCH_SLOTS_DISTANCE_PAYMENTS {
            let (id, customer, terminal) = &self.ids[(self.next + k) % self.ids.len()];
            self.keys.push(paystream_operators::features::PaymentKeys::new(id, customer, terminal));
        }
        for i in 0..BATCH {
            self.state.prefetch_ahead(&self.keys, i);
            let keys = self.keys[i];
            let t = &self.transactions[self.next];
            let time = t.event_time_ms(self.config) + self.shift_ms;
            rows.push(self.state.observe(keys, time, t.amount_cents));
            self.next += 1;
            if self.next.is_multiple_of(EXPIRY_EVENTS) {
                self.state.expire_idle(time);
            }
            if self.next == self.transactions.len() {
                self.next = 0;
                self.shift_ms += PERIOD_MS;
            }
        }
    }
}

/// Feature updates and model scoring on the reference workload, per payment.
fn fraud_features_and_models(c: &mut Criterion) {
    use paystream_models::features::{FEATURE_NAMES, FeatureRow};
    use paystream_models::{FraudModel, LoadedModel, TrainedModel};
    use paystream_operators::features::ReferenceFeatures;

    const DELAY_MS: i64 = 7 * MILLIS_PER_DAY;
    let config = paystream_simulator::SimulatorConfig { days: 60, seed: 7, ..Default::default() };
    let transactions = paystream_simulator::simulate(&config);
    let ids: Vec<(String, String, String)> = transactions
        .iter()
        .map(|t| (t.transaction_id.to_string(), t.customer_id.to_string(), t.terminal_id.to_string()))
        .collect();
    let mut state = ReferenceFeatures::new(DELAY_MS);
    let split = transactions.iter().position(|t| t.day() >= 30).expect("60 days of data");
    let mut rows: Vec<FeatureRow> = Vec::with_capacity(transactions.len());
    for (t, (id, customer, terminal)) in transactions.iter().zip(&ids) {
        rows.push(state.observe_payment(id, customer, terminal, t.event_time_ms(&config), t.amount_cents));
    }
    let labels: Vec<bool> = transactions.iter().map(|t| t.is_fraud).collect();
    let training: Vec<Vec<f64>> = rows[..split].iter().map(|r| r.to_vec()).collect();
    let load = |kind: &str| {
        let model = TrainedModel::train(kind, &FEATURE_NAMES, &training, &labels[..split], "bench").expect("train");
        LoadedModel::new(model).expect("our own features")
    };
    let (logistic, boosted) = (load("logistic"), load("gbt"));
    let batch: Vec<FeatureRow> = rows[split..split + BATCH].to_vec();

    // Warm on the first 30 days.
    let mut replay = Replay {
        state,
        next: 0,
        shift_ms: 0,
        transactions: &transactions,
        ids: &ids,
        config: &config,
        keys: Vec::new(),
    };
    replay.state = ReferenceFeatures::new(DELAY_MS);
    let mut warm = Vec::new();
    while replay.next < split {
        replay.batch(&mut warm);
    }

    let mut group = c.benchmark_group("fraud");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut features = Vec::with_capacity(BATCH);
    let mut scores = Vec::with_capacity(BATCH);
    group.bench_function("feature_update_2048", |b| {
        b.iter(|| {
            replay.batch(&mut features);
            features.len()
        })
    });
    for (name, model) in [("features_and_logistic_2048", &logistic), ("features_and_gbt_2048", &boosted)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                replay.batch(&mut features);
                scores.clear();
                model.score_batch(&features, &mut scores);
                scores.len()
            })
        });
    }
    for (name, model) in [("logistic_score_2048", &logistic), ("gbt_score_2048", &boosted)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                scores.clear();
                model.score_batch(&batch, &mut scores);
                scores.len()
            })
        });
    }
    group.finish();
}

/// The accounts' transfers (two postings each), with idempotency records and limit checks:
/// wallet → merchant payments between funded accounts, and hold + capture pairs.
fn ledger_accounts(c: &mut Criterion) {
    use paystream_domain::Currency;
    use paystream_operators::ledger::accounts::{Account, AccountKind, Accounts, Transfer, TransferKind};
    const TRANSFERS: usize = 20_000;
    let setup = || {
        let mut accounts = Accounts::new(7 * MILLIS_PER_DAY);
        accounts.open(Account::new("bank", Currency::EUR, AccountKind::External, "bank"));
        for w in 0..1_000 {
            let wallet = format!("wallet:{w}");
            accounts.open(Account::new(&wallet, Currency::EUR, AccountKind::CustomerWallet, &wallet));
            let funding = Transfer {
                id: format!("fund-{w}"),
                kind: TransferKind::Single { debit: "bank".into(), credit: wallet },
                amount_minor: 1_000_000,
                currency: Currency::EUR,
                time_ms: 0,
            };
            accounts.apply(&funding).expect("funding");
        }
        for m in 0..100 {
            let merchant = format!("merchant:{m}");
            accounts.open(Account::new(&merchant, Currency::EUR, AccountKind::Merchant, &merchant));
        }
        let transfers: Vec<Transfer> = (0..TRANSFERS)
            .map(|i| Transfer {
                id: format!("pay-{i}"),
                kind: TransferKind::Single {
                    debit: format!("wallet:{}", i % 1_000),
                    credit: format!("merchant:{}", i % 100),
                },
                amount_minor: 1 + (i % 500) as i64,
                currency: Currency::EUR,
                time_ms: i as i64,
            })
            .collect();
        (accounts, transfers)
    };
    let mut group = c.benchmark_group("ledger");
    group.throughput(Throughput::Elements(2 * TRANSFERS as u64));
    group.bench_function("postings_single_transfers", |b| {
        b.iter_batched(
            setup,
            |(mut accounts, transfers)| transfers.iter().filter(|t| accounts.apply(t).is_ok()).count(),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// The operator chain on wallet activity only (top-ups, then wallet payments to
/// merchants): every event goes through the ledger operator — limits checked through the
/// partition's accounts, records kept for refunds, postings written, settlement counted.
/// Throughput in postings; parsing, deduplication, features and scoring are included,
/// so the ledger operator alone is faster than this.
fn ledger_operator(c: &mut Criterion) {
    const BATCHES: usize = 20;
    let records = paystream_benches::wallet_records(BATCHES * BATCH);
    let config = Arc::new(OperatorConfig::default());
    let run = |processor: &mut PartitionProcessor, out: &mut OutputBatch| {
        let mut postings = 0;
        for chunk in records.chunks(BATCH) {
            let inputs: Vec<InputRecord<'_>> = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| InputRecord { offset: i as u64, key: b"", value: r, timestamp_ms: 0 })
                .collect();
            out.clear();
            processor.process_batch("payments", &inputs, TerminalView::NONE, out);
            postings += out.ledger.iter().map(|t| t.postings.len()).sum::<usize>();
        }
        postings
    };
    let mut out = OutputBatch::default();
    let postings = run(&mut PartitionProcessor::new(config.clone(), default_model(&config), 0), &mut out);
    let mut group = c.benchmark_group("ledger");
    group.throughput(Throughput::Elements(postings as u64));
    group.sample_size(20);
    group.bench_function("operator_chain_wallet_postings", |b| {
        b.iter_batched(
            || PartitionProcessor::new(config.clone(), default_model(&config), 0),
            |mut processor| run(&mut processor, &mut out),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// The merchant side of settlement: the entries the payer side wrote for wallet payments
/// (records as they travel through `paystream-settlement-entries`), decoded and added to
/// their merchants' windows. Throughput in entries.
fn settlement_entries(c: &mut Criterion) {
    const BATCHES: usize = 20;
    let records = paystream_benches::wallet_records(BATCHES * BATCH);
    let config = Arc::new(OperatorConfig::default());
    let mut payer = PartitionProcessor::new(config.clone(), default_model(&config), 0);
    let mut entries: Vec<Vec<u8>> = Vec::new();
    let mut out = OutputBatch::default();
    for chunk in records.chunks(BATCH) {
        let inputs: Vec<InputRecord<'_>> = chunk
            .iter()
            .enumerate()
            .map(|(i, r)| InputRecord { offset: i as u64, key: b"", value: r, timestamp_ms: 0 })
            .collect();
        out.clear();
        payer.process_batch("payments", &inputs, TerminalView::NONE, &mut out);
        let records = paystream_operators::settlement::encode_inputs(&out.settlement_inputs);
        entries.extend(records.into_iter().map(|(_, record)| record));
    }
    let inputs: Vec<InputRecord<'_>> = entries
        .iter()
        .enumerate()
        .map(|(i, r)| InputRecord { offset: i as u64, key: b"", value: r, timestamp_ms: 0 })
        .collect();
    let count: usize = entries.iter().map(|r| paystream_operators::settlement::decode_inputs(r).unwrap().len()).sum();
    let mut group = c.benchmark_group("settlement");
    group.throughput(Throughput::Elements(count as u64));
    group.sample_size(20);
    group.bench_function("merchant_side_entries", |b| {
        b.iter_batched(
            || PartitionProcessor::new(config.clone(), default_model(&config), 0),
            |mut processor| {
                out.clear();
                processor.process_settlement_inputs("paystream-settlement-entries", &inputs, &mut out);
                processor.state().settlement().open_window_count()
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    validate,
    operator_chain,
    embedded_log,
    fraud_features_and_models,
    ledger_accounts,
    ledger_operator,
    settlement_entries
);
criterion_main!(benches);
