//! The stores `paystream run` picks from its configuration. Velocity features: counted in
//! Redis they equal the in-process ones on the same input, and SIGKILL + replay never
//! counts a payment twice in Redis (needs this machine's Redis;
//! `PAYSTREAM_TEST_REDIS_URL` overrides `redis://127.0.0.1:6379`). An unreachable or
//! misnamed store stops the run with a clear error before anything is decided.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{decisions_so_far, dump, run_ok, start_run};
use serde_json::Value;

fn redis_url() -> String {
    std::env::var("PAYSTREAM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("pstest:{test}:{}:{nanos}", std::process::id())
}

/// Publishes the same simulated payments (300 customers, 3 partitions; 12 days ≈ 7,200
/// payments) into a fresh data directory.
fn generate(data: &Path, days: u32) {
    let days = days.to_string();
    run_ok(
        data,
        &["generate", "--customers", "300", "--terminals", "600", "--days", &days, "--seed", "21", "--partitions", "3"],
    );
}

/// payment id → its decision's value.
fn decisions(data: &Path) -> HashMap<String, Value> {
    dump(data, "decisions")
        .into_iter()
        .map(|d| (d["value"]["payment_id"].as_str().unwrap().to_string(), d["value"].clone()))
        .collect()
}

/// Every velocity bucket under `prefix`, by counts key without the prefix: (events,
/// amount).
fn redis_counters(prefix: &str) -> BTreeMap<String, (i64, i64)> {
    let mut connection = redis::Client::open(redis_url()).unwrap().get_connection().expect("Redis must be running");
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*:c:*")).query(&mut connection).unwrap();
    keys.into_iter()
        .map(|key| {
            // Events, amount, TTLs set (ms): big-endian i64s.
            let value: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut connection).unwrap();
            let bucket: Vec<i64> = value.chunks(8).map(|b| i64::from_be_bytes(b.try_into().unwrap())).collect();
            (key[prefix.len()..].to_string(), (bucket[0], bucket[1]))
        })
        .collect()
}

fn delete_keys(prefix: &str) {
    let mut connection = redis::Client::open(redis_url()).unwrap().get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query(&mut connection).unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(keys).query(&mut connection).unwrap();
    }
}

#[test]
fn velocity_counted_in_redis_equals_the_in_process_velocity() {
    let dir = tempfile::tempdir().unwrap();
    let (memory_dir, redis_dir) = (dir.path().join("memory"), dir.path().join("redis"));
    let prefix = unique_prefix("equal");
    let url = redis_url();
    // One worker: the order of counts is the log's, so both stores see the same sequence.
    let run = |data: &Path, velocity: &str| {
        generate(data, 12);
        let args = ["run", "--until-idle", "--no-metrics", "--workers", "1", "--velocity", velocity];
        let more = ["--velocity-prefix", &prefix, "--merchant-velocity-review-min", "4"];
        run_ok(data, &[&args[..], &more[..]].concat());
        decisions(data)
    };
    let memory = run(&memory_dir, "memory");
    let redis = run(&redis_dir, &url);
    assert_eq!(memory.len(), redis.len());
    let mut with_velocity = 0;
    let mut busy = 0;
    for (id, decision) in &memory {
        assert_eq!(Some(decision), redis.get(id), "payment {id}: same decision, velocity included");
        let velocity = &decision["velocity"];
        if velocity.is_object() {
            with_velocity += 1;
            let count = velocity["merchant_tx_1h"].as_u64().expect("merchant payments have merchant velocity");
            assert!(count >= 1, "a payment counts itself: {decision}");
            assert!(velocity["merchant_amount_1h_minor"].as_i64().unwrap() > 0);
            if count >= 4 {
                busy += 1;
                assert_ne!(decision["outcome"], "approve", "the velocity rule reviews: {decision}");
                assert!(decision["reasons"].as_array().unwrap().iter().any(|r| r == "merchant_velocity_1h"));
            }
        }
    }
    assert!(with_velocity > 1_000, "scored merchant payments carry velocity ({with_velocity})");
    assert!(busy > 0, "some merchant hours reach the review threshold");
    // Each merchant payment was counted once in Redis.
    let counted: i64 = redis_counters(&prefix).values().map(|(n, _)| n).sum();
    assert_eq!(counted, with_velocity);
    delete_keys(&prefix);
}

