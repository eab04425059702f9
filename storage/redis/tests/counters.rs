//! Windowed counters: the embedded store and Redis (this machine's server;
//! `PAYSTREAM_TEST_REDIS_URL` overrides `redis://127.0.0.1:6379`) give the same windows
//! on the same events, and a replayed event never counts twice.

use paystream_storage::counters::{
    CounterConfig, CounterEvent, MemoryCounters, WindowQuery, WindowTotals, WindowedCounters,
};
use paystream_storage_redis::{Blocking, RedisCounters};

const HOUR: i64 = 3_600_000;
const START: i64 = 1_522_540_800_000;

fn redis_url() -> String {
    std::env::var("PAYSTREAM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn redis(test: &str) -> Blocking<RedisCounters> {
    let prefix = format!("pstest:{test}:{}", paystream_testkit::unique_suffix());
    Blocking::<RedisCounters>::connect(&redis_url(), &prefix, CounterConfig::default())
        .unwrap_or_else(|e| panic!("Redis must be running for these tests ({}): {e}", redis_url()))
}

fn stores(test: &str) -> Vec<(&'static str, Box<dyn WindowedCounters>)> {
    vec![("memory", Box::new(MemoryCounters::new(CounterConfig::default()).unwrap())), ("redis", Box::new(redis(test)))]
}

/// (event id, entity, event time, amount) as the stores take them.
fn counter_events<'a>(batch: &'a [(String, &'a str, i64, i64)]) -> Vec<CounterEvent<'a>> {
    batch
        .iter()
        .map(|(id, entity, t, amount)| CounterEvent { entity, event_id: id, event_time_ms: *t, amount_minor: *amount })
        .collect()
}

#[test]
fn windows_by_hand_and_replays_count_once() {
    for (name, mut store) in stores("hand") {
        let e = |id: &'static str, entity: &'static str, hours: i64, cents: i64| CounterEvent {
            entity,
            event_id: id,
            event_time_ms: START + hours * HOUR + 5 * 60_000,
            amount_minor: cents,
        };
        let events = [
            e("a", "terminal:1", 0, 100),
            e("b", "terminal:1", 1, 250),
            e("c", "terminal:1", 30, 5),
            e("d", "terminal:2", 1, 7),
        ];
        assert_eq!(store.add(&events).unwrap(), 4, "{name}");
        // A replay of the whole batch, and a retry inside a batch: nothing new.
        assert_eq!(store.add(&events).unwrap(), 0, "{name}");
        assert_eq!(store.add(&[e("e", "terminal:1", 1, 1), e("e", "terminal:1", 1, 1)]).unwrap(), 1, "{name}");
        let q = |entity, hours: i64, buckets| WindowQuery { entity, at_ms: START + hours * HOUR, buckets };
        let windows = store
            .windows(&[
                q("terminal:1", 1, 1),
                q("terminal:1", 1, 24),
                q("terminal:1", 30, 24),
                q("terminal:1", 30, 31),
                q("terminal:3", 1, 24),
            ])
            .unwrap();
        assert_eq!(
            windows,
            vec![
                WindowTotals { count: 2, sum_minor: 251 }, // hour 1: b, e
                WindowTotals { count: 3, sum_minor: 351 }, // hours 0-1
                WindowTotals { count: 1, sum_minor: 5 },   // hours 7-30
                WindowTotals { count: 4, sum_minor: 356 }, // hours 0-30
                WindowTotals::default(),                   // unknown entity
            ],
            "{name}"
        );
    }
}

#[test]
fn redis_agrees_with_the_embedded_counters_on_random_batches_with_replays() {
    let mut stores = stores("agree");
    let mut next = paystream_testkit::xorshift(0x2545_f491_4f6c_dd1d);
    let entities = ["terminal:1", "terminal:2", "merchant:M{weird}", "device:d-9", "terminal:ünï"];
    let mut all: Vec<(String, &str, i64, i64)> = Vec::new();
    for _ in 0..40 {
        let size = 1 + next() % 200;
        let mut batch: Vec<(String, &str, i64, i64)> = (0..size)
            .map(|_| {
                let id = format!("p{}", next() % 3_000); // ids repeat: retries and replays
                let entity = entities[(next() % entities.len() as u64) as usize];
                let time = START + (next() % (7 * 24 * HOUR as u64)) as i64;
                (id, entity, time, 1 + (next() % 100_000) as i64)
            })
            .collect();
        // Replays are the same event: same id, entity, time and amount.
        batch.iter_mut().for_each(|e| {
            if let Some(earlier) = all.iter().find(|(id, ..)| *id == e.0) {
                *e = earlier.clone();
            }
        });
        if next().is_multiple_of(4) && !all.is_empty() {
            batch.extend(all.iter().take(50).cloned()); // a replay after a crash
        }
        let events = counter_events(&batch);
        let added: Vec<u64> = stores.iter_mut().map(|(_, s)| s.add(&events).unwrap()).collect();
        assert_eq!(added[0], added[1], "both count the same events as new");
        all.extend(batch.iter().cloned());
    }
    let queries: Vec<WindowQuery<'_>> = (0..300)
        .map(|_| WindowQuery {
            entity: entities[(next() % entities.len() as u64) as usize],
            at_ms: START + (next() % (8 * 24 * HOUR as u64)) as i64,
            buckets: [1, 6, 24, 168][(next() % 4) as usize],
        })
        .collect();
    let memory = stores[0].1.windows(&queries).unwrap();
    let redis = stores[1].1.windows(&queries).unwrap();
    assert_eq!(memory, redis);
    assert!(memory.iter().filter(|w| w.count > 0).count() > 100, "the queries hit data");
}

#[test]
fn redis_keys_share_a_slot_per_call_and_expire_together() {
    let mut store = redis("keys");
    let event = |id| CounterEvent { entity: "terminal:{x}", event_id: id, event_time_ms: START, amount_minor: 5 };
    store.add(&[event("p1")]).unwrap();
    let bucket = START / HOUR;
    let (counts, ids) = (store.counts_key("terminal:{x}", bucket), store.ids_key("terminal:{x}", bucket));
    let tag = &counts[counts.find('{').unwrap()..=counts.find('}').unwrap()];
    assert_eq!(tag.len(), 3, "a hash tag of the entity's key shard (one of 16), whatever its id: {counts}");
    assert_eq!(ids.matches(tag).count(), 1, "ids and counts share the slot");
    let mut connection = redis::Client::open(redis_url()).unwrap().get_connection().unwrap();
    let read = |connection: &mut redis::Connection| -> Vec<i64> {
        let value: Vec<u8> = redis::cmd("GET").arg(&counts).query(connection).unwrap();
        value.chunks(8).map(|b| i64::from_be_bytes(b.try_into().unwrap())).collect()
    };
    let first = read(&mut connection);
    assert_eq!(first[..2], [1, 5], "the bucket's count and sum");
    let expires_at = |key: &str, connection: &mut redis::Connection| -> i64 {
        redis::cmd("PEXPIRETIME").arg(key).query(connection).unwrap()
    };
    let at = expires_at(&counts, &mut connection);
    let in_8_days =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 + 8 * 86_400_000;
    assert!(at > in_8_days - 60_000 && at <= in_8_days, "expires at {at}");
    assert_eq!(expires_at(&ids, &mut connection), at, "the id set expires with the counts it guards");
    // A count soon after keeps both TTLs as they were.
    std::thread::sleep(std::time::Duration::from_millis(20));
    store.add(&[event("p2")]).unwrap();
    assert_eq!(read(&mut connection)[..3], [2, 10, first[2]], "counted; TTLs set when they were");
    assert_eq!(expires_at(&counts, &mut connection), at);
    assert_eq!(expires_at(&ids, &mut connection), at);
}

/// With 1 s buckets kept 2 s: a bucket's counts and ids expire together, and a 64th of
/// the retention after they were set, a count sets both TTLs again.
#[test]
fn a_bucket_expires_with_its_ids_and_counts_refresh_both() {
    const SECOND: i64 = 1_000;
    let config = CounterConfig { bucket_ms: SECOND, retention_ms: 2 * SECOND };
    let prefix = format!("pstest:expiry:{}", paystream_testkit::unique_suffix());
    let mut store = Blocking::<RedisCounters>::connect(&redis_url(), &prefix, config).unwrap();
    let e = |id| CounterEvent { entity: "merchant:M1", event_id: id, event_time_ms: START, amount_minor: 10 };
    let window = [WindowQuery { entity: "merchant:M1", at_ms: START, buckets: 1 }];
    let w = |count, sum_minor| vec![WindowTotals { count, sum_minor }];
    assert_eq!(store.add(&[e("a"), e("b")]).unwrap(), 2);
    std::thread::sleep(std::time::Duration::from_millis(1_200));
    assert_eq!(store.add(&[e("a"), e("c")]).unwrap(), 1, "a replay inside the retention counts nothing");
    std::thread::sleep(std::time::Duration::from_millis(1_200));
    assert_eq!(store.windows(&window).unwrap(), w(3, 30), "the count at 1.2 s kept the bucket");
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    assert_eq!(store.windows(&window).unwrap(), w(0, 0), "expired");
    assert_eq!(store.add(&[e("a")]).unwrap(), 1, "with its ids: counted again, once");
    assert_eq!(store.windows(&window).unwrap(), w(1, 10));
}

#[test]
fn an_event_without_an_id_or_with_an_inexact_amount_is_refused() {
    let mut store = redis("refused");
    let e =
        |event_id, amount_minor| CounterEvent { entity: "merchant:M1", event_id, event_time_ms: START, amount_minor };
    for (event, why) in [(e("", 1), "non-empty id"), (e("p", 1 << 60), "2^53")] {
        let error = store.add_and_windows(&[event], 1).unwrap_err().to_string();
        assert!(error.contains(why), "{error}");
    }
    assert_eq!(store.windows(&[WindowQuery { entity: "merchant:M1", at_ms: START, buckets: 1 }]).unwrap()[0].count, 0);
}

#[test]
fn add_and_windows_sees_each_event_after_its_predecessors_only() {
    for (name, mut store) in stores("interleaved") {
        let e = |id: &'static str, minutes: i64, cents: i64| CounterEvent {
            entity: "merchant:M1",
            event_id: id,
            event_time_ms: START + minutes * 60_000,
            amount_minor: cents,
        };
        // Hourly buckets; windows of 2 buckets (this hour and the one before).
        let batch = [e("a", 10, 100), e("b", 70, 20), e("a", 10, 100), e("c", 5, 3), e("d", 200, 1)];
        let windows = store.add_and_windows(&batch, 2).unwrap();
        let w = |count, sum_minor| WindowTotals { count, sum_minor };
        assert_eq!(
            windows,
            vec![
                w(1, 100), // a: itself
                w(2, 120), // b (hour 1): a and itself
                w(1, 100), // a again (hour 0): counted once; b is in the hour after
                w(2, 103), // c (hour 0): a, itself — not b, which is in the hour after
                w(1, 1),   // d (hour 3): alone in hours 2-3
            ],
            "{name}"
        );
        // A replay of the batch counts nothing and reads the totals of the end.
        let again = store.add_and_windows(&batch[..2], 2).unwrap();
        assert_eq!(again, vec![w(2, 103), w(3, 123)], "{name}");
    }
}

#[test]
fn add_and_windows_agrees_between_redis_and_the_embedded_counters() {
    let mut stores = stores("interleaved-agree");
    let mut next = paystream_testkit::xorshift(0x9e37_79b9_7f4a_7c15);
    let entities = ["merchant:M1", "merchant:M2", "device:{d}", "merchant:ü"];
    let mut seen: Vec<(String, &str, i64, i64)> = Vec::new();
    let mut results: Vec<Vec<WindowTotals>> = vec![Vec::new(), Vec::new()];
    for _ in 0..30 {
        let batch: Vec<(String, &str, i64, i64)> = (0..1 + next() % 150)
            .map(|_| {
                let id = format!("p{}", next() % 2_000);
                if let Some(earlier) = seen.iter().find(|(seen_id, ..)| *seen_id == id) {
                    return earlier.clone(); // a replay is the same event
                }
                let entity = entities[(next() % entities.len() as u64) as usize];
                let time = START + (next() % (3 * 24 * HOUR as u64)) as i64;
                (id, entity, time, 1 + (next() % 50_000) as i64)
            })
            .collect();
        let events = counter_events(&batch);
        for (i, (_, store)) in stores.iter_mut().enumerate() {
            results[i].extend(store.add_and_windows(&events, 6).unwrap());
        }
        seen.extend(batch);
    }
    assert_eq!(results[0], results[1]);
    assert!(results[0].iter().filter(|w| w.count > 1).count() > 100, "windows hold more than the event itself");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_async_api_runs_inside_a_runtime_where_the_blocking_one_refuses() {
    fn assert_send<T: Send>(_: &T) {}
    let prefix = format!("pstest:async:{}", paystream_testkit::unique_suffix());
    let mut store = RedisCounters::connect(&redis_url(), &prefix, CounterConfig::default()).await.unwrap();
    let event = CounterEvent { entity: "merchant:M1", event_id: "p1", event_time_ms: START, amount_minor: 7 };
    let events = [event];
    let add = store.add_and_windows(&events, 1);
    assert_send(&add); // an axum handler may hold it across an await
    assert_eq!(add.await.unwrap(), vec![WindowTotals { count: 1, sum_minor: 7 }]);
    assert_eq!(store.add(&[event]).await.unwrap(), 0, "counted once");
    let query = WindowQuery { entity: "merchant:M1", at_ms: START, buckets: 1 };
    assert_eq!(store.windows(&[query]).await.unwrap(), vec![WindowTotals { count: 1, sum_minor: 7 }]);
    // As an axum handler would misuse it: refused, never a panic.
    assert!(matches!(
        Blocking::<RedisCounters>::connect(&redis_url(), &prefix, CounterConfig::default()),
        Err(paystream_storage::StorageError::InsideRuntime { .. })
    ));
}

/// The simplest correct counters: per (entity, bucket), the ids counted, their number
/// and sum; events handled one at a time.
#[derive(Default)]
struct Model {
    buckets: std::collections::HashMap<(String, i64), (std::collections::HashSet<String>, u64, i64)>,
}

impl Model {
    fn add_and_window(&mut self, entity: &str, id: &str, time_ms: i64, amount: i64, window: u32) -> WindowTotals {
        let bucket = time_ms.div_euclid(HOUR);
        let (ids, count, sum) = self.buckets.entry((entity.to_string(), bucket)).or_default();
        if ids.insert(id.to_string()) {
            *count += 1;
            *sum += amount;
        }
        let mut totals = WindowTotals::default();
        for b in bucket - i64::from(window) + 1..=bucket {
            if let Some((_, count, sum)) = self.buckets.get(&(entity.to_string(), b)) {
                totals.count += count;
                totals.sum_minor += sum;
            }
        }
        totals
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// Batched calls (grouped by entity and key shard, split past the per-call cap) give
    /// each event what one event at a time gives: itself and its predecessors, replays
    /// counted once.
    #[test]
    fn batched_calls_equal_one_event_at_a_time(
        batches in proptest::collection::vec(
            proptest::collection::vec((0usize..6, 0u32..400, 0i64..(6 * HOUR), 1i64..100_000), 1..700),
            1..4,
        ),
        window in 1u32..4,
    ) {
        let entities = ["merchant:M1", "merchant:M2", "device:d1", "device:{d2}", "merchant:ü", "terminal:T"];
        let mut store = redis("batched");
        let mut model = Model::default();
        // A replay is the same event: an id keeps the entity, time and amount it had first.
        let mut first: std::collections::HashMap<u32, (usize, i64, i64)> = Default::default();
        for batch in batches {
            let batch: Vec<(String, &str, i64, i64)> = batch
                .into_iter()
                .map(|(entity, id, time, amount)| {
                    let (entity, time, amount) = *first.entry(id).or_insert((entity, time, amount));
                    (format!("p{id}"), entities[entity], START + time, amount)
                })
                .collect();
            let expected: Vec<WindowTotals> =
                batch.iter().map(|(id, entity, time, amount)| model.add_and_window(entity, id, *time, *amount, window)).collect();
            let got = store.add_and_windows(&counter_events(&batch), window).unwrap();
            proptest::prop_assert_eq!(got, expected);
        }
    }
}
