//! The handbook's raw CSV layout:
//! `TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_TIME_SECONDS,TX_TIME_DAYS,TX_FRAUD,TX_FRAUD_SCENARIO`.

use std::fmt::Write as _;

use paystream_domain::money::format_minor_units;
use paystream_domain::time::format_handbook_datetime;
use thiserror::Error;

use crate::{SimulatorConfig, Transaction};

pub const HEADER: &str = "TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_TIME_SECONDS,TX_TIME_DAYS,TX_FRAUD,TX_FRAUD_SCENARIO";

const COLUMNS: [&str; 9] = [
    "TRANSACTION_ID",
    "TX_DATETIME",
    "CUSTOMER_ID",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_TIME_SECONDS",
    "TX_TIME_DAYS",
    "TX_FRAUD",
    "TX_FRAUD_SCENARIO",
];

/// Appends one CSV row (with newline) for `t`.
pub fn write_row(out: &mut String, t: &Transaction, config: &SimulatorConfig) {
    let _ = writeln!(
        out,
        "{},{},{},{},{},{},{},{},{}",
        t.transaction_id,
        format_handbook_datetime(t.event_time_ms(config)),
        t.customer_id,
        t.terminal_id,
        format_minor_units(t.amount_cents, 2),
        t.time_seconds,
        t.day(),
        u8::from(t.is_fraud),
        t.fraud_scenario
    );
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CsvError {
    #[error("header lacks column {0} (expected the handbook layout: {HEADER})")]
    MissingColumn(&'static str),
    #[error("row has {found} fields, header has {expected}")]
    FieldCount { found: usize, expected: usize },
    #[error("{column} is not a valid value: {value:?}")]
    InvalidValue { column: &'static str, value: String },
}

/// Column positions found in a header line. Extra columns (such as a pandas index) are
/// ignored; all nine handbook columns must be present.
#[derive(Clone, Debug)]
pub struct CsvLayout {
    positions: [usize; 9],
    width: usize,
}

/// One row as text fields, amount still a decimal string (parsed exactly downstream).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvRow<'a> {
    pub transaction_id: &'a str,
    pub datetime: &'a str,
    pub customer_id: &'a str,
    pub terminal_id: &'a str,
    pub amount: &'a str,
    pub is_fraud: bool,
    pub fraud_scenario: u8,
}

impl CsvLayout {
    pub fn from_header(line: &str) -> Result<CsvLayout, CsvError> {
        let names: Vec<&str> = line.trim_end_matches(['\r', '\n']).split(',').map(str::trim).collect();
        let mut positions = [0; 9];
        for (slot, column) in positions.iter_mut().zip(COLUMNS) {
            *slot = names.iter().position(|n| *n == column).ok_or(CsvError::MissingColumn(column))?;
        }
        Ok(CsvLayout { positions, width: names.len() })
    }

    pub fn parse_row<'a>(&self, line: &'a str) -> Result<CsvRow<'a>, CsvError> {
        let fields: Vec<&str> = line.trim_end_matches(['\r', '\n']).split(',').collect();
        if fields.len() != self.width {
            return Err(CsvError::FieldCount { found: fields.len(), expected: self.width });
        }
        let field = |i: usize| fields[self.positions[i]].trim();
        let flag = |i: usize| match field(i) {
            "0" | "0.0" => Ok(false),
            "1" | "1.0" => Ok(true),
            other => Err(CsvError::InvalidValue { column: COLUMNS[i], value: other.to_string() }),
        };
        let scenario = field(8)
            .trim_end_matches(".0")
            .parse::<u8>()
            .ok()
            .filter(|s| *s <= 3)
            .ok_or_else(|| CsvError::InvalidValue { column: COLUMNS[8], value: field(8).to_string() })?;
        Ok(CsvRow {
            transaction_id: field(0),
            datetime: field(1),
            customer_id: field(2),
            terminal_id: field(3),
            amount: field(4),
            is_fraud: flag(7)?,
            fraud_scenario: scenario,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_the_handbook_layout() {
        let config = SimulatorConfig::default();
        let t = Transaction {
            transaction_id: 7,
            time_seconds: 86_400 + 192,
            customer_id: 3,
            terminal_id: 9,
            amount_cents: 5716,
            is_fraud: true,
            fraud_scenario: 2,
        };
        let mut out = String::new();
        write_row(&mut out, &t, &config);
        assert_eq!(out, "7,2018-04-02 00:03:12,3,9,57.16,86592,1,1,2\n");
        let layout = CsvLayout::from_header(HEADER).unwrap();
        let row = layout.parse_row(&out).unwrap();
        assert_eq!(row.amount, "57.16");
        assert!(row.is_fraud);
        assert_eq!(row.fraud_scenario, 2);
    }

    #[test]
    fn tolerates_a_pandas_index_and_reports_bad_rows() {
        let layout = CsvLayout::from_header(&format!(",{HEADER}")).unwrap();
        assert_eq!(layout.parse_row("0,1,2018-04-01 00:00:31,596,3156,57.16,31,0,0,0").unwrap().customer_id, "596");
        assert!(matches!(layout.parse_row("1,2,3"), Err(CsvError::FieldCount { .. })));
        assert!(matches!(layout.parse_row("0,1,x,596,3156,57.16,31,0,7,0"), Err(CsvError::InvalidValue { .. })));
        assert!(matches!(CsvLayout::from_header("a,b,c"), Err(CsvError::MissingColumn("TRANSACTION_ID"))));
    }
}
