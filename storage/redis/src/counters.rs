//! [`RedisCounters`]: the windowed counters in Redis, async, shared by several paystream
//! processes.
//!
//! **Idempotent under replay.** Each bucket remembers the ids of the events it counted;
//! an event counted before (a replay after a crash, a retry) changes nothing. One Lua
//! script does the check and both increments atomically.
//!
//! **Key schema** (`<p>` = configurable prefix, `<e>` = xxh3-64 of the entity id in hex,
//! `<b>` = bucket number = event time ÷ bucket length):
//! - `<p>:c:{<e>}:<b>` — hash, fields `n` (events) and `s` (amount, minor units);
//! - `<p>:e:{<e>}:<b>` — set of the event ids counted in the bucket.
//!
//! The `{<e>}` hash tag puts all keys of one entity in one Redis Cluster slot, so each
//! script touches one slot. Every write refreshes a TTL of `retention_ms` on the keys it
//! touches: memory is bounded by what was written in the last retention period (wall
//! clock). A batch of adds is one pipelined round trip; a batch of window queries is
//! another; `add_and_windows` (what the pipeline's velocity features use) does both,
//! event by event, in one.

use paystream_storage::StorageError;
use paystream_storage::counters::{CounterConfig, CounterEvent, WindowQuery, WindowTotals};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

// The scripts, from two fragments. COUNT: counts event ARGV[1] (amount ARGV[2]) in the
// bucket hash KEYS[2] unless the bucket's id set KEYS[1] holds it already; a new event
// refreshes both keys' TTL (ARGV[3] seconds). SUM: the totals of the bucket hashes
// KEYS[first..] — Lua numbers are doubles, exact below 2^53 minor units, so beyond that
// the script fails rather than answer an inexact sum.
macro_rules! count_lua {
    () => {
        r"
local new = redis.call('SADD', KEYS[1], ARGV[1]) == 1
if new then
  redis.call('HINCRBY', KEYS[2], 'n', 1)
  redis.call('HINCRBY', KEYS[2], 's', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
"
    };
}
macro_rules! sum_lua {
    () => {
        r"
local n, s = 0, 0
for i = first, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'n', 's')
  n = n + (tonumber(v[1]) or 0)
  s = s + (tonumber(v[2]) or 0)
end
if math.abs(s) > 9007199254740991 then
  return redis.error_reply('window sum beyond 2^53 minor units')
end
return {n, s}
"
    };
}

/// KEYS: the id set and hash of the event's bucket. Returns 1 if the event was new.
const ADD_SCRIPT: &str = concat!(count_lua!(), "return new and 1 or 0\n");
/// KEYS: the window's bucket hashes. Returns {count, sum}.
const WINDOW_SCRIPT: &str = concat!("local first = 1\n", sum_lua!());
/// KEYS: the id set of the event's bucket, then the window's bucket hashes, the event's
/// own first. Counts the event, then returns the window's {count, sum}.
const ADD_AND_WINDOW_SCRIPT: &str = concat!(count_lua!(), "local first = 2\n", sum_lua!());

/// Windowed counters in Redis (standalone, or one node of a cluster per slot). Async:
/// use `Blocking` where the synchronous `WindowedCounters` is needed.
pub struct RedisCounters {
    config: CounterConfig,
    prefix: String,
    connection: MultiplexedConnection,
    add: redis::Script,
    window: redis::Script,
    add_and_window: redis::Script,
}

fn redis_error(context: &str) -> impl FnOnce(redis::RedisError) -> StorageError + '_ {
    move |e| StorageError::Redis { context: context.to_string(), why: e.to_string() }
}

