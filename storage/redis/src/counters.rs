//! [`RedisCounters`]: the windowed counters in Redis, async, shared by several paystream
//! processes.
//!
//! **Idempotent under replay.** Each bucket remembers the ids of the events it counted;
//! an event counted before (a replay after a crash, a retry) changes nothing. One Lua
//! script (`script.lua`) checks and counts atomically.
//!
//! **Key schema** (`<p>` = configurable prefix, `<k>` = the entity's key shard, `<e>` =
//! xxh3-64 of the entity id in hex, `<b>` = bucket number = event time ÷ bucket length):
//! - `<p>:{<k>}:<e>:c:<b>` — the bucket's events, amount (minor units) and when its TTLs
//!   were last set (ms), as three big-endian 64-bit integers;
//! - `<p>:{<k>}:<e>:e:<b>` — set of the event ids counted in bucket `b`.
//!
//! **A batch is a few script calls.** Items are grouped by entity and entities by key
//! shard (`plan.rs`): one call per shard (at most `KEY_SHARDS` = 16 per batch, more past
//! 256 items), all in one pipelined round trip. A call reads each entity's window once,
//! then counts and sums event by event in Lua, so each event sees itself and the events
//! before it, exactly as if they were counted one at a time.
//!
//! **Cluster-ready, bounded memory.** The `{<k>}` hash tag puts each call's keys in one
//! Redis Cluster slot (16 slots in all); the script names the slot by a routing key
//! `<p>:{<k>}` and builds each entity's keys (all in that slot) from its stem. A bucket's two keys get their
//! TTL (`retention_ms`) at the same moment, so they expire together: the ids always
//! outlive the counts they guard. The TTLs are set again when the bucket counts an event
//! a 64th of the retention or more after they were last set, so most counts cost no
//! `EXPIRE`, and a bucket lives the retention after its last event, less up to a 64th.
//! Memory is bounded by what was written in the last retention period (wall clock).

use paystream_storage::StorageError;
use paystream_storage::counters::{CounterConfig, CounterEvent, WindowQuery, WindowTotals};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use crate::plan::{CallPlan, plan, shard_of};

const SCRIPT: &str = include_str!("script.lua");

/// Lua numbers are doubles: amounts beyond this many minor units are refused.
const AMOUNT_ABS_MAX_MINOR: i64 = (1 << 53) - 1;

/// Windowed counters in Redis (standalone, or one node of a cluster per slot). Async:
/// use `Blocking` where the synchronous `WindowedCounters` is needed.
pub struct RedisCounters {
    config: CounterConfig,
    prefix: String,
    connection: MultiplexedConnection,
    script: redis::Script,
}

/// One thing a script call does: count an event (with an id) and/or read a window.
struct Item<'a> {
    entity: &'a str,
    bucket: i64,
    /// Window length in buckets; 0 reads none.
    window_buckets: u32,
    event_id: Option<&'a str>,
    amount_minor: i64,
}

/// What the script answers for one item.
#[derive(Clone, Copy, Default)]
struct Reply {
    new: bool,
    window: WindowTotals,
}

fn redis_error(context: &str) -> impl FnOnce(redis::RedisError) -> StorageError + '_ {
    move |e| StorageError::Redis { context: context.to_string(), why: e.to_string() }
}

impl RedisCounters {
    /// Connects to `url` (e.g. `redis://127.0.0.1:6379`) and loads the script; keys
    /// start with `prefix`.
    pub async fn connect(url: &str, prefix: &str, config: CounterConfig) -> Result<RedisCounters, StorageError> {
        config.check()?;
        let client = redis::Client::open(url).map_err(redis_error("parse the Redis URL"))?;
        // No timeouts, as a blocking connection: a slow reply is waited for, a broken
        // connection fails (the caller reconnects).
        let connection_config = AsyncConnectionConfig::new().set_connection_timeout(None).set_response_timeout(None);
        let connection = client
            .get_multiplexed_async_connection_with_config(&connection_config)
            .await
            .map_err(redis_error("connect to Redis"))?;
        let mut counters =
            RedisCounters { config, prefix: prefix.to_string(), connection, script: redis::Script::new(SCRIPT) };
        counters.load_script("load the counters script").await?;
        Ok(counters)
    }

    async fn load_script(&mut self, what: &str) -> Result<(), StorageError> {
        self.script.prepare_invoke().load_async(&mut self.connection).await.map_err(redis_error(what))?;
        Ok(())
    }

    /// The counts of an entity's bucket: `<prefix>:{<shard>}:<entity hash>:c:<bucket>`.
    pub fn counts_key(&self, entity: &str, bucket: i64) -> String {
        format!("{}c:{bucket}", self.stem(entity_hash(entity)))
    }

    /// The set of the event ids an entity's bucket counted:
    /// `<prefix>:{<shard>}:<entity hash>:e:<bucket>`.
    pub fn ids_key(&self, entity: &str, bucket: i64) -> String {
        format!("{}e:{bucket}", self.stem(entity_hash(entity)))
    }

    /// The start of every key of an entity: `<prefix>:{<shard>}:<entity hash>:`.
    fn stem(&self, entity_hash: u64) -> String {
        format!("{}:{{{:x}}}:{entity_hash:016x}:", self.prefix, shard_of(entity_hash))
    }

    fn ttl_s(&self) -> i64 {
        (self.config.retention_ms / 1_000).max(1)
    }

