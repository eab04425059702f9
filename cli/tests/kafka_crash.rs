//! `paystream run` on the test broker (a real Apache Kafka) killed with SIGKILL in the
//! middle of its transactions, several times, then restarted to the end. The restart
//! opens the same transactional ids, which fences the dead process and aborts its open
//! transactions. An outside `read_committed` consumer (kcat) then sees every payment
//! decided exactly once and no aborted record, while a `read_uncommitted` consumer sees
//! the aborted records too: the transaction boundaries are real.

mod common;

use std::time::Duration;

use common::{
    check_exactly_once, count_payment_ids, decided_payments, generate_csv, kcat_values, run_ok, start_run, wait_until,
};

/// Kills at least this many times...
const KILLS_MIN: usize = 3;
/// ... and at most this many, until an aborted decision is on the broker.
const KILLS_MAX: usize = 10;

#[test]
fn killed_inside_transactions_and_restarted_decides_every_payment_once() {
    let brokers = common::use_real_kafka("crash");
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("payments.csv");
    generate_csv(&csv, 1_500, 3_000, 10, 23);
    let data = dir.path().join("data");
    run_ok(&data, &["replay", csv.to_str().unwrap()]);
    let payments = kcat_values(&brokers, &common::topic("payments"), "read_committed").len();
    let decisions_topic = common::topic("decisions");

    let mut kills = 0;
    let mut aborted = 0;
    while kills < KILLS_MIN || (aborted == 0 && kills < KILLS_MAX) {
        let before = decided_payments(&data);
        // Small batches, and a commit in flight most of the time.
        let mut running = start_run(&data, &["--workers", "2", "--max-input-rate", "4000"]);
        wait_until(&format!("progress in round {kills}"), 120, 100, || {
            assert!(running.try_wait().unwrap().is_none(), "paystream run exited early");
            decided_payments(&data) > before
        });
        std::thread::sleep(Duration::from_millis(100 + 100 * kills as u64));
        running.kill().unwrap();
        running.wait().unwrap();
        kills += 1;
        let committed = kcat_values(&brokers, &decisions_topic, "read_committed").len();
        let uncommitted = kcat_values(&brokers, &decisions_topic, "read_uncommitted").len();
        aborted = uncommitted - committed;
        assert!(decided_payments(&data) < payments, "round {kills}: the run finished before it was killed");
    }
    assert!(aborted > 0, "{kills} kills left no aborted decision on the broker");

    // The last run goes on until every payment is decided: the killed processes' group
    // memberships hold their partitions until the session timeout, and `--until-idle`
    // would stop once the partitions this process was given are done.
    let last = start_run(&data, &["--workers", "2"]);
    wait_until("the last run decides every payment", 180, 250, || decided_payments(&data) >= payments);
    let (exit, stdout, stderr) = common::terminate(last);
    assert!(exit.success(), "{exit}\n{stdout}\n{stderr}");
    let (decisions, _) = check_exactly_once(&data, true);

    // What any Kafka client sees.
    let committed = kcat_values(&brokers, &decisions_topic, "read_committed");
    let counts = count_payment_ids(&committed);
    assert_eq!(committed.len(), decisions, "kcat reads the decisions paystream reads");
    assert!(counts.values().all(|n| *n == 1), "read_committed: a payment decided twice");
    let uncommitted = kcat_values(&brokers, &decisions_topic, "read_uncommitted");
    let doubled = count_payment_ids(&uncommitted).values().filter(|n| **n > 1).count();
    assert!(uncommitted.len() > committed.len(), "read_uncommitted sees the aborted decisions as well");
    assert!(doubled > 0, "an aborted decision was decided again after the restart");
}
