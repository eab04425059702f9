//! Kill the pipeline with SIGKILL mid-run, several times, and prove after each restart
//! that nothing was lost and nothing applied twice. Ends with a graceful SIGTERM stop.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Running, check_exactly_once, decisions_so_far, dump, paystream, run_ok, start_run};

#[test]
fn sigkill_mid_run_loses_nothing_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    run_ok(
        data,
        &["generate", "--customers", "400", "--terminals", "800", "--days", "40", "--seed", "11", "--partitions", "3"],
    );
    let total = dump(data, "payments").len();
    assert!(total > 20_000, "only {total} payments generated");

    // A deterministic schedule of kill delays (ms after the run first makes progress).
    let delays = [40u64, 250, 120, 400, 10];
    let mut previous = 0;
    for (round, delay) in delays.iter().enumerate() {
        let mut child = start_run(data, &[]);
        let started = Instant::now();
        while decisions_so_far(data) <= previous {
            assert!(started.elapsed() < Duration::from_secs(60), "round {round}: no progress");
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(*delay));
        child.kill().expect("SIGKILL"); // std's kill is SIGKILL on unix
        child.wait().unwrap();
        let decided = decisions_so_far(data);
        assert!(decided < total, "round {round}: the run finished before it was killed; kill earlier");
        assert!(decided > previous, "round {round}: no progress between kills");
        previous = decided;
        // After every crash, the committed state already satisfies every invariant.
        check_exactly_once(data, false);
    }

    // A graceful stop: SIGTERM finishes the batch in flight and commits.
    let mut child = start_run(data, &[]);
    let started = Instant::now();
    while decisions_so_far(data) <= previous && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill(2) with a valid pid and signal has no memory-safety preconditions.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "SIGTERM must exit cleanly: {status} {stderr}");
    assert!(stderr.contains("stopping"), "{stderr}");
    check_exactly_once(data, false);

    // Finally drain everything.
    run_ok(data, &["run", "--no-metrics", "--until-idle"]);
    let (decisions, dead_letters) = check_exactly_once(data, true);
    assert_eq!(decisions + dead_letters, total, "every payment decided or dead-lettered exactly once");
}

#[test]
fn run_serves_prometheus_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    run_ok(data, &["generate", "--customers", "50", "--terminals", "100", "--days", "5", "--seed", "1"]);
    let mut child = Running(
        paystream()
            .args(["run", "--metrics-addr", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let address = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "paystream exited before serving metrics");
        if let Some(url) = line.trim().strip_prefix("metrics: http://") {
            break url.trim_end_matches("/metrics").to_string();
        }
    };
    let expected = [
        "paystream_operator_records_total{kind=\"in\",operator=\"validate\"}",
        "paystream_batch_seconds_bucket",
        "paystream_event_to_decision_seconds_bucket",
        "paystream_lag_records{partition=\"0\",topic=\"payments\"}",
        "paystream_dead_letters_total{reason=\"malformed_json\"}",
        "paystream_build_info{profile=",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
    ];
    // Workers start independently (each sets its partitions' lag once it has restored
    // them): poll until every expected series is there, or time out saying which is not.
    let started = Instant::now();
    loop {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let decided = response.contains("paystream_decisions_total{outcome=\"approve\"} ")
            && !response.contains("paystream_decisions_total{outcome=\"approve\"} 0\n");
        let missing: Vec<&str> = expected.iter().copied().filter(|m| !response.contains(m)).collect();
        if decided && missing.is_empty() {
            // Prometheus's own linter accepts every metric (names, units, help, types).
            common::assert_promtool_accepts(response.split_once("\r\n\r\n").map_or("", |(_, body)| body));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "decisions counted: {decided}; missing {missing:?} in {response}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: see above.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert!(child.wait().unwrap().success());
}
