//! Zombie fencing on the test broker (a real Apache Kafka): a second `paystream run` with
//! the same transactional ids fences the first, whose next commit fails; the first stops
//! with an error and writes nothing more, and the second decides every payment, each
//! exactly once.

mod common;

use std::io::Read;

use common::{check_exactly_once, decided_payments, generate_csv, run_ok, start_run, wait_until};

#[test]
fn a_second_process_with_the_same_transactional_id_fences_the_first() {
    common::use_real_kafka("fencing");
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("payments.csv");
    generate_csv(&csv, 300, 600, 10, 31);
    let rows = std::fs::read_to_string(&csv).unwrap().lines().count() - 1;
    let data = dir.path().join("data");
    run_ok(&data, &["replay", csv.to_str().unwrap()]);

    let mut zombie = start_run(&dir.path().join("zombie"), &["--max-input-rate", "500"]);
    wait_until("the first process decides", 60, 100, || decided_payments(&data) > 0);
    let successor = start_run(&dir.path().join("successor"), &["--max-input-rate", "500"]);

    let mut exit = None;
    wait_until("the fenced process stops", 120, 100, || {
        exit = zombie.try_wait().unwrap();
        exit.is_some()
    });
    let exit = exit.unwrap();
    let mut stderr = String::new();
    zombie.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!exit.success(), "a fenced process fails: {stderr}");
    assert!(stderr.contains("fenced"), "{stderr}");
    let decided_when_fenced = decided_payments(&data);
    assert!(decided_when_fenced < rows, "the successor should have had work left");

    wait_until("the successor decides every payment", 240, 200, || decided_payments(&data) >= rows);
    let (exit, stdout, stderr) = common::terminate(successor);
    assert!(exit.success(), "{exit}\n{stdout}\n{stderr}");
    let (decisions, dead_letters) = check_exactly_once(&data, true);
    assert_eq!((decisions, dead_letters), (rows, 0));
}
