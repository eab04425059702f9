//! Login throttling: failed logins are counted per account and per client address in a
//! fixed window; past the limit, logins for that key are refused with 429 and
//! `Retry-After` until the window ends, even with the right password (so guessing
//! cannot go on). A success clears the account's count.
//!
//! The counts are per process (the gateway's shared rate limits are in Redis); with N
//! replicas an attacker gets at most N times the limit.

use std::collections::HashMap;
use std::sync::Mutex;

/// Failed logins per account per window.
pub const ACCOUNT_FAILURES_MAX: u32 = 5;
/// Failed logins per client address per window.
pub const ADDRESS_FAILURES_MAX: u32 = 20;
pub const WINDOW_MS: i64 = 15 * 60 * 1000;
/// Keys tracked at once. When full and nothing has expired, unknown keys are refused
/// (fail closed) rather than tracked nowhere.
pub const KEYS_MAX: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    started_at_ms: i64,
    failures: u32,
}

#[derive(Debug, Default)]
pub struct LoginThrottle {
    windows: Mutex<HashMap<String, Window>>,
}

impl LoginThrottle {
    /// `Err(retry_after_seconds)` if any of `keys` (with their limits) is over its limit.
    pub fn check(&self, keys: &[(&str, u32)], now_ms: i64) -> Result<(), u64> {
        let windows = self.windows.lock().expect("throttle lock");
        for (key, limit) in keys {
            if let Some(window) = windows.get(*key) {
                let ends_at_ms = window.started_at_ms + WINDOW_MS;
                if now_ms < ends_at_ms && window.failures >= *limit {
                    return Err(((ends_at_ms - now_ms) as u64).div_ceil(1000));
                }
            }
        }
        if windows.len() >= KEYS_MAX && keys.iter().any(|(key, _)| !windows.contains_key(*key)) {
            return Err(1);
        }
        Ok(())
    }

    pub fn record_failure(&self, keys: &[&str], now_ms: i64) {
        let mut windows = self.windows.lock().expect("throttle lock");
        if windows.len() >= KEYS_MAX {
            windows.retain(|_, window| now_ms < window.started_at_ms + WINDOW_MS);
        }
        for key in keys {
            if windows.len() >= KEYS_MAX && !windows.contains_key(*key) {
                continue;
            }
            let window = windows.entry((*key).to_string()).or_insert(Window { started_at_ms: now_ms, failures: 0 });
            if now_ms >= window.started_at_ms + WINDOW_MS {
                *window = Window { started_at_ms: now_ms, failures: 0 };
            }
            window.failures += 1;
        }
    }

    pub fn clear(&self, key: &str) {
        self.windows.lock().expect("throttle lock").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_until_the_window_ends() {
        let throttle = LoginThrottle::default();
        let keys = [("account:a", 2), ("ip:1", 3)];
        assert_eq!(throttle.check(&keys, 0), Ok(()));
        throttle.record_failure(&["account:a", "ip:1"], 0);
        assert_eq!(throttle.check(&keys, 1), Ok(()));
        throttle.record_failure(&["account:a", "ip:1"], 1_000);
        assert_eq!(throttle.check(&keys, 1_000), Err(899));
        assert_eq!(throttle.check(&[("account:b", 2), ("ip:1", 3)], 1_000), Ok(()));
        throttle.record_failure(&["account:b", "ip:1"], 2_000);
        assert!(throttle.check(&[("account:c", 2), ("ip:1", 3)], 2_000).is_err(), "the address is over");
        assert_eq!(throttle.check(&keys, WINDOW_MS), Ok(()), "the window ended");
        throttle.clear("account:a");
        throttle.record_failure(&["account:a"], WINDOW_MS);
        assert_eq!(throttle.check(&[("account:a", 2)], WINDOW_MS), Ok(()));
    }
}
