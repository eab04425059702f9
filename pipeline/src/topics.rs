//! The pipeline's topics: created when missing, resolved against the log, and the
//! consumer groups registered so retention keeps what they have not read.

use crate::config::PipelineConfig;
use crate::error::RuntimeError;
use crate::log::{Log, LogError, Topic, Transaction};

/// The topics, resolved against a log.
#[derive(Clone, Debug)]
pub struct PipelineTopics {
    pub payments: Topic,
    pub labels: Topic,
    pub decisions: Topic,
    pub ledger: Topic,
    pub settlements: Topic,
    pub dead_letters: Topic,
    pub changelog: Topic,
    pub transfers: Topic,
    pub settlement_entries: Topic,
}

/// Gives `group` a position at the start of every partition of `topics` where it has none,
/// so retention keeps everything the group has not read.
pub(crate) fn register_group_from_start(log: &dyn Log, group: &str, topics: &[&Topic]) -> Result<(), LogError> {
    if !log.retention_keeps_unread() {
        // Nothing to protect; and a stale view must not overwrite another process's position.
        return Ok(());
    }
    let mut registration = Transaction::new();
    for topic in topics {
        for partition in 0..topic.partitions {
            if log.committed_position(group, topic, partition)?.is_none() {
                registration.set_position(group, topic, partition, log.offsets(topic, partition)?.start);
            }
        }
    }
    log.commit(registration)
}

/// Creates the pipeline's topics if missing and resolves them.
pub fn ensure_topics(log: &dyn Log, config: &PipelineConfig) -> Result<PipelineTopics, RuntimeError> {
    let names = &config.topics;
    let payments = match log.topic(&names.payments) {
        Ok(topic) => topic,
        Err(LogError::UnknownTopic(_)) => log.create_topic(&names.payments, config.partitions)?,
        Err(e) => return Err(e.into()),
    };
    let partitions = payments.partitions;
    let get_or_create = |name: &str| match log.topic(name) {
        Ok(topic) => Ok(topic),
        Err(LogError::UnknownTopic(_)) => log.create_topic(name, partitions),
        Err(e) => Err(e),
    };
    // Partition p of these belongs with partition p of the payments.
    let co_partitioned = |role: &str, name: &str| {
        let topic = get_or_create(name)?;
        if topic.partitions != partitions {
            return Err(RuntimeError::Config(format!(
                "{role} topic {} has {} partitions but {} has {partitions}; they must match",
                topic.name, topic.partitions, payments.name
            )));
        }
        Ok(topic)
    };
    let changelog = co_partitioned("changelog", &names.changelog)?;
    let transfers = co_partitioned("transfers", &names.transfers)?;
    let settlement_entries = co_partitioned("settlement entries", &names.settlement_entries)?;
    // Register the pipeline's consumer group from the start, so log retention keeps all
    // input it has not processed, even input published before its first run.
    register_group_from_start(log, &config.group_id, &[&payments, &transfers, &settlement_entries])?;
    Ok(PipelineTopics {
        transfers,
        settlement_entries,
        labels: get_or_create(&names.labels)?,
        decisions: get_or_create(&names.decisions)?,
        ledger: get_or_create(&names.ledger)?,
        settlements: get_or_create(&names.settlements)?,
        dead_letters: get_or_create(&names.dead_letters)?,
        payments,
        changelog,
    })
}
