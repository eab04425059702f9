//! Payer side: which window an entry goes to, and the horizon before which this
//! partition writes no more entries (marks tell the merchant side).

use super::ids::window_start;
use super::windows::{Placement, SettlementState};

impl SettlementState {
    /// Payer side: the window an entry at `event_time_ms` goes to — its own, or the
    /// horizon's if its own is before the horizon (late).
    pub fn place(&self, event_time_ms: i64, window_ms: i64) -> (Placement, i64) {
        let own = window_start(event_time_ms, window_ms);
        if own < self.horizon_ms { (Placement::Late, self.horizon_ms) } else { (Placement::OnTime, own) }
    }

    /// Payer side: moves the horizon to `open_from_ms` if that is later; true if it moved
    /// (marks must then be sent).
    pub fn advance_horizon(&mut self, open_from_ms: i64) -> bool {
        if open_from_ms > self.horizon_ms {
            self.horizon_ms = open_from_ms;
            true
        } else {
            false
        }
    }

    pub fn horizon_ms(&self) -> Option<i64> {
        (self.horizon_ms != i64::MIN).then_some(self.horizon_ms)
    }

    /// Payer side, when this partition has no input: the horizon it may take on so as not
    /// to hold the other partitions' windows open — the earliest other source's mark
    /// later than its own horizon (marks received on this partition, `own` excluded).
    /// Entries it writes later for earlier windows then go to that window, late. Applied
    /// again and again, idle partitions converge on the most advanced source's horizon;
    /// windows close at the least advanced active one's.
    pub fn idle_horizon(&self, own: u32) -> Option<i64> {
        self.marks
            .iter()
            .enumerate()
            .filter(|(source, mark)| *source != own as usize && **mark > self.horizon_ms)
            .map(|(_, mark)| *mark)
            .min()
    }
}
