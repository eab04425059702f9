//! Money: integer minor units plus a currency. Never `f64`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::currency::Currency;
use crate::error::MoneyError;

/// An amount in integer minor units (cents for EUR) of one currency. Arithmetic is
/// checked: overflow and mixing currencies are errors, never wraps or silent conversions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    minor_units: i64,
    currency: Currency,
}

/// The longest decimal string `Money::parse` looks at; anything longer is an error
/// before any arithmetic happens.
pub const DECIMAL_TEXT_BYTES_MAX: usize = 40;

impl Money {
    pub fn from_minor_units(minor_units: i64, currency: Currency) -> Money {
        Money { minor_units, currency }
    }

    pub fn zero(currency: Currency) -> Money {
        Money { minor_units: 0, currency }
    }

    pub fn minor_units(&self) -> i64 {
        self.minor_units
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Parses a decimal amount with any number of decimals, rounded to the nearest minor
    /// unit of `currency` (half away from zero), exactly, without floating point; also
    /// says whether it rounded. For sources whose amounts are floats by definition (the
    /// handbook's CSV layout writes `85.64999999999999`); events stay exact
    /// ([`Money::parse`]).
    pub fn parse_rounded(text: &str, currency: Currency) -> Result<(Money, bool), MoneyError> {
        let digits = usize::from(currency.minor_unit_digits());
        let Some((head, fraction)) = text.split_once('.') else {
            return Money::parse(text, currency).map(|m| (m, false));
        };
        if fraction.len() <= digits {
            return Money::parse(text, currency).map(|m| (m, false));
        }
        let (kept, rest) = fraction.split_at(digits);
        if !rest.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MoneyError::InvalidDecimal(text.to_string()));
        }
        let exact = if kept.is_empty() { head.to_string() } else { format!("{head}.{kept}") };
        let money = Money::parse(&exact, currency)?;
        let rounded = rest.bytes().any(|b| b != b'0');
        if !rest.starts_with(['5', '6', '7', '8', '9']) {
            return Ok((money, rounded));
        }
        let step = if money.minor_units < 0 || head.starts_with('-') { -1 } else { 1 };
        let minor_units = money.minor_units.checked_add(step).ok_or(MoneyError::Overflow)?;
        Ok((Money { minor_units, currency }, rounded))
    }

    /// Parses an exact decimal string such as "12.34", "-0.5" or "1000" in `currency`.
    /// At most the currency's minor-unit digits may follow the point ("1.234" is an error
    /// in EUR, fine in KWD). No exponents, no spaces, no thousands separators, no '+'.
    pub fn parse(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        if text.is_empty() {
            return Err(MoneyError::InvalidDecimal(String::new()));
        }
        if text.len() > DECIMAL_TEXT_BYTES_MAX {
            return Err(MoneyError::Overflow);
        }
        let invalid = || MoneyError::InvalidDecimal(text.to_string());
        let (negative, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, fraction) = match body.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (body, None),
        };
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let digits = u32::from(currency.minor_unit_digits());
        let fraction = fraction.unwrap_or("");
        if text.contains('.') && fraction.is_empty() {
            return Err(invalid());
        }
        if !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        if fraction.len() > digits as usize {
            return Err(MoneyError::TooManyDecimals { text: text.to_string(), digits_max: digits as u8 });
        }
        let mut value: i64 = 0;
        for b in whole.bytes() {
            value =
                value.checked_mul(10).and_then(|v| v.checked_add(i64::from(b - b'0'))).ok_or(MoneyError::Overflow)?;
        }
        let mut fraction_value: i64 = 0;
        for b in fraction.bytes() {
            fraction_value = fraction_value * 10 + i64::from(b - b'0');
        }
        fraction_value *= 10_i64.pow(digits - fraction.len() as u32);
        let scaled = value
            .checked_mul(10_i64.pow(digits))
            .and_then(|v| v.checked_add(fraction_value))
            .ok_or(MoneyError::Overflow)?;
        Ok(Money { minor_units: if negative { -scaled } else { scaled }, currency })
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let minor_units = self.minor_units.checked_add(other.minor_units).ok_or(MoneyError::Overflow)?;
        Ok(Money { minor_units, currency: self.currency })
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let minor_units = self.minor_units.checked_sub(other.minor_units).ok_or(MoneyError::Overflow)?;
        Ok(Money { minor_units, currency: self.currency })
    }

    pub fn checked_neg(self) -> Result<Money, MoneyError> {
        let minor_units = self.minor_units.checked_neg().ok_or(MoneyError::Overflow)?;
        Ok(Money { minor_units, currency: self.currency })
    }

    /// `self × basis_points / 10_000`, rounded half away from zero, computed in i128.
    pub fn checked_basis_points(self, basis_points: u32) -> Result<Money, MoneyError> {
        let product = i128::from(self.minor_units) * i128::from(basis_points);
        let half = if product >= 0 { 5_000 } else { -5_000 };
        let rounded = (product + half) / 10_000;
        let minor_units = i64::try_from(rounded).map_err(|_| MoneyError::Overflow)?;
        Ok(Money { minor_units, currency: self.currency })
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch { left: self.currency.code(), right: other.currency.code() })
        }
    }

    /// The exact decimal text of this amount, e.g. "-12.30" for EUR.
    pub fn to_decimal_string(&self) -> String {
        format_minor_units(self.minor_units, self.currency.minor_unit_digits())
    }
}

