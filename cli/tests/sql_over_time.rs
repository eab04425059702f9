//! Time on the embedded log, over a log decided in two halves with a moment `then`
//! between them:
//! - `open_settlements` (as of the statement's cut) and `open_settlements_as_of` (as of a
//!   log time, or of the ledger's and the settlements' positions) hold exactly the ledger transactions `paystream reconcile` found in
//!   windows still open at that moment, and never a window whose settlement had closed;
//! - a lower bound on `_timestamp` seeks past the frames of earlier records.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{dump, generate_csv, run_ok};
use paystream_domain::time::format_rfc3339_ms;
use paystream_pipeline::clock::now_ms;

/// The one value of a one-row, one-column statement.
fn value(data: &Path, statement: &str) -> i64 {
    let output = run_ok(data, &["query", "--format", "csv", statement]);
    let text = String::from_utf8(output.stdout).unwrap();
    let row = text.lines().nth(1).unwrap_or_else(|| panic!("no row from {statement}: {text}"));
    row.parse().unwrap_or_else(|_| panic!("{statement}: {row:?} is not a number"))
}

/// The ledger transactions `paystream reconcile` finds in windows still open.
fn reconciled_open(data: &Path) -> i64 {
    let output = run_ok(data, &["reconcile"]);
    let text = String::from_utf8(output.stdout).unwrap();
    let (before, _) = text.split_once(" in windows still open").unwrap_or_else(|| panic!("{text}"));
    before.rsplit('(').next().unwrap().trim().parse().unwrap()
}

/// The end of every partition of `topic`, as `open_settlements_as_of` takes positions:
/// `0:END,1:END,…`.
fn ends(data: &Path, topic: &str) -> String {
    let output = run_ok(data, &["log", "topics"]);
    let text = String::from_utf8(output.stdout).unwrap();
    let line = text.lines().find(|line| line.starts_with(&format!("{topic}\t"))).unwrap_or_else(|| panic!("{text}"));
    // name  partitions=N  records=R  0:[start,end) 1:[start,end) …
    line.split('\t')
        .nth(3)
        .unwrap()
        .split(' ')
        .map(|range| {
            let (partition, range) = range.split_once(':').unwrap();
            format!("{partition}:{}", range.trim_end_matches(')').rsplit(',').next().unwrap())
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A log in `dir/data` decided in two halves of a simulated CSV; returns it, the moment
/// between the halves (RFC 3339) and the ledger's and settlements' ends then, and what
/// `paystream reconcile` found open then and at the end.
fn decided_in_two_halves(dir: &Path) -> (std::path::PathBuf, String, (String, String), i64, i64) {
    let csv = dir.join("payments.csv");
    generate_csv(&csv, 100, 200, 12, 3);
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.collect();
    let (first, second) = rows.split_at(rows.len() / 2);
    let halves = [("first.csv", first), ("second.csv", second)].map(|(name, rows)| {
        let path = dir.join(name);
        std::fs::write(&path, format!("{header}\n{}\n", rows.join("\n"))).unwrap();
        path.to_str().unwrap().to_string()
    });
    let data = dir.join("data");
    run_ok(&data, &["replay", &halves[0]]);
    run_ok(&data, &["run", "--no-metrics", "--until-idle"]);
    let open_then = reconciled_open(&data);
    let positions = (ends(&data, "ledger"), ends(&data, "settlements"));
    // Every record so far is stamped before `then`, every later one after it.
    std::thread::sleep(Duration::from_millis(20));
    let then = format_rfc3339_ms(now_ms());
    std::thread::sleep(Duration::from_millis(20));
    run_ok(&data, &["replay", &halves[1]]);
    run_ok(&data, &["run", "--no-metrics", "--until-idle"]);
    let open_now = reconciled_open(&data);
    (data, then, positions, open_then, open_now)
}

#[test]
fn open_settlements_as_of_a_time_equal_what_reconcile_found_then() {
    let dir = tempfile::tempdir().unwrap();
    let (data, then, (ledger_then, settlements_then), open_then, open_now) = decided_in_two_halves(dir.path());
    assert!(open_then > 0 && open_now > 0, "open then {open_then}, now {open_now}");
    eprintln!("open then ({then}): {open_then} transactions; at the end: {open_now}");

    let sum_open = "SELECT coalesce(sum(transactions), 0)";
    assert_eq!(value(&data, &format!("{sum_open} FROM open_settlements")), open_now);
    assert_eq!(value(&data, &format!("{sum_open} FROM open_settlements_as_of('{then}')")), open_then);
    // The same as of the ledger's and the settlements' positions then.
    let at_positions = format!("open_settlements_as_of('{ledger_then}', '{settlements_then}')");
    assert_eq!(value(&data, &format!("{sum_open} FROM {at_positions}")), open_then, "{at_positions}");
    assert_eq!(value(&data, &format!("{sum_open} FROM open_settlements_as_of(0, 0)")), 0);
    assert_eq!(value(&data, "SELECT count(*) FROM open_settlements_as_of(TIMESTAMP '2000-01-01T00:00:00Z')"), 0);

    // None open now has closed; some open then have closed since, and their settlement
    // counts at least the payments that were waiting for it then.
    let joined = "FROM open_settlements o JOIN settlements s ON o.settlement_id = s.settlement_id";
    assert_eq!(value(&data, &format!("SELECT count(*) {joined}")), 0);
    let joined_then =
        format!("FROM open_settlements_as_of('{then}') o JOIN settlements s ON o.settlement_id = s.settlement_id");
    assert!(value(&data, &format!("SELECT count(*) {joined_then}")) > 0);
    assert_eq!(
        value(
            &data,
            &format!(
                "SELECT count(*) {joined_then} WHERE s.payment_count < o.payment_count OR s.gross_minor < o.gross_minor \
                 OR s.merchant_id <> o.merchant_id OR s.currency <> o.currency"
            )
        ),
        0,
        "a settlement states at least what was open in it, for its merchant and currency"
    );
    // Within one settlement the counts add up.
    assert_eq!(
        value(
            &data,
            "SELECT count(*) FROM open_settlements \
             WHERE payment_count + refund_count + chargeback_count > transactions OR transactions = 0"
        ),
        0
    );
}

#[test]
fn a_lower_bound_on_the_log_time_seeks_on_the_embedded_log() {
    let dir = tempfile::tempdir().unwrap();
    let (data, then, _, _, _) = decided_in_two_halves(dir.path());
    let then_ms = paystream_domain::time::parse_rfc3339_ms(&then).unwrap();
    let decisions = dump(&data, "decisions");
    let later = decisions.iter().filter(|d| d["timestamp_ms"].as_i64().unwrap() >= then_ms).count();
    assert!(later > 100 && later < decisions.len() - 100, "{later} of {} decisions after then", decisions.len());
    // The scan cap admits the later decisions only: the query passes only if the scan
    // starts at the first frame after `then` on every partition.
    eprintln!("{later} of {} decisions after {then}", decisions.len());
    let cap = later.to_string();
    let statement = format!("SELECT count(*) FROM decisions WHERE _timestamp >= '{then}'");
    let output = run_ok(&data, &["query", "--format", "csv", "--scan-rows-max", &cap, &statement]);
    assert_eq!(String::from_utf8(output.stdout).unwrap().lines().nth(1), Some(cap.as_str()));
    // Without the bound the same cap refuses the statement.
    let refused = common::paystream()
        .args(["query", "--scan-rows-max", &cap, "SELECT count(*) FROM decisions", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("more than"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
