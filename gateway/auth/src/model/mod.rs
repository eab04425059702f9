//! The auth service's rules, as pure functions and types: no IO, no clock, no
//! randomness (callers pass the time and fresh secrets in).

pub mod account;
pub mod claims;
pub mod refresh;

pub use account::{NewAccount, normalize_email, validate_display_name, validate_password};
pub use claims::AccessClaims;
pub use refresh::{RefreshState, RefreshVerdict, judge_refresh};
