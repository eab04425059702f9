//! The operators' errors: state bytes that do not decode, and invalid configuration.
//! Bad input records are no errors: they are dead-lettered with a `Rejection`.

use thiserror::Error;

/// Bumped whenever the encoding of ops or snapshots changes incompatibly.
pub const STATE_FORMAT_VERSION: u16 = 5;

#[derive(Debug, Error)]
pub enum OperatorError {
    #[error("corrupt state bytes ({what}): {source}")]
    CorruptState { what: &'static str, source: postcard::Error },
    #[error(
        "{what} has state format {found}, this paystream reads {expected}: it was written by another version (start from a fresh data directory, or run the version that wrote it)"
    )]
    StateVersion { what: &'static str, found: u16, expected: u16 },
    #[error("invalid operator configuration: {0}")]
    InvalidConfig(String),
}

/// Checks the leading format version of state bytes before decoding the rest, so bytes
/// of another version are reported as such, not as corruption.
pub(crate) fn check_version(bytes: &[u8], what: &'static str) -> Result<(), OperatorError> {
    let (found, _) =
        postcard::take_from_bytes::<u16>(bytes).map_err(|source| OperatorError::CorruptState { what, source })?;
    if found == STATE_FORMAT_VERSION {
        Ok(())
    } else {
        Err(OperatorError::StateVersion { what, found, expected: STATE_FORMAT_VERSION })
    }
}
