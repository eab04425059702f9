//! How to reach Kafka and how paystream uses it: bootstrap servers, client properties,
//! transactional ids, timeouts, replication.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

use crate::log::LogError;

/// How to reach Kafka and how paystream uses it.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Passed to every client unchanged: `security.protocol`, `sasl.*`, `ssl.*`, ….
    pub client_properties: Vec<(String, String)>,
    /// Prefix of the producers' `transactional.id`s. Stable across restarts of the same
    /// deployment (that is what fences a zombie); unique per `paystream run` process.
    pub transactional_id: String,
    /// Transactional producers, i.e. commits in flight at once (one per worker); 0 opens
    /// the log read-only (inspection tools: they must not fence the pipeline).
    pub producers: usize,
    /// Replication factor of topics paystream creates.
    pub replication_factor: i32,
    /// `transaction.timeout.ms`: the broker aborts a transaction left open this long.
    pub transaction_timeout_ms: u64,
    /// Timeout of metadata, offset and transaction requests.
    pub request_timeout_ms: u64,
    /// The compacted topic of consumer positions.
    pub positions_topic: String,
    /// `session.timeout.ms` of the pipeline's group membership: how long a dead process
    /// keeps its partitions.
    pub session_timeout_ms: u64,
    /// Transactions (true) or at-least-once (false: an idempotent producer flushed per
    /// commit; a crash between the records and their positions repeats them after restart).
    pub exactly_once: bool,
    /// Topic-level configs for topics paystream creates: (topic, key, value), e.g. the
    /// changelog's `retention.ms=-1`.
    pub topic_properties: Vec<(String, String, String)>,
}

impl KafkaConfig {
    pub fn new(bootstrap_servers: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            bootstrap_servers: bootstrap_servers.into(),
            client_properties: Vec::new(),
            transactional_id: "paystream".into(),
            producers: 1,
            replication_factor: 3,
            transaction_timeout_ms: 60_000,
            request_timeout_ms: 30_000,
            positions_topic: "paystream-positions".into(),
            topic_properties: Vec::new(),
            session_timeout_ms: 10_000,
            exactly_once: true,
        }
    }

    pub(super) fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (key, value) in &self.client_properties {
            config.set(key, value);
        }
        config
    }

    pub(super) fn timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// Maps a Kafka error to a [`LogError`] with `context`.
pub(super) fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> LogError {
    let context = context.into();
    move |source| LogError::Kafka { context, source }
}
