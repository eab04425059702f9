//! Lengths of time in milliseconds of event time: `paystream_domain::time`'s.

pub use paystream_domain::time::{MILLIS_PER_DAY, MILLIS_PER_HOUR, MILLIS_PER_MINUTE, MILLIS_PER_SECOND};
