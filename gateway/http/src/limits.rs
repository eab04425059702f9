//! Bounds shared by every HTTP service.

/// The largest request body any service reads; larger bodies get 413.
pub const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;

/// The longest client-supplied `X-Request-Id` kept (longer ones are replaced).
pub const REQUEST_ID_BYTES_MAX: usize = 128;

/// The longest bearer credential read from `Authorization`.
pub const BEARER_BYTES_MAX: usize = 4 * 1024;
