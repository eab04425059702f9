//! The history sink (decisions → payment history and daily aggregates, ScyllaDB in
//! production) on the embedded log: a crash after the store took a slice but before the
//! sink committed its position, transient store errors (on the embedded history store),
//! and a restart of the CQL node in the middle of the run (the test node, Apache
//! Cassandra) leave every aggregate row counting each decision exactly once and every
//! decision once in its payer's history.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use paystream_domain::time::{MILLIS_PER_DAY, parse_rfc3339_ms};
use paystream_domain::{Decision, Outcome};
use paystream_operators::{OperatorConfig, default_model};
use paystream_pipeline::ensure_topics;
use paystream_pipeline::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use paystream_pipeline::log::{Log, Transaction};
use paystream_pipeline::{Pipeline, PipelineConfig, RunControl, RunMode};
use paystream_storage::history::{AggregateRow, DayTotals, HistoryRow, HistoryStore, MemoryHistoryStore};
use paystream_storage::{FileSnapshotStore, StorageError};
use paystream_storage_scylla::{Blocking, ScyllaConfig, ScyllaStore};
use paystream_testkit::{PaymentStream, servers, unique_name};

fn config() -> PipelineConfig {
    PipelineConfig { partitions: 3, workers: 2, batch_records_max: 100, ..PipelineConfig::default() }
}

/// `n` payments of 40 payers at 8 merchants, one every 7 minutes (about 5 days for 1,000).
fn publish(log: &EmbeddedLog, n: u32) {
    let topics = ensure_topics(log, &config()).unwrap();
    let stream = PaymentStream {
        id_prefix: "p",
        payers: 40,
        merchants: 8,
        terminals: 13,
        amount_units_max: 900,
        spacing_ms: 420_000,
        channel: "card_present",
    };
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let mut transaction = Transaction::new();
        for &i in chunk {
            let (payer, value) = stream.payment(i);
            let partition = paystream_domain::partitioner::partition_for_key(payer.as_bytes(), 3);
            transaction.send_to_partition(&topics.payments, partition, payer.as_bytes(), value.as_bytes(), 0).unwrap();
        }
        log.commit(transaction).unwrap();
    }
}

/// The embedded store shared across runs, with failures injected on chosen calls of
/// `write_aggregates`: `Transient` before writing (the sink retries), `CrashAfter`
/// after writing (the sink stops, its position not committed: a crash in between).
#[derive(Clone)]
struct Injected {
    store: Arc<Mutex<MemoryHistoryStore>>,
    calls: Arc<Mutex<u32>>,
    fault: fn(u32) -> Option<Fault>,
}

#[derive(Clone, Copy)]
enum Fault {
    Transient,
    CrashAfter,
}

impl HistoryStore for Injected {
    fn record_payments(&mut self, rows: &[HistoryRow]) -> Result<(), StorageError> {
        self.store.lock().unwrap().record_payments(rows)
    }

    fn write_aggregates(&mut self, rows: &[AggregateRow], version: i64) -> Result<(), StorageError> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            *calls
        };
        match (self.fault)(call) {
            Some(Fault::Transient) => {
                Err(StorageError::Scylla { context: "write daily aggregates".into(), why: "injected timeout".into() })
            }
            Some(Fault::CrashAfter) => {
                self.store.lock().unwrap().write_aggregates(rows, version)?;
                Err(StorageError::InvalidRecord("injected crash after the write".into()))
            }
            None => self.store.lock().unwrap().write_aggregates(rows, version),
        }
    }

    fn aggregate(&mut self, entity: &str, day: i64, partition: u32) -> Result<Option<(DayTotals, i64)>, StorageError> {
        self.store.lock().unwrap().aggregate(entity, day, partition)
    }

    fn history(&mut self, account_id: &str, limit: usize) -> Result<Vec<HistoryRow>, StorageError> {
        self.store.lock().unwrap().history(account_id, limit)
    }

    fn daily_totals(&mut self, entity: &str, since_day: i64) -> Result<Vec<(i64, DayTotals)>, StorageError> {
        self.store.lock().unwrap().daily_totals(entity, since_day)
    }
}

fn run(dir: &Path, store: &Injected) -> Result<(), paystream_pipeline::RuntimeError> {
    run_with(dir, Box::new(store.clone()), config())
}

