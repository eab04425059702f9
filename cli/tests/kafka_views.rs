//! Continuous views on the test broker (a real Apache Kafka), kept by `paystream views`
//! beside a running pipeline: a view killed with SIGKILL mid-run resumes where it
//! committed, a second process keeping the same view fences the first (whose view stops
//! without writing again), and in the end every closed window is emitted once and equals
//! a batch query over the same decisions, late rows visible as late.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::views::{check_view, count, views_file};
use common::{Running, generate_csv, paystream, run_ok, start_run, wait_until};

/// `paystream views` in the background, keeping the views of `views`.
fn start_views(data: &Path, views: &str) -> Running {
    Running(
        paystream()
            .args(["views", "--no-metrics", "--views", views, "--data-dir"])
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn paystream views"),
    )
}

/// Waits until the view has more than `above` windows; returns how many it has.
fn wait_for_windows(data: &Path, views: &str, name: &str, above: usize) -> usize {
    let mut windows = 0;
    wait_until("the view emits windows", 180, 300, || {
        windows = count(data, views, &format!("SELECT count(*) FROM {name}"));
        windows > above
    });
    windows
}

#[test]
fn a_view_on_kafka_survives_kills_and_fences_a_second_keeper() {
    common::use_real_kafka("views");
    let name = paystream_testkit::unique_name("outcomes");
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("payments.csv");
    generate_csv(&csv, 300, 600, 20, 5);
    let data = dir.path().join("data");
    run_ok(&data, &["replay", csv.to_str().unwrap()]);
    let views = views_file(dir.path(), &name, "2 hours", "1 second");
    let mut pipeline = start_run(&data, &["--max-input-rate", "1000"]);

    // Killed mid-run, then restarted: it resumes where it committed.
    let mut first = start_views(&data, &views);
    let windows = wait_for_windows(&data, &views, &name, 10);
    first.kill().unwrap();
    first.wait().unwrap();
    eprintln!("killed the view's keeper with {windows} windows emitted");

    // A second keeper fences the first: the first's view stops at its next commit, and
    // the process says why and fails.
    let mut zombie = start_views(&data, &views);
    let windows = wait_for_windows(&data, &views, &name, windows + 10);
    let mut keeper = start_views(&data, &views);
    let status = {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = zombie.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "the fenced keeper kept running");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let mut said = String::new();
    zombie.stderr.take().unwrap().read_to_string(&mut said).unwrap();
    assert!(!status.success(), "{said}");
    assert!(said.contains("fenced"), "{said}");
    let windows = wait_for_windows(&data, &views, &name, windows + 10);
    keeper.kill().unwrap();
    keeper.wait().unwrap();
    eprintln!("fenced the first keeper; killed the second with {windows} windows emitted");

    // The pipeline finishes, the view catches up; then the view equals the batch query.
    pipeline.kill().unwrap();
    pipeline.wait().unwrap();
    run_ok(&data, &["run", "--no-metrics", "--until-idle"]);
    let output = run_ok(&data, &["views", "--no-metrics", "--until-idle", "--views", &views]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains(&format!("materialized view {name}:")), "{said}");
    let (all, late) = check_view(&data, &views, &name);
    assert!(all >= windows && all > 100, "{all} windows, {windows} before");
    eprintln!("{all} windows, {late} late rows");
}
