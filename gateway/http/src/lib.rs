//! What paystream's HTTP services share, so that every service answers alike:
//!
//! - [`problem`]: errors as RFC 9457 `application/problem+json` with a stable `code` and
//!   the request id, and no internals in 5xx bodies.
//! - [`request_id`]: the `X-Request-Id` every request carries (kept when valid, else
//!   generated), returned on the response and put in the tracing span.
//! - [`principal`]: who is calling. A service never parses tokens itself: an
//!   [`Authenticator`] (the auth service's, in process or remote) turns the bearer
//!   credential into a [`Principal`] with roles.
//! - [`access`]: deny by default. Every route is added with the roles it admits; a route
//!   without a declaration cannot be added.
//! - [`json`]: a JSON body extractor whose refusals (415, 413, 400 with the field path)
//!   are problems too.
//!
//! - [`database`]: a service's store on SQLite (embedded) or PostgreSQL (own schema),
//!   through one query layer.
//!
//! Invariant: no handler here does IO; services bring their stores.

pub mod access;
pub mod clock;
pub mod database;
pub mod hex;
pub mod json;
pub mod limits;
pub mod principal;
pub mod problem;
pub mod request_id;

pub use access::{Access, SecuredRouter};
pub use json::ApiJson;
pub use principal::{AuthFailure, Authenticator, ClientIp, Principal, Role, SharedAuthenticator};
pub use problem::Problem;
pub use request_id::RequestId;
