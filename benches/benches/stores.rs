//! Windowed counters: embedded vs Redis (batched: one pipelined round trip per batch).
//! Needs Redis (`PAYSTREAM_BENCH_REDIS_URL`, default `redis://127.0.0.1:6379`).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use paystream_domain::time::{MILLIS_PER_HOUR, MILLIS_PER_MINUTE};
use paystream_storage::counters::{CounterConfig, CounterEvent, MemoryCounters, WindowQuery, WindowedCounters};
use paystream_storage_redis::{Blocking, RedisCounters};

const BATCH: usize = 2_048;
/// 2026-12-06T00:00:00Z: where the live-traffic case's event times start.
const LIVE_START_MS: i64 = 1_796_515_200_000;

/// Eight simulated days of payments as (event id, entity, event time, amount).
fn simulated_events() -> Vec<(String, String, i64, i64)> {
    let config = paystream_simulator::SimulatorConfig { days: 8, seed: 7, ..Default::default() };
    paystream_simulator::simulate(&config)
        .iter()
        .map(|t| {
            (
                t.transaction_id.to_string(),
                format!("terminal:{}", t.terminal_id),
                t.event_time_ms(&config),
                t.amount_cents,
            )
        })
        .collect()
}

fn counters(c: &mut Criterion) {
    let url = std::env::var("PAYSTREAM_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let events = simulated_events();
    let prefix = format!("psbench:{}", std::process::id());
    let mut stores: Vec<(&str, Box<dyn WindowedCounters>)> = vec![
        ("memory", Box::new(MemoryCounters::new(CounterConfig::default()).expect("config"))),
        (
            "redis",
            Box::new(
                Blocking::<RedisCounters>::connect(&url, &prefix, CounterConfig::default()).expect("Redis is running"),
            ),
        ),
    ];
    let mut group = c.benchmark_group("counters");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, store) in stores.iter_mut() {
        let mut next = 0usize;
        group.bench_function(format!("{name}/add_2048"), |b| {
            b.iter(|| {
                let batch: Vec<CounterEvent<'_>> = (0..BATCH)
                    .map(|i| {
                        let (id, entity, t, amount) = &events[(next + i) % events.len()];
                        CounterEvent { entity, event_id: id, event_time_ms: *t, amount_minor: *amount }
                    })
                    .collect();
                next += BATCH;
                store.add(&batch).expect("add")
            })
        });
        // One day (24 hourly buckets) per query, as a velocity feature would ask.
        group.bench_function(format!("{name}/window_24h_2048"), |b| {
            b.iter(|| {
                let queries: Vec<WindowQuery<'_>> = (0..BATCH)
                    .map(|i| {
                        let (_, entity, t, _) = &events[(next + i * 7) % events.len()];
                        WindowQuery { entity, at_ms: *t, buckets: 24 }
                    })
                    .collect();
                next += BATCH;
                store.windows(&queries).expect("windows").len()
            })
        });
    }
    group.finish();

    // The pipeline's velocity path: per payment, count it at its merchant (5-minute
    // buckets) and read the hour (12 buckets) ending with it, in one round trip per batch.
    let velocity = CounterConfig { bucket_ms: 5 * MILLIS_PER_MINUTE, retention_ms: 6 * MILLIS_PER_HOUR };
    let merchants: Vec<String> = events
        .iter()
        .map(|(_, terminal, _, _)| {
            let terminal_id = terminal.trim_start_matches("terminal:").parse::<u64>().unwrap_or(0);
            format!("merchant:M{}", terminal_id / 10)
        })
        .collect();
    let mut stores: Vec<(&str, Box<dyn WindowedCounters>)> = vec![
        ("memory", Box::new(MemoryCounters::new(velocity).expect("config"))),
        (
            "redis",
            Box::new(
                Blocking::<RedisCounters>::connect(&url, &format!("{prefix}:v"), velocity).expect("Redis is running"),
            ),
        ),
    ];
    let mut group = c.benchmark_group("velocity");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, store) in stores.iter_mut() {
        let mut next = 0usize;
        group.bench_function(format!("{name}/add_and_window_1h_2048"), |b| {
            b.iter(|| {
                // Fresh ids on every lap over the data, so every event is new.
                let ids: Vec<String> = (0..BATCH)
                    .map(|i| format!("{}/{}", events[(next + i) % events.len()].0, (next + i) / events.len()))
                    .collect();
                let batch: Vec<CounterEvent<'_>> = (0..BATCH)
                    .map(|i| {
                        let k = (next + i) % events.len();
                        let (_, _, t, amount) = &events[k];
                        CounterEvent {
                            entity: &merchants[k],
                            event_id: &ids[i],
                            event_time_ms: *t,
                            amount_minor: *amount,
                        }
                    })
                    .collect();
                next += BATCH;
                store.add_and_windows(&batch, 12).expect("add and windows").len()
            })
        });
        // The same merchants as live traffic sends them: event times advance with the
        // batches (2,048 payments a second), so a batch's payments share their buckets.
        let mut lap = 0usize;
        group.bench_function(format!("{name}/add_and_window_1h_2048_live"), |b| {
            b.iter(|| {
                let ids: Vec<String> = (0..BATCH).map(|i| format!("live/{lap}/{i}")).collect();
                let batch: Vec<CounterEvent<'_>> = (0..BATCH)
                    .map(|i| CounterEvent {
                        entity: &merchants[(lap * BATCH + i) % merchants.len()],
                        event_id: &ids[i],
                        event_time_ms: LIVE_START_MS + (lap * 1_000 + i * 1_000 / BATCH) as i64,
                        amount_minor: events[i].3,
                    })
                    .collect();
                lap += 1;
                store.add_and_windows(&batch, 12).expect("add and windows").len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, counters);
criterion_main!(benches);
