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
    #[error("the SQL endpoint or output: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0:?}")]
    Stopped(crate::guard::Stop),
}

impl From<SqlError> for datafusion::error::DataFusionError {
    fn from(error: SqlError) -> Self {
        match error {
            SqlError::DataFusion(error) => error,
            SqlError::Stopped(stop) => stop.into(),
            other => datafusion::error::DataFusionError::External(Box::new(other)),
        }
    }
}
