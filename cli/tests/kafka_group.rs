//! Two `paystream run` processes in one consumer group on Kafka (librdkafka's mock
//! cluster, run by this test process): they share the partitions; one stops (SIGTERM:
//! it finishes its batch, commits and leaves the group) and the other takes its
//! partitions over. Every input is decided exactly once, and each input record is
//! consumed by exactly one of them.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{check_exactly_once, decisions_so_far, generate_csv, run_ok, start_run};

fn wait_for_decisions(data: &std::path::Path, count: usize) {
    let started = Instant::now();
    while decisions_so_far(data) < count {
        assert!(started.elapsed() < Duration::from_secs(180), "timed out waiting for {count} decisions");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// SIGTERM, then the "processed N input records" the process printed.
fn stop(mut running: common::Running) -> u64 {
    let status = std::process::Command::new("kill").args(["-TERM", &running.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = running.wait().unwrap();
    let mut stdout = String::new();
    running.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let mut stderr = String::new();
    running.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(exit.success(), "{exit}\n{stdout}\n{stderr}");
    assert!(stderr.contains("joined consumer group paystream"), "{stderr}");
    let processed = stdout.split("processed ").nth(1).and_then(|rest| rest.split(' ').next());
    processed.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no report in {stdout:?}"))
}

#[test]
fn two_processes_share_the_partitions_and_one_takes_over_when_the_other_stops() {
    let _cluster = common::use_kafka_mock_cluster();

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
    run_ok(&data, &["replay", first_csv.to_str().unwrap()]);
    let a = start_run(&dir.path().join("a"), &["--kafka-transactional-id", "a", "--workers", "2"]);
    let b = start_run(&dir.path().join("b"), &["--kafka-transactional-id", "b", "--workers", "2"]);
    wait_for_decisions(&data, first.len());

    let processed_by_a = stop(a);
    run_ok(&data, &["replay", second_csv.to_str().unwrap()]);
    wait_for_decisions(&data, rows.len());
    let processed_by_b = stop(b);

    let (decisions, dead_letters) = check_exactly_once(&data, true);
    assert_eq!(decisions, rows.len());
    assert_eq!(dead_letters, 0);
    assert_eq!(processed_by_a + processed_by_b, rows.len() as u64, "each input consumed once");
    assert!(processed_by_a > 0 && processed_by_b > 0, "a {processed_by_a}, b {processed_by_b}: both worked");
    // Merchants were settled once per window (ids unique: `check_exactly_once`) on their
    // own partition, from payments of partitions both processes ran.
    let settlements = common::dump(&data, "settlements");
    assert!(!settlements.is_empty(), "no settlement window closed");
    for settlement in &settlements {
        let merchant = settlement["value"]["merchant_id"].as_str().unwrap();
        let home = paystream_domain::partitioner::partition_for_key(merchant.as_bytes(), 4);
        assert_eq!(settlement["value"]["source_partition"], home, "{settlement}");
    }
}
