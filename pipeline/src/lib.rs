//! The paystream runtime: the log abstraction and its embedded implementation, the
//! partition workers that run the operator chain over batches, and metrics.

pub mod log;
