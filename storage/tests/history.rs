//! One conformance suite for the history stores: the embedded one always, ScyllaDB when
//! `SCYLLA_NODES` (comma-separated `host:port`) is set, e.g. with
//! `deploy/docker-compose.scylla.yml` up:
//! `SCYLLA_NODES=127.0.0.1:9042 cargo test -p paystream-storage --test history`.
//! No ScyllaDB can run on the project's development machines: without the variable the
//! suite runs on the embedded store and checks that ScyllaDB refuses to start without nodes.

use paystream_storage::history::{AggregateRow, DayTotals, HistoryRow, HistoryStore, MemoryHistoryStore};
use paystream_storage::scylla::{ScyllaConfig, ScyllaStore};

fn row(account: &str, time_ms: i64, id: &str, amount_minor: i64) -> HistoryRow {
    HistoryRow {
        account_id: account.into(),
        event_time_ms: time_ms,
        payment_id: id.into(),
        kind: "payment".into(),
        counterparty: "merchant:m1".into(),
        amount_minor,
        currency: "EUR".into(),
        outcome: "approve".into(),
    }
}

fn stores() -> Vec<(&'static str, Box<dyn HistoryStore>)> {
    let mut stores: Vec<(&'static str, Box<dyn HistoryStore>)> = vec![("memory", Box::new(MemoryHistoryStore::new()))];
    match std::env::var("SCYLLA_NODES") {
        Ok(nodes) => {
            let keyspace = format!("paystream_test_{}", std::process::id());
            let mut store = ScyllaStore::connect(ScyllaConfig::new(&nodes, &keyspace).unwrap()).unwrap();
            store.migrate().unwrap();
            store.migrate().unwrap(); // idempotent
            stores.push(("scylla", Box::new(store)));
        }
        Err(_) => {
            eprintln!("SCYLLA_NODES is not set: no ScyllaDB to test against (see README, \"ScyllaDB\")");
            assert!(ScyllaConfig::new("", "paystream_test").is_err(), "no nodes is a configuration error");
        }
    }
    stores
}

#[test]
fn history_newest_first_and_aggregates_idempotent_under_replay() {
    for (name, mut store) in stores() {
        let rows = vec![row("c1", 1_000, "p1", 100), row("c1", 3_000, "p3", 300), row("c1", 2_000, "p2", 200)];
        store.record_payments(&rows).unwrap();
        store.record_payments(&rows).unwrap(); // a replay rewrites the same rows
        let history = store.history("c1", 10).unwrap();
        let ids: Vec<&str> = history.iter().map(|r| r.payment_id.as_str()).collect();
        assert_eq!(ids, ["p3", "p2", "p1"], "{name}: newest first, each once");
        assert_eq!(history[0], rows[1], "{name}");
        assert_eq!(store.history("c1", 1).unwrap().len(), 1, "{name}");
        assert!(store.history("nobody", 10).unwrap().is_empty(), "{name}");

        let totals = |payments, amount_minor| DayTotals { payments, amount_minor, declines: payments / 2 };
        let aggregate =
            |partition, t| AggregateRow { entity: "t1".into(), day: 17_622, source_partition: partition, totals: t };
        store.write_aggregates(&[aggregate(0, totals(2, 500)), aggregate(1, totals(1, 100))], 10).unwrap();
        // Replayed (same version) and stale (older version) writes change nothing.
        store.write_aggregates(&[aggregate(0, totals(2, 500))], 10).unwrap();
        store.write_aggregates(&[aggregate(0, totals(1, 1))], 9).unwrap();
        assert_eq!(store.daily_totals("t1", 17_600).unwrap(), vec![(17_622, totals(3, 600))], "{name}");
        assert_eq!(store.aggregate("t1", 17_622, 0).unwrap(), Some((totals(2, 500), 10)), "{name}: row and version");
        assert_eq!(store.aggregate("t1", 17_622, 7).unwrap(), None, "{name}");
        // A newer version replaces the partition's totals.
        store.write_aggregates(&[aggregate(0, totals(4, 900))], 11).unwrap();
        assert_eq!(store.daily_totals("t1", 17_600).unwrap(), vec![(17_622, totals(5, 1_000))], "{name}");
        assert_eq!(store.daily_totals("t1", 17_623).unwrap(), vec![], "{name}: since a later day");
    }
}
