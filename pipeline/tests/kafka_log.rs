//! The Kafka log against a real Kafka-protocol broker: librdkafka's mock cluster (three
//! brokers, in-process). What the mock does not implement (transaction markers,
//! read_committed isolation, offsets sent with transactions) is listed in
//! `pipeline/src/log/kafka.rs`; these tests stay inside what it does.

use std::time::Duration;

use paystream_pipeline::log::kafka::{KafkaConfig, KafkaLog, mock_cluster};
use paystream_pipeline::log::partitioner::partition_for_key;
use paystream_pipeline::log::{Log, LogError, Record, Transaction};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

fn cluster(topics: &[(&str, i32)]) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = mock_cluster(3, 1, &[]).expect("start a mock cluster");
    for (name, partitions) in topics {
        cluster.create_topic(name, *partitions, 3).expect("create a topic");
    }
    cluster
}

/// Every record of a partition (a fetch may return fewer than asked for).
fn read_all(log: &KafkaLog, topic: &paystream_pipeline::log::Topic, partition: u32) -> Vec<Record> {
    let mut records = Vec::new();
    let mut offset = log.offsets(topic, partition).unwrap().start;
    loop {
        let batch = log.fetch(topic, partition, offset, usize::MAX).unwrap();
        let Some(last) = batch.last() else { return records };
        offset = last.offset + 1;
        records.extend(batch);
    }
}

fn open(servers: &str, transactional_id: &str, producers: usize) -> KafkaLog {
    KafkaLog::open(KafkaConfig {
        transactional_id: transactional_id.into(),
        producers,
        request_timeout_ms: 10_000,
        ..KafkaConfig::new(servers)
    })
    .expect("open the Kafka log")
}

