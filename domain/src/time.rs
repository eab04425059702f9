//! Event time: milliseconds since the Unix epoch (UTC), parsed from and formatted as
//! RFC 3339. Hand-written because it sits on the per-event hot path; no clock is read here.

use std::fmt::Write as _;

use crate::error::TimeError;

pub const MILLIS_PER_SECOND: i64 = 1_000;
pub const MILLIS_PER_MINUTE: i64 = 60_000;
pub const MILLIS_PER_HOUR: i64 = 3_600_000;
pub const MILLIS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = if year >= 0 { year } else { year - 399 } / 400;
    let year_of_era = year - era * 400;
    let month_shifted = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_shifted + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_shifted = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_shifted + 2) / 5 + 1) as u32;
    let month = if month_shifted < 10 { month_shifted + 3 } else { month_shifted - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(year) => 29,
        _ => 28,
    }
}

struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn error(&self, why: &'static str) -> TimeError {
        TimeError { text: self.text.chars().take(64).collect(), why }
    }

    fn digits(&mut self, count: usize) -> Result<u32, TimeError> {
        let end = self.at + count;
        if end > self.bytes.len() {
            return Err(self.error("too short"));
        }
        let mut value = 0u32;
        for &b in &self.bytes[self.at..end] {
            if !b.is_ascii_digit() {
                return Err(self.error("expected a digit"));
            }
            value = value * 10 + u32::from(b - b'0');
        }
        self.at = end;
        Ok(value)
    }

    fn expect(&mut self, accepted: &[u8], why: &'static str) -> Result<u8, TimeError> {
        match self.bytes.get(self.at) {
            Some(b) if accepted.contains(b) => {
                self.at += 1;
                Ok(*b)
            }
            _ => Err(self.error(why)),
        }
    }
}

/// Parses `YYYY-MM-DD` and returns days since 1970-01-01.
fn parse_date(cursor: &mut Cursor<'_>) -> Result<i64, TimeError> {
    let year = i64::from(cursor.digits(4)?);
    cursor.expect(b"-", "expected '-' after the year")?;
    let month = cursor.digits(2)?;
    cursor.expect(b"-", "expected '-' after the month")?;
    let day = cursor.digits(2)?;
    if year < 1 || !(1..=12).contains(&month) {
        return Err(cursor.error("month out of range"));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(cursor.error("day out of range for its month"));
    }
    Ok(days_from_civil(year, month, day))
}

/// Parses the date-time part shared by RFC 3339 and the handbook layout; returns
/// milliseconds of the local wall time as if it were UTC.
fn parse_date_time(cursor: &mut Cursor<'_>, separators: &[u8]) -> Result<i64, TimeError> {
    let days = parse_date(cursor)?;
    cursor.expect(separators, "expected 'T' between date and time")?;
    let hour = cursor.digits(2)?;
    cursor.expect(b":", "expected ':' after the hour")?;
    let minute = cursor.digits(2)?;
    cursor.expect(b":", "expected ':' after the minute")?;
    let second = cursor.digits(2)?;
    // 60 is a leap second: accepted and folded into the next second, as most systems do.
    if hour > 23 || minute > 59 || second > 60 {
        return Err(cursor.error("time of day out of range"));
    }
    let seconds = days * 86_400 + i64::from(hour) * 3_600 + i64::from(minute) * 60 + i64::from(second);
    Ok(seconds * MILLIS_PER_SECOND)
}

/// Parses a calendar date `YYYY-MM-DD` into days since 1970-01-01.
pub fn parse_date_days(text: &str) -> Result<i64, TimeError> {
    let mut cursor = Cursor { text, bytes: text.as_bytes(), at: 0 };
    let days = parse_date(&mut cursor)?;
    if cursor.at != cursor.bytes.len() {
        return Err(cursor.error("unexpected text after the date"));
    }
    Ok(days)
}

/// Parses an RFC 3339 timestamp ("2018-04-01T00:03:12Z", "2018-04-01T02:03:12.5+02:00",
/// a space instead of 'T' is accepted) into UTC milliseconds. Fractions beyond
/// milliseconds are truncated; an offset is required.
pub fn parse_rfc3339_ms(text: &str) -> Result<i64, TimeError> {
    let mut cursor = Cursor { text, bytes: text.as_bytes(), at: 0 };
    let mut millis = parse_date_time(&mut cursor, b"Tt ")?;
    if cursor.bytes.get(cursor.at) == Some(&b'.') {
        cursor.at += 1;
        let start = cursor.at;
        let mut fraction_ms = 0i64;
        while let Some(b) = cursor.bytes.get(cursor.at).filter(|b| b.is_ascii_digit()) {
            let position = cursor.at - start;
            if position < 3 {
                fraction_ms = fraction_ms * 10 + i64::from(b - b'0');
            }
            cursor.at += 1;
        }
        let fraction_digits = cursor.at - start;
        if fraction_digits == 0 || fraction_digits > 9 {
            return Err(cursor.error("fraction of a second needs 1 to 9 digits"));
        }
        for _ in fraction_digits..3 {
            fraction_ms *= 10;
        }
        millis += fraction_ms;
    }
    let offset_ms = match cursor.expect(b"Zz+-", "expected 'Z' or a +hh:mm offset")? {
        b'Z' | b'z' => 0,
        sign => {
            let hours = cursor.digits(2)?;
            cursor.expect(b":", "expected ':' in the offset")?;
            let minutes = cursor.digits(2)?;
            if hours > 23 || minutes > 59 {
                return Err(cursor.error("offset out of range"));
            }
            let offset = (i64::from(hours) * 60 + i64::from(minutes)) * 60 * MILLIS_PER_SECOND;
            if sign == b'+' { offset } else { -offset }
        }
    };
    if cursor.at != cursor.bytes.len() {
        return Err(cursor.error("unexpected text after the timestamp"));
    }
    Ok(millis - offset_ms)
}

