//! What an acceptable account looks like.

use crate::error::AuthError;

pub const EMAIL_BYTES_MAX: usize = 254;
/// NIST SP 800-63B: at least 8; we ask for 12.
pub const PASSWORD_CHARS_MIN: usize = 12;
/// Bounds argon2's input and the request body.
pub const PASSWORD_BYTES_MAX: usize = 1024;
pub const DISPLAY_NAME_CHARS_MAX: usize = 100;

/// A sign-up that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    pub email: String,
    pub display_name: String,
}

/// Lower-cases and checks an address: one `@`, a non-empty local part and a dotted
/// domain, no spaces or controls, at most [`EMAIL_BYTES_MAX`] bytes.
pub fn normalize_email(email: &str) -> Result<String, AuthError> {
    let email = email.trim().to_lowercase();
    let invalid = |why: &str| Err(AuthError::invalid("invalid_email", format!("email: {why}")));
    if email.is_empty() || email.len() > EMAIL_BYTES_MAX {
        return invalid("must be 1 to 254 bytes");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return invalid("must not contain spaces or control characters");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return invalid("must contain @");
    };
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
    {
        return invalid("is not an address");
    }
    Ok(email)
}

pub fn validate_password(password: &str) -> Result<(), AuthError> {
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(AuthError::invalid("invalid_password", format!("password: at most {PASSWORD_BYTES_MAX} bytes")));
    }
    if password.chars().count() < PASSWORD_CHARS_MIN {
        return Err(AuthError::invalid(
            "invalid_password",
            format!("password: at least {PASSWORD_CHARS_MIN} characters"),
        ));
    }
    Ok(())
}

pub fn validate_display_name(name: &str) -> Result<String, AuthError> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > DISPLAY_NAME_CHARS_MAX || name.chars().any(char::is_control) {
        return Err(AuthError::invalid(
            "invalid_display_name",
            format!("display_name: 1 to {DISPLAY_NAME_CHARS_MAX} characters, no control characters"),
        ));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(normalize_email(" Ada@Example.COM ").unwrap(), "ada@example.com");
        for bad in
            ["", "ada", "@example.com", "ada@example", "ada@@example.com", "a da@example.com", "ada@.com", "ada@com."]
        {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn passwords_and_names() {
        assert!(validate_password("short").is_err());
        assert!(validate_password("twelve chars").is_ok());
        assert!(validate_password(&"x".repeat(PASSWORD_BYTES_MAX + 1)).is_err());
        assert_eq!(validate_display_name("  Ada L. ").unwrap(), "Ada L.");
        assert!(validate_display_name("").is_err());
        assert!(validate_display_name("a\u{7}b").is_err());
    }
}