    fn bucket(&self, time_ms: i64) -> i64 {
        time_ms.div_euclid(self.config.bucket_ms)
    }

    /// Adds one planned call to the pipeline: each entity run's stem and items in the
    /// layout `script.lua` reads.
    fn push_call(&self, pipe: &mut redis::Pipeline, call: &CallPlan, items: &[Item<'_>]) {
        let mut invocation = self.script.prepare_invoke();
        invocation.key(format!("{}:{{{:x}}}", self.prefix, call.shard)).arg(self.ttl_s());
        for run in &call.runs {
            invocation.arg(self.stem(run.entity_hash)).arg(run.items.len());
            for &i in &run.items {
                let item = &items[i];
                invocation
                    .arg(item.bucket)
                    .arg(item.window_buckets)
                    .arg(item.event_id.unwrap_or(""))
                    .arg(item.amount_minor);
            }
        }
        pipe.invoke_script(&invocation);
    }

    /// Runs `items` (one pipelined round trip of a few script calls, see the module doc);
    /// the replies, in the items' order.
    async fn run(&mut self, items: &[Item<'_>], what: &str) -> Result<Vec<Reply>, StorageError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(item) = items.iter().find(|item| item.amount_minor.abs() > AMOUNT_ABS_MAX_MINOR) {
            return Err(StorageError::InvalidRecord(format!(
                "amount {} minor units is beyond what the Redis counters keep exactly (2^53)",
                item.amount_minor
            )));
        }
        if items.iter().any(|item| item.event_id == Some("")) {
            return Err(StorageError::InvalidRecord("an event to count needs a non-empty id".into()));
        }
        let calls = plan(items.iter().map(|item| entity_hash(item.entity)));
        let mut pipe = redis::pipe();
        for call in &calls {
            self.push_call(&mut pipe, call, items);
        }
        let answers: Vec<Vec<i64>> = self.query_pipeline(&pipe, what).await?;
        if answers.len() != calls.len() {
            return Err(unexpected(what, format!("{} replies for {} calls", answers.len(), calls.len())));
        }
        let mut replies = vec![Reply::default(); items.len()];
        for (call, answer) in calls.iter().zip(&answers) {
            let order = call.runs.iter().flat_map(|run| run.items.iter().copied());
            if answer.len() != 3 * call.items() {
                return Err(unexpected(what, format!("{} values for {} items", answer.len(), call.items())));
            }
            for (i, reply) in order.zip(answer.chunks_exact(3)) {
                let count = u64::try_from(reply[1]).map_err(|_| unexpected(what, format!("count {}", reply[1])))?;
                replies[i] = Reply { new: reply[0] == 1, window: WindowTotals { count, sum_minor: reply[2] } };
            }
        }
        Ok(replies)
    }

    /// Runs a pipeline, reloading the script once if Redis lost it (a restart).
    async fn query_pipeline<T: redis::FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
        what: &str,
    ) -> Result<T, StorageError> {
        match pipe.query_async::<T>(&mut self.connection).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.load_script("reload the counters script").await?;
                pipe.query_async::<T>(&mut self.connection).await.map_err(redis_error(what))
            }
            other => other.map_err(redis_error(what)),
        }
    }
}

/// An entity's 64-bit hash: its key shard and the middle of its keys' names.
fn entity_hash(entity: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(entity.as_bytes())
}

fn unexpected(what: &str, why: String) -> StorageError {
    StorageError::Redis { context: what.to_string(), why: format!("unexpected reply: {why}") }
}

/// The semantics of `paystream_storage::counters::WindowedCounters`, each call one
/// pipelined round trip.
impl RedisCounters {
    /// Counts events not counted before; returns how many were new.
    pub async fn add(&mut self, events: &[CounterEvent<'_>]) -> Result<u64, StorageError> {
        let items: Vec<Item<'_>> = events.iter().map(|event| self.event_item(event, 0)).collect();
        let replies = self.run(&items, "add events").await?;
        Ok(replies.iter().filter(|reply| reply.new).count() as u64)
    }

    /// Totals of each queried window, in order.
    pub async fn windows(&mut self, queries: &[WindowQuery<'_>]) -> Result<Vec<WindowTotals>, StorageError> {
        let items: Vec<Item<'_>> = queries
            .iter()
            .map(|q| Item {
                entity: q.entity,
                bucket: self.bucket(q.at_ms),
                window_buckets: q.buckets,
                event_id: None,
                amount_minor: 0,
            })
            .collect();
        Ok(self.run(&items, "query windows").await?.into_iter().map(|reply| reply.window).collect())
    }

    /// For each event in order: counts it (once), then reads the window of `buckets`
    /// buckets ending with the event's own.
    pub async fn add_and_windows(
        &mut self,
        events: &[CounterEvent<'_>],
        buckets: u32,
    ) -> Result<Vec<WindowTotals>, StorageError> {
        let items: Vec<Item<'_>> = events.iter().map(|event| self.event_item(event, buckets)).collect();
        let replies = self.run(&items, "add events and query windows").await?;
        Ok(replies.into_iter().map(|reply| reply.window).collect())
    }

    fn event_item<'a>(&self, event: &CounterEvent<'a>, window_buckets: u32) -> Item<'a> {
        Item {
            entity: event.entity,
            bucket: self.bucket(event.event_time_ms),
            window_buckets,
            event_id: Some(event.event_id),
            amount_minor: event.amount_minor,
        }
    }
}
