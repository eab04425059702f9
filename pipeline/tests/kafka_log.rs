//! The Kafka log against the test broker (`deploy/local/servers.sh start kafka`, a real
//! Apache Kafka): transactions with their markers, `read_committed` isolation, fencing.
//! One test injects broker errors, which a real broker cannot be made to return, through
//! librdkafka's mock cluster.

use std::time::Duration;

use paystream_pipeline::log::kafka::{KafkaConfig, KafkaLog, mock_cluster};
use paystream_pipeline::log::partitioner::partition_for_key;
use paystream_pipeline::log::{Log, LogError, Membership, Record, Topic, Transaction};
use paystream_testkit::{kafka_brokers, unique_name};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// Commits a transaction of one record.
fn commit_one(log: &KafkaLog, topic: &Topic, key: &[u8], value: &[u8]) -> Result<(), LogError> {
    let mut transaction = Transaction::new();
    transaction.send(topic, key, value, 0)?;
    log.commit(transaction)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every record of a partition (a fetch may return fewer than asked for).
fn read_all(log: &KafkaLog, topic: &Topic, partition: u32) -> Vec<Record> {
    let mut records = Vec::new();
    let mut offset = log.offsets(topic, partition).unwrap().start;
    loop {
        let batch = log.fetch(topic, partition, offset, usize::MAX).unwrap();
        let Some(last) = batch.last() else { return records };
        offset = last.offset + 1;
        records.extend(batch);
    }
}

fn config(servers: &str, transactional_id: &str, producers: usize) -> KafkaConfig {
    KafkaConfig {
        transactional_id: transactional_id.into(),
        producers,
        replication_factor: 1,
        request_timeout_ms: 10_000,
        ..KafkaConfig::new(servers)
    }
}

fn open(servers: &str, transactional_id: &str, producers: usize) -> KafkaLog {
    KafkaLog::open(config(servers, transactional_id, producers)).expect("open the Kafka log")
}

#[test]
fn commits_records_and_positions_atomically_and_reads_them_back() {
    let servers = kafka_brokers();
    let id = unique_name("round_trip");
    let log = open(&servers, &id, 2);
    let events = log.create_topic(&format!("{id}-events"), 4).unwrap();
    let input = log.create_topic(&format!("{id}-input"), 2).unwrap();
    assert_eq!(log.create_topic(&events.name, 4).unwrap(), events, "creating an existing topic returns it");
    assert_eq!(log.topic(&events.name).unwrap().partitions, 4);
    assert!(matches!(log.topic(&format!("{id}-missing")), Err(LogError::UnknownTopic(_))));
    let names: Vec<String> = log.topics().iter().map(|t| t.name.to_string()).collect();
    assert!(names.contains(&events.name.to_string()) && names.contains(&input.name.to_string()), "{names:?}");

    let mut transaction = Transaction::new();
    for i in 0..300u32 {
        let key = format!("key-{}", i % 17);
        transaction.send(&events, key.as_bytes(), format!("value-{i}").as_bytes(), 1_000 + i64::from(i)).unwrap();
    }
    transaction.set_position("g", &input, 1, 42);
    log.commit(transaction).unwrap();
    assert_eq!(log.commit_sequence(), 1);
    // The broker writes the commit markers after it acknowledged the commit: a
    // read_committed reader sees the records a moment later.
    let visible = || (0..4).map(|p| log.offsets(&events, p).unwrap().end).sum::<u64>();
    wait_until("the commit markers", || visible() >= 300 + 4);

    let mut seen = 0;
    for partition in 0..4 {
        let offsets = log.offsets(&events, partition).unwrap();
        let records = read_all(&log, &events, partition);
        if !records.is_empty() {
            assert_eq!(offsets.end - offsets.start, records.len() as u64 + 1, "the records and a commit marker");
        }
        for (i, record) in records.iter().enumerate() {
            assert_eq!(record.offset, i as u64, "one transaction's records are dense");
            assert_eq!(partition_for_key(&record.key, 4), partition, "keys land where murmur2 says");
            let n: i64 = std::str::from_utf8(&record.value).unwrap()["value-".len()..].parse().unwrap();
            assert_eq!(record.timestamp_ms, 1_000 + n);
        }
        seen += records.len();
        // Reading on from a middle offset, and at the end.
        if records.len() > 2 {
            assert_eq!(log.fetch(&events, partition, 1, 1).unwrap()[0].offset, 1);
        }
        assert!(log.fetch(&events, partition, offsets.end, 10).unwrap().is_empty());
    }
    assert_eq!(seen, 300);
    assert_eq!(log.committed_position("g", &input, 1).unwrap(), Some(42));
    assert_eq!(log.committed_position("g", &input, 0).unwrap(), None);
    assert!(matches!(log.fetch(&events, 4, 0, 1), Err(LogError::UnknownPartition { .. })));
    assert!(matches!(log.fetch(&events, 0, 1_000_000, 1), Err(LogError::OffsetOutOfRange { .. })));
    drop(log);

    // Another process (a restart) sees the positions: they live in the positions topic.
    let log = open(&servers, &id, 1);
    assert_eq!(log.committed_position("g", &input, 1).unwrap(), Some(42));
    let mut transaction = Transaction::new();
    transaction.set_position("g", &input, 1, 50);
    log.commit(transaction).unwrap();
    assert_eq!(log.committed_position("g", &input, 1).unwrap(), Some(50));
    drop(log);
    assert_eq!(open(&servers, &id, 1).committed_position("g", &input, 1).unwrap(), Some(50));
}

/// Upstream producers that use Kafka's default partitioner (murmur2, as the Java client
/// and librdkafka's `murmur2_random`) put a key where paystream reads it.
#[test]
fn upstream_producers_and_paystream_agree_on_partitions() {
    let servers = kafka_brokers();
    let id = unique_name("partitions");
    let log = open(&servers, &id, 0);
    let payments = log.create_topic(&format!("{id}-payments"), 8).unwrap();
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", &servers).set("partitioner", "murmur2_random").create().unwrap();
    let keys: Vec<String> = (0..500).map(|i| format!("customer-{i}")).collect();
    for key in &keys {
        producer.send(BaseRecord::to(&payments.name).key(key).payload(key)).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let mut seen = 0;
    for partition in 0..8 {
        for record in read_all(&log, &payments, partition) {
            assert_eq!(partition_for_key(&record.key, 8), partition, "{:?}", record.key);
            seen += 1;
        }
    }
    assert_eq!(seen, keys.len());
}

/// A producer fenced by the broker (another process opened the same transactional id)
/// is a zombie: its commit fails, it refuses every later write, and moves no position;
/// the new process commits. On a real broker the second `init_transactions` bumps the
/// producer epoch, and the broker refuses the older epoch.
#[test]
fn a_fenced_zombie_cannot_write() {
    let servers = kafka_brokers();
    let id = unique_name("fencing");
    let zombie = open(&servers, &id, 1);
    let events = zombie.create_topic(&format!("{id}-events"), 2).unwrap();
    commit_one(&zombie, &events, b"k", b"before").unwrap();

    let successor = open(&servers, &id, 1);
    let mut transaction = Transaction::new();
    transaction.send(&events, b"k", b"zombie", 0).unwrap();
    transaction.set_position("g", &events, 0, 7);
    let error = zombie.commit(transaction).unwrap_err();
    assert!(matches!(error, LogError::Fenced(_)), "{error}");
    assert!(matches!(commit_one(&zombie, &events, b"k", b"zombie again"), Err(LogError::Fenced(_))));
    assert_eq!(zombie.committed_position("g", &events, 0).unwrap(), None, "a failed commit moves no position");

    commit_one(&successor, &events, b"k", b"successor").unwrap();
    let partition = partition_for_key(b"k", 2);
    let values =
        || -> Vec<Vec<u8>> { read_all(&successor, &events, partition).into_iter().map(|r| r.value.to_vec()).collect() };
    wait_until("the successor's commit", || values().len() >= 2);
    assert_eq!(values(), [b"before".to_vec(), b"successor".to_vec()], "nothing of the zombie's is visible");
    assert_eq!(open(&servers, &format!("{id}-reader"), 0).committed_position("g", &events, 0).unwrap(), None);
}

/// Broker errors injected through librdkafka's mock cluster (a real broker cannot be
/// told to fail a request): a refused commit is reported, the transaction aborted,
/// positions unchanged, and the next commit goes through; errors on reads that the
/// client retries stay invisible.
#[test]
fn injected_broker_errors_fail_the_commit_cleanly_and_reads_retry() {
    let cluster = mock_cluster(3, 1, &[]).expect("start a mock cluster");
    cluster.create_topic("events", 2, 3).expect("create a topic");
    let servers = cluster.bootstrap_servers();
    let log = KafkaLog::open(KafkaConfig { replication_factor: 3, ..config(&servers, "errors", 1) }).unwrap();
    let events = log.topic("events").unwrap();

    cluster.request_errors(
        RDKafkaApiKey::AddPartitionsToTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
    );
    let mut transaction = Transaction::new();
    transaction.send(&events, b"k", b"refused", 0).unwrap();
    transaction.set_position("g", &events, 0, 1);
    let error = log.commit(transaction).unwrap_err();
    assert!(matches!(error, LogError::Kafka { .. }), "{error}");
    assert_eq!(log.committed_position("g", &events, 0).unwrap(), None);
    assert_eq!(log.commit_sequence(), 0);

    let mut transaction = Transaction::new();
    transaction.send(&events, b"k", b"accepted", 0).unwrap();
    transaction.set_position("g", &events, 0, 1);
    log.commit(transaction).unwrap();
    assert_eq!(log.committed_position("g", &events, 0).unwrap(), Some(1));

    cluster.request_errors(
        RDKafkaApiKey::Fetch,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ],
    );
    let partition = partition_for_key(b"k", 2);
    let values: Vec<Vec<u8>> = read_all(&log, &events, partition).into_iter().map(|r| r.value.to_vec()).collect();
    assert!(values.contains(&b"accepted".to_vec()));
}

fn outside_consumer(servers: &str, group: &str, isolation: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", group)
        .set("isolation.level", isolation)
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

/// The values an outside consumer reads from a one-partition topic, to its end.
fn read_to_end(consumer: &BaseConsumer) -> Vec<Vec<u8>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut values = Vec::new();
    loop {
        assert!(std::time::Instant::now() < deadline, "the outside consumer did not reach the end");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => values.push(message.payload().unwrap_or_default().to_vec()),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return values,
            Some(Err(error)) => panic!("outside consumer: {error}"),
            None => {}
        }
    }
}