impl RedisCounters {
    /// Connects to `url` (e.g. `redis://127.0.0.1:6379`) and loads the scripts; keys
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
        let mut counters = RedisCounters {
            config,
            prefix: prefix.to_string(),
            connection,
            add: redis::Script::new(ADD_SCRIPT),
            window: redis::Script::new(WINDOW_SCRIPT),
            add_and_window: redis::Script::new(ADD_AND_WINDOW_SCRIPT),
        };
        counters.load_scripts("load a script").await?;
        Ok(counters)
    }

    async fn load_scripts(&mut self, what: &str) -> Result<(), StorageError> {
        for script in [&self.add, &self.window, &self.add_and_window] {
            script.prepare_invoke().load_async(&mut self.connection).await.map_err(redis_error(what))?;
        }
        Ok(())
    }

    /// `<prefix>:<kind>:{<entity hash>}:`, the start of an entity's keys of `kind`.
    fn key_start(&self, kind: char, entity_hash: u64) -> String {
        format!("{}:{kind}:{{{entity_hash:016x}}}:", self.prefix)
    }

    /// The key of an entity's bucket: `<prefix>:<kind>:{<entity hash>}:<bucket>`.
    pub fn key(&self, kind: char, entity: &str, bucket: i64) -> String {
        format!("{}{bucket}", self.key_start(kind, xxhash_rust::xxh3::xxh3_64(entity.as_bytes())))
    }

    /// Adds `entity`'s keys to a script call (hashing the entity once): with `ids`, the
    /// id set of bucket `last`; then the hashes of the `buckets` buckets ending with
    /// `last`, newest first.
    fn push_keys(
        &self,
        invocation: &mut redis::ScriptInvocation<'_>,
        entity: &str,
        last: i64,
        buckets: u32,
        ids: bool,
    ) {
        use std::fmt::Write;
        let entity_hash = xxhash_rust::xxh3::xxh3_64(entity.as_bytes());
        if ids {
            invocation.key(format!("{}{last}", self.key_start('e', entity_hash)));
        }
        let start = self.key_start('c', entity_hash);
        let mut key = String::with_capacity(start.len() + 20);
        for bucket in (last - i64::from(buckets) + 1..=last).rev() {
            key.clear();
            key.push_str(&start);
            write!(key, "{bucket}").expect("writing to a String cannot fail");
            invocation.key(key.as_str());
        }
    }

    /// Runs a pipeline, reloading the scripts once if Redis lost them (a restart).
    async fn query_pipeline<T: redis::FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
        what: &str,
    ) -> Result<T, StorageError> {
        match pipe.query_async::<T>(&mut self.connection).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.load_scripts("reload a script").await?;
                pipe.query_async::<T>(&mut self.connection).await.map_err(redis_error(what))
            }
            other => other.map_err(redis_error(what)),
        }
    }

    /// Runs one call of the script `select` picks per item (its keys and arguments from
    /// `invoke`) in one pipelined round trip; the replies, in order.
    async fn pipelined<I, T: redis::FromRedisValue>(
        &mut self,
        items: &[I],
        select: fn(&RedisCounters) -> &redis::Script,
        what: &str,
        invoke: impl Fn(&Self, &I, &mut redis::ScriptInvocation<'_>),
    ) -> Result<Vec<T>, StorageError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        let script = select(self);
        for item in items {
            let mut invocation = script.prepare_invoke();
            invoke(self, item, &mut invocation);
            pipe.invoke_script(&invocation);
        }
        self.query_pipeline(&pipe, what).await
    }

    fn ttl_s(&self) -> i64 {
        (self.config.retention_ms / 1_000).max(1)
    }

    fn bucket(&self, time_ms: i64) -> i64 {
        time_ms.div_euclid(self.config.bucket_ms)
    }
}

/// A window script's {count, sum} replies as totals.
fn window_totals(replies: Vec<(i64, i64)>) -> Result<Vec<WindowTotals>, StorageError> {
    replies
        .into_iter()
        .map(|(count, sum_minor)| {
            let count = u64::try_from(count).map_err(|_| StorageError::Redis {
                context: "read a window".into(),
                why: format!("negative count {count}"),
            })?;
            Ok(WindowTotals { count, sum_minor })
        })
        .collect()
}

/// The semantics of `paystream_storage::counters::WindowedCounters`, each call one
/// pipelined round trip.
impl RedisCounters {
    /// Counts events not counted before; returns how many were new.
    pub async fn add(&mut self, events: &[CounterEvent<'_>]) -> Result<u64, StorageError> {
        let added: Vec<u64> = self
            .pipelined(
                events,
                |c| &c.add,
                "add events",
                |this, event, invocation| {
                    this.push_keys(invocation, event.entity, this.bucket(event.event_time_ms), 1, true);
                    invocation.arg(event.event_id).arg(event.amount_minor).arg(this.ttl_s());
                },
            )
            .await?;
        Ok(added.iter().sum())
    }

    /// Totals of each queried window, in order.
    pub async fn windows(&mut self, queries: &[WindowQuery<'_>]) -> Result<Vec<WindowTotals>, StorageError> {
        let replies = self
            .pipelined(
                queries,
                |c| &c.window,
                "query windows",
                |this, q, invocation| {
                    this.push_keys(invocation, q.entity, this.bucket(q.at_ms), q.buckets, false);
                },
            )
            .await?;
        window_totals(replies)
    }

    /// For each event in order: counts it (once), then reads the window of `buckets`
    /// buckets ending with the event's own.
    pub async fn add_and_windows(
        &mut self,
        events: &[CounterEvent<'_>],
        buckets: u32,
    ) -> Result<Vec<WindowTotals>, StorageError> {
        let replies = self
            .pipelined(
                events,
                |c| &c.add_and_window,
                "add events and query windows",
                |this, event, invocation| {
                    this.push_keys(invocation, event.entity, this.bucket(event.event_time_ms), buckets, true);
                    invocation.arg(event.event_id).arg(event.amount_minor).arg(this.ttl_s());
                },
            )
            .await?;
        window_totals(replies)
    }
}
