//! Kafka's default partitioner; lives in `paystream-domain` (the operators check that a
//! payment arrived on its payer's partition), re-exported here where the log uses it.

pub use paystream_domain::partitioner::{murmur2, partition_for_key};
