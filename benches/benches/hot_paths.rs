//! Criterion benchmarks of the pipeline's hot paths, per payment:
//! `cargo bench -p paystream-benches`.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use paystream_benches::payment_records;
use paystream_domain::Payment;
use paystream_operators::{InputRecord, OperatorConfig, OutputBatch, PartitionProcessor, default_model};
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
            processor.process_batch("payments", &inputs, &mut out);
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

criterion_group!(benches, validate, operator_chain, embedded_log);
criterion_main!(benches);
