//! paystream's windowed counters in Redis: [`RedisCounters`], async, the velocity
//! feature store several processes share (key schema in its module, the Lua script in
//! `script.lua`, how a batch becomes script calls in `plan.rs`). [`Blocking`] serves it
//! to plain threads through `paystream-storage`'s synchronous `WindowedCounters`.
//!
//! Invariants: an event is counted at most once per bucket, whatever the replays (one Lua
//! script checks and counts atomically); every key expires; the async API never blocks
//! and owns no runtime (only [`Blocking`] does, and it refuses inside a tokio runtime).

mod blocking;
mod counters;
mod plan;

pub use blocking::Blocking;
pub use counters::RedisCounters;
