//! This process's membership in the pipeline's consumer group: a subscribed consumer
//! whose rebalance callbacks move the partition set, and generations the runtime
//! releases before a revocation completes.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};

use super::config::{KafkaConfig, kafka};
use crate::log::{LogError, Membership, Topic};

/// The group state the rebalance callbacks and the runtime share.
#[derive(Default)]
struct MemberState {
    generation: u64,
    partitions: BTreeSet<u32>,
    released: u64,
    closed: bool,
}

#[derive(Default)]
struct MemberShared {
    topic: String,
    state: Mutex<MemberState>,
    changed: Condvar,
    generation: AtomicU64,
}

impl MemberShared {
    fn bump(&self, state: &mut MemberState) {
        state.generation += 1;
        self.generation.store(state.generation, Ordering::SeqCst);
        self.changed.notify_all();
    }

    fn partitions_of(&self, list: &TopicPartitionList) -> Vec<u32> {
        list.elements().iter().filter(|e| e.topic() == self.topic).map(|e| e.partition() as u32).collect()
    }
}

pub(super) struct MemberContext {
    shared: Arc<MemberShared>,
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    /// Revoked partitions leave the set at once (the next generation runs without them);
    /// the callback returns only when the runtime has stopped and committed everything
    /// of earlier generations, so the next owner starts from a committed position.
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else { return };
        let revoked = self.shared.partitions_of(list);
        tracing::info!(?revoked, "consumer group: partitions revoked");
        let mut state = self.shared.state.lock().expect("member lock");
        for partition in revoked {
            state.partitions.remove(&partition);
        }
        let running = state.generation;
        self.shared.bump(&mut state);
        let _released =
            self.shared.changed.wait_while(state, |s| s.released < running && !s.closed).expect("member lock");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(list) = rebalance else { return };
        let assigned = self.shared.partitions_of(list);
        tracing::info!(?assigned, "consumer group: partitions assigned");
        // The workers read the partitions themselves; this consumer only keeps membership.
        if let Err(error) = consumer.pause(list) {
            tracing::warn!(%error, "pausing the group consumer's partitions");
        }
        let mut state = self.shared.state.lock().expect("member lock");
        state.partitions.extend(assigned);
        self.shared.bump(&mut state);
    }
}

/// This process's membership in the pipeline's consumer group (see [`KafkaLog::join`]).
pub struct KafkaMember {
    shared: Arc<MemberShared>,
    consumer: Option<Arc<BaseConsumer<MemberContext>>>,
    stop: Arc<AtomicBool>,
    poller: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Membership for KafkaMember {
    fn wait_for_change(&self, seen: u64, timeout: Duration) -> (u64, Vec<u32>) {
        let state = self.shared.state.lock().expect("member lock");
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |s| s.generation == seen && !s.closed)
            .expect("member lock");
        (state.generation, state.partitions.iter().copied().collect())
    }

    fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::SeqCst)
    }

    fn released(&self, generation: u64) {
        let mut state = self.shared.state.lock().expect("member lock");
        state.released = state.released.max(generation);
        self.shared.changed.notify_all();
    }
}

impl Drop for KafkaMember {
    /// Leaves the group: the partitions go to the other members at once.
    fn drop(&mut self) {
        {
            let mut state = self.shared.state.lock().expect("member lock");
            state.closed = true;
            self.shared.changed.notify_all();
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(poller) = self.poller.lock().expect("poller lock").take() {
            let _ = poller.join();
        }
        if let Some(consumer) = self.consumer.take() {
            consumer.unsubscribe();
        }
    }
}

impl KafkaMember {
    /// Joins `group` as a member consuming `topic` (cooperative-sticky assignment); also
    /// returns the group consumer, whose metadata transactions carry.
    pub(super) fn join(
        config: &KafkaConfig,
        group: &str,
        topic: &Topic,
    ) -> Result<(Arc<KafkaMember>, Arc<BaseConsumer<MemberContext>>), LogError> {
        let shared = Arc::new(MemberShared { topic: topic.name.to_string(), ..MemberShared::default() });
        let consumer: BaseConsumer<MemberContext> = config
            .client()
            .set("group.id", group)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("session.timeout.ms", config.session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", (config.session_timeout_ms / 5).max(100).to_string())
            .set("allow.auto.create.topics", "false")
            .create_with_context(MemberContext { shared: shared.clone() })
            .map_err(kafka(format!("join group {group}")))?;
        consumer.subscribe(&[&topic.name]).map_err(kafka(format!("subscribe group {group} to {}", topic.name)))?;
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (consumer, stop) = (consumer.clone(), stop.clone());
            std::thread::Builder::new()
                .name("paystream-kafka-group".into())
                .spawn(move || {
                    // Polling serves the rebalance callbacks; assigned partitions are
                    // paused, so no records arrive here (the workers read on their own).
                    while !stop.load(Ordering::SeqCst) {
                        if let Some(Err(error)) = consumer.poll(Duration::from_millis(100)) {
                            tracing::warn!(%error, "consumer group membership");
                        }
                    }
                })
                .map_err(LogError::io("spawn the group membership thread"))?
        };
        let member = KafkaMember { shared, consumer: Some(consumer.clone()), stop, poller: Mutex::new(Some(poller)) };
        Ok((Arc::new(member), consumer))
    }
}
