//! ISO 4217 currencies and their minor-unit exponents.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::MoneyError;

/// An ISO 4217 currency: its three-letter code and how many decimal digits its minor unit
/// has (EUR 2, JPY 0, KWD 3). `Copy`, so it travels with every amount.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    minor_unit_digits: u8,
}

/// Active ISO 4217 codes (list of 2024) with their minor-unit digits. Funds codes,
/// precious metals and testing codes (XAU, XTS, XXX, ...) are not payment currencies and
/// are deliberately absent.
const ISO_4217: &[(&str, u8)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("UYU", 2),
    ("UZS", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

/// Three code bytes packed big-endian: ordered as the codes are.
const fn code_key(code: &[u8]) -> u32 {
    ((code[0] as u32) << 16) | ((code[1] as u32) << 8) | code[2] as u32
}

/// [`ISO_4217`]'s codes packed by [`code_key`], in the same order.
const ISO_4217_KEYS: [u32; ISO_4217.len()] = {
    let mut keys = [0; ISO_4217.len()];
    let mut i = 0;
    while i < keys.len() {
        keys[i] = code_key(ISO_4217[i].0.as_bytes());
        i += 1;
    }
    keys
};

impl Currency {
    pub const EUR: Currency = Currency { code: "EUR", minor_unit_digits: 2 };
    pub const USD: Currency = Currency { code: "USD", minor_unit_digits: 2 };

    /// Looks a code up in the ISO 4217 table. Codes are upper case; "eur" is rejected.
    pub fn from_code(code: &str) -> Result<Currency, MoneyError> {
        let bytes = code.as_bytes();
        if bytes.len() == 3 {
            // The table is sorted, so a binary search of the packed codes finds the code
            // (every payment is parsed through here: integer compares, no string compares).
            if let Ok(index) = ISO_4217_KEYS.binary_search(&code_key(bytes)) {
                let (code, digits) = ISO_4217[index];
                return Ok(Currency { code, minor_unit_digits: digits });
            }
        }
        Err(MoneyError::UnknownCurrency(truncate_for_message(code)))
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn minor_unit_digits(&self) -> u8 {
        self.minor_unit_digits
    }
}

fn truncate_for_message(text: &str) -> String {
    text.chars().take(16).collect()
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Currency::from_code(&code).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for pair in ISO_4217.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} must sort before {}", pair[0].0, pair[1].0);
        }
    }

    #[test]
    fn every_code_is_found_by_its_packed_key() {
        assert!(ISO_4217_KEYS.windows(2).all(|pair| pair[0] < pair[1]));
        for (code, digits) in ISO_4217 {
            let currency = Currency::from_code(code).unwrap();
            assert_eq!((currency.code(), currency.minor_unit_digits()), (*code, *digits));
        }
    }

    #[test]
    fn looks_up_codes_with_their_exponents() {
        assert_eq!(Currency::from_code("EUR").unwrap().minor_unit_digits(), 2);
        assert_eq!(Currency::from_code("JPY").unwrap().minor_unit_digits(), 0);
        assert_eq!(Currency::from_code("KWD").unwrap().minor_unit_digits(), 3);
        assert_eq!(Currency::from_code("EUR").unwrap(), Currency::EUR);
        assert!(Currency::from_code("eur").is_err());
        assert!(Currency::from_code("XXX").is_err());
        assert!(Currency::from_code("EURO").is_err());
        assert!(Currency::from_code("").is_err());
    }
}
