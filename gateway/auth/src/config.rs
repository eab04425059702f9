//! The auth service's settings and their bounds.

use std::time::Duration;

/// Access tokens never live longer than this (the contract: 15 minutes).
pub const ACCESS_TOKEN_TTL_SECONDS_MAX: u64 = 15 * 60;

/// Leeway for clock skew when checking `exp` and `iat`.
pub const TOKEN_LEEWAY_SECONDS: u64 = 30;

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `iss` of every token, and what verification requires.
    pub issuer: String,
    /// `aud` of every token, and what verification requires.
    pub audience: String,
    pub access_token_ttl: Duration,
    /// A session (and its refresh token family) ends this long after login.
    pub session_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: "paystream".to_string(),
            audience: "paystream-api".to_string(),
            access_token_ttl: Duration::from_secs(ACCESS_TOKEN_TTL_SECONDS_MAX),
            session_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl AuthConfig {
    pub fn validate(&self) -> Result<(), String> {
        let ttl = self.access_token_ttl.as_secs();
        if ttl == 0 || ttl > ACCESS_TOKEN_TTL_SECONDS_MAX {
            return Err(format!("access token lifetime must be 1..={ACCESS_TOKEN_TTL_SECONDS_MAX} s, not {ttl}"));
        }
        if self.session_ttl < self.access_token_ttl {
            return Err("a session must outlive its access tokens".to_string());
        }
        if self.issuer.is_empty() || self.audience.is_empty() {
            return Err("issuer and audience must not be empty".to_string());
        }
        Ok(())
    }
}
