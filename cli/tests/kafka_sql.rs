//! `paystream query` on the test broker (a real Apache Kafka): the topic tables read the
//! committed records of every partition, without a consumer group, and equal what
//! `paystream log dump` shows, and `_partition` and `_offset` filters narrow the read
//! (offsets with gaps: a transaction's commit marker takes one).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{decided_log, dump, run_ok, topic};
use serde_json::Value;

fn query_csv(data: &Path, statement: &str) -> Vec<Vec<String>> {
    let output = run_ok(data, &["query", "--format", "csv", statement]);
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| line.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn topic_tables_on_kafka_equal_the_log_dump() {
    common::use_real_kafka("sql");
    let dir = tempfile::tempdir().unwrap();
    let data = decided_log(dir.path());

    let decisions = dump(&data, &topic("decisions"));
    let payments = dump(&data, &topic("payments"));
    assert!(decisions.len() > 500, "{} decisions", decisions.len());

    // Counts and sums per outcome, as the dump shows them.
    let mut by_outcome: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    let minor = |amount: &Value| -> i64 {
        let (units, cents) = amount.as_str().unwrap().split_once('.').unwrap();
        units.parse::<i64>().unwrap() * 100 + cents.parse::<i64>().unwrap()
    };
    for decision in &decisions {
        let value = &decision["value"];
        let entry = by_outcome.entry(value["outcome"].as_str().unwrap().to_string()).or_default();
        entry.0 += 1;
        entry.1 += minor(&value["amount"]);
    }
    let rows = query_csv(
        &data,
        "SELECT outcome, count(*), sum(amount_minor) FROM decisions GROUP BY outcome ORDER BY outcome",
    );
    let sql: BTreeMap<String, (u64, i64)> =
        rows.into_iter().map(|r| (r[0].clone(), (r[1].parse().unwrap(), r[2].parse().unwrap()))).collect();
    assert_eq!(sql, by_outcome);
    assert_eq!(query_csv(&data, "SELECT count(*) FROM payments"), vec![vec![payments.len().to_string()]]);

    // One partition, and a range of its offsets: what the dump holds there.
    let in_partition: Vec<u64> =
        decisions.iter().filter(|d| d["partition"] == 1).map(|d| d["offset"].as_u64().unwrap()).collect();
    assert_eq!(
        query_csv(&data, "SELECT count(*) FROM decisions WHERE _partition = 1"),
        vec![vec![in_partition.len().to_string()]]
    );
    let (low, high) = (in_partition[10], in_partition[60]);
    let expected = in_partition.iter().filter(|&&o| o >= low && o < high).count();
    let statement =
        format!("SELECT count(*) FROM decisions WHERE _partition = 1 AND _offset >= {low} AND _offset < {high}");
    assert_eq!(query_csv(&data, &statement), vec![vec![expected.to_string()]]);

    // A lower bound on `_timestamp` seeks through Kafka's time index: each partition is
    // read from its first record at or after the time, which the scan cap proves (the
    // cap is below the topic's size).
    let stamp = |d: &Value| d["timestamp_ms"].as_i64().unwrap();
    let mut stamps: Vec<i64> = decisions.iter().map(stamp).collect();
    stamps.sort_unstable();
    let since = stamps[stamps.len() / 2];
    let wanted = stamps.iter().filter(|&&t| t >= since).count();
    let mut read = 0;
    let partitions: std::collections::BTreeSet<u64> =
        decisions.iter().map(|d| d["partition"].as_u64().unwrap()).collect();
    for partition in partitions {
        let records: Vec<&Value> = decisions.iter().filter(|d| d["partition"] == partition).collect();
        if let Some(first) = records.iter().position(|d| stamp(d) >= since) {
            read += records.len() - first;
        }
    }
    assert!(read < decisions.len(), "the time splits the partitions: {read} of {}", decisions.len());
    let statement = format!("SELECT count(*) FROM decisions WHERE _timestamp >= to_timestamp_millis({since})");
    let output = run_ok(&data, &["query", "--format", "csv", "--scan-rows-max", &read.to_string(), &statement]);
    assert_eq!(String::from_utf8(output.stdout).unwrap().lines().nth(1), Some(wanted.to_string().as_str()));
}
