//! Idempotency keys (draft-ietf-httpapi-idempotency-key-header, Stripe's semantics):
//! a key is scoped to its client; the first request with it is answered and the answer
//! kept; the same key with the same request replays that answer byte for byte; with a
//! different request it is refused (422); while the first is in flight, 409. A request
//! that was in flight longer than [`IN_FLIGHT_TIMEOUT_MS`] (its process died) may be
//! taken over: the payment id is the same, so the pipeline decides it once.

use sha2::{Digest, Sha256};

use crate::error::PaymentsError;

pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;
pub const IN_FLIGHT_TIMEOUT_MS: i64 = 30_000;

/// A key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub request_hash: String,
    pub locked_at_ms: i64,
    /// The answer, once there is one: status, `Location`, body.
    pub answer: Option<(u16, Option<String>, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyVerdict {
    /// Answer it (the key is now locked by this request).
    Proceed,
    Replay {
        status: u16,
        location: Option<String>,
        body: String,
    },
    KeyReused,
    InFlight,
    /// The request in flight was abandoned: take it over.
    TakeOver,
}

pub fn judge_key(stored: &StoredKey, request_hash: &str, now_ms: i64) -> IdempotencyVerdict {
    if stored.request_hash != request_hash {
        return IdempotencyVerdict::KeyReused;
    }
    match &stored.answer {
        Some((status, location, body)) => {
            IdempotencyVerdict::Replay { status: *status, location: location.clone(), body: body.clone() }
        }
        None if now_ms - stored.locked_at_ms >= IN_FLIGHT_TIMEOUT_MS => IdempotencyVerdict::TakeOver,
        None => IdempotencyVerdict::InFlight,
    }
}

/// A key is 1 to 255 visible ASCII characters.
pub fn validate_key(key: Option<&str>) -> Result<&str, PaymentsError> {
    let key =
        key.ok_or_else(|| PaymentsError::invalid("idempotency_key_missing", "the Idempotency-Key header is required"))?;
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX || !key.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(PaymentsError::invalid(
            "idempotency_key_invalid",
            format!("Idempotency-Key: 1 to {IDEMPOTENCY_KEY_BYTES_MAX} visible ASCII characters"),
        ));
    }
    Ok(key)
}

/// The hash that says whether two requests are the same: the route and the body as
/// canonical JSON (object keys sorted), so key order and whitespace do not matter.
pub fn request_hash(route: &str, body: &serde_json::Value) -> String {
    fn canonical(value: &serde_json::Value, out: &mut String) {
        match value {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(key.clone()).to_string());
                    out.push(':');
                    canonical(&map[key], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = format!("{route}\n");
    canonical(body, &mut text);
    paystream_http::hex::encode(&Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn verdicts() {
        let hash = request_hash("/v1/payments", &json!({"a": 1, "b": [1, {"c": 2, "d": 3}]}));
        assert_eq!(hash, request_hash("/v1/payments", &json!({"b": [1, {"d": 3, "c": 2}], "a": 1})));
        assert_ne!(hash, request_hash("/v1/wallet/top-ups", &json!({"a": 1, "b": [1, {"c": 2, "d": 3}]})));
        let in_flight = StoredKey { request_hash: hash.clone(), locked_at_ms: 1_000, answer: None };
        assert_eq!(judge_key(&in_flight, &hash, 1_001), IdempotencyVerdict::InFlight);
        assert_eq!(judge_key(&in_flight, &hash, 1_000 + IN_FLIGHT_TIMEOUT_MS), IdempotencyVerdict::TakeOver);
        assert_eq!(judge_key(&in_flight, "other", 1_001), IdempotencyVerdict::KeyReused);
        let answered = StoredKey { answer: Some((201, None, "{}".into())), ..in_flight };
        assert_eq!(
            judge_key(&answered, &hash, 99_999_999),
            IdempotencyVerdict::Replay { status: 201, location: None, body: "{}".into() }
        );
        assert!(validate_key(None).is_err());
        assert!(validate_key(Some("")).is_err());
        assert!(validate_key(Some("a b")).is_err());
        assert!(validate_key(Some(&"k".repeat(256))).is_err());
        assert_eq!(validate_key(Some("order-42")).unwrap(), "order-42");
    }
}
