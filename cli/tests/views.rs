//! Continuous views on the embedded log: every closed window is emitted once and equals
//! a batch query over the same rows, late rows are visible as late (and every decision
//! is in exactly one of the two), and a view killed with SIGKILL mid-run resumes where
//! it committed.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::views::{check_view, count, query, view_sql, views_file};
use common::{generate_csv, run_ok, start_run, wait_until};

const VIEW_NAME: &str = "outcomes_1h";

#[test]
fn a_view_emits_each_window_once_and_routes_late_rows() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("payments.csv");
    generate_csv(&csv, 100, 200, 5, 11);
    let data = dir.path().join("data");
    run_ok(&data, &["replay", csv.to_str().unwrap()]);
    // Partitions go idle at once: the watermark runs with the fastest partition, so rows
    // of slower partitions come late, and must show up as late.
    let views = views_file(dir.path(), VIEW_NAME, "0 seconds", "0 seconds");
    let output = run_ok(&data, &["run", "--no-metrics", "--until-idle", "--views", &views]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("materialized view outcomes_1h:"), "{said}");
    let (windows, late) = check_view(&data, &views, VIEW_NAME);
    assert!(windows > 50, "{windows} windows");
    eprintln!("{windows} windows, {late} late rows");

    // Keeping it again, alone (`paystream views`), reads nothing new and emits nothing again.
    run_ok(&data, &["views", "--no-metrics", "--until-idle", "--views", &views]);
    assert_eq!(check_view(&data, &views, VIEW_NAME), (windows, late));

    // Another definition under the same name is refused, not mixed in.
    let other = dir.path().join("other.sql");
    std::fs::write(&other, view_sql(VIEW_NAME, "1 hour", "0 seconds")).unwrap();
    let refused = common::paystream()
        .args(["run", "--no-metrics", "--until-idle", "--views", other.to_str().unwrap(), "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("another definition"));
}

#[test]
fn a_view_killed_mid_run_resumes_where_it_committed() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("payments.csv");
    generate_csv(&csv, 400, 800, 20, 5);
    let data = dir.path().join("data");
    run_ok(&data, &["replay", csv.to_str().unwrap()]);
    let payments = common::dump(&data, "payments").len();
    let views = views_file(dir.path(), VIEW_NAME, "2 hours", "1 second");
    let mut windows_before = 0;
    for round in 0..2 {
        let mut running = start_run(&data, &["--views", &views, "--max-input-rate", "1500"]);
        // Kill once the view has committed windows and the pipeline is still deciding.
        wait_until("the view emits windows", 120, 200, || {
            let topics = run_ok(&data, &["log", "topics"]);
            let text = String::from_utf8_lossy(&topics.stdout).to_string();
            let records = text
                .lines()
                .find(|line| line.starts_with("view.outcomes_1h\t"))
                .and_then(|line| line.split('\t').find_map(|field| field.strip_prefix("records=")))
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            records > windows_before + 20
        });
        std::thread::sleep(Duration::from_millis(300 * (round + 1)));
        running.kill().unwrap();
        running.wait().unwrap();
        let decided = common::decisions_so_far(&data);
        assert!(decided < payments, "round {round}: killed after the pipeline finished ({decided} of {payments})");
        windows_before = count(&data, &views, &format!("SELECT count(*) FROM {VIEW_NAME}"));
        eprintln!("round {round}: killed with {decided} of {payments} decided, {windows_before} windows emitted");
    }
    run_ok(&data, &["run", "--no-metrics", "--until-idle", "--views", &views]);
    let (windows, _) = check_view(&data, &views, VIEW_NAME);
    assert!(windows >= windows_before, "{windows} < {windows_before}");
    // Every hour of every outcome seen is there once.
    let rows =
        query(&data, &views, &format!("SELECT outcome, count(*) FROM {VIEW_NAME} GROUP BY outcome ORDER BY outcome"));
    let by_outcome: HashMap<&str, usize> = rows
        .iter()
        .map(|row| {
            let (outcome, n) = row.split_once(',').unwrap();
            (outcome, n.parse().unwrap())
        })
        .collect();
    assert!(by_outcome.get("approve").copied().unwrap_or(0) > 100, "{by_outcome:?}");
}
