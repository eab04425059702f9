//! The [`Log`] on Apache Kafka (rdkafka / librdkafka).
//!
//! - **Commit** = one Kafka transaction: every record of the [`Transaction`] is produced
//!   to the partition the transaction names (murmur2 of the key, as Kafka's default
//!   partitioner), and every consumer position is written as a record of the compacted
//!   positions topic in the same transaction (see below); then `commit_transaction`.
//!   A failure aborts the transaction; nothing of it becomes visible to `read_committed`
//!   readers. A transaction the group coordinator refused because the group's generation
//!   moved (a member joined or left meanwhile) is sent again with the new generation,
//!   within the request timeout.
//! - **Producers**: `producers` transactional producers, `transactional.id` =
//!   `{transactional_id}-{slot}`, initialised at open. Opening a log with the same ids
//!   bumps the producer epoch and *fences* an older process still holding them (a zombie):
//!   its next commit fails with [`LogError::Fenced`] and the log refuses writes after.
//! - **Positions** live in `positions_topic` (compacted; key `group/topic/partition`,
//!   value the next offset in decimal), written in the same transaction as the records
//!   they account for — the way Kafka Connect keeps source offsets in its offsets topic.
//!   Every position is also sent to the group coordinator with
//!   `send_offsets_to_transaction`, so `kafka-consumer-groups` and lag monitors see the
//!   pipeline's groups. The positions topic is the source of truth: it is read to its end
//!   at open, and it is part of the same atomic write on every broker.
//! - **Reads**: one `read_committed` consumer per partition read, assigned (not
//!   subscribed) at the requested offset and kept there while the caller reads on.
//!   Transaction markers take offsets in Kafka; a read that stops on one resumes after it
//!   ([`Log::resume_offset`]).
//!
//! - **Consumer group** ([`KafkaLog::join`] → [`KafkaMember`], `member.rs`): a consumer
//!   subscribed to `payments` with cooperative-sticky assignment, its partitions paused
//!   (workers read through the log). On revoke, the callback removes the partitions,
//!   moves the generation, and blocks until the runtime has stopped, committed and
//!   snapshotted everything of the previous generation, so the next owner starts from a
//!   committed position. Offsets sent for the pipeline group carry the member's
//!   generation (KIP-447 fencing).
//! - **Markers trail the commit.** The broker writes a transaction's markers after it
//!   acknowledged `commit_transaction`, so for a moment `read_committed` readers (and
//!   `Log::offsets`, whose end is the last stable offset) do not see it. What must cover
//!   every transaction committed so far reads to [`Log::written_end`] (the high
//!   watermark), waiting out open transactions: a snapshot's changelog offset, a
//!   restore's replay, the positions read before a takeover, the until-idle check.
//! - **Topic configs**: the changelog has unbounded retention, not compaction (its
//!   records are batches of state deltas, which compaction by key would merge away); the
//!   positions topic is compacted.
//! - **At-least-once mode** (measurement only): idempotent producer, flush per commit.
//!
//! Files: `config.rs`, `member.rs`, `positions.rs` (position records), `mock.rs`.
//!
//! What librdkafka's mock cluster does not implement, and so what tests on it cannot show:
//! it writes no transaction markers and ignores `isolation.level`, so records of an
//! aborted or unfinished transaction are visible there; and it does not store offsets sent
//! with `send_offsets_to_transaction` (which is one reason positions live in a topic).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

mod config;
mod member;
mod mock;
mod positions;

use super::{CommitSequence, Log, LogError, PartitionOffsets, Record, Topic, Transaction};
use config::kafka;
use member::MemberContext;
use positions::{PositionKey, decode_position, encode_position};

pub use config::KafkaConfig;
pub use member::KafkaMember;
pub use mock::mock_cluster;

