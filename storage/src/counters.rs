//! Windowed counters for entities shared by every partition (terminal, merchant,
//! device): per entity and time bucket, the number of events and their amount — in
//! memory ([`MemoryCounters`], the embedded default) or in Redis ([`RedisCounters`]),
//! where several paystream processes share them.
//!
//! **Idempotent under replay.** Each bucket remembers the ids of the events it counted;
//! an event counted before (a replay after a crash, a retry) changes nothing. In Redis
//! one Lua script does the check and both increments atomically.
//!
//! **Redis key schema** (`<p>` = configurable prefix, `<e>` = xxh3-64 of the entity id
//! in hex, `<b>` = bucket number = event time ÷ bucket length):
//! - `<p>:c:{<e>}:<b>` — hash, fields `n` (events) and `s` (amount, minor units);
//! - `<p>:e:{<e>}:<b>` — set of the event ids counted in the bucket.
//!
//! The `{<e>}` hash tag puts all keys of one entity in one Redis Cluster slot, so each
//! script touches one slot. Every write refreshes a TTL of `retention_ms` on the keys it
//! touches: memory is bounded by what was written in the last retention period (wall
//! clock). A batch of adds is one pipelined round trip; a batch of window queries is
//! another; [`WindowedCounters::add_and_windows`] (what the pipeline's velocity features
//! use) does both, event by event, in one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::StorageError;

/// Bucket length and how long buckets are kept.
#[derive(Clone, Copy, Debug)]
pub struct CounterConfig {
    pub bucket_ms: i64,
    pub retention_ms: i64,
}

