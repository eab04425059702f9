//! The payments path's per-batch buffers.

use paystream_domain::Payment;
use paystream_models::Score;
use paystream_models::features::FeatureRow;

use crate::features::TerminalFeatures;
use crate::state::StateOp;
use crate::velocity::VelocityEvent;

/// A new event between deduplication and decision.
pub(super) struct Pending {
    pub(super) payment: Payment,
    /// Its `Seen` (scored kinds) or `SeenId` op: applied, logged when the event is
    /// decided (the decision adds the approval), so the changelog keeps arrival order.
    pub(super) seen: StateOp,
    /// For scored kinds: its feature row and score.
    pub(super) scored: Option<usize>,
    /// Later than the allowed lateness.
    pub(super) late: bool,
    /// Its merchant's and device's positions in `velocity_events`.
    pub(super) velocity: [Option<usize>; 2],
}

/// The payments path's per-batch buffers, kept by the processor to reuse allocations.
#[derive(Default)]
pub(super) struct PaymentScratch {
    pub(super) pending: Vec<Pending>,
    pub(super) rows: Vec<FeatureRow>,
    /// The (customer, terminal) keys of the batch's records (for hints).
    pub(super) keys: Vec<(u64, u64)>,
    /// The terminal features of the batch's ready records (none without an index).
    pub(super) terminal_features: Vec<TerminalFeatures>,
    pub(super) scores: Vec<Score>,
    /// The batch's counts for the feature store, in order (velocity enabled only).
    pub(super) velocity_events: Vec<VelocityEvent>,
}