pub use crate::limits::TRANSACTION_RECORDS_MAX;
/// Pause between looks at a commit's delivery reports while records are unacknowledged.
const DELIVERY_POLL_INTERVAL: Duration = Duration::from_micros(200);
/// Pause before a transaction refused for a stale group generation is sent again (the
/// member's rebalance callbacks move its metadata meanwhile).
const GENERATION_RETRY_WAIT_MS: u64 = 50;
/// Pause between asking for a partition's offsets while it has no leader.
const LEADER_RETRY_WAIT_MS: u64 = 100;
/// Longest a read waits for records the broker says exist before it fails.
pub const FETCH_TIMEOUT_MS: u64 = 30_000;

/// Counts records the broker refused (at-least-once mode checks it after each flush; in
/// a transaction, `commit_transaction` reports them itself).
#[derive(Default)]
struct DeliveryContext {
    failed: AtomicU64,
    last_error: Mutex<Option<KafkaError>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        if let Err((error, _)) = result {
            self.failed.fetch_add(1, Ordering::SeqCst);
            *self.last_error.lock().expect("delivery error lock") = Some(error.clone());
        }
    }
}

/// A producer and whether it may still be used.
struct ProducerSlot {
    producer: BaseProducer<DeliveryContext>,
    /// Set after a fatal error (fenced, or the producer's state is unknown).
    failed: Option<String>,
}

/// A consumer reading one partition from where the last read stopped.
struct Reader {
    consumer: BaseConsumer,
    /// The offset the consumer delivers next (after skipped markers, when known).
    next_offset: Option<u64>,
    /// The last read found the partition's end at `next_offset`.
    at_end: bool,
}

type SharedReader = Arc<Mutex<Reader>>;

#[derive(Clone)]
enum GroupMetadataSource {
    Client(Arc<BaseConsumer>),
    Member(Weak<BaseConsumer<MemberContext>>),
}

impl GroupMetadataSource {
    fn metadata(&self) -> Option<ConsumerGroupMetadata> {
        match self {
            GroupMetadataSource::Client(consumer) => consumer.group_metadata(),
            GroupMetadataSource::Member(member) => member.upgrade()?.group_metadata(),
        }
    }
}

pub struct KafkaLog {
    config: KafkaConfig,
    admin: AdminClient<DefaultClientContext>,
    /// Metadata and watermark queries (read_committed: the end is the last stable offset).
    metadata: BaseConsumer,
    producers: Vec<Mutex<ProducerSlot>>,
    next_slot: AtomicUsize,
    readers: Mutex<HashMap<(Arc<str>, u32), SharedReader>>,
    /// Group metadata for `send_offsets_to_transaction`: a member's (generation and member
    /// id: the broker refuses offsets from a stale generation, KIP-447) or a plain client's.
    groups: Mutex<HashMap<String, GroupMetadataSource>>,
    /// Read-uncommitted end offsets (the high watermark, past open transactions).
    metadata_uncommitted: BaseConsumer,
    /// How far the positions topic has been read.
    positions_read: Mutex<u64>,
    positions: RwLock<HashMap<PositionKey, u64>>,
    positions_topic: Topic,
    commits: CommitSequence,
}

