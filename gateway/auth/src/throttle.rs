//! Login throttling: failed logins are counted per account and per client address in a
//! fixed window; past the limit, logins for that key are refused with 429 and
//! `Retry-After` until the window ends, even with the right password (so guessing
//! cannot go on). A success clears the account's count. Attempts under way count against
//! the limit too, so concurrent guesses cannot all pass before the first one fails.
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
    /// Attempts begun and not finished: they count against the limit, so concurrent
    /// guesses cannot all pass the check before any of them fails.
    pending: u32,
}

impl Window {
    fn fresh(now_ms: i64) -> Window {
        Window { started_at_ms: now_ms, failures: 0, pending: 0 }
    }

    fn ends_at_ms(&self) -> i64 {
        self.started_at_ms + WINDOW_MS
    }
}

#[derive(Debug, Default)]
pub struct LoginThrottle {
    windows: Mutex<HashMap<String, Window>>,
}

/// A login attempt counted against its keys' limits while it runs. Finish it with
/// [`Attempt::failed`] or [`Attempt::succeeded`]; dropped unfinished (the client went
/// away before it could learn the answer), it counts nothing.
#[must_use]
pub struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    keys: Vec<String>,
    finished: bool,
}

impl LoginThrottle {
    /// Begins an attempt on `keys` (with their limits), or `Err(retry_after_seconds)` if
    /// any key's failures and attempts under way reach its limit. Checked and counted
    /// under one lock.
    pub fn attempt(&self, keys: &[(&str, u32)], now_ms: i64) -> Result<Attempt<'_>, u64> {
        let mut windows = self.windows.lock().expect("throttle lock");
        for (key, limit) in keys {
            if let Some(window) = windows.get(*key) {
                let counted = if now_ms < window.ends_at_ms() { window.failures } else { 0 };
                if counted + window.pending >= *limit {
                    return Err(((window.ends_at_ms() - now_ms).max(1_000) as u64).div_ceil(1000));
                }
            }
        }
        if windows.len() >= KEYS_MAX {
            windows.retain(|_, window| now_ms < window.ends_at_ms() || window.pending > 0);
            if windows.len() >= KEYS_MAX && keys.iter().any(|(key, _)| !windows.contains_key(*key)) {
                return Err(1); // full: refuse rather than track nowhere
            }
        }
        for (key, _) in keys {
            let window = windows.entry((*key).to_string()).or_insert(Window::fresh(now_ms));
            if now_ms >= window.ends_at_ms() {
                *window = Window { pending: window.pending, ..Window::fresh(now_ms) };
            }
            window.pending += 1;
        }
        Ok(Attempt { throttle: self, keys: keys.iter().map(|(key, _)| (*key).to_string()).collect(), finished: false })
    }

    fn finish(&self, keys: &[String], failed: bool, clear: Option<&str>) {
        let mut windows = self.windows.lock().expect("throttle lock");
        for key in keys {
            if let Some(window) = windows.get_mut(key) {
                window.pending = window.pending.saturating_sub(1);
                if failed {
                    window.failures += 1;
                }
            }
        }
        if let Some(key) = clear {
            if windows.get(key).is_some_and(|window| window.pending == 0) {
                windows.remove(key);
            } else if let Some(window) = windows.get_mut(key) {
                window.failures = 0;
            }
        }
    }
}

impl Attempt<'_> {
    /// The credentials were wrong: one failure on every key.
    pub fn failed(mut self) {
        self.finished = true;
        self.throttle.finish(&self.keys, true, None);
    }

    /// The credentials were right: `clear`'s failures are forgiven.
    pub fn succeeded(mut self, clear: &str) {
        self.finished = true;
        self.throttle.finish(&self.keys, false, Some(clear));
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.throttle.finish(&self.keys, false, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_until_the_window_ends() {
        let throttle = LoginThrottle::default();
        let keys = [("account:a", 2), ("ip:1", 3)];
        throttle.attempt(&keys, 0).unwrap().failed();
        throttle.attempt(&keys, 1_000).unwrap().failed();
        assert_eq!(throttle.attempt(&keys, 1_000).err(), Some(899));
        throttle.attempt(&[("account:b", 2), ("ip:1", 3)], 2_000).unwrap().failed();
        assert!(throttle.attempt(&[("account:c", 2), ("ip:1", 3)], 2_000).is_err(), "the address is over");
        assert!(throttle.attempt(&keys, WINDOW_MS).is_ok(), "the window ended");
        throttle.attempt(&[("account:a", 2)], WINDOW_MS).unwrap().failed();
        throttle.attempt(&[("account:a", 2)], WINDOW_MS).unwrap().succeeded("account:a");
        throttle.attempt(&[("account:a", 2)], WINDOW_MS).unwrap().failed();
        assert!(throttle.attempt(&[("account:a", 2)], WINDOW_MS).is_ok(), "a success forgave the failure before it");
    }

    /// Attempts under way count: with a limit of 2, a third concurrent guess is refused
    /// before the first two have failed.
    #[test]
    fn concurrent_attempts_cannot_pass_the_limit_together() {
        let throttle = LoginThrottle::default();
        let keys = [("account:a", 2)];
        let first = throttle.attempt(&keys, 0).unwrap();
        let second = throttle.attempt(&keys, 0).unwrap();
        assert!(throttle.attempt(&keys, 0).is_err());
        first.failed();
        drop(second); // abandoned: counts nothing
        let third = throttle.attempt(&keys, 0).unwrap();
        assert!(throttle.attempt(&keys, 0).is_err(), "one failure and one attempt under way");
        third.failed();
        assert!(throttle.attempt(&keys, 0).is_err(), "two failures");
    }
}
