//! GCRA as a pure function, and its in-process store.
//!
//! A policy allows `burst` requests at once and one more every `emission_ms`. State per
//! key is one number, the theoretical arrival time (TAT). A request at `now` is allowed
//! iff `max(TAT, now) + emission − now ≤ emission × burst`; then TAT moves by one
//! emission.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Requests allowed at once (and per window).
    pub burst: u32,
    /// Milliseconds per request at the sustained rate: window / burst.
    pub emission_ms: i64,
}

impl Gcra {
    /// `requests` per `window_ms`.
    pub fn per_window(requests: u32, window_ms: i64) -> Gcra {
        assert!(requests > 0 && window_ms > 0, "a rate limit allows something");
        Gcra { burst: requests, emission_ms: (window_ms / i64::from(requests)).max(1) }
    }

    pub fn window_ms(&self) -> i64 {
        self.emission_ms * i64::from(self.burst)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Requests left right now.
    pub remaining: u32,
    /// Milliseconds until the limit is whole again (allowed) or until a retry can pass
    /// (refused).
    pub reset_ms: i64,
}

/// One request against `tat`; returns the verdict and the new TAT (unchanged if refused).
pub fn check(policy: Gcra, tat: Option<i64>, now_ms: i64) -> (Verdict, i64) {
    let tat = tat.unwrap_or(now_ms).max(now_ms);
    let new_tat = tat + policy.emission_ms;
    let window = policy.window_ms();
    if new_tat - now_ms > window {
        let retry_ms = new_tat - now_ms - window;
        return (Verdict { allowed: false, remaining: 0, reset_ms: retry_ms }, tat);
    }
    let remaining = ((window - (new_tat - now_ms)) / policy.emission_ms) as u32;
    (Verdict { allowed: true, remaining, reset_ms: new_tat - now_ms }, new_tat)
}

/// Keys tracked in process; beyond it, expired keys are dropped, and if none has
/// expired, new keys are refused (fail closed rather than untracked).
pub const LOCAL_KEYS_MAX: usize = 100_000;

#[derive(Debug, Default)]
pub struct LocalGcra {
    tats: Mutex<HashMap<String, i64>>,
}

impl LocalGcra {
    pub fn check(&self, key: &str, policy: Gcra, now_ms: i64) -> Verdict {
        let mut tats = self.tats.lock().expect("rate limit lock");
        if tats.len() >= LOCAL_KEYS_MAX && !tats.contains_key(key) {
            tats.retain(|_, tat| *tat > now_ms);
            if tats.len() >= LOCAL_KEYS_MAX {
                return Verdict { allowed: false, remaining: 0, reset_ms: policy.emission_ms };
            }
        }
        let (verdict, new_tat) = check(policy, tats.get(key).copied(), now_ms);
        tats.insert(key.to_string(), new_tat);
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_one_per_emission() {
        let policy = Gcra::per_window(3, 3_000);
        let mut tat = None;
        let mut answers = Vec::new();
        for now in [0, 0, 0, 0, 999, 1_000, 1_000] {
            let (verdict, new_tat) = check(policy, tat, now);
            tat = Some(new_tat);
            answers.push((verdict.allowed, verdict.remaining, verdict.reset_ms));
        }
        assert_eq!(
            answers,
            [
                (true, 2, 1_000),
                (true, 1, 2_000),
                (true, 0, 3_000),
                (false, 0, 1_000),
                (false, 0, 1),
                (true, 0, 3_000),
                (false, 0, 1_000)
            ]
        );
        // Idle long enough, the whole burst is back.
        assert_eq!(check(policy, tat, 100_000).0.remaining, 2);
    }

    #[test]
    fn the_local_store_keeps_keys_apart() {
        let local = LocalGcra::default();
        let policy = Gcra::per_window(1, 60_000);
        assert!(local.check("a", policy, 0).allowed);
        assert!(!local.check("a", policy, 1).allowed);
        assert!(local.check("b", policy, 1).allowed);
        assert!(local.check("a", policy, 60_000).allowed);
    }
}