impl KafkaLog {
    /// Connects, creates the positions topic if missing, reads the positions (a writer
    /// waits for open transactions on them to end; a reader takes the committed ones),
    /// and initialises the transactional producers (fencing older holders of their ids).
    pub fn open(config: KafkaConfig) -> Result<KafkaLog, LogError> {
        let admin: AdminClient<DefaultClientContext> =
            config.client().create().map_err(kafka("create the Kafka admin client"))?;
        let metadata_client = |isolation: &str| -> Result<BaseConsumer, LogError> {
            config
                .client()
                .set("group.id", format!("{}-metadata", config.transactional_id))
                .set("enable.auto.commit", "false")
                .set("isolation.level", isolation)
                .set("allow.auto.create.topics", "false")
                .create()
                .map_err(kafka("create the Kafka metadata client"))
        };
        let metadata = metadata_client("read_committed")?;
        let metadata_uncommitted = metadata_client("read_uncommitted")?;
        let mut producers = Vec::with_capacity(config.producers);
        for slot in 0..config.producers {
            let id = format!("{}-{slot}", config.transactional_id);
            let mut client = config.client();
            client.set("enable.idempotence", "true").set("acks", "all").set("linger.ms", "1");
            if config.exactly_once {
                client
                    .set("transactional.id", &id)
                    .set("transaction.timeout.ms", config.transaction_timeout_ms.to_string());
            }
            let producer: BaseProducer<DeliveryContext> = client
                .create_with_context(DeliveryContext::default())
                .map_err(kafka(format!("create producer {id}")))?;
            if config.exactly_once {
                producer.init_transactions(config.timeout()).map_err(kafka(format!("init transactions of {id}")))?;
            }
            producers.push(Mutex::new(ProducerSlot { producer, failed: None }));
        }
        let positions_topic = Topic { name: config.positions_topic.as_str().into(), partitions: 1 };
        let mut log = KafkaLog {
            config,
            admin,
            metadata,
            producers,
            next_slot: AtomicUsize::new(0),
            readers: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            metadata_uncommitted,
            positions_read: Mutex::new(0),
            positions: RwLock::new(HashMap::new()),
            positions_topic,
            commits: CommitSequence::default(),
        };
        let positions_topic = match log.topic(&log.config.positions_topic) {
            Ok(topic) => topic,
            Err(LogError::UnknownTopic(_)) => {
                log.create(&log.config.positions_topic.clone(), 1, &[("cleanup.policy", "compact")])?
            }
            Err(error) => return Err(error),
        };
        log.positions_topic = positions_topic;
        if log.producers.is_empty() {
            // A reader sees the positions committed so far; it does not wait behind a
            // transaction a crashed writer left open (until transaction.timeout.ms).
            let committed_end = log.offsets(&log.positions_topic, 0)?.end;
            log.read_positions(committed_end)?;
        } else {
            log.refresh_positions()?;
        }
        Ok(log)
    }