#[test]
fn commits_records_and_positions_atomically_and_reads_them_back() {
    let cluster = cluster(&[("events", 4), ("input", 2)]);
    let servers = cluster.bootstrap_servers();
    let log = open(&servers, "round-trip", 2);
    let events = log.topic("events").unwrap();
    let input = log.topic("input").unwrap();
    assert_eq!(events.partitions, 4);
    assert!(matches!(log.topic("missing"), Err(LogError::UnknownTopic(_))));
    assert_eq!(log.topics().iter().map(|t| &*t.name).collect::<Vec<_>>(), ["events", "input"]);

    let mut transaction = Transaction::new();
    for i in 0..300u32 {
        let key = format!("key-{}", i % 17);
        transaction.send(&events, key.as_bytes(), format!("value-{i}").as_bytes(), 1_000 + i64::from(i)).unwrap();
    }
    transaction.set_position("g", &input, 1, 42);
    log.commit(transaction).unwrap();
    assert_eq!(log.commit_sequence(), 1);

    let mut seen = 0;
    for partition in 0..4 {
        let offsets = log.offsets(&events, partition).unwrap();
        let records = read_all(&log, &events, partition);
        assert_eq!(records.len() as u64, offsets.end - offsets.start);
        for (i, record) in records.iter().enumerate() {
            assert_eq!(record.offset, i as u64, "dense offsets: the mock writes no markers");
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
    let log = open(&servers, "round-trip", 1);
    assert_eq!(log.committed_position("g", &input, 1).unwrap(), Some(42));
    let mut transaction = Transaction::new();
    transaction.set_position("g", &input, 1, 50);
    log.commit(transaction).unwrap();
    assert_eq!(log.committed_position("g", &input, 1).unwrap(), Some(50));
    drop(log);
    assert_eq!(open(&servers, "round-trip", 1).committed_position("g", &input, 1).unwrap(), Some(50));
}

/// Upstream producers that use Kafka's default partitioner (murmur2, as the Java client
/// and librdkafka's `murmur2_random`) put a key where paystream reads it.
#[test]
fn upstream_producers_and_paystream_agree_on_partitions() {
    let cluster = cluster(&[("payments", 8)]);
    let servers = cluster.bootstrap_servers();
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", &servers).set("partitioner", "murmur2_random").create().unwrap();
    let keys: Vec<String> = (0..500).map(|i| format!("customer-{i}")).collect();
    for key in &keys {
        producer.send(BaseRecord::to("payments").key(key).payload(key)).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let log = open(&servers, "partitions", 1);
    let payments = log.topic("payments").unwrap();
    let mut seen = 0;
    for partition in 0..8 {
        for record in read_all(&log, &payments, partition) {
            assert_eq!(partition_for_key(&record.key, 8), partition, "{:?}", record.key);
            seen += 1;
        }
    }
    assert_eq!(seen, keys.len());
}

/// A producer the broker fences (another process opened the same transactional id) is a
/// zombie: its commit fails, it refuses every later write, and moves no position; a new
/// process with the same ids commits. The mock cluster does not fence by itself (its
/// InitProducerId hands out a new producer id instead of bumping the epoch), so the
/// broker's answer to the zombie — PRODUCER_FENCED — is injected.
#[test]
fn a_fenced_zombie_cannot_write() {
    let cluster = cluster(&[("events", 2)]);
    let servers = cluster.bootstrap_servers();
    let zombie = open(&servers, "fencing", 1);
    let events = zombie.topic("events").unwrap();
    let mut transaction = Transaction::new();
    transaction.send(&events, b"k", b"before", 0).unwrap();
    zombie.commit(transaction).unwrap();

    cluster.request_errors(RDKafkaApiKey::AddPartitionsToTxn, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED]);
    let mut transaction = Transaction::new();
    transaction.send(&events, b"k", b"zombie", 0).unwrap();
    transaction.set_position("g", &events, 0, 7);
    let error = zombie.commit(transaction).unwrap_err();
    assert!(matches!(error, LogError::Fenced(_)), "{error}");
    let mut transaction = Transaction::new();
    transaction.send(&events, b"k", b"zombie again", 0).unwrap();
    assert!(matches!(zombie.commit(transaction), Err(LogError::Fenced(_))));
    assert_eq!(zombie.committed_position("g", &events, 0).unwrap(), None, "a failed commit moves no position");

    let successor = open(&servers, "fencing", 1);
    let mut transaction = Transaction::new();
    transaction.send(&events, b"k", b"successor", 0).unwrap();
    successor.commit(transaction).unwrap();
    let partition = partition_for_key(b"k", 2);
    let values: Vec<Vec<u8>> = read_all(&successor, &events, partition).into_iter().map(|r| r.value.to_vec()).collect();
    assert_eq!(values, [b"before".to_vec(), b"successor".to_vec()]);
}

/// Broker errors injected through the mock cluster: a refused commit is reported, the
/// transaction aborted, positions unchanged, and the next commit goes through; errors on
/// reads that the client retries stay invisible.
#[test]
fn injected_broker_errors_fail_the_commit_cleanly_and_reads_retry() {
    let cluster = cluster(&[("events", 2)]);
    let servers = cluster.bootstrap_servers();
    let log = open(&servers, "errors", 1);
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

/// A consumer outside paystream (any Kafka client) reads what paystream committed.
#[test]
fn outside_consumers_read_committed_records() {
    let cluster = cluster(&[("decisions", 1)]);
    let servers = cluster.bootstrap_servers();
    let log = open(&servers, "interop", 1);
    let decisions = log.topic("decisions").unwrap();
    let mut transaction = Transaction::new();
    transaction.send(&decisions, b"c1", br#"{"payment_id":"p1"}"#, 0).unwrap();
    log.commit(transaction).unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .set("group.id", "outside")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["decisions"]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(std::time::Instant::now() < deadline, "no record reached the outside consumer");
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.unwrap();
            assert_eq!(message.key(), Some(&b"c1"[..]));
            assert_eq!(message.payload(), Some(&br#"{"payment_id":"p1"}"#[..]));
            break;
        }
    }
}

/// Without transactions (for measuring what exactly-once costs) a commit still writes
/// every record and position, acknowledged by all replicas, before it returns.
#[test]
fn at_least_once_commits_write_records_and_positions() {
    let cluster = cluster(&[("events", 2)]);
    let servers = cluster.bootstrap_servers();
    let log = KafkaLog::open(KafkaConfig {
        exactly_once: false,
        transactional_id: "plain".into(),
        request_timeout_ms: 10_000,
        ..KafkaConfig::new(servers.as_str())
    })
    .unwrap();
    let events = log.topic("events").unwrap();
    let mut transaction = Transaction::new();
    for i in 0..100u32 {
        transaction.send(&events, format!("k{i}").as_bytes(), b"v", 0).unwrap();
    }
    transaction.set_position("g", &events, 1, 9);
    log.commit(transaction).unwrap();
    let total: usize = (0..2).map(|p| read_all(&log, &events, p).len()).sum();
    assert_eq!(total, 100);
    drop(log);
    assert_eq!(open(&servers, "plain-reader", 1).committed_position("g", &events, 1).unwrap(), Some(9));
}
