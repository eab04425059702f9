//! Refresh-token rotation: every use returns a new token and spends the old one. A spent
//! token presented again means it was stolen (or the client is broken): the whole
//! family, that is the session, is revoked, as RFC 9700 (OAuth 2.0 security BCP,
//! section 4.14.2) recommends.

/// What the store knows about a presented refresh token and its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshState {
    pub token_used: bool,
    pub session_revoked: bool,
    pub session_expires_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshVerdict {
    /// Spend the token, issue a new one and a new access token.
    Rotate,
    /// Reuse: revoke the session (every token of the family).
    RevokeFamily,
    /// The session ended (logout, expiry, earlier reuse): refuse.
    Refuse,
}

pub fn judge_refresh(state: RefreshState, now_ms: i64) -> RefreshVerdict {
    if state.session_revoked || now_ms >= state.session_expires_at_ms {
        RefreshVerdict::Refuse
    } else if state.token_used {
        RefreshVerdict::RevokeFamily
    } else {
        RefreshVerdict::Rotate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_rules() {
        let fresh = RefreshState { token_used: false, session_revoked: false, session_expires_at_ms: 100 };
        assert_eq!(judge_refresh(fresh, 99), RefreshVerdict::Rotate);
        assert_eq!(judge_refresh(fresh, 100), RefreshVerdict::Refuse);
        assert_eq!(judge_refresh(RefreshState { token_used: true, ..fresh }, 0), RefreshVerdict::RevokeFamily);
        let revoked = RefreshState { token_used: true, session_revoked: true, ..fresh };
        assert_eq!(judge_refresh(revoked, 0), RefreshVerdict::Refuse);
    }
}