    fn create(&self, name: &str, partitions: u32, configs: &[(&str, &str)]) -> Result<Topic, LogError> {
        let mut new_topic =
            NewTopic::new(name, partitions as i32, TopicReplication::Fixed(self.config.replication_factor));
        for (key, value) in configs {
            new_topic = new_topic.set(key, value);
        }
        let options = AdminOptions::new().operation_timeout(Some(self.config.timeout()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(LogError::io("start a runtime for Kafka admin requests"))?;
        let results = runtime
            .block_on(self.admin.create_topics([&new_topic], &options))
            .map_err(kafka(format!("create topic {name}")))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(LogError::Kafka {
                        context: format!("create topic {topic}"),
                        source: KafkaError::AdminOp(code),
                    });
                }
            }
        }
        // Metadata reaches every broker shortly after creation.
        let deadline = Instant::now() + self.config.timeout();
        loop {
            match self.topic(name) {
                Err(LogError::UnknownTopic(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(topic) if topic.partitions != partitions => {
                    return Err(LogError::TopicExists {
                        topic: name.to_string(),
                        existing: topic.partitions,
                        requested: partitions,
                    });
                }
                other => return other,
            }
        }
    }

    /// Reads the positions topic on to offset `until` (waiting, if a transaction another
    /// process left open hides what follows, until the broker aborts it).
    /// (low, high) watermarks of a partition as `client` sees them: a `read_committed`
    /// client's high is the last stable offset, a `read_uncommitted` one's the high
    /// watermark.
    /// A partition's offsets. Right after a topic is created its partitions have no
    /// leader for a moment: those answers are retried, within the request timeout.
    fn watermarks(&self, client: &BaseConsumer, topic: &Topic, partition: u32) -> Result<(u64, u64), LogError> {
        let deadline = Instant::now() + self.config.timeout();
        loop {
            match client.fetch_watermarks(&topic.name, partition as i32, self.config.timeout()) {
                Ok((low, high)) => return Ok((low.max(0) as u64, high.max(0) as u64)),
                Err(error) if is_leader_moving(&error) && Instant::now() < deadline => {
                    tracing::debug!(%error, topic = %topic.name, partition, "no partition leader yet; retrying");
                    std::thread::sleep(Duration::from_millis(LEADER_RETRY_WAIT_MS));
                }
                Err(error) => return Err(kafka(format!("offsets of {}/{partition}", topic.name))(error)),
            }
        }
    }

    fn read_positions(&self, until: u64) -> Result<(), LogError> {
        let topic = self.positions_topic.clone();
        let mut read = self.positions_read.lock().expect("positions read lock");
        let start = self.offsets(&topic, 0)?.start;
        // An open transaction (transaction.timeout.ms at most) may hide the rest.
        let wait_max = Duration::from_millis(self.config.transaction_timeout_ms + FETCH_TIMEOUT_MS);
        let mut read_now = Vec::new();
        *read = super::read_until(self, &topic, 0, (*read).max(start), until, wait_max, 10_000, |record| {
            read_now.push(decode_position(&record.key, &record.value).ok_or_else(|| {
                LogError::Corrupt(format!("{} offset {} is not a position record", topic.name, record.offset))
            })?);
            Ok::<(), LogError>(())
        })?;
        self.positions.write().expect("positions lock").extend(read_now);
        Ok(())
    }

    /// Joins `group` as a member consuming `topic` (cooperative-sticky assignment): the
    /// partitions of `topic` this process owns follow the group's decisions. Offsets the
    /// log commits for `group` carry the member's generation from then on.
    pub fn join(&self, group: &str, topic: &Topic) -> Result<Arc<KafkaMember>, LogError> {
        let (member, consumer) = KafkaMember::join(&self.config, group, topic)?;
        self.groups
            .lock()
            .expect("groups lock")
            .insert(group.to_string(), GroupMetadataSource::Member(Arc::downgrade(&consumer)));
        Ok(member)
    }

    fn reader(&self, topic: &Topic, partition: u32) -> Result<SharedReader, LogError> {
        let mut readers = self.readers.lock().expect("readers lock");
        if let Some(reader) = readers.get(&(topic.name.clone(), partition)) {
            return Ok(reader.clone());
        }
        let consumer: BaseConsumer = self
            .config
            .client()
            .set("group.id", format!("{}-reader", self.config.transactional_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "error")
            .set("fetch.wait.max.ms", "10")
            .set("allow.auto.create.topics", "false")
            .create()
            .map_err(kafka(format!("create a reader of {}/{partition}", topic.name)))?;
        let reader = Arc::new(Mutex::new(Reader { consumer, next_offset: None, at_end: false }));
        readers.insert((topic.name.clone(), partition), reader.clone());
        Ok(reader)
    }

    fn group(&self, group: &str) -> Result<GroupMetadataSource, LogError> {
        let mut groups = self.groups.lock().expect("groups lock");
        if let Some(source) = groups.get(group) {
            return Ok(source.clone());
        }
        let consumer: BaseConsumer = self
            .config
            .client()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(kafka(format!("create a client of group {group}")))?;
        let source = GroupMetadataSource::Client(Arc::new(consumer));
        groups.insert(group.to_string(), source.clone());
        Ok(source)
    }

    /// Produces the transaction's records and positions inside an open transaction.
    fn produce(&self, slot: &ProducerSlot, transaction: &Transaction) -> Result<(), LogError> {
        let producer = &slot.producer;
        for (topic, partition, batch) in transaction.batches() {
            for (timestamp_ms, key, value) in batch.iter() {
                let mut record = BaseRecord::<[u8], [u8]>::to(&topic.name).partition(*partition as i32).payload(value);
                if !key.is_empty() {
                    record = record.key(key);
                }
                if timestamp_ms > 0 {
                    record = record.timestamp(timestamp_ms);
                }
                send(producer, record)?;
            }
        }
        for position in transaction.positions() {
            let (key, value) =
                encode_position(&position.group, &position.topic, position.partition, position.next_offset);
            send(
                producer,
                BaseRecord::<[u8], [u8]>::to(&self.positions_topic.name).partition(0).key(&key).payload(&value),
            )?;
        }
        if !self.config.exactly_once {
            return Ok(()); // no transaction to put group offsets in
        }
        let mut by_group: HashMap<&str, TopicPartitionList> = HashMap::new();
        for position in transaction.positions() {
            by_group
                .entry(&position.group)
                .or_default()
                .add_partition_offset(
                    &position.topic,
                    position.partition as i32,
                    Offset::Offset(position.next_offset as i64),
                )
                .map_err(kafka("build the offsets of a transaction"))?;
        }
        for (group, offsets) in by_group {
            let metadata = self
                .group(group)?
                .metadata()
                .ok_or_else(|| LogError::Poisoned(format!("no group metadata for group {group}")))?;
            producer
                .send_offsets_to_transaction(&offsets, &metadata, self.config.timeout())
                .map_err(kafka(format!("send the offsets of group {group} to the transaction")))?;
        }
        Ok(())
    }

    /// Writes `transaction` in one Kafka transaction: begin, produce, commit.
    fn transact(&self, slot: &ProducerSlot, transaction: &Transaction) -> Result<(), LogError> {
        slot.producer.begin_transaction().map_err(kafka("begin a transaction"))?;
        self.produce(slot, transaction)?;
        // Delivered first, so commit_transaction finds nothing to flush (rdkafka's flush
        // polls in 100 ms steps, which would put a floor under every commit).
        self.drain(slot)?;
        slot.producer.commit_transaction(self.config.timeout()).map_err(kafka("commit a transaction"))
    }

    /// Aborts the open transaction. Abort purges the records still queued, whose delivery
    /// reports must be served while it runs: retried in short steps with polls between.
    fn abort(&self, slot: &ProducerSlot) -> Result<(), KafkaError> {
        let deadline = Instant::now() + self.config.timeout();
        loop {
            match slot.producer.abort_transaction(Duration::from_millis(100)) {
                Ok(()) => return Ok(()),
                Err(KafkaError::Transaction(error)) if error.is_retriable() && Instant::now() < deadline => {
                    slot.producer.poll(Duration::from_millis(1));
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Waits until the broker has answered for every record sent, serving delivery
    /// reports as they come (1 ms steps).
    fn drain(&self, slot: &ProducerSlot) -> Result<(), LogError> {
        let deadline = Instant::now() + self.config.timeout();
        while slot.producer.in_flight_count() > 0 {
            if Instant::now() > deadline {
                return Err(LogError::Kafka {
                    context: format!("{} records still unacknowledged", slot.producer.in_flight_count()),
                    source: KafkaError::Flush(RDKafkaErrorCode::RequestTimedOut),
                });
            }
            // Handles the delivery reports already there, then sleeps: rdkafka's poll with a
            // timeout spins once less than a millisecond is left (it rounds the wait down
            // to whole milliseconds), which took a core from the broker and the workers.
            slot.producer.poll(Duration::ZERO);
            if slot.producer.in_flight_count() > 0 {
                std::thread::sleep(DELIVERY_POLL_INTERVAL);
            }
        }
        Ok(())
    }

    /// At-least-once commit: waits until every record is acknowledged (acks=all).
    fn flush(&self, slot: &ProducerSlot) -> Result<(), LogError> {
        let context = slot.producer.context();
        let failed_before = context.failed.load(Ordering::SeqCst);
        self.drain(slot)?;
        if context.failed.load(Ordering::SeqCst) != failed_before {
            let error = context.last_error.lock().expect("delivery error lock").clone();
            return Err(LogError::Kafka {
                context: "the broker refused records".into(),
                source: error.unwrap_or(KafkaError::MessageProduction(RDKafkaErrorCode::Fail)),
            });
        }
        Ok(())
    }
}

/// Sends one record, waiting for room in the producer's queue.
fn send(producer: &BaseProducer<DeliveryContext>, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<(), LogError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                producer.poll(Duration::from_millis(10));
                record = returned;
            }
            Err((error, _)) => return Err(LogError::Kafka { context: "produce a record".into(), source: error }),
        }
    }
}

/// Whether a transaction error left the producer unusable (fenced or fatal).
fn is_fatal(error: &LogError) -> bool {
    match error {
        LogError::Kafka { source: KafkaError::Transaction(error), .. } => error.is_fatal(),
        LogError::Kafka { source, .. } => matches!(
            source.rdkafka_error_code(),
            Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch | RDKafkaErrorCode::Fenced)
        ),
        _ => false,
    }
}

/// The partition's leader is being elected or moved (a new topic, a broker restart).
fn is_leader_moving(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownPartition
        )
    )
}

