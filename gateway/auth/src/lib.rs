//! The authentication service: sign-up, login, refresh, logout and `me`, access tokens
//! (EdDSA JWTs, at most 15 minutes), rotating refresh tokens, API keys and roles.
//!
//! - [`model`]: pure rules (e-mail and password policy, claims, refresh rotation), no IO.
//! - [`password`]: argon2id hashing, run off the async threads.
//! - [`keys`]: the signing keys, their JWKS and rotation.
//! - [`store`]: accounts, sessions, refresh tokens and API keys, on SQLite (embedded,
//!   durable on local disk) or PostgreSQL (production), through one query layer.
//! - [`throttle`]: login failures per account and per client address.
//! - [`routes`]: the HTTP API ([`router`]).
//! - [`authenticator`]: what the gateway and the other services use to turn a bearer
//!   credential into a [`paystream_http::Principal`].

pub mod authenticator;
pub mod config;
pub mod error;
pub mod keys;
pub mod model;
pub mod password;
pub mod routes;
pub mod secrets;
pub mod service;
pub mod store;
pub mod throttle;

pub use authenticator::TokenAuthenticator;
pub use config::AuthConfig;
pub use error::AuthError;
pub use keys::Keyring;
pub use routes::{authenticator, router};
pub use service::AuthService;
pub use store::AuthStore;
