//! Score and decide operators: the model scores a batch's feature rows at once; each
//! score becomes approve, review or decline by the configured thresholds, at least
//! review when a rule says so (a velocity rule, or features inexact for a late payment),
//! with that rule's reason first.

use paystream_domain::{Outcome, Velocity};
use paystream_models::features::FeatureRow;
use paystream_models::{FraudModel, Score};

use crate::config::{LatePaymentPolicy, OperatorConfig};
use crate::counters::{BatchCounters, OperatorId};
use crate::velocity::velocity_reason;

/// Reason code of a payment sent to review because it was too late for exact features.
pub const LATE_PAYMENT_REASON: &str = "late_event_features_inexact";

/// Scores `rows` into `scores` (cleared first), counted as the score operator.
pub fn score_rows(model: &dyn FraudModel, rows: &[FeatureRow], scores: &mut Vec<Score>, counters: &mut BatchCounters) {
    scores.clear();
    counters.count(OperatorId::Score).records_in += rows.len() as u64;
    model.score_batch(rows, scores);
    counters.count(OperatorId::Score).records_out += scores.len() as u64;
}

/// The outcome of a score by the configured thresholds.
pub fn outcome_of(config: &OperatorConfig, score: &Score) -> Outcome {
    if score.value >= config.decline_score_min {
        Outcome::Decline
    } else if score.value >= config.review_score_min {
        Outcome::Review
    } else {
        Outcome::Approve
    }
}

/// A payment's score with the reasons of the rules it trips first, and whether one
/// does (it may then not be approved): a velocity rule, then lateness under
/// [`LatePaymentPolicy::Review`] (the model's score stays).
pub fn apply_rules(config: &OperatorConfig, score: Score, velocity: Option<&Velocity>, late: bool) -> (Score, bool) {
    let mut score = score;
    let mut review = false;
    if let Some(reason) = velocity.and_then(|v| velocity_reason(&config.velocity, v)) {
        score = with_first_reason(reason, &score);
        review = true;
    }
    if late && config.late_payments == LatePaymentPolicy::Review {
        score = with_first_reason(LATE_PAYMENT_REASON, &score);
        review = true;
    }
    (score, review)
}

/// The outcome of a score, counted as the decide operator; `at_least_review`: a rule
/// forbids approving.
pub fn decide(config: &OperatorConfig, score: &Score, at_least_review: bool, counters: &mut BatchCounters) -> Outcome {
    counters.count(OperatorId::Decide).records_in += 1;
    let outcome = match outcome_of(config, score) {
        Outcome::Approve if at_least_review => Outcome::Review,
        outcome => outcome,
    };
    counters.count(OperatorId::Decide).records_out += 1;
    outcome
}

/// `score` with `reason` first (the model's reasons after it, as many as fit).
pub fn with_first_reason(reason: &'static str, score: &Score) -> Score {
    let mut first = Score::new(score.value);
    first.push_reason(reason);
    for reason in score.reasons() {
        first.push_reason(reason);
    }
    first
}