fn run_with(
    dir: &Path,
    store: Box<dyn HistoryStore>,
    config: PipelineConfig,
) -> Result<(), paystream_pipeline::RuntimeError> {
    let log = Arc::new(EmbeddedLog::open(EmbeddedLogConfig::new(dir.join("log"))).unwrap());
    let snapshots = Arc::new(FileSnapshotStore::open(dir.join("snapshots")).unwrap());
    let pipeline =
        Pipeline::new(log, snapshots, default_model(&OperatorConfig::default()), config).with_history_store(store);
    pipeline.run(RunMode::UntilIdle, &RunControl::new(true)).map(|_| ())
}

/// The aggregates the decisions topic implies: per (entity, day, decisions partition).
fn expected(dir: &Path) -> (BTreeMap<(String, i64, u32), DayTotals>, usize) {
    let log = EmbeddedLog::open(EmbeddedLogConfig::new(dir.join("log"))).unwrap();
    let topic = log.topic("decisions").unwrap();
    let mut totals: BTreeMap<(String, i64, u32), DayTotals> = BTreeMap::new();
    let mut decisions = 0;
    for partition in 0..topic.partitions {
        for record in log.fetch(&topic, partition, 0, usize::MAX).unwrap() {
            let decision: Decision = serde_json::from_slice(&record.value).unwrap();
            decisions += 1;
            let day = parse_rfc3339_ms(&decision.event_time).unwrap().div_euclid(MILLIS_PER_DAY);
            let amount_minor =
                paystream_domain::money::Money::parse(&decision.amount, decision.currency).unwrap().minor_units();
            let entities = [
                Some(format!("customer:{}", decision.payer_account_id)),
                decision.merchant_id.map(|m| format!("merchant:{m}")),
            ];
            for entity in entities.into_iter().flatten() {
                let row = totals.entry((entity, day, partition)).or_default();
                row.add(DayTotals {
                    payments: 1,
                    amount_minor,
                    declines: i64::from(decision.outcome == Outcome::Decline),
                });
            }
        }
    }
    (totals, decisions)
}

#[test]
fn a_crash_between_store_and_position_and_store_errors_count_each_decision_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Injected {
        store: Arc::new(Mutex::new(MemoryHistoryStore::new())),
        calls: Arc::new(Mutex::new(0)),
        fault: |call| (call == 4).then_some(Fault::CrashAfter),
    };
    {
        let log = EmbeddedLog::open(EmbeddedLogConfig::new(dir.path().join("log"))).unwrap();
        publish(&log, 1_000);
    }
    let error = run(dir.path(), &store).expect_err("the injected crash stops the run");
    assert!(error.to_string().contains("injected crash"), "{error}");
    let stored_before = store.store.lock().unwrap().all_aggregates().len();
    assert!(stored_before > 0, "the store took slices before the crash");

    // The restart: the store times out now and then; the sink retries and catches up.
    let store = Injected { fault: |call| call.is_multiple_of(3).then_some(Fault::Transient), ..store };
    run(dir.path(), &store).unwrap();

    let (expected, decisions) = expected(dir.path());
    assert_eq!(decisions, 1_000, "every payment decided once");
    let stored: BTreeMap<(String, i64, u32), DayTotals> =
        store.store.lock().unwrap().all_aggregates().into_iter().map(|(key, (totals, _))| (key, totals)).collect();
    assert_eq!(stored, expected, "every aggregate row counts each decision once");
    assert!(stored.keys().any(|(entity, ..)| entity.starts_with("merchant:")));
    assert!(stored.keys().map(|(_, day, _)| day).collect::<std::collections::BTreeSet<_>>().len() >= 4, "several days");
    let mut inner = store.store.lock().unwrap();
    assert_eq!(inner.history_rows(), 1_000, "every decision once in its payer's history");
    let history = inner.history("c7", 1_000).unwrap();
    assert_eq!(history.len(), 25, "c7 paid 25 times");
    assert!(history.windows(2).all(|w| w[0].event_time_ms >= w[1].event_time_ms), "newest first");
    // A merchant's day, summed over the source partitions.
    let day = 1_522_540_800_000 / MILLIS_PER_DAY;
    let merchant_day: DayTotals = expected
        .iter()
        .filter(|((entity, d, _), _)| entity == "merchant:m3" && *d == day)
        .fold(DayTotals::default(), |mut sum, (_, t)| {
            sum.add(*t);
            sum
        });
    assert_eq!(inner.daily_totals("merchant:m3", day).unwrap().last(), Some(&(day, merchant_day)));
}

