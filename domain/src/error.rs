use thiserror::Error;

/// Errors of money arithmetic and parsing. All are the caller's fault (bad input).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MoneyError {
    #[error("not an exact decimal amount: {0:?} (expected digits with an optional '.', e.g. \"12.34\")")]
    InvalidDecimal(String),
    #[error("amount {text:?} has more decimals than the currency's {digits_max}")]
    TooManyDecimals { text: String, digits_max: u8 },
    #[error("amount overflows 64-bit minor units")]
    Overflow,
    #[error("unknown ISO 4217 currency {0:?}")]
    UnknownCurrency(String),
    #[error("currency mismatch: {left} vs {right}")]
    /// The ISO 4217 codes of the two amounts.
    CurrencyMismatch { left: &'static str, right: &'static str },
}

/// Errors parsing a timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unparseable timestamp {text:?}: {why}")]
pub struct TimeError {
    pub text: String,
    pub why: &'static str,
}