/// The coordinator refused the transaction's offsets because the group's generation
/// moved (or is moving) since the member's metadata was read.
fn is_stale_generation(error: &LogError) -> bool {
    let LogError::Kafka { source, .. } = error else { return false };
    matches!(
        source.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::UnknownMemberId
        )
    )
}

impl Log for KafkaLog {
    fn create_topic(&self, name: &str, partitions: u32) -> Result<Topic, LogError> {
        if name.is_empty() || name.len() > 249 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(LogError::InvalidTopic(format!("{name:?} is not a valid Kafka topic name")));
        }
        match self.topic(name) {
            Ok(topic) if topic.partitions == partitions => Ok(topic),
            Ok(topic) => Err(LogError::TopicExists {
                topic: name.to_string(),
                existing: topic.partitions,
                requested: partitions,
            }),
            Err(LogError::UnknownTopic(_)) => {
                let configs: Vec<(&str, &str)> = (self.config.topic_properties.iter())
                    .filter(|(topic, _, _)| topic == name)
                    .map(|(_, key, value)| (key.as_str(), value.as_str()))
                    .collect();
                self.create(name, partitions, &configs)
            }
            Err(error) => Err(error),
        }
    }

    fn topic(&self, name: &str) -> Result<Topic, LogError> {
        let metadata = self
            .metadata
            .fetch_metadata(Some(name), self.config.timeout())
            .map_err(kafka(format!("metadata of topic {name}")))?;
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == name) else {
            return Err(LogError::UnknownTopic(name.to_string()));
        };
        match topic.error() {
            None if !topic.partitions().is_empty() => {
                Ok(Topic { name: name.into(), partitions: topic.partitions().len() as u32 })
            }
            _ => Err(LogError::UnknownTopic(name.to_string())),
        }
    }

    fn topics(&self) -> Vec<Topic> {
        let Ok(metadata) = self.metadata.fetch_metadata(None, self.config.timeout()) else {
            return Vec::new();
        };
        let mut topics: Vec<Topic> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.name().starts_with("__") && t.name() != &*self.positions_topic.name)
            .map(|t| Topic { name: t.name().into(), partitions: t.partitions().len() as u32 })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    fn fetch(&self, topic: &Topic, partition: u32, offset: u64, records_max: usize) -> Result<Vec<Record>, LogError> {
        topic.check_partition(partition)?;
        let reader = self.reader(topic, partition)?;
        let mut guard = reader.lock().expect("reader lock");
        let Reader { consumer, next_offset, at_end } = &mut *guard;
        if *next_offset != Some(offset) {
            let offsets = self.offsets(topic, partition)?;
            if offset < offsets.start || offset > offsets.end {
                return Err(LogError::offset_out_of_range(topic, partition, offset, offsets));
            }
            let mut assignment = TopicPartitionList::new();
            assignment
                .add_partition_offset(&topic.name, partition as i32, Offset::Offset(offset as i64))
                .map_err(kafka("build an assignment"))?;
            consumer.assign(&assignment).map_err(kafka(format!("assign {}/{partition}", topic.name)))?;
            *next_offset = Some(offset);
            *at_end = false;
        }
        let mut records = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(FETCH_TIMEOUT_MS);
        while records.len() < records_max {
            let wait = if records.is_empty() { Duration::from_millis(10) } else { Duration::ZERO };
            match consumer.poll(wait) {
                Some(Ok(message)) => {
                    let message_offset = message.offset() as u64;
                    *next_offset = Some(message_offset + 1);
                    *at_end = false;
                    records.push(Record {
                        offset: message_offset,
                        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
                        key: Bytes::copy_from_slice(message.key().unwrap_or_default()),
                        value: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
                    });
                }
                Some(Err(error)) => {
                    if error.rdkafka_error_code() != Some(RDKafkaErrorCode::OffsetOutOfRange)
                        && Instant::now() < deadline
                    {
                        // The client retries fetch errors itself (leader moves, timeouts)
                        // and reports them on the way; a lasting one ends the read below.
                        tracing::warn!(%error, topic = %topic.name, partition, "Kafka read error, retrying");
                        continue;
                    }
                    *next_offset = None;
                    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::OffsetOutOfRange) {
                        let offsets = self.offsets(topic, partition)?;
                        return Err(LogError::offset_out_of_range(topic, partition, offset, offsets));
                    }
                    return Err(LogError::Kafka { context: format!("read {}/{partition}", topic.name), source: error });
                }
                None if !records.is_empty() => break,
                None => {
                    // Nothing buffered: either the partition ends here, or records are on
                    // their way. The consumer's position steps over offsets that hold no
                    // records (transaction markers, aborted records).
                    let position = consumer.position().ok().and_then(|list| {
                        list.find_partition(&topic.name, partition as i32).and_then(|e| e.offset().to_raw())
                    });
                    let next = next_offset.unwrap_or(offset).max(position.unwrap_or(0).max(0) as u64);
                    *next_offset = Some(next);
                    let end = self.offsets(topic, partition)?.end;
                    if next >= end {
                        *at_end = true;
                        break;
                    }
                    if Instant::now() > deadline {
                        return Err(LogError::Kafka {
                            context: format!("read {}/{partition} at {next} (end {end})", topic.name),
                            source: KafkaError::MessageConsumption(RDKafkaErrorCode::RequestTimedOut),
                        });
                    }
                }
            }
        }
        Ok(records)
    }

    fn offsets(&self, topic: &Topic, partition: u32) -> Result<PartitionOffsets, LogError> {
        topic.check_partition(partition)?;
        let (start, end) = self.watermarks(&self.metadata, topic, partition)?;
        Ok(PartitionOffsets { start, end })
    }

    fn written_end(&self, topic: &Topic, partition: u32) -> Result<u64, LogError> {
        topic.check_partition(partition)?;
        Ok(self.watermarks(&self.metadata_uncommitted, topic, partition)?.1)
    }

    fn resume_offset(&self, topic: &Topic, partition: u32, offset: u64) -> u64 {
        let readers = self.readers.lock().expect("readers lock");
        let Some(reader) = readers.get(&(topic.name.clone(), partition)).cloned() else { return offset };
        drop(readers);
        let reader = reader.lock().expect("reader lock");
        match reader.next_offset {
            Some(next) if reader.at_end && next > offset => next,
            _ => offset,
        }
    }

    fn refresh_positions(&self) -> Result<(), LogError> {
        self.read_positions(self.written_end(&self.positions_topic, 0)?)
    }

    fn offset_for_time(&self, topic: &Topic, partition: u32, timestamp_ms: i64) -> Result<Option<u64>, LogError> {
        topic.check_partition(partition)?;
        let mut times = TopicPartitionList::new();
        times
            .add_partition_offset(&topic.name, partition as i32, Offset::Offset(timestamp_ms))
            .map_err(kafka("build a time query"))?;
        let found = self
            .metadata
            .offsets_for_times(times, self.config.timeout())
            .map_err(kafka(format!("offsets for times of {}/{partition}", topic.name)))?;
        let offset = found.find_partition(&topic.name, partition as i32).map(|element| element.offset());
        match offset {
            Some(Offset::Offset(offset)) if offset >= 0 => Ok(Some(offset as u64)),
            // No record that late: every record is earlier.
            Some(Offset::End) => Ok(Some(self.written_end(topic, partition)?)),
            _ => Ok(None),
        }
    }

    fn retention_keeps_unread(&self) -> bool {
        false
    }

    fn committed_position(&self, group: &str, topic: &Topic, partition: u32) -> Result<Option<u64>, LogError> {
        let positions = self.positions.read().expect("positions lock");
        Ok(positions.get(&(group.to_string(), topic.name.to_string(), partition)).copied())
    }

    fn commit(&self, transaction: Transaction) -> Result<(), LogError> {
        if transaction.is_empty() {
            return Ok(());
        }
        if self.producers.is_empty() {
            return Err(LogError::ReadOnly);
        }
        if transaction.record_count() as usize > TRANSACTION_RECORDS_MAX {
            return Err(LogError::RecordTooLarge { bytes: transaction.bytes(), limit: TRANSACTION_RECORDS_MAX });
        }
        // Any free producer; otherwise wait for the next in turn.
        let slots = self.producers.len();
        let mut slot = self.producers.iter().find_map(|slot| slot.try_lock().ok());
        if slot.is_none() {
            let index = self.next_slot.fetch_add(1, Ordering::Relaxed) % slots;
            slot = Some(self.producers[index].lock().expect("producer lock"));
        }
        let mut slot = slot.expect("a producer slot");
        if let Some(why) = &slot.failed {
            return Err(LogError::Fenced(why.clone()));
        }
        if !self.config.exactly_once {
            // Some records may be written when this fails: a retry writes them again (at
            // least once).
            self.produce(&slot, &transaction).and_then(|()| self.flush(&slot))?;
        } else {
            // The group's generation moves whenever a member joins or leaves, and the
            // coordinator refuses offsets sent with the one before. The transaction is
            // aborted and sent again with the member's new generation: whatever the
            // rebalance takes from this process, our revocation callback holds until the
            // runtime lets go, so no other member can own those partitions meanwhile.
            let deadline = Instant::now() + self.config.timeout();
            loop {
                let error = match self.transact(&slot, &transaction) {
                    Ok(()) => break,
                    Err(error) => error,
                };
                if is_fatal(&error) {
                    slot.failed = Some(error.to_string());
                    return Err(LogError::Fenced(error.to_string()));
                }
                // Nothing of an aborted transaction becomes visible to read_committed readers.
                if let Err(abort) = self.abort(&slot) {
                    slot.failed = Some(format!("{error}; aborting it failed too: {abort}"));
                    return Err(error);
                }
                if !is_stale_generation(&error) || Instant::now() >= deadline {
                    return Err(error);
                }
                tracing::info!(%error, "group generation moved during a commit: sending the transaction again");
                std::thread::sleep(Duration::from_millis(GENERATION_RETRY_WAIT_MS));
            }
        }
        drop(slot);
        {
            let mut positions = self.positions.write().expect("positions lock");
            for position in transaction.positions() {
                positions.insert(
                    (position.group.clone(), position.topic.to_string(), position.partition),
                    position.next_offset,
                );
            }
        }
        self.commits.advance();
        Ok(())
    }

    fn commit_sequence(&self) -> u64 {
        self.commits.get()
    }

    fn wait_for_commit(&self, seen: u64, timeout: Duration) -> u64 {
        self.commits.wait_past(seen, timeout)
    }
}
