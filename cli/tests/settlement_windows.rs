//! Settlement windows follow `--settlement-window-minutes`, and every closed window
//! reconciles with the postings that name it.

mod common;

use common::{dump, generate_csv, run_ok};

#[test]
fn hourly_settlement_windows_reconcile_with_their_postings() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("payments.csv");
    generate_csv(&csv, 100, 200, 2, 3);
    let data = dir.path().join("data");
    run_ok(&data, &["replay", csv.to_str().unwrap()]);
    run_ok(
        &data,
        &[
            "run",
            "--no-metrics",
            "--until-idle",
            "--settlement-window-minutes",
            "60",
            "--settlement-lateness-minutes",
            "5",
        ],
    );
    let settlements = dump(&data, "settlements");
    assert!(settlements.len() > 24, "{} hourly windows", settlements.len());
    for settlement in &settlements {
        let value = &settlement["value"];
        let start = paystream_domain::time::parse_rfc3339_ms(value["window_start"].as_str().unwrap()).unwrap();
        let end = paystream_domain::time::parse_rfc3339_ms(value["window_end"].as_str().unwrap()).unwrap();
        assert_eq!((end - start, start % 3_600_000), (3_600_000, 0), "{value}");
    }
    let reconciled = run_ok(&data, &["reconcile"]);
    assert!(String::from_utf8_lossy(&reconciled.stdout).contains("all match"));
}
