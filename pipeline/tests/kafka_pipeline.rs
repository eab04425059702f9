//! The pipeline on the test broker (`deploy/local/servers.sh start kafka`, a real Apache
//! Kafka): payments written by an ordinary Kafka producer are decided exactly once across
//! crashes, with state restored from the changelog topic and positions from the positions
//! topic, and money conserved in the postings.
//!
//! Crashes here are injected at transaction boundaries (a commit that fails before it
//! reaches Kafka, after which the process's every commit fails, as if it had died);
//! `cli/tests/kafka_crash.rs` kills whole processes inside their transactions.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use paystream_domain::{Decision, LedgerTransaction};
use paystream_operators::{OperatorConfig, default_model};
use paystream_pipeline::log::fault::CommitFault;
use paystream_pipeline::log::kafka::{KafkaConfig, KafkaLog};
use paystream_pipeline::log::{Log, Membership};
use paystream_pipeline::{Pipeline, PipelineConfig, RunControl, RunMode, TopicNames};
use paystream_storage::FileSnapshotStore;
use paystream_testkit::{PaymentStream, kafka_brokers, unique_name};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const PAYMENTS: u32 = 3_000;
const MALFORMED: u32 = 7;

/// The Kafka log of a process that dies after some commits (see `CommitFault`).
type Dying = CommitFault<KafkaLog>;

/// One test's share of the test broker: its own topics and consumer group.
struct Broker {
    servers: String,
    id: String,
    names: TopicNames,
}

impl Broker {
    fn new(test: &str) -> Broker {
        let id = unique_name(test);
        let name = |role: &str| format!("{id}-{role}");
        let names = TopicNames {
            payments: name("payments"),
            labels: name("labels"),
            decisions: name("decisions"),
            ledger: name("ledger"),
            settlements: name("settlements"),
            dead_letters: name("dead-letters"),
            changelog: name("changelog"),
            transfers: name("transfers"),
            settlement_entries: name("settlement-entries"),
        };
        let broker = Broker { servers: kafka_brokers(), id, names };
        let log = broker.open(&format!("{}-setup", broker.id), 0);
        for topic in broker.names.all() {
            log.create_topic(topic, 4).unwrap();
        }
        broker
    }

    fn open(&self, transactional_id: &str, producers: usize) -> KafkaLog {
        KafkaLog::open(KafkaConfig {
            transactional_id: transactional_id.into(),
            session_timeout_ms: 6_000,
            producers,
            replication_factor: 1,
            request_timeout_ms: 10_000,
            ..KafkaConfig::new(self.servers.as_str())
        })
        .unwrap()
    }

    fn group(&self) -> String {
        format!("{}-group", self.id)
    }
}

fn pipeline(broker: &Broker, dir: &Path, log: Arc<dyn Log>) -> Pipeline {
    in_group(broker, dir, log, None)
}

fn in_group(broker: &Broker, dir: &Path, log: Arc<dyn Log>, membership: Option<Arc<dyn Membership>>) -> Pipeline {
    let config = PipelineConfig {
        partitions: 4,
        workers: 2,
        batch_records_max: 60,
        snapshot_interval_batches: 4,
        topics: broker.names.clone(),
        group_id: broker.group(),
        ..PipelineConfig::default()
    };
    let snapshots = Arc::new(FileSnapshotStore::open(dir.join("snapshots")).unwrap());
    let pipeline = Pipeline::new(log, snapshots, default_model(&OperatorConfig::default()), config);
    match membership {
        Some(membership) => pipeline.with_membership(membership),
        None => pipeline,
    }
}

fn open_log(broker: &Broker) -> KafkaLog {
    broker.open(&broker.id, 2)
}

