//! Helpers for tests that drive the `paystream` binary as a user would.

#![allow(dead_code)]

pub mod served;
pub mod sql;
pub mod views;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

pub fn paystream() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_paystream"));
    command.env("PAYSTREAM_LOG", "warn");
    command
}

/// The test broker (`deploy/local/servers.sh start kafka`, a real Apache Kafka), which
/// every paystream command the test then spawns runs on, with topics, consumer group and
/// transactional ids and view catalog of this test's own (`{prefix}_…`) and replication factor 1. Call it
/// first, from a test binary's only test: it sets the `PAYSTREAM_*` variables. Returns
/// the bootstrap address.
pub fn use_real_kafka(prefix: &str) -> String {
    let brokers = paystream_testkit::kafka_brokers();
    let name = paystream_testkit::unique_name(prefix);
    // The roles of `--topic ROLE=NAME`.
    let roles = "payments labels decisions ledger settlements dead-letters changelog transfers settlement-entries";
    let topics: Vec<String> = roles.split(' ').map(|role| format!("{role}={name}-{role}")).collect();
    // SAFETY: called before the test spawns threads, in a binary with this one test.
    unsafe {
        std::env::set_var("PAYSTREAM_KAFKA_BROKERS", &brokers);
        std::env::set_var("PAYSTREAM_TOPICS", topics.join(","));
        std::env::set_var("PAYSTREAM_GROUP_ID", format!("paystream_{name}"));
        std::env::set_var("PAYSTREAM_KAFKA_TRANSACTIONAL_ID", &name);
        std::env::set_var("PAYSTREAM_KAFKA_REPLICATION_FACTOR", "1");
        std::env::set_var("PAYSTREAM_VIEW_CATALOG_TOPIC", format!("{name}-view-definitions"));
    }
    brokers
}

/// librdkafka's mock cluster (3 brokers) with the pipeline's topics, 4 partitions each,
/// which every paystream command the test then spawns runs on: for faults a real broker
/// cannot be made to show. Call it first, from a test binary's only test: it sets
/// `PAYSTREAM_KAFKA_BROKERS`.
pub fn use_kafka_mock_cluster() -> rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let names = paystream_pipeline::TopicNames::default();
    let cluster = paystream_pipeline::log::kafka::mock_cluster(3, 4, &names.all()).expect("start a mock cluster");
    // SAFETY: called before the test spawns threads, in a binary with this one test.
    unsafe { std::env::set_var("PAYSTREAM_KAFKA_BROKERS", cluster.bootstrap_servers()) };
    cluster
}

/// The name of the pipeline's topic with `role` (payments, decisions, …) in this test:
/// as `use_real_kafka` renamed it, or the default, which is the role's own name.
pub fn topic(role: &str) -> String {
    let renamed = std::env::var("PAYSTREAM_TOPICS").unwrap_or_default();
    renamed
        .split(',')
        .find_map(|mapping| mapping.strip_prefix(role).and_then(|rest| rest.strip_prefix('=')))
        .map_or_else(|| role.to_string(), str::to_string)
}

