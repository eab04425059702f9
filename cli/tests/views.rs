//! Continuous views on the embedded log: every closed window is emitted once and equals
//! a batch query over the same rows, late rows are visible as late (and every decision
//! is in exactly one of the two), and a view killed with SIGKILL mid-run resumes where
//! it committed.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::{generate_csv, run_ok, start_run, wait_until};

/// Decisions per outcome and hour, and their amounts.
const VIEW: &str = "CREATE MATERIALIZED VIEW outcomes_1h WITH (lateness = '{lateness}', idle_timeout = '{idle}') AS \
    SELECT date_bin(INTERVAL '1 hour', event_time) AS window_start, outcome, \
           count(*) AS decisions, sum(amount_minor) AS amount_minor \
    FROM decisions GROUP BY 1, 2;";

fn views_file(dir: &Path, lateness: &str, idle: &str) -> String {
    let path = dir.join("views.sql");
    std::fs::write(&path, VIEW.replace("{lateness}", lateness).replace("{idle}", idle)).unwrap();
    path.to_str().unwrap().to_string()
}

fn query(data: &Path, views: &str, statement: &str) -> Vec<String> {
    let output = run_ok(data, &["query", "--format", "csv", "--views", views, statement]);
    String::from_utf8(output.stdout).unwrap().lines().skip(1).map(str::to_string).collect()
}

fn count(data: &Path, views: &str, statement: &str) -> usize {
    query(data, views, statement)[0].parse().unwrap()
}

/// The view against a batch query over the same decisions less its late rows: the
/// windows it closed must be equal, row for row. Returns (windows, late rows).
fn check_view(data: &Path, views: &str) -> (usize, usize) {
    let decisions = common::dump(data, "decisions").len();
    let in_windows = count(data, views, "SELECT coalesce(sum(decisions), 0) FROM outcomes_1h");
    let late = count(data, views, "SELECT count(*) FROM outcomes_1h_late");
    let open = count(
        data,
        views,
        "SELECT count(*) FROM decisions WHERE date_bin(INTERVAL '1 hour', event_time) > \
         (SELECT coalesce(max(window_start), TIMESTAMP '1970-01-01T00:00:00Z') FROM outcomes_1h) \
         AND NOT EXISTS (SELECT 1 FROM outcomes_1h_late l WHERE l.source_partition = _partition \
         AND l.source_offset = _offset)",
    );
    assert_eq!(in_windows + late + open, decisions, "every decision is in one window, late, or still open");

    let batch = "SELECT date_bin(INTERVAL '1 hour', event_time) AS window_start, outcome, \
                 count(*) AS decisions, sum(amount_minor) AS amount_minor \
                 FROM decisions d LEFT ANTI JOIN outcomes_1h_late l \
                 ON l.source_partition = d._partition AND l.source_offset = d._offset \
                 GROUP BY 1, 2";
    let closed = "SELECT window_start, outcome, decisions, amount_minor FROM outcomes_1h";
    let differing = count(
        data,
        views,
        &format!(
            "SELECT count(*) FROM (({closed}) EXCEPT ALL (SELECT * FROM ({batch}) AS b WHERE window_start <= \
             (SELECT max(window_start) FROM outcomes_1h)) UNION ALL (SELECT * FROM ({batch}) AS b WHERE window_start <= \
             (SELECT max(window_start) FROM outcomes_1h)) EXCEPT ALL ({closed})) AS d"
        ),
    );
    assert_eq!(differing, 0, "the view's windows equal the batch query");
    let windows = count(data, views, "SELECT count(*) FROM outcomes_1h");
    let distinct =
        count(data, views, "SELECT count(*) FROM (SELECT DISTINCT window_start, outcome FROM outcomes_1h) AS w");
    assert_eq!(windows, distinct, "no window emitted twice");
    (windows, late)
}

#[test]
fn a_view_emits_each_window_once_and_routes_late_rows() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("payments.csv");
    generate_csv(&csv, 100, 200, 5, 11);
    let data = dir.path().join("data");
    run_ok(&data, &["replay", csv.to_str().unwrap()]);
    // Partitions go idle at once: the watermark runs with the fastest partition, so rows
    // of slower partitions come late, and must show up as late.
    let views = views_file(dir.path(), "0 seconds", "0 seconds");
    let output = run_ok(&data, &["run", "--no-metrics", "--until-idle", "--views", &views]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("materialized view outcomes_1h:"), "{said}");
    let (windows, late) = check_view(&data, &views);
    assert!(windows > 50, "{windows} windows");
    eprintln!("{windows} windows, {late} late rows");

    // Running again reads nothing new and emits nothing again.
    run_ok(&data, &["run", "--no-metrics", "--until-idle", "--views", &views]);
    assert_eq!(check_view(&data, &views), (windows, late));

    // Another definition under the same name is refused, not mixed in.
    let other = dir.path().join("other.sql");
    std::fs::write(&other, VIEW.replace("{lateness}", "1 hour").replace("{idle}", "0 seconds")).unwrap();
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
    let views = views_file(dir.path(), "2 hours", "1 second");
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
        windows_before = count(&data, &views, "SELECT count(*) FROM outcomes_1h");
        eprintln!("round {round}: killed with {decided} of {payments} decided, {windows_before} windows emitted");
    }
    run_ok(&data, &["run", "--no-metrics", "--until-idle", "--views", &views]);
    let (windows, _) = check_view(&data, &views);
    assert!(windows >= windows_before, "{windows} < {windows_before}");
    // Every hour of every outcome seen is there once.
    let rows = query(&data, &views, "SELECT outcome, count(*) FROM outcomes_1h GROUP BY outcome ORDER BY outcome");
    let by_outcome: HashMap<&str, usize> = rows
        .iter()
        .map(|row| {
            let (outcome, n) = row.split_once(',').unwrap();
            (outcome, n.parse().unwrap())
        })
        .collect();
    assert!(by_outcome.get("approve").copied().unwrap_or(0) > 100, "{by_outcome:?}");
}
