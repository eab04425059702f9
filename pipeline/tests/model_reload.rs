//! A running pipeline swaps to a new model file without a restart, refuses a broken one
//! without stopping, stamps every decision with the version that scored it, and
//! dead-letters malformed labels exactly once across restarts.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use paystream_models::TrainedModel;
use paystream_models::features::FEATURE_NAMES;
use paystream_pipeline::ensure_topics;
use paystream_pipeline::load_model_file;
use paystream_pipeline::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use paystream_pipeline::log::{Log, Transaction};
use paystream_pipeline::metrics::Metrics;
use paystream_pipeline::{Pipeline, PipelineConfig, RunControl, RunMode};
use paystream_storage::FileSnapshotStore;
use serde_json::Value;

const DAY_MS: i64 = 86_400_000;
const START_MS: i64 = 1_522_540_800_000;

fn config(model: &Path) -> PipelineConfig {
    PipelineConfig {
        partitions: 2,
        workers: 2,
        batch_records_max: 100,
        model_file: Some(model.to_path_buf()),
        model_poll_ms: 20,
        ..PipelineConfig::default()
    }
}

/// A logistic model on all features; `seed` changes the training data, so the version.
fn write_model(path: &Path, seed: u32) -> String {
    let rows: Vec<Vec<f64>> = (0..400u32)
        .map(|i| (0..FEATURE_NAMES.len() as u32).map(|j| f64::from((i * (j + 3) + seed) % 97)).collect())
        .collect();
    let labels: Vec<bool> = rows.iter().map(|r| r[0] > 80.0).collect();
    let mut model = TrainedModel::train("logistic", &FEATURE_NAMES, &rows, &labels, "test").unwrap();
    model.set_label_delay_ms(7 * DAY_MS);
    // Replace atomically, as a deploy would.
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, model.to_json()).unwrap();
    std::fs::rename(&temp, path).unwrap();
    model.version().to_string()
}

fn publish(log: &EmbeddedLog, model: &Path, from: u32, to: u32) {
    let topics = ensure_topics(log, &config(model)).unwrap();
    let mut transaction = Transaction::new();
    for i in from..to {
        let payer = format!("c{}", i % 23);
        let time = paystream_domain::time::format_rfc3339_ms(START_MS + i64::from(i) * 600_000);
        let value = format!(
            r#"{{"payment_id":"p{i}","payer_account_id":"{payer}","merchant_id":"m1","terminal_id":"t{}","amount":"{}.00","currency":"EUR","event_time":"{time}","channel":"card_present"}}"#,
            i % 7,
            1 + i % 300,
        );
        transaction.send(&topics.payments, payer.as_bytes(), value.as_bytes(), 0).unwrap();
        if i % 10 == 0 {
            let label = format!(r#"{{"payment_id":"p{i}","is_fraud":{},"reported_at":"{time}"}}"#, i % 20 == 0);
            transaction.send(&topics.labels, payer.as_bytes(), label.as_bytes(), 0).unwrap();
        }
    }
    // Two malformed labels: dead-lettered by the terminal index, once.
    if from == 0 {
        transaction.send(&topics.labels, b"c1", b"{not json", 0).unwrap();
        transaction
            .send(&topics.labels, b"c2", br#"{"payment_id":"p1","is_fraud":true,"reported_at":"yesterday"}"#, 0)
            .unwrap();
    }
    log.commit(transaction).unwrap();
}

fn topic_values(log: &EmbeddedLog, name: &str) -> Vec<Value> {
    let topic = log.topic(name).unwrap();
    let mut values = Vec::new();
    for partition in 0..topic.partitions {
        for record in log.fetch(&topic, partition, 0, usize::MAX).unwrap() {
            values.push(serde_json::from_slice(&record.value).unwrap());
        }
    }
    values
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn make_pipeline(dir: &Path, log: Arc<EmbeddedLog>, model: &Path, metrics: Arc<Metrics>) -> Pipeline {
    let snapshots = Arc::new(FileSnapshotStore::open(dir.join("snapshots")).unwrap());
    let loaded = Arc::new(load_model_file(model, 7 * DAY_MS).unwrap());
    Pipeline::new(log, snapshots, loaded, config(model)).with_metrics(metrics)
}

#[test]
fn hot_reload_swaps_models_between_batches_and_refuses_broken_files() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.json");
    let version_a = write_model(&model, 1);
    let log = Arc::new(EmbeddedLog::open(EmbeddedLogConfig::new(dir.path().join("log"))).unwrap());
    publish(&log, &model, 0, 500);
    let metrics = Arc::new(Metrics::new());
    let pipeline = make_pipeline(dir.path(), log.clone(), &model, metrics.clone());
    let control = RunControl::new(false);
    let decisions = |log: &EmbeddedLog| topic_values(log, "decisions");

    std::thread::scope(|scope| {
        let running = scope.spawn(|| pipeline.run(RunMode::Forever, &control));
        wait_until("phase 1 decisions", || decisions(&log).len() == 500);

        // A broken deploy: refused, counted, and the running model stays.
        std::fs::write(&model, b"{\"kind\": \"logistic_regression\", \"truncated").unwrap();
        wait_until("the refused reload", || metrics.model_reloads.with_label_values(&["error"]).get() == 1);
        let version_b = write_model(&model, 2);
        assert_ne!(version_a, version_b);
        wait_until("the reload", || metrics.model_reloads.with_label_values(&["ok"]).get() == 1);

        publish(&log, &model, 500, 1_000);
        wait_until("phase 2 decisions", || decisions(&log).len() == 1_000);
        control.stop();
        running.join().unwrap().unwrap();

        for decision in decisions(&log) {
            let id: u32 = decision["payment_id"].as_str().unwrap()[1..].parse().unwrap();
            let expected = if id < 500 { &version_a } else { &version_b };
            assert_eq!(decision["model_version"].as_str().unwrap(), expected, "payment {id}");
            if decision["outcome"] != "approve" {
                assert!(!decision["reasons"].as_array().unwrap().is_empty(), "{decision}");
            }
        }
        assert!(metrics.render().contains(&format!("paystream_model_info{{version=\"{version_b}\"}} 1")));
        assert_eq!(metrics.fraud_scores.get_sample_count(), 1_000, "one score observed per decision");
    });

    let bad_labels = |log: &EmbeddedLog| {
        topic_values(log, "dead-letters").into_iter().filter(|l| l["source_topic"] == "labels").collect::<Vec<_>>()
    };
    let letters = bad_labels(&log);
    let mut reasons: Vec<&str> = letters.iter().map(|l| l["reason"].as_str().unwrap()).collect();
    reasons.sort();
    assert_eq!(reasons, ["invalid_timestamp", "malformed_json"]);
    // Labels read before their payment wait for it; by the end each found its payment.
    let indexed = |result: &str| metrics.labels.with_label_values(&[result]).get();
    assert_eq!(indexed("attached") + indexed("pending"), 100);
    assert_eq!(metrics.terminal_index_pending_labels.get(), 0, "every good label found its payment");

    // A restart re-reads the labels after the index snapshot: no second dead letter.
    let restarted = make_pipeline(dir.path(), log.clone(), &model, Arc::new(Metrics::new()));
    restarted.run(RunMode::UntilIdle, &RunControl::new(true)).unwrap();
    assert_eq!(bad_labels(&log).len(), 2);
    assert_eq!(decisions(&log).len(), 1_000);
}
