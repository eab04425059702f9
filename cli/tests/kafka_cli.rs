//! `paystream` pointed at Kafka (the test broker, a real Apache Kafka): replay publishes
//! a handbook CSV, `run --until-idle` decides it, and the topics hold every input exactly
//! once — the same checks as on the embedded log, through `paystream log dump`.

mod common;

use common::{check_exactly_once, generate_csv, paystream, run_ok, topic};

#[test]
fn replay_and_run_on_kafka_decide_every_payment_exactly_once() {
    common::use_real_kafka("cli");

    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("payments.csv");
    generate_csv(&csv, 200, 400, 5, 11);
    // A payment the pipeline must dead-letter (its amount is not a number).
    let mut text = std::fs::read_to_string(&csv).unwrap();
    let last = text.lines().last().unwrap().to_string();
    let broken: Vec<&str> = last.split(',').collect();
    let mut broken: Vec<String> = broken.iter().map(|s| s.to_string()).collect();
    broken[0] = "999999".into();
    broken[4] = "lots".into(); // TX_AMOUNT
    text.push_str(&broken.join(","));
    text.push('\n');
    std::fs::write(&csv, text).unwrap();

    let data = dir.path().join("data");
    let replayed = run_ok(&data, &["replay", csv.to_str().unwrap()]);
    assert!(String::from_utf8(replayed.stdout).unwrap().contains("payments"));

    let output = run_ok(&data, &["run", "--no-metrics", "--until-idle", "--workers", "2"]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("processed"), "{stdout}");
    let (decisions, dead_letters) = check_exactly_once(&data, true);
    assert!(decisions > 1_000, "{decisions} decisions");
    assert_eq!(dead_letters, 1);

    // A second run finds nothing new: positions came back from the positions topic.
    let output = run_ok(&data, &["run", "--no-metrics", "--until-idle", "--workers", "2"]);
    assert!(String::from_utf8(output.stdout).unwrap().contains("processed 0 input records"));
    assert_eq!(check_exactly_once(&data, true).0, decisions);

    let topics = run_ok(&data, &["log", "topics"]);
    let topics = String::from_utf8(topics.stdout).unwrap();
    let decisions_line = format!("{}\tpartitions=4", topic("decisions"));
    assert!(topics.lines().any(|l| l.starts_with(&decisions_line)), "{topics}");

    // Bad Kafka settings fail clearly, without a panic.
    let output = paystream()
        .args(["run", "--no-metrics", "--until-idle", "--kafka-property", "no-equals-sign", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("expected KEY=VALUE"));
    let output = paystream()
        .args(["run", "--no-metrics", "--until-idle", "--data-dir"])
        .arg(&data)
        .env("PAYSTREAM_KAFKA_BROKERS", " ")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is empty"));
}
