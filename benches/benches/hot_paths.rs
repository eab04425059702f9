//! Criterion benchmarks of the pipeline's hot paths, per payment:
//! `cargo bench -p paystream-benches`.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use paystream_benches::payment_records;
use paystream_domain::Payment;
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
    let config = Arc::new(OperatorConfig::default());
    let mut group = c.benchmark_group("operators");
    group.throughput(Throughput::Elements(BATCH as u64));
    // Steady state: a processor that has seen the earlier batches, fed the next one.
    let mut processor = PartitionProcessor::new(config.clone(), default_model(&config), 0);
    let mut out = OutputBatch::default();
    let mut chunks = records.chunks(BATCH).cycle().enumerate();
    group.bench_function("process_batch_2048", |b| {
        b.iter(|| {
            let (n, chunk) = chunks.next().expect("cycle never ends");
            if n % 200 == 0 {
                // Start over so payment ids are new, not retries (1 batch in 200).
                processor = PartitionProcessor::new(config.clone(), default_model(&config), 0);
            }
            let inputs: Vec<InputRecord<'_>> =
                chunk.iter().enumerate().map(|(i, r)| InputRecord { offset: i as u64, key: b"", value: r }).collect();
            out.clear();
            processor.process_batch("payments", &inputs, TerminalView::NONE, &mut out);
            out.decisions.len()
        })
    });
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

/// Feature updates and model scoring on the reference workload, per payment.
fn fraud_features_and_models(c: &mut Criterion) {
    use paystream_models::TrainedModel;
    use paystream_operators::reference_features::{FEATURE_COUNT, ReferenceFeatures};

    let config = paystream_simulator::SimulatorConfig { days: 60, seed: 7, ..Default::default() };
    let transactions = paystream_simulator::simulate(&config);
    let ids: Vec<(String, String, String)> = transactions
        .iter()
        .map(|t| (t.transaction_id.to_string(), t.customer_id.to_string(), t.terminal_id.to_string()))
        .collect();
    // Warm state: features of the first 30 days, then benchmark on later payments.
    let mut state = ReferenceFeatures::new(7 * 86_400_000);
    let split = transactions.iter().position(|t| t.day() >= 30).expect("60 days of data");
    let mut rows = Vec::with_capacity(transactions.len());
    for (t, (id, customer, terminal)) in transactions.iter().zip(&ids) {
        let f = state.observe_payment(id, customer, terminal, t.event_time_ms(&config), t.amount_cents);
        rows.push(f.to_vec());
    }
    let labels: Vec<bool> = transactions.iter().map(|t| t.is_fraud).collect();
    let names: Vec<String> = (0..FEATURE_COUNT).map(|i| format!("f{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let logistic = TrainedModel::train("logistic", &names, &rows[..split], &labels[..split], "bench").expect("train");
    let boosted = TrainedModel::train("gbt", &names, &rows[..split], &labels[..split], "bench").expect("train");
    let batch: Vec<Vec<f64>> = rows[split..split + BATCH].to_vec();

    let mut group = c.benchmark_group("fraud");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut replay = ReferenceFeatures::new(7 * 86_400_000);
    let mut next = 0usize;
    group.bench_function("feature_update_2048", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            for _ in 0..BATCH {
                let (t, (id, customer, terminal)) = (&transactions[next], &ids[next]);
                sum += replay.observe_payment(id, customer, terminal, t.event_time_ms(&config), t.amount_cents)[0];
                next += 1;
                if next == transactions.len() {
                    next = 0;
                    replay = ReferenceFeatures::new(7 * 86_400_000);
                }
            }
            sum
        })
    });
    group.bench_function("logistic_score_2048", |b| b.iter(|| logistic.score_batch(&batch).expect("score").len()));
    group.bench_function("gbt_score_2048", |b| b.iter(|| boosted.score_batch(&batch).expect("score").len()));
    group.finish();
}

criterion_group!(benches, validate, operator_chain, embedded_log, fraud_features_and_models);
criterion_main!(benches);
