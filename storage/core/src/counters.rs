//! Windowed counters for entities shared by every partition (terminal, merchant,
//! device): per entity and time bucket, the number of events and their amount — in
//! memory ([`MemoryCounters`], the embedded default; [`SharedMemoryCounters`] for a
//! process's workers) or in Redis (`paystream-storage-redis`), where several paystream
//! processes share them.
//!
//! **Idempotent under replay.** Each bucket remembers the ids of the events it counted;
//! an event counted before (a replay after a crash, a retry) changes nothing.
//!
//! A batch of adds is one round trip of a remote store; a batch of window queries is
//! another; [`WindowedCounters::add_and_windows`] (what the pipeline's velocity features
//! use) does both, event by event, in one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use paystream_domain::time::{MILLIS_PER_DAY, MILLIS_PER_HOUR};

use crate::error::StorageError;

/// Bucket length and how long buckets are kept.
#[derive(Clone, Copy, Debug)]
pub struct CounterConfig {
    pub bucket_ms: i64,
    pub retention_ms: i64,
}

impl Default for CounterConfig {
    /// Hourly buckets kept 8 days: windows up to a week, plus slack.
    fn default() -> Self {
        CounterConfig { bucket_ms: MILLIS_PER_HOUR, retention_ms: 8 * MILLIS_PER_DAY }
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

impl CounterConfig {
    /// Refuses a configuration no store can keep: buckets MUST have a positive length
    /// and be kept at least that long.
    pub fn check(&self) -> Result<(), StorageError> {
        if self.bucket_ms <= 0 || self.retention_ms < self.bucket_ms {
            return Err(StorageError::InvalidConfig(
                "counters need bucket_ms > 0 and retention_ms >= bucket_ms".into(),
            ));
        }
        Ok(())
    }
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
        config.check()?;
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
