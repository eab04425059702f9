//! Every kind of malformed input lands in the dead-letter topic with its reason and its
//! original bytes, while the pipeline keeps processing the good records around it.

mod common;

use std::collections::BTreeMap;

use base64::Engine as _;
use common::{check_exactly_once, dump, paystream, run_ok};

const GOOD: &str = r#"{"payment_id":"ID","payer_account_id":"C1","merchant_id":"M1","terminal_id":"T1","amount":"12.34","currency":"EUR","event_time":"2018-04-01T10:00:00Z","channel":"card_present"}"#;

fn good(id: &str) -> String {
    GOOD.replace("\"ID\"", &format!("\"{id}\""))
}

#[test]
fn every_malformed_input_is_dead_lettered_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let cases: Vec<(&str, String)> = vec![
        ("malformed_json", r#"{"payment_id": "x", "#.to_string()),
        ("malformed_json", "not json at all".to_string()),
        ("missing_field", good("m1").replace(r#""amount":"12.34","#, "")),
        ("invalid_field_type", good("t1").replace(r#""amount":"12.34""#, r#""amount":12.34"#)),
        ("invalid_field_type", good("t2").replace(r#""payer_account_id":"C1""#, r#""payer_account_id":["C1"]"#)),
        ("non_positive_amount", good("z1").replace("12.34", "0.00")),
        ("non_positive_amount", good("z2").replace("12.34", "-3.00")),
        ("amount_overflow", good("o1").replace("12.34", "92233720368547758.08")),
        ("invalid_amount", good("a1").replace("12.34", "1.234")),
        ("unknown_currency", good("u1").replace("EUR", "XYZ")),
        ("invalid_timestamp", good("ts1").replace("2018-04-01T10:00:00Z", "2018-02-30T10:00:00Z")),
        ("invalid_timestamp", good("ts2").replace("2018-04-01T10:00:00Z", "last tuesday")),
        (
            "record_too_large",
            good("big").replace(r#""channel""#, &format!(r#""padding":"{}","channel""#, "x".repeat(20_000))),
        ),
        ("invalid_field", good("ch").replace("card_present", "carrier_pigeon")),
        ("duplicate_payment_conflict", good("g1").replace("12.34", "99.99")),
        ("event_time_in_future", good("f1").replace("2018-04-01T10:00:00Z", "9999-12-31T23:59:59Z")),
    ];
    let mut lines = vec![good("g1"), good("g2")];
    for (_, line) in &cases {
        lines.push(line.clone());
        lines.push(good(&format!("between-{}", lines.len())));
    }
    lines.push(good("g2")); // an identical retry: counted, not decided twice, not an error
    let file = data.join("input.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    run_ok(data, &["replay", file.to_str().unwrap(), "--partitions", "1"]);
    let run = run_ok(data, &["run", "--no-metrics", "--until-idle"]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("retries 1"), "{stdout}");

    let letters = dump(data, "dead-letters");
    assert_eq!(letters.len(), cases.len(), "one dead letter per bad record: {letters:#?}");
    let engine = base64::engine::general_purpose::STANDARD;
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (reason, line) in &cases {
        expected.entry(reason.to_string()).or_default().push(line.clone());
    }
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for letter in &letters {
        let value = &letter["value"];
        let original = String::from_utf8(engine.decode(value["value_base64"].as_str().unwrap()).unwrap()).unwrap();
        assert!(!value["detail"].as_str().unwrap().is_empty(), "a reason needs a detail: {value}");
        assert_eq!(value["source_topic"], "payments");
        found.entry(value["reason"].as_str().unwrap().to_string()).or_default().push(original);
    }
    assert_eq!(found, expected);

    // The good records around the bad ones were all decided, none made late by the
    // payment from the year 9999.
    let decisions = dump(data, "decisions");
    assert_eq!(decisions.len(), 2 + cases.len());
    for decision in &decisions {
        let reasons = decision["value"]["reasons"].as_array().unwrap();
        assert!(!reasons.iter().any(|r| r == "late_event_features_inexact"), "{decision}");
    }
    check_exactly_once(data, true);
}

#[test]
fn unreadable_csv_rows_are_dead_lettered_by_replay() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let csv = "TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_TIME_SECONDS,TX_TIME_DAYS,TX_FRAUD,TX_FRAUD_SCENARIO\n\
               0,2018-04-01 00:00:31,596,3156,57.16,31,0,0,0\n\
               1,2018-04-01 00:02:10,4961,3412,81.51,130,0,0,0\n\
               2,2018-04-01 00:07:56,2,1365,146.00\n\
               3,2018-04-31 00:09:29,4128,8737,64.49,569,0,0,0\n\
               4,2018-04-01 00:10:34,927,9906,50.99,634,0,1,2\n\
               5,2018-04-01 00:11:00,15,77,85.64999999999999,660,0,1,3\n\
               6,2018-04-01 00:12:00,16,78,10.00,720,0,7,0\n";
    let file = data.join("input.csv");
    std::fs::write(&file, csv).unwrap();
    let replay = run_ok(data, &["replay", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&replay.stdout);
    assert!(stdout.contains("4 payments (1 amounts rounded"), "{stdout}");
    assert!(stdout.contains("2 labels, 3 unreadable rows"), "{stdout}");
    let letters = dump(data, "dead-letters");
    let reasons: Vec<_> = letters
        .iter()
        .map(|l| (l["value"]["reason"].as_str().unwrap().to_string(), l["value"]["source_offset"].as_u64().unwrap()))
        .collect();
    let malformed = |line| ("malformed_csv_row".to_string(), line);
    assert_eq!(reasons, vec![malformed(4), malformed(5), malformed(8)], "TX_FRAUD 7 is neither 0 nor 1");
    assert!(letters[2]["value"]["detail"].as_str().unwrap().contains("TX_FRAUD"), "{}", letters[2]);
    // The handbook layout's float amount is the nearest cent, not a dead letter.
    let payments = dump(data, "payments");
    let rounded = payments.iter().find(|p| p["value"]["payment_id"] == "5").expect("payment 5 published");
    assert_eq!(rounded["value"]["amount"], "85.65");
    run_ok(data, &["run", "--no-metrics", "--until-idle"]);
    let decisions = dump(data, "decisions");
    assert_eq!(decisions.len(), 4);
    assert!(dump(data, "dead-letters").len() == 3, "the pipeline dead-letters nothing more");
    let labels = dump(data, "labels");
    assert_eq!(labels.len(), 2, "only fraud is reported");
    assert!(labels.iter().all(|l| l["value"]["is_fraud"] == true));
    assert_eq!(labels[0]["value"]["reported_at"].as_str().unwrap().len(), 24);
}

#[test]
fn the_demo_ends_with_a_balanced_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let output = common::paystream()
        .args([
            "demo",
            "--customers",
            "300",
            "--terminals",
            "600",
            "--days",
            "20",
            "--no-progress",
            "--no-metrics",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("balanced: yes"), "{stdout}");
    assert!(stdout.contains("settlement       EUR"), "{stdout}");
    check_exactly_once(dir.path(), true);
}

#[test]
fn a_bad_fee_schedule_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    for (schedule, expected) in [
        (r#"{"default_basis_points": 120, "channels": {"pigeon": 5}}"#, "unknown variant `pigeon`"),
        (r#"{"default_basis_points": 120, "merchants": {"M1": 20000}}"#, "at most 10000 basis points"),
        (r#"{"default_basis_points": 120, "tax": 3}"#, "unknown field `tax`"),
    ] {
        let file = data.join("fees.json");
        std::fs::write(&file, schedule).unwrap();
        let output = paystream()
            .args(["run", "--no-metrics", "--until-idle", "--fee-schedule"])
            .arg(&file)
            .arg("--data-dir")
            .arg(data.join("d"))
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{schedule}: {stderr}");
    }
}

#[test]
fn a_line_too_large_for_the_log_is_dead_lettered_by_replay_and_the_rest_published() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let padded = |id: &str, bytes: usize| {
        good(id).replace(r#""channel""#, &format!(r#""padding":"{}","channel""#, "x".repeat(bytes)))
    };
    let file = data.join("input.jsonl");
    // 2 MB: more than the log takes; 900 KB: the log takes it, the pipeline refuses it.
    std::fs::write(&file, [good("p1"), padded("huge", 2_000_000), padded("big", 900_000), good("p2")].join("\n"))
        .unwrap();
    let replay = run_ok(data, &["replay", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&replay.stdout);
    assert!(stdout.contains("3 payments") && stdout.contains("1 unreadable rows"), "{stdout}");
    let letters = dump(data, "dead-letters");
    assert_eq!(letters.len(), 1);
    let letter = &letters[0]["value"];
    assert_eq!(letter["reason"], "record_too_large");
    assert_eq!(letter["source_offset"], 2, "the line number");
    assert!(letter["detail"].as_str().unwrap().starts_with("line 2: 2000"), "{letter}");
    run_ok(data, &["run", "--no-metrics", "--until-idle"]);
    let decided: Vec<_> = dump(data, "decisions").iter().map(|d| d["value"]["payment_id"].clone()).collect();
    assert_eq!(decided, ["p1", "p2"]);
    let letters = dump(data, "dead-letters");
    assert_eq!(letters.len(), 2, "the 900 KB record is dead-lettered by the pipeline, which goes on");
    let letter = &letters[1]["value"];
    assert_eq!(letter["reason"], "record_too_large");
    assert!(letter["detail"].as_str().unwrap().contains("the value holds the first 65536 of its 900"), "{letter}");
}
