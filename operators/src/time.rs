//! Lengths of time in milliseconds of event time, beside `paystream_domain::time`'s.

pub use paystream_domain::time::{MILLIS_PER_DAY, MILLIS_PER_SECOND};

pub const MILLIS_PER_MINUTE: i64 = 60 * MILLIS_PER_SECOND;
pub const MILLIS_PER_HOUR: i64 = 60 * MILLIS_PER_MINUTE;
