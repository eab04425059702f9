//! The dead-letter output: an input record the pipeline could not accept, with its
//! reason and original bytes.

use serde::{Deserialize, Serialize};

use super::rejection::{RejectReason, Rejection};

/// Most bytes of an input's key and of its value a dead letter copies: enough to see
/// what a record was, small enough that the dead letter itself always fits in the log
/// (base64 adds a third).
pub const DEAD_LETTER_COPY_BYTES_MAX: usize = 64 * 1024;

/// Output: an input record the pipeline could not accept, with its original bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub reason: RejectReason,
    pub detail: String,
    pub source_topic: String,
    pub source_partition: u32,
    pub source_offset: u64,
    /// Original key and value, base64 (standard alphabet), byte for byte; at most their
    /// first [`DEAD_LETTER_COPY_BYTES_MAX`] bytes each, and `detail` says when cut.
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
        let mut detail = rejection.detail;
        for (what, bytes) in [("key", key.len()), ("value", value.len())] {
            if bytes > DEAD_LETTER_COPY_BYTES_MAX {
                detail.push_str(&format!(
                    "; the {what} holds the first {DEAD_LETTER_COPY_BYTES_MAX} of its {bytes} bytes"
                ));
            }
        }
        let key = &key[..key.len().min(DEAD_LETTER_COPY_BYTES_MAX)];
        let value = &value[..value.len().min(DEAD_LETTER_COPY_BYTES_MAX)];
        DeadLetter {
            reason: rejection.reason,
            detail,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_of_large_keys_and_values_are_cut_and_say_so() {
        let rejection = || Rejection::new(RejectReason::RecordTooLarge, "too big");
        let small = DeadLetter::new(rejection(), "t", 0, 1, b"k", b"value");
        assert_eq!((small.original_value(), small.detail.as_str()), (b"value".to_vec(), "too big"));
        let value = vec![b'x'; DEAD_LETTER_COPY_BYTES_MAX + 1];
        let large = DeadLetter::new(rejection(), "t", 0, 1, b"k", &value);
        assert_eq!(large.original_value(), &value[..DEAD_LETTER_COPY_BYTES_MAX]);
        assert_eq!(large.detail, "too big; the value holds the first 65536 of its 65537 bytes");
    }
}
