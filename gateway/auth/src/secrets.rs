//! Fresh secrets and identifiers, and how secrets are stored (SHA-256, hex).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use paystream_http::hex::encode as hex;
use sha2::{Digest, Sha256};

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes
}

/// `usr_…`, `ses_…`, `key_…`, `jti`: 16 random bytes, hex.
pub fn new_id(kind: &str) -> String {
    format!("{kind}_{}", hex(&random::<16>()))
}

/// An opaque refresh token: `rt_` and 32 random bytes, base64url.
pub fn new_refresh_token() -> String {
    format!("rt_{}", URL_SAFE_NO_PAD.encode(random::<32>()))
}

pub const API_KEY_PREFIX_CHARS: usize = 12;

/// An API key, `psk_<prefix>_<secret>`, and its prefix (12 hex characters, stored and
/// shown; the secret is 32 random bytes, base64url, shown once).
pub fn new_api_key() -> (String, String) {
    let prefix = hex(&random::<6>());
    (format!("psk_{prefix}_{}", URL_SAFE_NO_PAD.encode(random::<32>())), prefix)
}

/// The prefix of something shaped like an API key.
pub fn api_key_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("psk_")?;
    let (prefix, secret) = rest.split_once('_')?;
    (prefix.len() == API_KEY_PREFIX_CHARS && !secret.is_empty()).then_some(prefix)
}

/// How refresh tokens and API keys are stored. They are 256-bit random, so an unsalted
/// fast hash is enough (no dictionary to try).
pub fn secret_hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Compares two hashes in time independent of where they differ.
pub fn hashes_equal(left: &str, right: &str) -> bool {
    left.len() == right.len() && left.bytes().zip(right.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_have_a_findable_prefix() {
        let (key, prefix) = new_api_key();
        assert_eq!(api_key_prefix(&key), Some(prefix.as_str()));
        assert_eq!(api_key_prefix("psk_short_x"), None);
        assert_eq!(api_key_prefix("rt_abc"), None);
        assert!(hashes_equal(&secret_hash(&key), &secret_hash(&key)));
        assert!(!hashes_equal(&secret_hash(&key), &secret_hash("other")));
        assert_ne!(new_refresh_token(), new_refresh_token());
        assert!(new_id("usr").starts_with("usr_"));
    }
}
