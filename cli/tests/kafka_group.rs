//! Three `paystream run` processes in one consumer group on the test broker (a real
//! Apache Kafka): they share the partitions; one is killed with SIGKILL in the middle of
//! its work, and after the session timeout the other two take its partitions, restore
//! their state from what it committed, and go on. Every input is decided exactly once
//! overall; the survivors then stop cleanly (SIGTERM: finish the batch, commit, leave).

mod common;

use common::{Running, check_exactly_once, decided_payments, generate_csv, run_ok, start_run};

/// Each member's input rate, so that the work is spread over seconds and all three do
/// some of it.
const MEMBER_RATE: &str = "300";
/// The broker aborts a killed process's open transaction after this long; until then
/// its partitions' committed reads wait behind it.
const TRANSACTION_TIMEOUT_MS: &str = "10000";

fn wait_for_decisions(data: &std::path::Path, count: usize) {
    common::wait_until(&format!("{count} decisions"), 240, 500, || decided_payments(data) >= count);
}

/// SIGTERM, then the "processed N input records" the process printed.
fn stop(running: Running) -> u64 {
    let (exit, stdout, stderr) = common::terminate(running);
    assert!(exit.success(), "{exit}\n{stdout}\n{stderr}");
    assert!(stderr.contains("joined consumer group paystream"), "{stderr}");
    let processed = stdout.split("processed ").nth(1).and_then(|rest| rest.split(' ').next());
    processed.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no report in {stdout:?}"))
}

fn member(dir: &std::path::Path, name: &str) -> Running {
    let transactional_id = format!("{}-{name}", std::env::var("PAYSTREAM_KAFKA_TRANSACTIONAL_ID").unwrap());
    let args =
        ["--kafka-transactional-id", &transactional_id, "--kafka-transaction-timeout-ms", TRANSACTION_TIMEOUT_MS];
    start_run(&dir.join(name), &[&args[..], &["--workers", "2", "--max-input-rate", MEMBER_RATE]].concat())
}

#[test]
fn three_processes_share_the_partitions_and_two_take_over_when_one_is_killed() {
    common::use_real_kafka("group");

    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("all.csv");
    generate_csv(&csv, 150, 300, 6, 5);
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.collect();
    let (first, second) = rows.split_at(rows.len() / 2);
    let part = |name: &str, rows: &[&str]| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{header}\n{}\n", rows.join("\n"))).unwrap();
        path
    };
    let (first_csv, second_csv) = (part("first.csv", first), part("second.csv", second));

    let data = dir.path().join("data");
    // The topics exist before the members join (replay creates them). c starts alone,
    // so it has committed work when a and b join and take part of its partitions.
    run_ok(&data, &["replay", first_csv.to_str().unwrap()]);
    let mut c = member(dir.path(), "c");
    wait_for_decisions(&data, first.len() / 6);
    let a = member(dir.path(), "a");
    let b = member(dir.path(), "b");
    wait_for_decisions(&data, first.len() / 2);

    // c dies mid-work: no clean leave, an open transaction left to the broker.
    c.kill().unwrap();
    c.wait().unwrap();
    run_ok(&data, &["replay", second_csv.to_str().unwrap()]);
    wait_for_decisions(&data, rows.len());
    let processed_by_a = stop(a);
    let processed_by_b = stop(b);

    let (decisions, dead_letters) = check_exactly_once(&data, true);
    assert_eq!(decisions, rows.len());
    assert_eq!(dead_letters, 0);
    assert!(processed_by_a > 0 && processed_by_b > 0, "a {processed_by_a}, b {processed_by_b}: both worked");
    assert!(
        processed_by_a + processed_by_b < rows.len() as u64,
        "a {processed_by_a} + b {processed_by_b} of {}: c committed some before it was killed",
        rows.len()
    );
    // Merchants were settled once per window (ids unique: `check_exactly_once`) on their
    // own partition, from payments of partitions all three processes ran.
    let settlements = common::dump(&data, &common::topic("settlements"));
    assert!(!settlements.is_empty(), "no settlement window closed");
    for settlement in &settlements {
        let merchant = settlement["value"]["merchant_id"].as_str().unwrap();
        let home = paystream_domain::partitioner::partition_for_key(merchant.as_bytes(), 4);
        assert_eq!(settlement["value"]["source_partition"], home, "{settlement}");
    }
}