impl Default for CounterConfig {
    /// Hourly buckets kept 8 days: windows up to a week, plus slack.
    fn default() -> Self {
        CounterConfig { bucket_ms: 3_600_000, retention_ms: 8 * 86_400_000 }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct CounterEvent<'a> {
    /// Entity id, e.g. `terminal:T1`.
    pub entity: &'a str,
    /// Unique per event (e.g. the payment id): counted once.
    pub event_id: &'a str,
    pub event_time_ms: i64,
    pub amount_minor: i64,
}

/// The window of `buckets` buckets ending with (and including) the one holding `at_ms`.
#[derive(Clone, Copy, Debug)]
pub struct WindowQuery<'a> {
    pub entity: &'a str,
    pub at_ms: i64,
    pub buckets: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowTotals {
    pub count: u64,
    pub sum_minor: i64,
}

pub trait WindowedCounters: Send {
    /// Counts events not counted before; returns how many were new.
    fn add(&mut self, events: &[CounterEvent<'_>]) -> Result<u64, StorageError>;
    /// Totals of each queried window, in order.
    fn windows(&mut self, queries: &[WindowQuery<'_>]) -> Result<Vec<WindowTotals>, StorageError>;
    /// For each event in order: counts it (once, as [`WindowedCounters::add`]), then
    /// reads the window of `buckets` buckets ending with the event's own — so an event
    /// sees itself and every event counted before it, its batch's earlier ones included,
    /// whatever the batch boundaries. One round trip for the whole slice.
    fn add_and_windows(&mut self, events: &[CounterEvent<'_>], buckets: u32)
    -> Result<Vec<WindowTotals>, StorageError>;
}

fn check(config: &CounterConfig) -> Result<(), StorageError> {
    if config.bucket_ms <= 0 || config.retention_ms < config.bucket_ms {
        return Err(StorageError::InvalidConfig("counters need bucket_ms > 0 and retention_ms >= bucket_ms".into()));
    }
    Ok(())
}

fn add_totals(totals: &mut WindowTotals, count: u64, sum_minor: i64) -> Result<(), StorageError> {
    totals.count += count;
    totals.sum_minor = totals
        .sum_minor
        .checked_add(sum_minor)
        .ok_or_else(|| StorageError::InvalidRecord("window sum overflows i64".into()))?;
    Ok(())
}

#[derive(Debug)]
struct Bucket {
    count: u64,
    sum_minor: i64,
    /// xxh3-128 of the event ids counted (a collision is a 2^-128 chance).
    events: HashSet<u128>,
    /// Refreshed by every event counted, like the TTL of a Redis bucket.
    expires_at: Instant,
}

/// The embedded counters. A bucket is dropped `retention_ms` (wall clock) after the last
/// event it counted — Redis's TTL, so both stores keep the same buckets: an event-time
/// horizon would drop the buckets of a partition replaying behind the others.
#[derive(Debug)]
pub struct MemoryCounters {
    config: CounterConfig,
    entities: HashMap<String, BTreeMap<i64, Bucket>>,
    next_expiry: Instant,
}

/// How often [`MemoryCounters`] looks for expired buckets (a pass visits every bucket).
const MEMORY_EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

impl MemoryCounters {
    pub fn new(config: CounterConfig) -> Result<MemoryCounters, StorageError> {
        check(&config)?;
        Ok(MemoryCounters { config, entities: HashMap::new(), next_expiry: Instant::now() + MEMORY_EXPIRY_INTERVAL })
    }
}

impl MemoryCounters {
    /// Counts one event unless its bucket counted it before; true if it was new.
    fn add_one(&mut self, event: &CounterEvent<'_>) -> Result<bool, StorageError> {
        let buckets = match self.entities.get_mut(event.entity) {
            Some(buckets) => buckets,
            None => self.entities.entry(event.entity.to_string()).or_default(),
        };
        let bucket = buckets.entry(event.event_time_ms.div_euclid(self.config.bucket_ms)).or_insert_with(|| Bucket {
            count: 0,
            sum_minor: 0,
            events: HashSet::new(),
            expires_at: Instant::now(),
        });
        if !bucket.events.insert(xxhash_rust::xxh3::xxh3_128(event.event_id.as_bytes())) {
            return Ok(false);
        }
        bucket.expires_at = Instant::now() + Duration::from_millis(self.config.retention_ms as u64);
        bucket.count += 1;
        bucket.sum_minor = bucket
            .sum_minor
            .checked_add(event.amount_minor)
            .ok_or_else(|| StorageError::InvalidRecord("bucket sum overflows i64".into()))?;
        Ok(true)
    }

    /// Drops expired buckets, at most once per [`MEMORY_EXPIRY_INTERVAL`].
    fn expire(&mut self) {
        let now = Instant::now();
        if now < self.next_expiry {
            return;
        }
        self.next_expiry = now + MEMORY_EXPIRY_INTERVAL;
        self.entities.retain(|_, buckets| {
            buckets.retain(|_, bucket| bucket.expires_at > now);
            !buckets.is_empty()
        });
    }

    fn window(&self, q: &WindowQuery<'_>) -> Result<WindowTotals, StorageError> {
        let mut totals = WindowTotals::default();
        if let Some(buckets) = self.entities.get(q.entity) {
            let last = q.at_ms.div_euclid(self.config.bucket_ms);
            for (_, bucket) in buckets.range(last - i64::from(q.buckets) + 1..=last) {
                add_totals(&mut totals, bucket.count, bucket.sum_minor)?;
            }
        }
        Ok(totals)
    }
}

impl WindowedCounters for MemoryCounters {
    fn add(&mut self, events: &[CounterEvent<'_>]) -> Result<u64, StorageError> {
        let mut new = 0;
        for event in events {
            new += u64::from(self.add_one(event)?);
        }
        self.expire();
        Ok(new)
    }

    fn windows(&mut self, queries: &[WindowQuery<'_>]) -> Result<Vec<WindowTotals>, StorageError> {
        queries.iter().map(|q| self.window(q)).collect()
    }

    fn add_and_windows(
        &mut self,
        events: &[CounterEvent<'_>],
        buckets: u32,
    ) -> Result<Vec<WindowTotals>, StorageError> {
        let mut windows = Vec::with_capacity(events.len());
        for event in events {
            self.add_one(event)?;
            windows.push(self.window(&WindowQuery { entity: event.entity, at_ms: event.event_time_ms, buckets })?);
        }
        self.expire();
        Ok(windows)
    }
}

/// [`MemoryCounters`] shared by the workers of one process (each holds a clone).
#[derive(Clone, Debug)]
pub struct SharedMemoryCounters(std::sync::Arc<std::sync::Mutex<MemoryCounters>>);

impl SharedMemoryCounters {
    pub fn new(config: CounterConfig) -> Result<SharedMemoryCounters, StorageError> {
        Ok(SharedMemoryCounters(std::sync::Arc::new(std::sync::Mutex::new(MemoryCounters::new(config)?))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryCounters> {
        // A worker that panicked holding the lock left whole events (each is one
        // insert and two additions, none of which panics midway): keep going.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl WindowedCounters for SharedMemoryCounters {
    fn add(&mut self, events: &[CounterEvent<'_>]) -> Result<u64, StorageError> {
        self.lock().add(events)
    }

    fn windows(&mut self, queries: &[WindowQuery<'_>]) -> Result<Vec<WindowTotals>, StorageError> {
        self.lock().windows(queries)
    }

    fn add_and_windows(
        &mut self,
        events: &[CounterEvent<'_>],
        buckets: u32,
    ) -> Result<Vec<WindowTotals>, StorageError> {
        self.lock().add_and_windows(events, buckets)
    }
}

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

/// Windowed counters in Redis (standalone, or one node of a cluster per slot).
pub struct RedisCounters {
    config: CounterConfig,
    prefix: String,
    connection: redis::Connection,
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
    pub fn connect(url: &str, prefix: &str, config: CounterConfig) -> Result<RedisCounters, StorageError> {
        check(&config)?;
        let client = redis::Client::open(url).map_err(redis_error("parse the Redis URL"))?;
        let connection = client.get_connection().map_err(redis_error("connect to Redis"))?;
        let mut counters = RedisCounters {
            config,
            prefix: prefix.to_string(),
            connection,
            add: redis::Script::new(ADD_SCRIPT),
            window: redis::Script::new(WINDOW_SCRIPT),
            add_and_window: redis::Script::new(ADD_AND_WINDOW_SCRIPT),
        };
        counters.load_scripts("load a script")?;
        Ok(counters)
    }

    fn load_scripts(&mut self, what: &str) -> Result<(), StorageError> {
        for script in [&self.add, &self.window, &self.add_and_window] {
            script.prepare_invoke().load(&mut self.connection).map_err(redis_error(what))?;
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
    fn query_pipeline<T: redis::FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
        what: &str,
    ) -> Result<T, StorageError> {
        match pipe.query::<T>(&mut self.connection) {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.load_scripts("reload a script")?;
                pipe.query::<T>(&mut self.connection).map_err(redis_error(what))
            }
            other => other.map_err(redis_error(what)),
        }
    }

    /// Runs one call of the script `select` picks per item (its keys and arguments from
    /// `invoke`) in one pipelined round trip; the replies, in order.
    fn pipelined<I, T: redis::FromRedisValue>(
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
        self.query_pipeline(&pipe, what)
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

impl WindowedCounters for RedisCounters {
    fn add(&mut self, events: &[CounterEvent<'_>]) -> Result<u64, StorageError> {
        let added: Vec<u64> = self.pipelined(
            events,
            |c| &c.add,
            "add events",
            |this, event, invocation| {
                this.push_keys(invocation, event.entity, this.bucket(event.event_time_ms), 1, true);
                invocation.arg(event.event_id).arg(event.amount_minor).arg(this.ttl_s());
            },
        )?;
        Ok(added.iter().sum())
    }

    fn windows(&mut self, queries: &[WindowQuery<'_>]) -> Result<Vec<WindowTotals>, StorageError> {
        let replies = self.pipelined(
            queries,
            |c| &c.window,
            "query windows",
            |this, q, invocation| {
                this.push_keys(invocation, q.entity, this.bucket(q.at_ms), q.buckets, false);
            },
        )?;
        window_totals(replies)
    }

    fn add_and_windows(
        &mut self,
        events: &[CounterEvent<'_>],
        buckets: u32,
    ) -> Result<Vec<WindowTotals>, StorageError> {
        let replies = self.pipelined(
            events,
            |c| &c.add_and_window,
            "add events and query windows",
            |this, event, invocation| {
                this.push_keys(invocation, event.entity, this.bucket(event.event_time_ms), buckets, true);
                invocation.arg(event.event_id).arg(event.amount_minor).arg(this.ttl_s());
            },
        )?;
        window_totals(replies)
    }
}
