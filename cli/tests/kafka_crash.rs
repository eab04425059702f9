//! `paystream run` on the test broker (a real Apache Kafka) killed with SIGKILL in the
//! middle of a transaction, three times, then restarted to the end. Each time the process
//! is frozen (SIGSTOP) until it is caught with decisions of an open transaction on the
//! broker, then killed. The restart opens the same transactional ids, which fences the
//! dead process and aborts its open transactions. An outside `read_committed` consumer (kcat) then sees every payment
//! decided exactly once and no aborted record, while a `read_uncommitted` consumer sees
//! the aborted records too: the transaction boundaries are real.

mod common;

use common::{
    check_exactly_once, count_payment_ids, decided_payments, generate_csv, kcat_values, run_ok, start_run, wait_until,
};

/// Kills inside a transaction, each followed by a restart.
const KILLS: usize = 3;

/// Records of `topic` a `read_uncommitted` reader sees beyond a `read_committed` one:
/// those of aborted transactions, and of any transaction still open (with the committed
/// ones it hides behind it).
fn beyond_committed(brokers: &str, topic: &str) -> usize {
    let uncommitted = kcat_values(brokers, topic, "read_uncommitted").len();
    uncommitted - kcat_values(brokers, topic, "read_committed").len()
}

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

    let mut aborted = 0;
    for round in 0..KILLS {
        let before = decided_payments(&data);
        let mut running = start_run(&data, &["--workers", "2", "--max-input-rate", "4000"]);
        wait_until(&format!("progress in round {round}"), 120, 100, || {
            assert!(running.try_wait().unwrap().is_none(), "paystream run exited early");
            decided_payments(&data) > before
        });
        // Freeze the process; kill it if it froze with decisions of a transaction on the
        // broker but not committed, or let it go on a moment and look again.
        wait_until(&format!("a transaction open in round {round}"), 120, 10, || {
            common::signal(&running, "-STOP");
            if beyond_committed(&brokers, &decisions_topic) > aborted {
                return true;
            }
            common::signal(&running, "-CONT");
            false
        });
        running.kill().unwrap();
        running.wait().unwrap();
        assert!(decided_payments(&data) < payments, "round {round}: the run finished before it was killed");
        // The next start (same transactional ids) aborts the open transaction; its
        // decisions stay on the broker as aborted records. (A decisions partition has one
        // writer, so nothing committed hides behind them.)
        aborted = beyond_committed(&brokers, &decisions_topic);
    }
    assert!(aborted > 0, "{KILLS} kills left no aborted decision on the broker");

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
