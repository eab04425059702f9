//! The SQL layer's errors.

use paystream_pipeline::log::LogError;

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("reading the log: {0}")]
    Log(#[from] LogError),
    #[error("building a batch: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("{0}")]
    Config(String),
    #[error("the SQL endpoint: {0}")]
    Io(#[from] std::io::Error),
}

impl From<SqlError> for datafusion::error::DataFusionError {
    fn from(error: SqlError) -> Self {
        match error {
            SqlError::DataFusion(error) => error,
            other => datafusion::error::DataFusionError::External(Box::new(other)),
        }
    }
}
