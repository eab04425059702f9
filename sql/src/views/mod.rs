//! Continuous (materialized) views: windowed aggregates in event time, kept
//! incrementally, each closed window emitted exactly once to the view's topic
//! (`view.<name>`) in the same atomic commit as the view's progress; late rows counted
//! and routed there too, never dropped.
//!
//! - [`catalog`]: the views created over the wire, in a topic every process reads.
//! - [`follower`]: an endpoint's tables of the catalog's views, kept in step with it.
//! - [`definition`]: `CREATE MATERIALIZED VIEW` statements, checked.
//! - [`windows`]: the pure windowing operator (watermark, idleness, lateness).
//! - [`progress`]: what the view's topic holds.
//! - [`runner`]: the loop that reads, closes, evaluates and commits.
//! - [`table`]: the view's topic as SQL tables (`<view>`, `<view>_late`).
//!
//! DataFusion's own ordered unbounded aggregation is not used: it has no watermark or
//! lateness and trusts a declared order. Each window is instead computed by running the
//! view's SQL, bounded, over that window's rows.

pub mod catalog;
pub mod definition;
pub mod follower;
pub mod progress;
pub mod runner;
pub mod table;
pub mod windows;

pub use definition::{ViewDef, parse_views};
pub use runner::{RunningView, ViewRunner, ViewStats, spawn_views};
