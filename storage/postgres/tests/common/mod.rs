//! Helpers shared by the store tests.

#![allow(dead_code)]

/// A deterministic xorshift64 sequence: the same seed, the same test data forever.
pub fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

/// Unique per test run, for schema names and key prefixes on shared servers.
pub fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{}_{nanos}", std::process::id())
}
