//! The paystream pipeline: the log (embedded or Kafka) behind [`log::Log`], the runtime
//! whose partition workers run the operator chain over batches and commit exactly once,
//! the connectors beside them (sinks, terminal index, velocity store, model file) and
//! the metrics.
//!
//! Dependencies run one way: `limits`, `error`, `config` and `control` → `log` →
//! `topics` and `context` → `connectors` → `runtime`. Connectors never import the runtime.

pub mod clock;
pub mod config;
pub mod connectors;
pub mod context;
pub mod control;
pub mod error;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod runtime;
pub mod topics;

pub use config::{PipelineConfig, TopicNames, VelocityStore};
pub use connectors::model_file::load_model_file;
pub use control::{RunControl, RunMode, RunReport};
pub use error::RuntimeError;
pub use runtime::Pipeline;
pub use topics::{PipelineTopics, ensure_topics};