/// Payments as any Kafka client writes them: JSON v1, keyed by payer, default partitioner.
fn publish_range(broker: &Broker, from: u32, to: u32) {
    let payments = broker.names.payments.as_str();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.servers)
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let stream = PaymentStream {
        id_prefix: "p",
        payers: 41,
        merchants: 5,
        terminals: 11,
        amount_units_max: 700,
        spacing_ms: 60_000,
        channel: "wallet",
    };
    for i in from..to {
        let (payer, value) = stream.payment(i);
        producer.send(BaseRecord::to(payments).key(&payer).payload(&value)).unwrap();
        if i % 431 == 0 && i / 431 < MALFORMED {
            producer.send(BaseRecord::to(payments).key(&payer).payload("{\"payment_id\": broken")).unwrap();
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn values(log: &KafkaLog, name: &str) -> Vec<Vec<u8>> {
    let topic = log.topic(name).unwrap();
    let mut values = Vec::new();
    for partition in 0..topic.partitions {
        let mut offset = log.offsets(&topic, partition).unwrap().start;
        loop {
            let records = log.fetch(&topic, partition, offset, usize::MAX).unwrap();
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            values.extend(records.into_iter().map(|r| r.value.to_vec()));
        }
    }
    values
}

#[test]
fn payments_from_kafka_producers_are_decided_exactly_once_across_crashes() {
    let broker = Broker::new("crashes");
    publish_range(&broker, 0, PAYMENTS);
    let dir = tempfile::tempdir().unwrap();

    // Three processes die after a few commits each; every one resumes where the last
    // committed transaction left it.
    for (round, commits) in [4, 7, 10].into_iter().enumerate() {
        let log = Arc::new(CommitFault::after(open_log(&broker), commits));
        let result = pipeline(&broker, dir.path(), log).run(RunMode::UntilIdle, &RunControl::new(true));
        assert!(result.is_err(), "round {round}: the process should have died");
    }
    let log: Arc<dyn Log> = Arc::new(open_log(&broker));
    let report = pipeline(&broker, dir.path(), log).run(RunMode::UntilIdle, &RunControl::new(true)).unwrap();
    assert!(report.input_records > 0);

    check_exactly_once(&broker, &open_log(&broker));
}

/// Every payment decided once, each malformed record dead-lettered once, one balanced
/// ledger transaction per approved payment.
fn check_exactly_once(broker: &Broker, log: &KafkaLog) {
    let names = &broker.names;
    let decisions: Vec<Decision> =
        values(log, &names.decisions).iter().map(|v| serde_json::from_slice(v).unwrap()).collect();
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for decision in &decisions {
        *seen.entry(&decision.payment_id).or_default() += 1;
    }
    assert_eq!(seen.len() as u32, PAYMENTS, "every payment decided");
    assert!(seen.values().all(|&n| n == 1), "no payment decided twice");

    let dead_letters = values(log, &names.dead_letters);
    assert_eq!(dead_letters.len() as u32, MALFORMED, "each malformed record dead-lettered once");
    for letter in &dead_letters {
        let letter: serde_json::Value = serde_json::from_slice(letter).unwrap();
        assert_eq!(letter["source_topic"], names.payments.as_str(), "{letter}");
    }

    let ledger: Vec<LedgerTransaction> =
        values(log, &names.ledger).iter().map(|v| serde_json::from_slice(v).unwrap()).collect();
    let approved = decisions.iter().filter(|d| d.outcome == paystream_domain::Outcome::Approve).count();
    assert_eq!(ledger.len(), approved, "one ledger transaction per approved payment");
    let mut ids: Vec<&str> = ledger.iter().map(|t| t.payment_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), ledger.len(), "no payment posted twice");
    for transaction in &ledger {
        let sum: i64 = transaction.postings.iter().map(|p| p.signed_minor_units()).sum();
        assert_eq!(sum, 0, "transaction {} is balanced", transaction.transaction_id);
    }
}

fn decided(broker: &Broker, log: &KafkaLog) -> usize {
    values(log, &broker.names.decisions).len()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(120), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two processes in one consumer group: the second joins while the first runs (the
/// first gives up half its partitions, committing before it lets go), then the first
/// dies and the second takes over everything, restoring the state the first committed.
#[test]
fn two_processes_share_partitions_and_the_survivor_takes_over() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("paystream_pipeline=debug,rdkafka=info")
        .try_init();
    let broker = Broker::new("group");
    let dir = tempfile::tempdir().unwrap();
    let observer = broker.open(&format!("{}-observer", broker.id), 0);
    publish_range(&broker, 0, 1_000);

    struct Process {
        log: Arc<Dying>,
        pipeline: Pipeline,
        control: Arc<RunControl>,
    }
    let start = |name: &str| {
        let log = Arc::new(CommitFault::after(broker.open(&format!("{}-{name}", broker.id), 2), i64::MAX));
        let payments = log.inner.topic(&broker.names.payments).unwrap();
        let member: Arc<dyn Membership> = log.inner.join(&broker.group(), &payments).unwrap();
        let pipeline = in_group(&broker, &dir.path().join(name), log.clone(), Some(member));
        Process { log, pipeline, control: Arc::new(RunControl::new(false)) }
    };
    // (A member holds partitions from the moment it joins: b joins only when it runs.)
    let a = start("a");
    let (a_log, a_metrics, a_control) = (a.log.clone(), a.pipeline.metrics.clone(), a.control.clone());
    let b_control = Arc::new(RunControl::new(false));
    /// Stops both processes if the test fails, so it ends instead of waiting on them.
    struct StopOnDrop(Vec<Arc<RunControl>>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.iter().for_each(|control| control.stop());
        }
    }
    std::thread::scope(|scope| {
        let _stop = StopOnDrop(vec![a_control, b_control.clone()]);
        // A process's thread owns it: when it returns, the process is gone (and so is its
        // group membership).
        let running_a = scope.spawn(move || a.pipeline.run(RunMode::Forever, &a.control));
        wait_until("a decides the first payments", || decided(&broker, &observer) >= 1_000);
        assert_eq!(a_metrics.assigned_partitions.get(), 4, "alone, a owns every partition");

        let b = start("b");
        let b_metrics = b.pipeline.metrics.clone();
        let b_run_control = b_control.clone();
        let running_b = scope.spawn(move || b.pipeline.run(RunMode::Forever, &b_run_control));
        wait_until("b gets partitions", || b_metrics.assigned_partitions.get() > 0);
        wait_until("a gives partitions up", || a_metrics.assigned_partitions.get() < 4);
        publish_range(&broker, 1_000, 2_000);
        wait_until("both decide", || decided(&broker, &observer) >= 2_000);
        assert!(b_metrics.input_records.get() > 0, "b processed its share");

        // a dies: its next commit fails and it stops; its partitions go to b.
        a_log.fail_now();
        publish_range(&broker, 2_000, PAYMENTS);
        assert!(running_a.join().unwrap().is_err(), "a died");
        // (b dying on the way fails the test with b's own error.)
        let b_done = || running_b.is_finished();
        wait_until("b owns everything", || b_metrics.assigned_partitions.get() == 4 || b_done());
        wait_until("every payment decided", || decided(&broker, &observer) >= PAYMENTS as usize || b_done());
        assert!(!b_done(), "b stopped early: {:?}", running_b.join().unwrap());
        b_control.stop();
        running_b.join().unwrap().unwrap();
        // Each input record was consumed by exactly one committed transaction: none
        // re-read from a stale position after a hand-over.
        assert_eq!(a_metrics.input_records.get() + b_metrics.input_records.get(), u64::from(PAYMENTS + MALFORMED));
    });
    check_exactly_once(&broker, &observer);
}
