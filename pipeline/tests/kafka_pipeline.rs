//! The pipeline on Kafka (librdkafka's mock cluster, three brokers): payments written by
//! an ordinary Kafka producer are decided exactly once across crashes, with state
//! restored from the changelog topic and positions from the positions topic, and money
//! conserved in the postings.
//!
//! Crashes are injected at transaction boundaries (a commit that fails before it reaches
//! Kafka, after which the process's every commit fails, as if it had died): the mock
//! cluster neither hides aborted transactions nor fences a zombie, so a crash *inside* a
//! transaction cannot be judged on it (see `pipeline/src/log/kafka.rs`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use paystream_domain::{Decision, LedgerTransaction};
use paystream_operators::{OperatorConfig, default_model};
use paystream_pipeline::log::fault::CommitFault;
use paystream_pipeline::log::kafka::{KafkaConfig, KafkaLog, mock_cluster};
use paystream_pipeline::log::{Log, Membership};
use paystream_pipeline::{Pipeline, PipelineConfig, RunControl, RunMode, TopicNames};
use paystream_storage::FileSnapshotStore;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

const PAYMENTS: u32 = 3_000;
const MALFORMED: u32 = 7;

/// The Kafka log of a process that dies after some commits (see `CommitFault`).
type Dying = CommitFault<KafkaLog>;

fn pipeline(dir: &Path, log: Arc<dyn Log>) -> Pipeline {
    in_group(dir, log, None)
}

fn in_group(dir: &Path, log: Arc<dyn Log>, membership: Option<Arc<dyn Membership>>) -> Pipeline {
    let config = PipelineConfig {
        partitions: 4,
        workers: 2,
        batch_records_max: 60,
        snapshot_interval_batches: 4,
        ..PipelineConfig::default()
    };
    let snapshots = Arc::new(FileSnapshotStore::open(dir.join("snapshots")).unwrap());
    Pipeline { membership, ..Pipeline::new(log, snapshots, default_model(&OperatorConfig::default()), config) }
}

fn open_log(servers: &str) -> KafkaLog {
    open_process_log(servers, "paystream-test")
}

fn open_process_log(servers: &str, transactional_id: &str) -> KafkaLog {
    KafkaLog::open(KafkaConfig {
        transactional_id: transactional_id.into(),
        session_timeout_ms: 6_000,
        producers: 2,
        request_timeout_ms: 10_000,
        ..KafkaConfig::new(servers)
    })
    .unwrap()
}

/// Payments as any Kafka client writes them: JSON v1, keyed by payer, default partitioner.
fn publish_upstream(servers: &str) {
    publish_range(servers, 0, PAYMENTS);
}

fn publish_range(servers: &str, from: u32, to: u32) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for i in from..to {
        let payer = format!("c{}", i % 41);
        let value = format!(
            r#"{{"payment_id":"p{i}","payer_account_id":"{payer}","merchant_id":"m{}","terminal_id":"t{}","amount":"{}.{:02}","currency":"EUR","event_time":"{}","channel":"wallet"}}"#,
            i % 5,
            i % 11,
            1 + i % 700,
            i % 100,
            paystream_domain::time::format_rfc3339_ms(1_522_540_800_000 + i64::from(i) * 60_000)
        );
        producer.send(BaseRecord::to("payments").key(&payer).payload(&value)).unwrap();
        if i % 431 == 0 && i / 431 < MALFORMED {
            producer.send(BaseRecord::to("payments").key(&payer).payload("{\"payment_id\": broken")).unwrap();
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
    let cluster = mock_cluster(3, 4, &TopicNames::default().all()).unwrap();
    let servers = cluster.bootstrap_servers();
    publish_upstream(&servers);
    let dir = tempfile::tempdir().unwrap();

    // Three processes die after a few commits each; every one resumes where the last
    // committed transaction left it.
    for (round, commits) in [4, 7, 10].into_iter().enumerate() {
        let log = Arc::new(CommitFault::after(open_log(&servers), commits));
        let result = pipeline(dir.path(), log).run(RunMode::UntilIdle, &RunControl::new(true));
        assert!(result.is_err(), "round {round}: the process should have died");
    }
    // Broker errors the client retries (lost leadership, timeouts) cost nothing.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ],
    );
    let log: Arc<dyn Log> = Arc::new(open_log(&servers));
    let report = pipeline(dir.path(), log).run(RunMode::UntilIdle, &RunControl::new(true)).unwrap();
    assert!(report.input_records > 0);

    check_exactly_once(&open_log(&servers));
}

