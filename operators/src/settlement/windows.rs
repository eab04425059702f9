//! The settlement state of one partition: the payer side's horizon and the merchant
//! side's marks and open windows.

use std::collections::BTreeMap;

use paystream_domain::Currency;
use serde::{Deserialize, Serialize};

use super::entry::SettlementTotals;

/// One partition's settlement state: payer side ([`SettlementState::place`]) and merchant
/// side ([`SettlementState::add`], [`SettlementState::mark`]).
#[derive(Serialize, Deserialize)]
pub struct SettlementState {
    /// Payer side: this partition writes no entries for windows starting before this.
    pub(super) horizon_ms: i64,
    /// Merchant side: each source partition's last mark (`i64::MIN`: none yet).
    pub(super) marks: Vec<i64>,
    /// Merchant side: windows starting before this are closed.
    pub(super) open_from_ms: i64,
    pub(super) windows: BTreeMap<(i64, String, Currency), SettlementTotals>,
}

impl Default for SettlementState {
    fn default() -> Self {
        SettlementState { horizon_ms: i64::MIN, marks: Vec::new(), open_from_ms: i64::MIN, windows: BTreeMap::new() }
    }
}

/// Whether an entry landed in its own window or was moved to a later one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    OnTime,
    Late,
}

impl SettlementState {
    pub fn open_window_count(&self) -> usize {
        self.windows.len()
    }

    /// Totals of the windows still open, for reports.
    pub fn open_windows(&self) -> impl Iterator<Item = (&(i64, String, Currency), &SettlementTotals)> {
        self.windows.iter()
    }
}
