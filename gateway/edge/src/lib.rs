//! The API gateway (the "edge") and the operations endpoints every process serves.
//!
//! - [`operations`]: `/metrics`, `/livez` (the process runs) and `/readyz` (it can do
//!   its job: state restored, not draining, stores reachable), on the metrics address.
//! - [`gateway`]: the public HTTP surface. It puts the services' routers behind one stack:
//!   request ids → client address → header rewriting → metrics → rate limits → timeout →
//!   response masking → the services,
//!   with 404 and 405 as problem+json.
//! - [`client_ip`]: which address a request comes from, trusting `X-Forwarded-For` only
//!   from configured proxies.
//! - [`headers`]: hop-by-hop and internal headers stripped both ways.
//! - [`mask`]: sensitive fields of JSON responses masked by configured rules.
//! - [`rate_limit`]: GCRA per client address and per credential, shared in Redis.
//! - [`proxy`]: services in other processes, by path prefix (`--route`); 502 when one
//!   cannot be reached.
//! - [`metrics`]: requests by route, method and status, latency, authentication
//!   failures by reason.

pub mod client_ip;
pub mod gateway;
pub mod headers;
pub mod mask;
pub mod metrics;
pub mod operations;
pub mod proxy;
pub mod rate_limit;

pub use gateway::{GatewayConfig, gateway_router, serve_gateway};
pub use metrics::HttpMetrics;
pub use operations::{Readiness, RenderMetrics, operations_router, serve_operations};
