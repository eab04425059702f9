//! The paystream runtime: the log abstraction and its embedded implementation, the
//! partition workers that run the operator chain over batches, and metrics.

pub mod history_sink;
pub mod log;
pub mod metrics;
pub mod model;
pub mod runtime;
pub mod sink;
pub mod terminals;

pub use runtime::{Pipeline, PipelineConfig, PipelineTopics, RunControl, RunMode, RunReport, RuntimeError, TopicNames};
