//! One conformance suite for the history stores: the embedded one, and the ScyllaDB store
//! on the test CQL node (`SCYLLA_NODES`, or Apache Cassandra 5.0 started by
//! `deploy/local/servers.sh start cassandra`), each test in a keyspace of its own.

use paystream_storage::history::{AggregateRow, DayTotals, HistoryRow, HistoryStore, MemoryHistoryStore};
use paystream_storage_scylla::{Blocking, ScyllaConfig, ScyllaStore};

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

fn scylla(test: &str) -> Blocking<ScyllaStore> {
    let keyspace = paystream_testkit::unique_name(test);
    let mut store =
        Blocking::<ScyllaStore>::connect(ScyllaConfig::new(&paystream_testkit::cql_nodes(), &keyspace).unwrap())
            .unwrap();
    store.migrate().unwrap();
    store.migrate().unwrap(); // idempotent
    store
}

fn stores(test: &str) -> Vec<(&'static str, Box<dyn HistoryStore>)> {
    vec![("memory", Box::new(MemoryHistoryStore::new())), ("scylla", Box::new(scylla(test)))]
}

#[test]
fn a_store_without_nodes_is_a_configuration_error() {
    assert!(ScyllaConfig::new("", "paystream_test").is_err());
    assert!(ScyllaConfig::new(" , ", "paystream_test").is_err());
}

#[test]
fn history_newest_first_and_aggregates_idempotent_under_replay() {
    for (name, mut store) in stores("newest_first") {
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

/// An account's history is newest first at any size, and `limit` takes the newest.
#[test]
fn history_is_newest_first_and_limited_to_the_newest() {
    for (name, mut store) in stores("history_order") {
        // 200 payments written in a scrambled order, in several calls.
        let rows: Vec<HistoryRow> =
            (0..200i64).map(|i| (i * 37) % 200).map(|t| row("c9", 10_000 + t * 1_000, &format!("q{t}"), t)).collect();
        for chunk in rows.chunks(64) {
            store.record_payments(chunk).unwrap();
        }
        let history = store.history("c9", 500).unwrap();
        assert_eq!(history.len(), 200, "{name}");
        assert!(history.windows(2).all(|w| w[0].event_time_ms > w[1].event_time_ms), "{name}: newest first");
        let newest: Vec<String> = store.history("c9", 3).unwrap().into_iter().map(|r| r.payment_id).collect();
        assert_eq!(newest, ["q199", "q198", "q197"], "{name}");
    }
}

/// Aggregates are written `USING TIMESTAMP <version>`: a sink that replays after a crash
/// rewrites versions the store already holds, and an older version arriving after a
/// newer one (a slow retry) loses; in any order, the newest version's totals stand.
#[test]
fn aggregate_versions_make_replays_idempotent_in_any_order() {
    for (name, mut store) in stores("versions") {
        let totals = |payments: i64| DayTotals { payments, amount_minor: payments * 250, declines: payments / 3 };
        let row = |partition, payments| AggregateRow {
            entity: "merchant:m9".into(),
            day: 17_700,
            source_partition: partition,
            totals: totals(payments),
        };
        // The first run: versions 100, 101, 102 (the decisions offsets that produced them).
        store.write_aggregates(&[row(0, 1), row(1, 1)], 100).unwrap();
        store.write_aggregates(&[row(0, 2)], 101).unwrap();
        store.write_aggregates(&[row(0, 3), row(1, 2)], 102).unwrap();
        // The replay after a crash writes the same versions again, oldest first.
        store.write_aggregates(&[row(0, 1), row(1, 1)], 100).unwrap();
        store.write_aggregates(&[row(0, 2)], 101).unwrap();
        store.write_aggregates(&[row(0, 3), row(1, 2)], 102).unwrap();
        assert_eq!(store.aggregate("merchant:m9", 17_700, 0).unwrap(), Some((totals(3), 102)), "{name}");
        assert_eq!(store.aggregate("merchant:m9", 17_700, 1).unwrap(), Some((totals(2), 102)), "{name}");
        // A stale retry after the newest version.
        store.write_aggregates(&[row(0, 1), row(1, 1)], 100).unwrap();
        assert_eq!(store.daily_totals("merchant:m9", 17_700).unwrap(), vec![(17_700, totals(5))], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_async_api_runs_inside_a_runtime_where_the_blocking_one_refuses() {
    fn assert_send<T: Send>(_: &T) {}
    let config = ScyllaConfig::new(&paystream_testkit::cql_nodes(), &paystream_testkit::unique_name("async")).unwrap();
    let mut store = ScyllaStore::connect(config.clone()).await.unwrap();
    store.migrate().await.unwrap();
    let rows = [row("c1", 1_000, "p1", 100)];
    let write = store.record_payments(&rows);
    assert_send(&write); // an axum handler may hold it across an await
    write.await.unwrap();
    assert_eq!(store.history("c1", 10).await.unwrap(), rows);
    let totals = DayTotals { payments: 1, amount_minor: 100, declines: 0 };
    let aggregate = AggregateRow { entity: "t1".into(), day: 17_622, source_partition: 0, totals };
    store.write_aggregates(&[aggregate], 5).await.unwrap();
    assert_eq!(store.aggregate("t1", 17_622, 0).await.unwrap(), Some((totals, 5)));
    assert_eq!(store.daily_totals("t1", 17_600).await.unwrap(), vec![(17_622, totals)]);
    // As an axum handler would misuse it: refused, never a panic.
    assert!(matches!(
        Blocking::<ScyllaStore>::connect(config),
        Err(paystream_storage::StorageError::InsideRuntime { .. })
    ));
}