#[test]
fn sigkill_and_replay_never_count_a_payment_twice_in_redis() {
    let dir = tempfile::tempdir().unwrap();
    let (crashed, clean) = (dir.path().join("crashed"), dir.path().join("clean"));
    let (crashed_prefix, clean_prefix) = (unique_prefix("crashed"), unique_prefix("clean"));
    let url = redis_url();
    // Long enough that three kills (the runs are capped at 15,000 payments/s) come before the end.
    generate(&crashed, 40);
    let total = dump(&crashed, "payments").len();
    let velocity = |prefix: &str| -> Vec<String> {
        ["--velocity", &url, "--velocity-prefix", prefix].into_iter().map(String::from).collect()
    };
    let crashed_args = velocity(&crashed_prefix);
    let crashed_args: Vec<&str> = crashed_args.iter().map(String::as_str).collect();
    let mut previous = 0;
    for (round, delay_ms) in [60u64, 300, 150].into_iter().enumerate() {
        let mut child = start_run(&crashed, &crashed_args);
        let started = Instant::now();
        while decisions_so_far(&crashed) <= previous {
            assert!(started.elapsed() < Duration::from_secs(60), "round {round}: no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        let decided = decisions_so_far(&crashed);
        assert!(decided < total, "round {round}: finished before the kill; kill earlier");
        previous = decided;
    }
    run_ok(&crashed, &[&["run", "--until-idle", "--no-metrics"][..], &crashed_args].concat());
    generate(&clean, 40);
    let clean_args = velocity(&clean_prefix);
    let clean_args: Vec<&str> = clean_args.iter().map(String::as_str).collect();
    run_ok(&clean, &[&["run", "--until-idle", "--no-metrics"][..], &clean_args].concat());

    // Every bucket holds what a run without crashes counted: nothing twice, nothing lost.
    let (after_crashes, without) = (redis_counters(&crashed_prefix), redis_counters(&clean_prefix));
    assert!(without.len() > 100, "{} buckets", without.len());
    assert_eq!(after_crashes, without);
    let counted: i64 = without.values().map(|(n, _)| n).sum();
    let merchant_decisions = decisions(&clean).values().filter(|d| d["velocity"]["merchant_tx_1h"].is_u64()).count();
    assert_eq!(counted, merchant_decisions as i64, "one count per scored merchant payment");
    delete_keys(&crashed_prefix);
    delete_keys(&clean_prefix);
}

#[test]
fn an_unreachable_or_misnamed_store_stops_the_run_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    generate(data, 2);
    let run = |velocity: &str| {
        common::paystream()
            .args(["run", "--until-idle", "--no-metrics", "--velocity", velocity, "--data-dir"])
            .arg(data)
            .output()
            .unwrap()
    };
    // Nothing listens on port 9 (discard): connection refused at once.
    let output = run("redis://127.0.0.1:9");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("Redis: connect to Redis"), "{stderr}");
    assert_eq!(decisions_so_far(data), 0, "nothing is decided without the store");
    let output = run("memcached://127.0.0.1:11211");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("expected off, memory or a redis:// URL"), "{stderr}");
    // The history store (ScyllaDB): no cluster there.
    let output = common::paystream()
        .args(["run", "--until-idle", "--no-metrics", "--scylla-nodes", "127.0.0.1:9", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("history store: ScyllaDB at 127.0.0.1:9"), "{stderr}");
    assert_eq!(decisions_so_far(data), 0);
}

/// A private Redis server on a free port (this machine's `redis-server` binary), no
/// persistence: killing it loses its counts, as a crashed cache would.
struct PrivateRedis {
    child: std::process::Child,
    port: u16,
}

impl PrivateRedis {
    fn start(port: u16) -> PrivateRedis {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (see README)");
        let redis = PrivateRedis { child, port };
        let started = Instant::now();
        while redis::Client::open(redis.url()).unwrap().get_connection().is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not start on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_redis_outage_shorter_than_the_retry_window_is_ridden_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    generate(data, 40);
    let total = dump(data, "payments").len();
    let port = {
        // A port the OS just handed out and released: free, almost surely.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let redis = PrivateRedis::start(port);
    let url = redis.url();
    let mut run = common::Running(
        common::paystream()
            .args(["run", "--until-idle", "--no-metrics", "--max-input-rate", "10000", "--velocity", &url])
            .arg("--data-dir")
            .arg(data)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while decisions_so_far(data) == 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(redis); // SIGKILL: connections reset, counts gone
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(decisions_so_far(data) < total, "the run must still be going when Redis comes back");
    let _redis = PrivateRedis::start(port);
    let status = run.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("velocity feature store failed; retrying"), "{stderr}");
    // Every payment decided exactly once (or dead-lettered, or a counted retry), the
    // ledger balanced and settlements reconciled, despite the outage.
    common::check_exactly_once(data, true);
}