/// Parses the handbook's `YYYY-MM-DD HH:MM:SS` (UTC) into milliseconds.
pub fn parse_handbook_datetime_ms(text: &str) -> Result<i64, TimeError> {
    let mut cursor = Cursor { text, bytes: text.as_bytes(), at: 0 };
    let millis = parse_date_time(&mut cursor, b" T")?;
    if cursor.at != cursor.bytes.len() {
        return Err(cursor.error("unexpected text after the timestamp"));
    }
    Ok(millis)
}

/// Appends `2018-04-01T00:03:12.000Z` to `out`.
pub fn write_rfc3339_ms(out: &mut String, millis: i64) {
    let days = millis.div_euclid(MILLIS_PER_DAY);
    let in_day = millis.rem_euclid(MILLIS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let (seconds, ms) = (in_day / 1_000, in_day % 1_000);
    if !(0..=9_999).contains(&year) {
        // Outside four-digit years: the general path.
        let _ = write!(
            out,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            seconds / 3_600,
            seconds / 60 % 60,
            seconds % 60
        );
        return;
    }
    // Hand-written: this runs for every decision and posting.
    let mut text = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut value: u32| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year as u32);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, (seconds / 3_600) as u32);
    put(14, 2, (seconds / 60 % 60) as u32);
    put(17, 2, (seconds % 60) as u32);
    put(20, 3, ms as u32);
    out.push_str(std::str::from_utf8(&text).expect("ASCII digits"));
}

pub fn format_rfc3339_ms(millis: i64) -> String {
    let mut out = String::with_capacity(24);
    write_rfc3339_ms(&mut out, millis);
    out
}

/// `YYYY-MM-DD HH:MM:SS` as the handbook writes it.
pub fn format_handbook_datetime(millis: i64) -> String {
    let days = millis.div_euclid(MILLIS_PER_DAY);
    let seconds = millis.rem_euclid(MILLIS_PER_DAY) / 1_000;
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", seconds / 3_600, seconds / 60 % 60, seconds % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339_ms("2018-04-01T00:00:00Z"), Ok(1_522_540_800_000));
        assert_eq!(parse_rfc3339_ms("2018-04-01T02:00:00+02:00"), Ok(1_522_540_800_000));
        assert_eq!(parse_rfc3339_ms("2018-04-01 00:00:00.25Z"), Ok(1_522_540_800_250));
        assert_eq!(parse_rfc3339_ms("2018-03-31T19:00:00.123456789-05:00"), Ok(1_522_540_800_123));
        assert_eq!(parse_rfc3339_ms("2020-02-29T00:00:00Z"), Ok(1_582_934_400_000));
    }

    #[test]
    fn rejects_bad_timestamps() {
        for bad in [
            "",
            "2018-04-01",
            "2018-04-01T00:00:00",
            "2018-13-01T00:00:00Z",
            "2019-02-29T00:00:00Z",
            "2018-04-31T00:00:00Z",
            "2018-04-01T24:00:00Z",
            "2018-04-01T00:00:00.Z",
            "2018-04-01T00:00:00Zjunk",
            "yesterday",
            "2018-04-01T00:00:00+2:00",
            "１９７０-01-01T00:00:00Z",
        ] {
            assert!(parse_rfc3339_ms(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn calendar_dates() {
        assert_eq!(parse_date_days("1970-01-02"), Ok(1));
        assert_eq!(parse_date_days("2018-04-01").unwrap() * MILLIS_PER_DAY, 1_522_540_800_000);
        for bad in ["2018-02-30", "2018-4-01", "2018-04-01 ", "2018-13-01", ""] {
            assert!(parse_date_days(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn handbook_layout() {
        assert_eq!(parse_handbook_datetime_ms("2018-04-01 00:03:12"), Ok(1_522_540_992_000));
        assert_eq!(format_handbook_datetime(1_522_540_992_000), "2018-04-01 00:03:12");
        assert!(parse_handbook_datetime_ms("2018-04-01 00:03:12Z").is_err());
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(millis in -62_135_596_800_000i64..253_402_300_799_999) {
            prop_assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(millis)).unwrap(), millis);
        }

        #[test]
        fn parse_never_panics(text in ".{0,40}") {
            let _ = parse_rfc3339_ms(&text);
        }
    }
}
