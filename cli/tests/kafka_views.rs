//! Continuous views on the test broker (a real Apache Kafka), kept by `paystream views`
//! beside a running pipeline: a view killed with SIGKILL mid-run resumes where it
//! committed; a second process keeping the same view fences the first, whose view stops
//! without writing again (its metrics say so); and in the end every closed window is
//! emitted once and equals a batch query over the same decisions, late rows visible as
//! late.

mod common;

use std::path::Path;

use common::served::http;
use common::views::{check_view, count, start_views, view_running, views_file};
use common::{generate_csv, run_ok, start_run, wait_until};

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
    let (mut first, metrics, _) = start_views(&data, Some(&views));
    let windows = wait_for_windows(&data, &views, &name, 10);
    // Its metrics say it runs and count what it emitted (set just after each commit).
    let emitted = format!("paystream_view_windows_emitted_total{{view=\"{name}\"}} ");
    wait_until("the keeper's metrics show its windows", 30, 200, || {
        let (_, exposition) = http(&metrics, "GET", "/metrics", None, None);
        let windows = exposition.lines().find_map(|line| line.strip_prefix(emitted.as_str())?.parse::<u64>().ok());
        view_running(&metrics, &name) == Some(true) && windows.is_some_and(|windows| windows > 0)
    });
    first.kill().unwrap();
    first.wait().unwrap();
    eprintln!("killed the view's keeper with {windows} windows emitted");

    // A second keeper fences the first: the first's view stops at its next commit and
    // says why; its process serves on, its metrics saying the view stopped, and fails
    // when it is stopped.
    let (mut zombie, zombie_metrics, zombie_said) = start_views(&data, Some(&views));
    let windows = wait_for_windows(&data, &views, &name, windows + 10);
    let (mut keeper, _, _) = start_views(&data, Some(&views));
    wait_until("the fenced keeper's view stops", 120, 200, || view_running(&zombie_metrics, &name) == Some(false));
    assert!(zombie_said.lock().unwrap().contains("fenced"), "{}", zombie_said.lock().unwrap());
    common::signal(&zombie, "-TERM");
    let status = zombie.wait().unwrap();
    assert!(!status.success(), "{}", zombie_said.lock().unwrap());
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
