//! Keyset pagination: lists are newest first; a cursor names the last item of a page
//! (`starting_after`), opaque to clients (base64url of `created_at_ms:payment_id`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::PaymentsError;

pub const PAGE_LIMIT_DEFAULT: u32 = 10;
pub const PAGE_LIMIT_MAX: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at_ms: i64,
    pub payment_id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.created_at_ms, self.payment_id))
    }

    pub fn decode(text: &str) -> Result<Cursor, PaymentsError> {
        let invalid = || PaymentsError::invalid("invalid_cursor", "starting_after: not a cursor from this API");
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let (created, payment_id) = text.split_once(':').ok_or_else(invalid)?;
        Ok(Cursor { created_at_ms: created.parse().map_err(|_| invalid())?, payment_id: payment_id.to_string() })
    }
}

pub fn page_limit(limit: Option<u32>) -> Result<u32, PaymentsError> {
    match limit {
        None => Ok(PAGE_LIMIT_DEFAULT),
        Some(limit) if (1..=PAGE_LIMIT_MAX).contains(&limit) => Ok(limit),
        Some(_) => Err(PaymentsError::invalid("invalid_limit", format!("limit: 1 to {PAGE_LIMIT_MAX}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_limits_are_bounded() {
        let cursor = Cursor { created_at_ms: 42, payment_id: "pay_ab:c".into() };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        assert!(Cursor::decode("!!").is_err());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode("x:y")).is_err());
        assert_eq!(page_limit(None).unwrap(), 10);
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(101)).is_err());
        assert_eq!(page_limit(Some(100)).unwrap(), 100);
    }
}
