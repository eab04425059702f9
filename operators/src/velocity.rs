//! Velocity features: per merchant and per device, the payments (and their amount) in
//! the hour up to each payment, counted across every partition by the runtime's shared
//! feature store. Operators list what must be counted ([`VelocityEvent`]) and read the
//! store's answers ([`VelocityTotals`]); the runtime does the IO in between.
//!
//! The store is chosen by `--velocity memory|redis://…` (trait
//! `storage::counters::WindowedCounters`). Operators do no IO, so a batch runs in two
//! halves: `TerminalFeaturesRead::featurize` validates, deduplicates and computes the
//! partition-local features and lists the batch's events
//! (`FeaturizedBatch::velocity_events`: entity, payment id, event time, amount); the
//! runtime makes one round trip (`add_and_windows`: for each event in order, count it
//! once — its id joins the bucket's id set — then read the [`VELOCITY_BUCKETS`] buckets of
//! [`VELOCITY_BUCKET_MS`] ending with its own); `FeaturizedBatch::finish` scores and
//! decides with the answers (velocity on the decision; the
//! `--merchant-velocity-review-min` and `--device-velocity-review-min` rules).
//!
//! Counts are idempotent, not transactional: a batch that crashes before its commit
//! leaves its counts and its replay recounts nothing, so a replayed payment may see its
//! batch's later payments (at most one batch per partition). Velocity is therefore never
//! part of the partition state, restore or the crash simulation's determinism.
//!
//! The runtime's side (`pipeline/src/connectors/velocity.rs`): a store error is retried,
//! reconnecting, for `velocity_store_retry_ms`, then the run stops before the batch
//! commits. In-process counters (one per process) start empty after a restart and are
//! refused in a consumer group; Redis is shared and survives restarts.
//!
//! Velocity feeds rules only: the learned models' feature row does not include it (the
//! handbook data has no merchants or devices to train on).

use paystream_domain::{Payee, Payment, Velocity};

use crate::config::VelocityConfig;
use paystream_domain::time::{MILLIS_PER_HOUR, MILLIS_PER_MINUTE};

/// The velocity window (the feature store's `VELOCITY_BUCKETS` buckets of
/// `VELOCITY_BUCKET_MS`, the last one holding the payment).
pub const VELOCITY_WINDOW_MS: i64 = MILLIS_PER_HOUR;
pub const VELOCITY_BUCKET_MS: i64 = 5 * MILLIS_PER_MINUTE;
pub const VELOCITY_BUCKETS: u32 = (VELOCITY_WINDOW_MS / VELOCITY_BUCKET_MS) as u32;

pub const DEVICE_VELOCITY_REASON: &str = "device_velocity_1h";
pub const MERCHANT_VELOCITY_REASON: &str = "merchant_velocity_1h";

/// One count the feature store makes for velocity: `entity` is `merchant:<id>` or
/// `device:<id>`, counted once per `event_id` (the payment id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VelocityEvent {
    pub entity: String,
    pub event_id: String,
    pub event_time_ms: i64,
    pub amount_minor: i64,
}

/// What the feature store answers for one [`VelocityEvent`]: the window's totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VelocityTotals {
    pub count: u64,
    pub amount_minor: i64,
}

/// Queues the velocity counts of a new scored payment into `events`; returns their
/// positions there (merchant, device).
pub(crate) fn queue_velocity_events(payment: &Payment, events: &mut Vec<VelocityEvent>) -> [Option<usize>; 2] {
    let merchant = match &payment.payee {
        Payee::Merchant { merchant_id, .. } => Some(format!("merchant:{merchant_id}")),
        Payee::Account { .. } | Payee::OwnWallet => None,
    };
    let device = payment.device_id.as_ref().map(|device_id| format!("device:{device_id}"));
    [merchant, device].map(|entity| {
        entity.map(|entity| {
            events.push(VelocityEvent {
                entity,
                event_id: payment.payment_id.clone(),
                event_time_ms: payment.event_time_ms,
                amount_minor: payment.amount.minor_units(),
            });
            events.len() - 1
        })
    })
}

/// A payment's velocity features from the feature store's answers.
pub(crate) fn velocity_of(positions: &[Option<usize>; 2], totals: &[VelocityTotals]) -> Velocity {
    let [merchant, device] = positions.map(|position| position.map(|i| totals[i]));
    Velocity {
        merchant_tx_1h: merchant.map(|t| t.count),
        merchant_amount_1h_minor: merchant.map(|t| t.amount_minor),
        device_tx_1h: device.map(|t| t.count),
        device_amount_1h_minor: device.map(|t| t.amount_minor),
    }
}

/// The velocity rule a payment trips, if any (device first).
pub(crate) fn velocity_reason(rules: &VelocityConfig, velocity: &Velocity) -> Option<&'static str> {
    let over = |count: Option<u64>, min: Option<u64>| count.zip(min).is_some_and(|(count, min)| count >= min);
    if over(velocity.device_tx_1h, rules.device_tx_1h_review_min) {
        Some(DEVICE_VELOCITY_REASON)
    } else if over(velocity.merchant_tx_1h, rules.merchant_tx_1h_review_min) {
        Some(MERCHANT_VELOCITY_REASON)
    } else {
        None
    }
}