/// Formats integer minor units as an exact decimal with `digits` fraction digits.
pub fn format_minor_units(minor_units: i64, digits: u8) -> String {
    format_magnitude(minor_units < 0, u128::from(minor_units.unsigned_abs()), digits)
}

/// [`format_minor_units`] for i128 totals (settlement windows sum many i64 amounts).
pub fn format_minor_units_wide(minor_units: i128, digits: u8) -> String {
    format_magnitude(minor_units < 0, minor_units.unsigned_abs(), digits)
}

/// Hand-written (no `fmt` machinery): this runs for every decision. Divides in u64
/// whenever the remaining magnitude fits, since u128 division is a library call.
fn format_magnitude(negative: bool, magnitude: u128, digits: u8) -> String {
    let mut reversed = [0u8; 48];
    let mut len = 0;
    let (mut wide, mut narrow) = (magnitude, u64::try_from(magnitude).ok());
    let mut emitted = 0u8;
    loop {
        if emitted == digits && digits > 0 {
            reversed[len] = b'.';
            len += 1;
        }
        let digit = match narrow.as_mut() {
            Some(value) => {
                let digit = *value % 10;
                *value /= 10;
                digit as u8
            }
            None => {
                let digit = (wide % 10) as u8;
                wide /= 10;
                narrow = u64::try_from(wide).ok();
                digit
            }
        };
        reversed[len] = b'0' + digit;
        len += 1;
        emitted = emitted.saturating_add(1);
        if narrow == Some(0) && emitted > digits {
            break;
        }
    }
    if negative {
        reversed[len] = b'-';
        len += 1;
    }
    reversed[..len].reverse();
    String::from_utf8(reversed[..len].to_vec()).expect("ASCII digits")
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eur(text: &str) -> Result<i64, MoneyError> {
        Money::parse(text, Currency::EUR).map(|m| m.minor_units())
    }

    #[test]
    fn rounds_float_amounts_to_the_nearest_minor_unit() {
        let rounded = |text: &str| Money::parse_rounded(text, Currency::EUR).map(|(m, r)| (m.minor_units(), r));
        assert_eq!(rounded("85.64999999999999"), Ok((8565, true)));
        assert_eq!(rounded("57.16"), Ok((5716, false)));
        assert_eq!(rounded("57.160000"), Ok((5716, false)));
        assert_eq!(rounded("12"), Ok((1200, false)));
        assert_eq!(rounded("0.004"), Ok((0, true)));
        assert_eq!(rounded("0.005"), Ok((1, true)));
        assert_eq!(rounded("-0.005"), Ok((-1, true)));
        assert_eq!(rounded("-0.0049"), Ok((0, true)));
        assert_eq!(rounded("1.999"), Ok((200, true)));
        assert_eq!(
            Money::parse_rounded("7.5", Currency::from_code("JPY").unwrap()).map(|(m, r)| (m.minor_units(), r)),
            Ok((8, true))
        );
        assert!(matches!(rounded("1e5"), Err(MoneyError::InvalidDecimal(_))));
        assert!(matches!(rounded("1.23x"), Err(MoneyError::InvalidDecimal(_))));
        assert!(matches!(rounded("1.2345x"), Err(MoneyError::InvalidDecimal(_))));
        assert!(matches!(rounded("92233720368547758.079"), Err(MoneyError::Overflow)));
    }

    #[test]
    fn parses_exact_decimals() {
        assert_eq!(eur("12.34"), Ok(1234));
        assert_eq!(eur("12.3"), Ok(1230));
        assert_eq!(eur("12"), Ok(1200));
        assert_eq!(eur("0.01"), Ok(1));
        assert_eq!(eur("-0.5"), Ok(-50));
        assert_eq!(eur("0"), Ok(0));
        assert_eq!(Money::parse("1000", Currency::from_code("JPY").unwrap()).unwrap().minor_units(), 1000);
        assert_eq!(Money::parse("1.234", Currency::from_code("KWD").unwrap()).unwrap().minor_units(), 1234);
    }

    #[test]
    fn rejects_inexact_or_malformed_decimals() {
        for bad in ["", ".", "1.", ".5", "1.2.3", "1e3", "+1", " 1", "1 ", "1,00", "abc", "--1", "-"] {
            assert!(matches!(eur(bad), Err(MoneyError::InvalidDecimal(_))), "{bad:?} must be invalid");
        }
        assert!(matches!(eur("1.234"), Err(MoneyError::TooManyDecimals { .. })));
        assert!(matches!(
            Money::parse("1.5", Currency::from_code("JPY").unwrap()),
            Err(MoneyError::TooManyDecimals { .. })
        ));
        assert_eq!(eur("92233720368547758.07"), Ok(i64::MAX));
        assert_eq!(eur("92233720368547758.08"), Err(MoneyError::Overflow));
        assert_eq!(eur("99999999999999999999999"), Err(MoneyError::Overflow));
    }

    #[test]
    fn arithmetic_is_checked() {
        let max = Money::from_minor_units(i64::MAX, Currency::EUR);
        let one = Money::from_minor_units(1, Currency::EUR);
        assert_eq!(max.checked_add(one), Err(MoneyError::Overflow));
        assert!(one.checked_add(Money::from_minor_units(1, Currency::USD)).is_err());
        assert_eq!(Money::from_minor_units(i64::MIN, Currency::EUR).checked_neg(), Err(MoneyError::Overflow));
        assert_eq!(one.checked_sub(one).unwrap().minor_units(), 0);
    }

    #[test]
    fn basis_points_round_half_away_from_zero() {
        let fee =
            |minor, bps| Money::from_minor_units(minor, Currency::EUR).checked_basis_points(bps).unwrap().minor_units();
        assert_eq!(fee(10_000, 150), 150);
        assert_eq!(fee(1_234, 150), 19); // 18.51 -> 19
        assert_eq!(fee(100, 50), 1); // 0.5 -> 1
        assert_eq!(fee(-100, 50), -1);
        assert_eq!(fee(99, 50), 0); // 0.495 -> 0
    }

    #[test]
    fn formats_exactly() {
        assert_eq!(format_minor_units(1234, 2), "12.34");
        assert_eq!(format_minor_units(-5, 2), "-0.05");
        assert_eq!(format_minor_units(7, 0), "7");
        assert_eq!(format_minor_units(i64::MIN, 2), "-92233720368547758.08");
        assert_eq!(format_minor_units_wide(2 * i128::from(i64::MAX), 2), "184467440737095516.14");
        assert_eq!(format_minor_units_wide(i128::MIN, 0), "-170141183460469231731687303715884105728");
        assert_eq!(format_minor_units_wide(-5, 3), "-0.005");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(minor in any::<i64>(), digits in 0u8..=3) {
            let currency = match digits { 0 => "JPY", 2 => "EUR", 3 => "KWD", _ => "EUR" };
            let currency = Currency::from_code(currency).unwrap();
            let minor = if minor == i64::MIN { minor + 1 } else { minor };
            let text = format_minor_units(minor, currency.minor_unit_digits());
            prop_assert_eq!(Money::parse(&text, currency).unwrap().minor_units(), minor);
        }

        #[test]
        fn parse_never_panics(text in ".{0,48}") {
            let _ = Money::parse(&text, Currency::EUR);
        }
    }
}