/// A consumer outside paystream (any Kafka client) reads what paystream committed, and
/// nothing of a transaction that failed. (`cli/tests/kafka_crash.rs` shows aborted
/// records that did reach the broker, through kcat.)
#[test]
fn outside_consumers_read_committed_records_only() {
    let servers = kafka_brokers();
    let id = unique_name("interop");
    let log = open(&servers, &id, 1);
    let decisions = log.create_topic(&format!("{id}-decisions"), 1).unwrap();
    commit_one(&log, &decisions, b"c1", br#"{"payment_id":"p1"}"#).unwrap();
    // A transaction that never commits: its process was fenced.
    let zombie = open(&servers, &format!("{id}-zombie"), 1);
    let _successor = open(&servers, &format!("{id}-zombie"), 1);
    let mut transaction = Transaction::new();
    transaction.send(&decisions, b"c2", br#"{"payment_id":"p2"}"#, 0).unwrap();
    assert!(zombie.commit(transaction).is_err());
    commit_one(&log, &decisions, b"c3", br#"{"payment_id":"p3"}"#).unwrap();
    wait_until("the commit markers", || read_all(&log, &decisions, 0).len() >= 2);

    let committed = read_to_end(&outside_consumer(&servers, &format!("{id}-c"), "read_committed", &decisions.name));
    assert_eq!(committed, [br#"{"payment_id":"p1"}"#.to_vec(), br#"{"payment_id":"p3"}"#.to_vec()]);
}

/// Without transactions (for measuring what exactly-once costs) a commit still writes
/// every record and position, acknowledged by all replicas, before it returns.
#[test]
fn at_least_once_commits_write_records_and_positions() {
    let servers = kafka_brokers();
    let id = unique_name("plain");
    let log = KafkaLog::open(KafkaConfig { exactly_once: false, ..config(&servers, &id, 1) }).unwrap();
    let events = log.create_topic(&format!("{id}-events"), 2).unwrap();
    let mut transaction = Transaction::new();
    for i in 0..100u32 {
        transaction.send(&events, format!("k{i}").as_bytes(), b"v", 0).unwrap();
    }
    transaction.set_position("g", &events, 1, 9);
    log.commit(transaction).unwrap();
    let total: usize = (0..2).map(|p| read_all(&log, &events, p).len()).sum();
    assert_eq!(total, 100);
    drop(log);
    assert_eq!(open(&servers, &format!("{id}-reader"), 1).committed_position("g", &events, 1).unwrap(), Some(9));
}

/// A member's transactions carry its group generation, which moves whenever anyone joins
/// or leaves. Commits racing those rebalances still go through: the log retries a
/// transaction the coordinator refused for a stale generation with the member's new one.
#[test]
fn commits_go_through_while_the_group_rebalances() {
    let servers = kafka_brokers();
    let id = unique_name("rebalancing");
    let log = open(&servers, &id, 1);
    let topic = log.create_topic(&format!("{id}-input"), 4).unwrap();
    let group = format!("{id}-group");
    let member = log.join(&group, &topic).unwrap();
    wait_until("the member owns the partitions", || {
        !member.wait_for_change(0, Duration::from_millis(100)).1.is_empty()
    });

    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Others join and leave the group, over and over.
        let churn = scope.spawn(|| {
            for _ in 0..6 {
                let other: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &servers)
                    .set("group.id", &group)
                    .set("partition.assignment.strategy", "cooperative-sticky")
                    .set("session.timeout.ms", "6000")
                    .create()
                    .unwrap();
                other.subscribe(&[&topic.name]).unwrap();
                let until = std::time::Instant::now() + Duration::from_millis(1_500);
                while std::time::Instant::now() < until {
                    let _ = other.poll(Duration::from_millis(50));
                }
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut commits = 0u64;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let mut transaction = Transaction::new();
            transaction.send(&topic, b"k", b"v", 0).unwrap();
            transaction.set_position(&group, &topic, (commits % 4) as u32, commits + 1);
            log.commit(transaction).unwrap_or_else(|error| panic!("commit {commits} failed: {error}"));
            commits += 1;
        }
        churn.join().unwrap();
        assert!(commits > 100, "{commits} commits");
    });
}
