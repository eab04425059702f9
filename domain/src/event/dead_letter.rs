//! The dead-letter output: an input record the pipeline could not accept, with its
//! reason and original bytes.

use serde::{Deserialize, Serialize};

use super::rejection::{RejectReason, Rejection};

/// Output: an input record the pipeline could not accept, with its original bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub reason: RejectReason,
    pub detail: String,
    pub source_topic: String,
    pub source_partition: u32,
    pub source_offset: u64,
    /// Original key and value, base64 (standard alphabet), byte for byte.
    pub key_base64: String,
    pub value_base64: String,
}

impl DeadLetter {
    pub fn new(
        rejection: Rejection,
        source_topic: &str,
        source_partition: u32,
        source_offset: u64,
        key: &[u8],
        value: &[u8],
    ) -> DeadLetter {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::STANDARD;
        DeadLetter {
            reason: rejection.reason,
            detail: rejection.detail,
            source_topic: source_topic.to_string(),
            source_partition,
            source_offset,
            key_base64: engine.encode(key),
            value_base64: engine.encode(value),
        }
    }

    pub fn original_value(&self) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(&self.value_base64).unwrap_or_default()
    }
}
