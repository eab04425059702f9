//! `paystream run --postgres-url` copies decisions, postings and balances into this
//! machine's PostgreSQL exactly once, through crashes (`PAYSTREAM_TEST_POSTGRES_URL`
//! overrides `postgres://paystream:paystream@127.0.0.1:5432/test`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{check_exactly_once, dump, paystream, run_ok};
use paystream_storage::records::RecordStore;
use paystream_storage_postgres::{Blocking, PostgresRecordStore, PostgresUserStore};

/// Decisions in PostgreSQL (a second try reconnects if the connection was dropped).
fn stored_so_far(store: &mut Blocking<PostgresRecordStore>) -> u64 {
    store.totals().or_else(|_| store.totals()).expect("PostgreSQL answers").decisions
}

/// `paystream run` (until stopped) with the sink, at most `rate` payments/s; stderr piped.
fn start_run(data: &Path, url: &str, schema: &str, rate: &str) -> std::process::Child {
    paystream()
        .args(["run", "--no-metrics", "--batch-records-max", "64", "--max-input-rate", rate])
        .args(["--postgres-url", url, "--postgres-schema", schema, "--data-dir"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn paystream run")
}

fn wait_for_more_than(store: &mut Blocking<PostgresRecordStore>, decisions: u64, failure: &str) {
    let started = Instant::now();
    while stored_so_far(store) <= decisions {
        assert!(started.elapsed() < Duration::from_secs(60), "{failure}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn decisions_and_postings_reach_postgres_exactly_once_through_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let schema = format!("test_sink_{}_{nanos}", std::process::id());
    let url = paystream_testkit::postgres_url();
    run_ok(
        data,
        &["generate", "--customers", "300", "--terminals", "600", "--days", "40", "--seed", "4", "--partitions", "3"],
    );
    let total = dump(data, "payments").len();
    let mut store = Blocking::<PostgresRecordStore>::connect(&url, &schema)
        .unwrap_or_else(|e| panic!("PostgreSQL must be running for this test ({url}): {e}"));

    let mut previous = 0;
    for (round, delay_ms) in [100u64, 250].into_iter().enumerate() {
        let mut child = start_run(data, &url, &schema, "10000");
        wait_for_more_than(&mut store, previous, &format!("round {round}: nothing reached PostgreSQL"));
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL: between any two statements of the sink's transaction
        child.wait().unwrap();
        let stored = stored_so_far(&mut store);
        assert!(stored < total as u64, "round {round}: finished before the kill");
        previous = stored;
        // Whatever is in PostgreSQL after a crash is whole: balances follow the postings.
        let totals = store.totals().unwrap();
        assert!(totals.posting_sums_minor.values().all(|s| *s == 0), "{totals:?}");
        assert!(totals.balance_sums_minor.values().all(|s| *s == 0), "{totals:?}");
    }
    // The database drops the sink's connection mid-run (as a restart or failover
    // would): the pipeline goes on, the sink reconnects and resumes where it stood.
    let child = start_run(data, &url, &schema, "2000");
    wait_for_more_than(&mut store, previous, "nothing reached PostgreSQL");
    let sql = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = 'paystream:{schema}' AND pid <> pg_backend_pid()"
    );
    let terminate = std::process::Command::new("psql")
        .arg(&url)
        .args(["-Atc", &sql])
        .output()
        .expect("psql (the PostgreSQL client) is installed");
    assert!(terminate.status.success(), "{}", String::from_utf8_lossy(&terminate.stderr));
    let terminated: u32 = String::from_utf8_lossy(&terminate.stdout).trim().parse().unwrap();
    assert!(terminated >= 2, "the sink's connection and the test's were terminated: {terminated}");
    let before = stored_so_far(&mut store); // reconnects
    wait_for_more_than(&mut store, before, "the sink did not reconnect");
    // SAFETY: kill(2) with a valid pid and signal has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("record store unavailable"), "the sink saw the failure and retried: {stderr}");

    let url_arg = url.as_str();
    run_ok(data, &["run", "--no-metrics", "--until-idle", "--postgres-url", url_arg, "--postgres-schema", &schema]);
    let (decisions, _) = check_exactly_once(data, true);

    // PostgreSQL holds exactly the topics' records, once each.
    let totals = store.totals().unwrap();
    assert_eq!(totals.decisions, decisions as u64);
    let ledger = dump(data, "ledger");
    let postings: usize = ledger.iter().map(|t| t["value"]["postings"].as_array().unwrap().len()).sum();
    assert_eq!(totals.postings, postings as u64);
    assert!(totals.posting_sums_minor.values().all(|s| *s == 0), "{totals:?}");
    let mut balances: BTreeMap<(String, String), i64> = BTreeMap::new();
    for transaction in &ledger {
        let currency = transaction["value"]["currency"].as_str().unwrap().to_string();
        for posting in transaction["value"]["postings"].as_array().unwrap() {
            let amount = posting["amount_minor"].as_i64().unwrap();
            let signed = if posting["direction"] == "debit" { amount } else { -amount };
            *balances.entry((posting["account_id"].as_str().unwrap().to_string(), currency.clone())).or_default() +=
                signed;
        }
    }
    for ((account, currency), balance) in balances.iter().step_by(7) {
        assert_eq!(store.balance_minor(account, currency).unwrap(), *balance, "{account} {currency}");
    }
    for decision in dump(data, "decisions").iter().step_by(97) {
        let v = &decision["value"];
        let stored = store.decision(v["payment_id"].as_str().unwrap()).unwrap().expect("stored");
        assert_eq!(stored.outcome, v["outcome"].as_str().unwrap());
        assert_eq!(stored.payer_account_id, v["payer_account_id"].as_str().unwrap());
    }
    // The same answers from the command line.
    let users_schema = format!("{schema}_users");
    let cli = |args: &[&str]| {
        paystream()
            .args(["store", "--postgres-url", &url, "--postgres-schema", &schema, "--users-schema", &users_schema])
            .args(args)
            .output()
            .unwrap()
    };
    let ((account, currency), balance) = balances.iter().next().unwrap();
    let output = cli(&["balance", account, "--currency", currency]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), balance.to_string());
    let first = &dump(data, "decisions")[0]["value"];
    let output = cli(&["decision", first["payment_id"].as_str().unwrap()]);
    let stored: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(stored["outcome"], first["outcome"]);
    let missing = cli(&["decision", "no-such-payment"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no decision for payment"));
    assert!(cli(&["migrate"]).status.success());

    // Users, from the command line.
    let added = cli(&["user-add", "u1", "Ada@Example.com", "Ada Lovelace"]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let taken = cli(&["user-add", "u2", "ada@example.com", "Impostor"]);
    assert!(!taken.status.success());
    assert!(String::from_utf8_lossy(&taken.stderr).contains("is taken"));
    assert!(cli(&["user-kyc", "u1", "verified"]).status.success());
    let user: serde_json::Value = serde_json::from_slice(&cli(&["user", "--email", "ADA@example.com"]).stdout).unwrap();
    assert_eq!((user["user_id"].as_str(), user["kyc_status"].as_str()), (Some("u1"), Some("verified")));
    assert!(!cli(&["user-kyc", "u1", "maybe"]).status.success(), "unknown KYC states are refused");
    store.drop_schema().unwrap();
    Blocking::<PostgresUserStore>::connect(&url, &users_schema).unwrap().drop_schema().unwrap();
}
