//! The claims of an access token.

use paystream_http::Role;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// Seconds since the epoch.
    pub exp: u64,
    pub iat: u64,
    /// A unique token id.
    pub jti: String,
    pub roles: Vec<Role>,
    /// The login session; revoked at logout.
    pub sid: String,
    /// The account's authorization version when issued: a role change raises it, and
    /// tokens carrying an older one are refused.
    pub ver: i64,
    /// For merchants: the merchant id the account is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
}