/// Every payment decided once, each malformed record dead-lettered once, one balanced
/// ledger transaction per approved payment.
fn check_exactly_once(log: &KafkaLog) {
    let decisions: Vec<Decision> =
        values(log, "decisions").iter().map(|v| serde_json::from_slice(v).unwrap()).collect();
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for decision in &decisions {
        *seen.entry(&decision.payment_id).or_default() += 1;
    }
    assert_eq!(seen.len() as u32, PAYMENTS, "every payment decided");
    assert!(seen.values().all(|&n| n == 1), "no payment decided twice");

    let dead_letters = values(log, "dead-letters");
    assert_eq!(dead_letters.len() as u32, MALFORMED, "each malformed record dead-lettered once");
    for letter in &dead_letters {
        let letter: serde_json::Value = serde_json::from_slice(letter).unwrap();
        assert_eq!(letter["source_topic"], "payments", "{letter}");
    }

    let ledger: Vec<LedgerTransaction> =
        values(log, "ledger").iter().map(|v| serde_json::from_slice(v).unwrap()).collect();
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

fn decided(log: &KafkaLog) -> usize {
    values(log, "decisions").len()
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
    let cluster = mock_cluster(3, 4, &TopicNames::default().all()).unwrap();
    let servers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let observer = KafkaLog::open(KafkaConfig { producers: 0, ..KafkaConfig::new(servers.as_str()) }).unwrap();
    publish_range(&servers, 0, 1_000);

    struct Process {
        log: Arc<Dying>,
        pipeline: Pipeline,
        control: Arc<RunControl>,
    }
    let start = |name: &str| {
        let log = Arc::new(CommitFault::after(open_process_log(&servers, name), i64::MAX));
        let payments = log.inner.topic("payments").unwrap();
        let member: Arc<dyn Membership> = log.inner.join("paystream", &payments).unwrap();
        let pipeline = in_group(&dir.path().join(name), log.clone(), Some(member));
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
        wait_until("a decides the first payments", || decided(&observer) >= 1_000);
        assert_eq!(a_metrics.assigned_partitions.get(), 4, "alone, a owns every partition");

        let b = start("b");
        let b_metrics = b.pipeline.metrics.clone();
        let b_run_control = b_control.clone();
        let running_b = scope.spawn(move || b.pipeline.run(RunMode::Forever, &b_run_control));
        wait_until("b gets partitions", || b_metrics.assigned_partitions.get() > 0);
        wait_until("a gives partitions up", || a_metrics.assigned_partitions.get() < 4);
        publish_range(&servers, 1_000, 2_000);
        wait_until("both decide", || decided(&observer) >= 2_000);
        assert!(b_metrics.input_records.get() > 0, "b processed its share");

        // a dies: its next commit fails and it stops; its partitions go to b.
        a_log.fail_now();
        publish_range(&servers, 2_000, PAYMENTS);
        assert!(running_a.join().unwrap().is_err(), "a died");
        wait_until("b owns everything", || b_metrics.assigned_partitions.get() == 4);
        wait_until("every payment decided", || decided(&observer) >= PAYMENTS as usize);
        b_control.stop();
        running_b.join().unwrap().unwrap();
        // Each input record was consumed by exactly one committed transaction: none
        // re-read from a stale position after a hand-over.
        assert_eq!(a_metrics.input_records.get() + b_metrics.input_records.get(), u64::from(PAYMENTS + MALFORMED));
    });
    check_exactly_once(&observer);
}
