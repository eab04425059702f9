//! Everything beside the workers that moves data in or out of the pipeline: the record
//! sink (PostgreSQL), the history sink (ScyllaDB), the terminal index, the velocity
//! store and the model file watcher. Connectors depend on the log, the settings and the
//! [`RunContext`](crate::context::RunContext), never on the runtime's internals; each
//! keeps its settings, its component and its tests together.

pub mod history_sink;
pub mod model_file;
pub mod record_sink;
mod sink_driver;
pub mod terminal_index;
pub(crate) mod velocity;
