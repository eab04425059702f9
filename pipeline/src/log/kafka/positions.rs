//! Consumer positions as records of the compacted positions topic: key
//! `group/topic/partition`, value the next offset in decimal.

/// (group, topic, partition).
pub(super) type PositionKey = (String, String, u32);

pub(super) fn encode_position(group: &str, topic: &str, partition: u32, next_offset: u64) -> (Vec<u8>, Vec<u8>) {
    (format!("{group}/{topic}/{partition}").into_bytes(), next_offset.to_string().into_bytes())
}

pub(super) fn decode_position(key: &[u8], value: &[u8]) -> Option<(PositionKey, u64)> {
    let key = std::str::from_utf8(key).ok()?;
    let (rest, partition) = key.rsplit_once('/')?;
    let (group, topic) = rest.rsplit_once('/')?;
    let next_offset = std::str::from_utf8(value).ok()?.parse().ok()?;
    Some(((group.to_string(), topic.to_string(), partition.parse().ok()?), next_offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_records_round_trip() {
        let (key, value) = encode_position("team/paystream", "payments", 7, 12_345);
        let ((group, topic, partition), next) = decode_position(&key, &value).unwrap();
        // Topic names cannot hold '/', but a group name may.
        assert_eq!((group.as_str(), topic.as_str(), partition, next), ("team/paystream", "payments", 7, 12_345));
        assert!(decode_position(b"g/t/x", b"1").is_none());
        assert!(decode_position(b"g/t/1", b"-1").is_none());
    }
}
