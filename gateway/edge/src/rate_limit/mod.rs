//! Rate limits at the gateway: GCRA (the generic cell rate algorithm, as in redis-cell
//! and governor), per client address and per credential, in Redis so every gateway
//! replica shares one limit, or in process when no Redis is configured.
//!
//! - Two policies: `auth` (sign-up, login, refresh: strict) and `default` (everything
//!   else). A request is counted against its client address, and, when it carries a
//!   credential, against that credential too (a hash of it: no secret is stored).
//! - A refusal is 429 with `Retry-After` (seconds) and the IETF `RateLimit-Policy` and
//!   `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers); allowed answers carry
//!   `RateLimit` too.
//! - Redis unreachable or slower than [`REDIS_CALL_TIMEOUT_MS`]: money-moving routes
//!   fail closed (503 + `Retry-After`), the others fall back to the in-process limiter.
//!   Both are counted.

mod gcra;
mod layer;
mod redis_store;

pub use gcra::{Gcra, Verdict};
pub use layer::{RateLimitConfig, RateLimiter, rate_limit};
pub use redis_store::RedisGcra;

/// The longest a Redis round trip may take before the limiter counts Redis as down.
pub const REDIS_CALL_TIMEOUT_MS: u64 = 100;
