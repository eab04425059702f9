//! Where and how to reach the cluster: [`ScyllaConfig`] and [`ConsistencyLevel`].

use paystream_storage::StorageError;
use scylla::statement::Consistency;

/// Where and how to reach the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScyllaConfig {
    /// `host:port` of one or more nodes (the driver discovers the rest).
    pub nodes: Vec<String>,
    /// `[a-z][a-z0-9_]{0,47}`.
    pub keyspace: String,
    pub replication_factor: u32,
    pub consistency: ConsistencyLevel,
}

impl ScyllaConfig {
    /// `nodes`: comma-separated `host:port` (the form of `SCYLLA_NODES`).
    pub fn new(nodes: &str, keyspace: &str) -> Result<ScyllaConfig, StorageError> {
        let nodes: Vec<String> = nodes.split(',').map(str::trim).filter(|n| !n.is_empty()).map(String::from).collect();
        if nodes.is_empty() {
            return Err(StorageError::InvalidConfig("no ScyllaDB node given (host:port, comma-separated)".into()));
        }
        check_keyspace(keyspace)?;
        Ok(ScyllaConfig {
            nodes,
            keyspace: keyspace.to_string(),
            replication_factor: 1,
            consistency: ConsistencyLevel::LocalQuorum,
        })
    }
}

pub(crate) fn check_keyspace(keyspace: &str) -> Result<(), StorageError> {
    let valid = keyspace.len() <= 48
        && keyspace.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && keyspace.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(StorageError::InvalidConfig(format!(
            "keyspace {keyspace:?}: use 1 to 48 of [a-z0-9_], starting with a letter"
        )))
    }
}

/// The consistency levels paystream offers (reads and writes alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsistencyLevel {
    One,
    LocalOne,
    Quorum,
    LocalQuorum,
    All,
}

impl ConsistencyLevel {
    pub fn parse(text: &str) -> Result<ConsistencyLevel, StorageError> {
        match text.to_ascii_lowercase().replace('-', "_").as_str() {
            "one" => Ok(ConsistencyLevel::One),
            "local_one" => Ok(ConsistencyLevel::LocalOne),
            "quorum" => Ok(ConsistencyLevel::Quorum),
            "local_quorum" => Ok(ConsistencyLevel::LocalQuorum),
            "all" => Ok(ConsistencyLevel::All),
            other => Err(StorageError::InvalidConfig(format!(
                "consistency {other:?}: one, local_one, quorum, local_quorum or all"
            ))),
        }
    }

    pub(crate) fn driver(self) -> Consistency {
        match self {
            ConsistencyLevel::One => Consistency::One,
            ConsistencyLevel::LocalOne => Consistency::LocalOne,
            ConsistencyLevel::Quorum => Consistency::Quorum,
            ConsistencyLevel::LocalQuorum => Consistency::LocalQuorum,
            ConsistencyLevel::All => Consistency::All,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_is_checked() {
        let config = ScyllaConfig::new("10.0.0.1:9042, 10.0.0.2:9042", "paystream_1").unwrap();
        assert_eq!(config.nodes, ["10.0.0.1:9042", "10.0.0.2:9042"]);
        assert_eq!(config.consistency, ConsistencyLevel::LocalQuorum);
        assert!(ScyllaConfig::new(" , ", "ks").is_err());
        for bad in ["", "1ks", "Paystream", "pay-stream", &"k".repeat(49)] {
            assert!(ScyllaConfig::new("h:9042", bad).is_err(), "{bad:?}");
        }
        assert_eq!(ConsistencyLevel::parse("LOCAL-QUORUM").unwrap(), ConsistencyLevel::LocalQuorum);
        assert_eq!(ConsistencyLevel::parse("one").unwrap(), ConsistencyLevel::One);
        assert!(ConsistencyLevel::parse("most").is_err());
    }
}
