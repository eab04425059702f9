//! librdkafka's in-process mock cluster, for tests that inject request errors.

use super::config::{KafkaConfig, kafka};
use crate::log::LogError;

/// librdkafka's in-process mock cluster (a test double: see the module docs) with the
/// positions topic and `topics` created, for tests and `paystream kafka-mock`.
pub fn mock_cluster(
    brokers: i32,
    partitions: i32,
    topics: &[&str],
) -> Result<rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>, LogError> {
    let cluster = rdkafka::mocking::MockCluster::new(brokers).map_err(kafka("start the mock cluster"))?;
    let replication = brokers.min(3);
    let positions = KafkaConfig::new("").positions_topic;
    cluster.create_topic(&positions, 1, replication).map_err(kafka(format!("create {positions}")))?;
    for name in topics {
        cluster.create_topic(name, partitions, replication).map_err(kafka(format!("create {name}")))?;
    }
    Ok(cluster)
}
