//! kcat, an outside Kafka client, as paystream's producer and consumer on the test broker
//! (a real Apache Kafka): payments produced by kcat with Kafka's Java partitioner
//! (`-X partitioner=murmur2_random`, as the README documents) land on the partition
//! paystream computes for the payer, and are decided exactly once; kcat reads the
//! decisions back, committed only, keyed by payer on the payer's partition.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use common::{check_exactly_once, run_ok};
use paystream_domain::partitioner::partition_for_key;
use paystream_testkit::PaymentStream;
use serde_json::Value;

const PAYMENTS: u32 = 400;
const PARTITIONS: u32 = 4;

const STREAM: PaymentStream = PaymentStream {
    id_prefix: "k",
    payers: 37,
    merchants: 5,
    terminals: 11,
    amount_units_max: 300,
    spacing_ms: 60_000,
    channel: "wallet",
};

/// `kcat -P` with `key|value` lines on stdin.
fn kcat_produce(brokers: &str, topic: &str, lines: &str) {
    let mut kcat = Command::new("kcat")
        .args(["-b", brokers, "-P", "-t", topic, "-K", "|", "-X", "partitioner=murmur2_random"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run kcat (Debian package kcat)");
    kcat.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    assert!(kcat.wait().unwrap().success(), "kcat -P failed");
}

#[test]
fn kcat_produces_payments_and_reads_decisions() {
    let brokers = common::use_real_kafka("kcat");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // An idle run creates the pipeline's topics (the broker creates none by itself).
    run_ok(&data, &["run", "--no-metrics", "--until-idle"]);

    let mut lines = String::new();
    for i in 0..PAYMENTS {
        let (payer, value) = STREAM.payment(i);
        lines.push_str(&format!("{payer}|{value}\n"));
    }
    lines.push_str("c1|{\"payment_id\": not json\n");
    kcat_produce(&brokers, &common::topic("payments"), &lines);

    // kcat's partitioner and paystream's agree on every payer.
    let output = Command::new("kcat")
        .args(["-b", &brokers, "-C", "-t", &common::topic("payments"), "-o", "beginning", "-e", "-q"])
        .args(["-f", "%k %p\\n"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let placed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(placed.lines().count() as u32, PAYMENTS + 1);
    for line in placed.lines() {
        let (key, partition) = line.split_once(' ').unwrap();
        assert_eq!(partition_for_key(key.as_bytes(), PARTITIONS).to_string(), partition, "payer {key}");
    }

    run_ok(&data, &["run", "--no-metrics", "--until-idle", "--workers", "2"]);
    let (decisions, dead_letters) = check_exactly_once(&data, true);
    assert_eq!((decisions, dead_letters), (PAYMENTS as usize, 1));

    let output = Command::new("kcat")
        .args(["-b", &brokers, "-C", "-t", &common::topic("decisions"), "-o", "beginning", "-e", "-q"])
        .args(["-X", "isolation.level=read_committed", "-f", "%k %p %s\\n"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let mut decided: HashMap<String, u32> = HashMap::new();
    for line in text.lines() {
        let mut fields = line.splitn(3, ' ');
        let (key, partition, value) = (fields.next().unwrap(), fields.next().unwrap(), fields.next().unwrap());
        let decision: Value = serde_json::from_str(value).unwrap();
        assert_eq!(decision["payer_account_id"], key, "decisions are keyed by payer");
        assert_eq!(partition_for_key(key.as_bytes(), PARTITIONS).to_string(), partition, "on the payer's partition");
        *decided.entry(decision["payment_id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(decided.len() as u32, PAYMENTS);
    assert!(decided.values().all(|n| *n == 1));
}
