//! `paystream bench` on the test broker (a real Apache Kafka), with and without
//! transactions: every published payment goes through the pipeline, and the report says
//! which log and mode it measured.

mod common;

use common::paystream;
use serde_json::Value;

fn bench(extra: &[&str]) -> Value {
    let output = paystream()
        .args(["bench", "--no-metrics", "--json", "--payments", "3000", "--latency-rate", "500"])
        .args(["--latency-seconds", "1", "--kafka-replication-factor", "1"])
        .args(extra)
        .output()
        .expect("spawn paystream bench");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("bench --json prints JSON")
}

#[test]
fn bench_measures_kafka_with_and_without_transactions() {
    common::use_real_kafka("bench");
    let exactly_once = bench(&[]);
    assert_eq!(exactly_once["log"], "kafka");
    assert_eq!(exactly_once["exactly_once"], true);
    assert_eq!(exactly_once["payments"], 3000, "{exactly_once}");
    assert_eq!(exactly_once["latency_payments"], 500, "{exactly_once}");
    assert!(exactly_once["throughput_payments_per_second"].as_f64().unwrap() > 0.0);

    let at_least_once = bench(&["--kafka-at-least-once"]);
    assert_eq!(at_least_once["exactly_once"], false);
    assert_eq!(at_least_once["payments"], 3000, "{at_least_once}");
}