/// Runs paystream with `args` and the data directory; panics with its output on failure.
pub fn run_ok(data_dir: &Path, args: &[&str]) -> Output {
    let output = paystream().args(args).arg("--data-dir").arg(data_dir).output().expect("spawn paystream");
    assert!(
        output.status.success(),
        "paystream {args:?} failed: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `paystream log dump TOPIC` parsed into JSON values.
pub fn dump(data_dir: &Path, topic: &str) -> Vec<Value> {
    let output = run_ok(data_dir, &["log", "dump", topic]);
    String::from_utf8(output.stdout)
        .expect("dump is UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("dump lines are JSON"))
        .collect()
}

/// The invariants that must hold after any sequence of crashes and restarts, checked
/// from the topics alone:
/// - every input record is decided exactly once, or dead-lettered once, or is a retry of
///   a payment id that was decided;
/// - every ledger transaction balances, postings sum to zero per currency, and there is
///   exactly one ledger transaction per approved decision (but authorizations and voids,
///   which move no money; settlement payouts are checked by `reconcile`);
/// - settlement ids are unique, and `paystream reconcile` finds every closed settlement
///   equal to the postings that name it.
///
/// Returns (decisions, dead letters).
pub fn check_exactly_once(data_dir: &Path, complete: bool) -> (usize, usize) {
    let payments = dump(data_dir, &topic("payments"));
    let decisions = dump(data_dir, &topic("decisions"));
    let dead_letters = dump(data_dir, &topic("dead-letters"));
    let ledger = dump(data_dir, &topic("ledger"));
    let settlements = dump(data_dir, &topic("settlements"));

    let mut decided: HashMap<String, usize> = HashMap::new();
    let mut approved = 0;
    for decision in &decisions {
        let id = decision["value"]["payment_id"].as_str().expect("decision has payment_id").to_string();
        *decided.entry(id).or_default() += 1;
        // Authorizations and voids move no money: no ledger transaction.
        let holds_only = matches!(decision["value"]["type"].as_str(), Some("authorize" | "void"));
        if decision["value"]["outcome"] == "approve" && !holds_only {
            approved += 1;
        }
    }
    let doubled: Vec<_> = decided.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "payments decided more than once: {doubled:?}");

    let payments_topic = topic("payments");
    let mut dead_by_offset: HashMap<(u64, u64), usize> = HashMap::new();
    for letter in &dead_letters {
        let value = &letter["value"];
        if value["source_topic"] == payments_topic.as_str() {
            let key = (value["source_partition"].as_u64().unwrap(), value["source_offset"].as_u64().unwrap());
            *dead_by_offset.entry(key).or_default() += 1;
        }
    }
    assert!(dead_by_offset.values().all(|n| *n == 1), "an input record was dead-lettered twice");

    // Per partition, the accounted inputs (first occurrence of a decided id, or a dead
    // letter) must be a prefix of the partition's records: the pipeline commits in offset
    // order, so a crash can only leave an unprocessed tail. `complete` demands the whole
    // input. (On Kafka, offsets are not dense: transaction markers take offsets.)
    let mut first_seen: HashMap<String, (u64, u64)> = HashMap::new();
    let mut accounted: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut all: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for payment in &payments {
        let key = (payment["partition"].as_u64().unwrap(), payment["offset"].as_u64().unwrap());
        all.entry(key.0).or_default().push(key.1);
        if dead_by_offset.contains_key(&key) {
            accounted.entry(key.0).or_default().push(key.1);
            continue;
        }
        let Some(id) = payment["value"]["payment_id"].as_str() else {
            panic!("input {key:?} is not a payment and was not dead-lettered");
        };
        if decided.contains_key(id) && !first_seen.contains_key(id) {
            first_seen.insert(id.to_string(), key);
            accounted.entry(key.0).or_default().push(key.1);
        }
    }
    for (partition, offsets) in &accounted {
        let mut sorted = offsets.clone();
        sorted.sort_unstable();
        let prefix = sorted.iter().zip(&all[partition]).all(|(accounted, record)| accounted == record);
        assert!(
            prefix,
            "partition {partition}: processed inputs are not a prefix of the offsets (a record was skipped)"
        );
    }
    assert_eq!(first_seen.len(), decided.len(), "a decision has no input payment");
    if complete {
        for (partition, offsets) in &all {
            let (count, done) = (offsets.len(), accounted.get(partition).map_or(0, Vec::len));
            let first_undone = offsets.get(done).copied().unwrap_or(u64::MAX);
            // Inputs after the accounted ones may only be retries of decided ids.
            for payment in payments.iter().filter(|p| {
                p["partition"].as_u64() == Some(*partition) && p["offset"].as_u64().unwrap() >= first_undone
            }) {
                let id = payment["value"]["payment_id"].as_str().unwrap_or_default();
                assert!(
                    first_seen.contains_key(id),
                    "partition {partition}: input {} of {count} not processed",
                    payment["offset"]
                );
            }
        }
    }

    let mut sums: BTreeMap<String, i128> = BTreeMap::new();
    let mut ledger_ids = HashMap::new();
    let mut payouts = HashSet::new();
    let mut in_clearing = 0i128;
    for transaction in &ledger {
        let value = &transaction["value"];
        let mut sum = 0i128;
        for posting in value["postings"].as_array().expect("postings") {
            let amount = i128::from(posting["amount_minor"].as_i64().expect("amount_minor"));
            sum += if posting["direction"] == "debit" { amount } else { -amount };
        }
        assert_eq!(sum, 0, "unbalanced ledger transaction {value}");
        *sums.entry(value["currency"].as_str().unwrap().to_string()).or_default() += sum;
        for posting in value["postings"].as_array().expect("postings") {
            if posting["account_id"] == "clearing:transfers" {
                let amount = i128::from(posting["amount_minor"].as_i64().expect("amount_minor"));
                in_clearing += if posting["direction"] == "credit" { amount } else { -amount };
            }
        }
        if matches!(value["type"].as_str(), Some("settlement" | "payout" | "transfer_in" | "transfer_return")) {
            // A closed settlement's payout (checked by `reconcile` below) or the payee's
            // side of a transfer (checked through the clearing account).
            assert!(payouts.insert(value["transaction_id"].as_str().unwrap().to_string()), "applied twice: {value}");
            continue;
        }
        *ledger_ids.entry(value["payment_id"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    assert!(sums.values().all(|s| *s == 0), "postings do not sum to zero per currency: {sums:?}");
    assert!(ledger_ids.values().all(|n| *n == 1), "a payment was posted twice");
    assert!(in_clearing >= 0, "clearing:transfers paid out more than it received");
    if complete {
        assert_eq!(in_clearing, 0, "transfers still in clearing after a complete run");
    }
    assert_eq!(ledger_ids.len(), approved, "one ledger transaction per approved payment");

    let mut settlement_ids = HashMap::new();
    for settlement in &settlements {
        *settlement_ids.entry(settlement["value"]["settlement_id"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    assert!(settlement_ids.values().all(|n| *n == 1), "a settlement window was emitted twice");
    // Every closed settlement equals the postings that name it.
    let reconciled = run_ok(data_dir, &["reconcile"]);
    let reconciled = String::from_utf8_lossy(&reconciled.stdout).to_string();
    assert!(reconciled.contains("all match"), "{reconciled}");
    (decisions.len(), dead_letters.len())
}

/// Writes a handbook-layout CSV of `customers`, `terminals` and `days` (seed `seed`).
pub fn generate_csv(path: &Path, customers: u32, terminals: u32, days: u32, seed: u64) {
    let output = paystream()
        .args(["generate", "--customers", &customers.to_string(), "--terminals", &terminals.to_string()])
        .args(["--days", &days.to_string(), "--seed", &seed.to_string(), "--csv"])
        .arg(path)
        .output()
        .expect("spawn paystream");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// A log in `dir/data` with the decisions of a small simulated CSV (100 customers, 5
/// days: several hundred payments), replayed and run until idle; on whichever log the
/// test's `PAYSTREAM_*` variables name.
pub fn decided_log(dir: &Path) -> std::path::PathBuf {
    let csv = dir.join("payments.csv");
    generate_csv(&csv, 100, 200, 5, 7);
    let data = dir.join("data");
    run_ok(&data, &["replay", csv.to_str().unwrap()]);
    run_ok(&data, &["run", "--no-metrics", "--until-idle"]);
    data
}

/// Records in the decisions topic so far, from `log topics` (cheap; on the embedded log a
/// record is a decision).
pub fn decisions_so_far(data_dir: &std::path::Path) -> usize {
    let output = paystream().args(["log", "topics", "--data-dir"]).arg(data_dir).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let line_start = format!("{}\t", topic("decisions"));
    text.lines()
        .find(|l| l.starts_with(&line_start))
        .and_then(|l| l.split('\t').find_map(|f| f.strip_prefix("records=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Payments decided so far: distinct payment ids in the committed decisions. On Kafka a
/// topic's offsets also count transaction markers and aborted records.
pub fn decided_payments(data_dir: &std::path::Path) -> usize {
    let output = paystream().args(["log", "dump"]).arg(topic("decisions")).arg("--data-dir").arg(data_dir).output();
    let Ok(output) = output else { return 0 };
    let ids: HashSet<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|record| record["value"]["payment_id"].as_str().map(str::to_string))
        .collect();
    ids.len()
}

/// Kills the child if the test fails before it does, so no pipeline outlives the test.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// `paystream run` in the background, in small batches with frequent snapshots, at most
/// 15,000 input records/s unless `extra` sets `--max-input-rate`.
pub fn start_run(data_dir: &std::path::Path, extra: &[&str]) -> Running {
    let mut command = paystream();
    command.args(["run", "--no-metrics", "--batch-records-max", "64", "--snapshot-interval-batches", "5"]);
    if !extra.contains(&"--max-input-rate") {
        command.args(["--max-input-rate", "15000"]);
    }
    Running(
        command
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn paystream run"),
    )
}

/// Values of every record of `topic` on the test broker, read by kcat (an outside
/// client) with the given `isolation.level`, to the end of each partition.
pub fn kcat_values(brokers: &str, topic: &str, isolation: &str) -> Vec<Value> {
    let output = Command::new("kcat")
        .args(["-b", brokers, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%s\\n"])
        .args(["-X", &format!("isolation.level={isolation}")])
        .output()
        .expect("run kcat (Debian package kcat)");
    assert!(output.status.success(), "kcat failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout)
        .expect("kcat prints UTF-8")
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{topic}: {e}: {line}")))
        .collect()
}

/// How many times each payment id occurs in `values` (decisions).
pub fn count_payment_ids(values: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for value in values {
        let id = value["payment_id"].as_str().expect("a decision has a payment_id");
        *counts.entry(id.to_string()).or_insert(0) += 1;
    }
    counts
}

/// Sends `signal` (`-TERM`, `-STOP`, …) to a running `paystream run`.
pub fn signal(process: &Running, signal: &str) {
    let status = Command::new("kill").args([signal, &process.id().to_string()]).status().expect("run kill");
    assert!(status.success(), "kill {signal} {}", process.id());
}

/// Stops a running `paystream run` with SIGTERM (it finishes its batch and commits) and
/// returns its exit status, stdout and stderr.
pub fn terminate(mut running: Running) -> (std::process::ExitStatus, String, String) {
    use std::io::Read;
    signal(&running, "-TERM");
    let exit = running.wait().expect("wait for paystream run");
    let mut stdout = String::new();
    running.stdout.take().expect("piped stdout").read_to_string(&mut stdout).expect("read stdout");
    let mut stderr = String::new();
    running.stderr.take().expect("piped stderr").read_to_string(&mut stderr).expect("read stderr");
    (exit, stdout, stderr)
}

/// Polls `done` every `poll_ms` until it holds; panics with `what` after `seconds`.
pub fn wait_until(what: &str, seconds: u64, poll_ms: u64, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < std::time::Duration::from_secs(seconds), "timed out after {seconds} s: {what}");
        std::thread::sleep(std::time::Duration::from_millis(poll_ms));
    }
}

/// `promtool check metrics` (Prometheus's linter: names, units, help, types) accepts the
/// exposition `body`, or the test fails with what it says.
pub fn assert_promtool_accepts(body: &str) {
    use std::io::Write;
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian package prometheus)");
    promtool.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let linted = promtool.wait_with_output().unwrap();
    assert!(
        linted.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&linted.stdout),
        String::from_utf8_lossy(&linted.stderr)
    );
}