/// The ScyllaDB store on the test CQL node, whose `call`-th aggregate write stops the
/// node (`servers.sh stop cassandra`) and has it started again a little later, on
/// another thread: the write, and the sink's retries, meet a node that is down.
struct Restarting {
    inner: Blocking<ScyllaStore>,
    calls: u32,
    restart_at: u32,
    restart: Arc<Mutex<Option<std::thread::JoinHandle<String>>>>,
}

impl HistoryStore for Restarting {
    fn record_payments(&mut self, rows: &[HistoryRow]) -> Result<(), StorageError> {
        self.inner.record_payments(rows)
    }

    fn write_aggregates(&mut self, rows: &[AggregateRow], version: i64) -> Result<(), StorageError> {
        self.calls += 1;
        if self.calls == self.restart_at {
            servers("stop", "cassandra");
            *self.restart.lock().unwrap() = Some(std::thread::spawn(|| {
                std::thread::sleep(std::time::Duration::from_secs(2));
                servers("start", "cassandra")
            }));
        }
        self.inner.write_aggregates(rows, version)
    }

    fn aggregate(&mut self, entity: &str, day: i64, partition: u32) -> Result<Option<(DayTotals, i64)>, StorageError> {
        self.inner.aggregate(entity, day, partition)
    }

    fn history(&mut self, account_id: &str, limit: usize) -> Result<Vec<HistoryRow>, StorageError> {
        self.inner.history(account_id, limit)
    }

    fn daily_totals(&mut self, entity: &str, since_day: i64) -> Result<Vec<(i64, DayTotals)>, StorageError> {
        self.inner.daily_totals(entity, since_day)
    }
}

#[test]
fn the_sink_survives_a_cassandra_restart_with_nothing_lost_or_doubled() {
    // This node, not `SCYLLA_NODES`: the test stops and starts it.
    let nodes = servers("start", "cassandra");
    let scylla_config = ScyllaConfig::new(&nodes, &unique_name("history_sink")).unwrap();
    let mut store = Blocking::<ScyllaStore>::connect(scylla_config.clone()).unwrap();
    store.migrate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(EmbeddedLogConfig::new(dir.path().join("log"))).unwrap();
        publish(&log, 1_000);
    }
    let restart = Arc::new(Mutex::new(None));
    let store = Restarting { inner: store, calls: 0, restart_at: 3, restart: restart.clone() };
    // Slow enough that the workers still run while the node restarts: the sink retries
    // for a bounded time once they have finished.
    let slow = PipelineConfig { input_records_per_second_max: Some(20), ..config() };
    run_with(dir.path(), Box::new(store), slow).unwrap();
    let restarted = restart.lock().unwrap().take().expect("the node was stopped during the run");
    assert_eq!(restarted.join().unwrap(), nodes, "the node came back at its address");

    let (expected, decisions) = expected(dir.path());
    assert_eq!(decisions, 1_000);
    let mut store = Blocking::<ScyllaStore>::connect(scylla_config).unwrap();
    for ((entity, day, partition), totals) in &expected {
        let (stored, _version) = store.aggregate(entity, *day, *partition).unwrap().expect("an aggregate row");
        assert_eq!(stored, *totals, "{entity} day {day} partition {partition}");
    }
    // No row beyond those: each entity's days sum to the expected totals.
    let mut by_entity_day: BTreeMap<(String, i64), DayTotals> = BTreeMap::new();
    for ((entity, day, _), totals) in &expected {
        by_entity_day.entry((entity.clone(), *day)).or_default().add(*totals);
    }
    let entities: std::collections::BTreeSet<&String> = by_entity_day.keys().map(|(entity, _)| entity).collect();
    for entity in entities {
        let stored = store.daily_totals(entity, 0).unwrap();
        // Newest day first.
        let wanted: Vec<(i64, DayTotals)> =
            by_entity_day.iter().rev().filter(|((e, _), _)| e == entity).map(|((_, day), t)| (*day, *t)).collect();
        assert_eq!(stored, wanted, "{entity}");
    }
    let history_rows: usize = (0..40).map(|c| store.history(&format!("c{c}"), 10_000).unwrap().len()).sum();
    assert_eq!(history_rows, 1_000, "every decision once in its payer's history");
}
