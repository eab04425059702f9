//! The pipeline's one error type.

use paystream_operators::OperatorError;
use paystream_storage::StorageError;
use thiserror::Error;

use crate::log::LogError;

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Operator(#[from] OperatorError),
    #[error("encoding an output record: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("invalid pipeline configuration: {0}")]
    Config(String),
    #[error("cannot restore partition {partition}: {why}")]
    Restore { partition: u32, why: String },
    #[error("worker thread panicked: {0}")]
    WorkerPanicked(String),
    #[error("model file {path}: {why}")]
    Model { path: std::path::PathBuf, why: String },
}
