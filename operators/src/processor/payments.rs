//! The payments path as a typed plan: each step of a batch consumes the one before, so
//! the steps run in order and over the same records by construction.
//!
//! [`PartitionProcessor::plan_payments`] → [`PaymentBatch::read_terminal_features`]
//! (the only step reading the terminal index: a caller sharing it holds its lock for
//! this step alone) → [`TerminalFeaturesRead::featurize`] (validate, deduplicate,
//! features, payment by payment: each sees the state changes of the ones before it) →
//! [`FeaturizedBatch::velocity_events`] (what the feature store must count; the runtime
//! does that IO) → [`FeaturizedBatch::finish`] (score the whole batch at once, then
//! decide, post and settle in order).

use paystream_domain::time::format_rfc3339_ms;
use paystream_domain::{Outcome, Payment, Rejection, Velocity};
use paystream_models::Score;

use super::partition::PartitionProcessor;
use super::scratch::Pending;
use crate::batch::{InputRecord, OutputBatch, TerminalView};
use crate::counters::OperatorId;
use crate::decide::{apply_rules, decide, score_rows, with_first_reason};
use crate::dedupe::{DedupeKey, deduplicate};
use crate::features::{
    TerminalFeatures, feature_row, payment_keys, prefetch_customers_ahead, prefetch_terminals_ahead,
};
use crate::state::StateOp;
use crate::validate::validate_payment;
use crate::velocity::{VelocityEvent, VelocityTotals, queue_velocity_events, velocity_of};

/// A payment's parse: `Some(Payment::from_json(value))`, or `None` if not parsed yet.
pub type ParsedPayment = Option<Result<Payment, Rejection>>;

impl PartitionProcessor {
    /// Plans a batch of `topic`'s `records`: `parsed[i]` is `records[i]` parsed
    /// ([`ParsedPayment`]; `None`s are parsed by the first step). The steps take the
    /// payments they consume out of `parsed` (leaving `None`); the rest stay for the next
    /// try.
    pub fn plan_payments<'a>(
        &'a mut self,
        topic: &'a str,
        records: &'a [InputRecord<'a>],
        parsed: &'a mut [ParsedPayment],
    ) -> PaymentBatch<'a> {
        assert_eq!(records.len(), parsed.len(), "one parse per record");
        PaymentBatch { processor: self, topic, records, parsed }
    }
}

/// A planned batch of payments; next: [`PaymentBatch::read_terminal_features`].
#[must_use = "a planned batch does nothing until its steps run"]
pub struct PaymentBatch<'a> {
    processor: &'a mut PartitionProcessor,
    topic: &'a str,
    records: &'a [InputRecord<'a>],
    parsed: &'a mut [ParsedPayment],
}

/// A batch whose terminal features are read; next: [`TerminalFeaturesRead::featurize`].
#[must_use = "a batch does nothing until its steps run"]
pub struct TerminalFeaturesRead<'a> {
    batch: PaymentBatch<'a>,
    /// The records before the first payment past the index's bound.
    ready: usize,
}

/// A validated, deduplicated and featurized batch; next: [`FeaturizedBatch::finish`].
#[must_use = "a featurized batch must be finished: its payments are not decided yet"]
pub struct FeaturizedBatch<'a> {
    processor: &'a mut PartitionProcessor,
    consumed: usize,
}

impl<'a> PaymentBatch<'a> {
    /// Parses what is not parsed yet, finds the payments' keys and, with an index, their
    /// terminal features, up to the first payment past `terminals.complete_through_ms`
    /// if the model reads terminal features. Reads nothing of `terminals` after it
    /// returns.
    pub fn read_terminal_features(self, terminals: TerminalView<'_>) -> TerminalFeaturesRead<'a> {
        let PaymentBatch { processor, topic, records, parsed } = self;
        for (record, parsed) in records.iter().zip(parsed.iter_mut()) {
            parsed.get_or_insert_with(|| Payment::from_json(record.value));
        }
        let payments = || parsed.iter().map(|p| p.as_ref().and_then(|p| p.as_ref().ok()));
        let scratch = &mut processor.scratch;
        // The payments are known ahead: their state is hinted before it is read.
        scratch.keys.clear();
        scratch.keys.extend(payments().map(|p| p.map_or((0, 0), payment_keys)));
        let past_bound = |p: Option<&Payment>| p.is_some_and(|p| p.event_time_ms > terminals.complete_through_ms);
        let ready = match processor.model.uses_terminal_features() {
            true => payments().position(past_bound).unwrap_or(records.len()),
            false => records.len(),
        };
        scratch.terminal_features.clear();
        if let Some(index) = terminals.index {
            let delay_ms = processor.config.label_delay_ms;
            for (i, payment) in payments().take(ready).enumerate() {
                prefetch_terminals_ahead(index, &scratch.keys, i);
                let features = payment.map(|p| index.features(scratch.keys[i].1, p.event_time_ms, delay_ms));
                scratch.terminal_features.push(features.unwrap_or_default());
            }
        }
        TerminalFeaturesRead { batch: PaymentBatch { processor, topic, records, parsed }, ready }
    }
}

impl<'a> TerminalFeaturesRead<'a> {
    /// How many records [`TerminalFeaturesRead::featurize`] will consume.
    pub fn ready(&self) -> usize {
        self.ready
    }

    /// Validates, deduplicates and featurizes the ready records, payment by payment;
    /// anything that is not a new payment is counted or dead-lettered into `out`.
    pub fn featurize(self, out: &mut OutputBatch) -> FeaturizedBatch<'a> {
        let TerminalFeaturesRead { batch: PaymentBatch { processor, topic, records, parsed }, ready } = self;
        processor.scratch.pending.clear();
        processor.scratch.rows.clear();
        processor.scratch.velocity_events.clear();
        let mut newest_ms = processor.state.max_event_time_ms;
        let keys = std::mem::take(&mut processor.scratch.keys);
        for (i, (record, parsed)) in records.iter().zip(parsed.iter_mut()).take(ready).enumerate() {
            let parsed = parsed.take().expect("read_terminal_features parsed every record");
            prefetch_customers_ahead(&processor.state.customers, &keys, i);
            let terminal = processor.scratch.terminal_features.get(i).copied();
            let Some(payment) = processor.validate(topic, record, parsed, out) else { continue };
            let Some(key) = processor.deduplicate_payment(topic, record, &payment, out) else { continue };
            processor.featurize(payment, key, keys[i], terminal, &mut newest_ms, out);
        }
        processor.scratch.keys = keys;
        FeaturizedBatch { processor, consumed: ready }
    }
}

impl FeaturizedBatch<'_> {
    /// How many records the batch consumed (the rest wait for the terminal index).
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    /// The counts the feature store must make for the batch (in order; none unless
    /// velocity is enabled).
    pub fn velocity_events(&self) -> &[VelocityEvent] {
        &self.processor.scratch.velocity_events
    }

    /// Scores the whole batch at once, then decides, posts and settles in order, and
    /// advances the watermark; returns [`FeaturizedBatch::consumed`]. `velocity[i]`
    /// answers `velocity_events()[i]`; `None` (no feature store) leaves decisions
    /// without velocity.
    pub fn finish(self, velocity: Option<&[VelocityTotals]>, out: &mut OutputBatch) -> usize {
        let FeaturizedBatch { processor, consumed } = self;
        assert!(
            velocity.is_none_or(|v| v.len() == processor.scratch.velocity_events.len()),
            "one velocity answer per velocity event"
        );
        processor.decide_batch(velocity, out);
        consumed
    }
}

impl PartitionProcessor {
    /// The validate stage, counted: the payment, or `None` once it is dead-lettered.
    pub(super) fn validate(
        &self,
        topic: &str,
        record: &InputRecord<'_>,
        parsed: Result<Payment, Rejection>,
        out: &mut OutputBatch,
    ) -> Option<Payment> {
        out.counters.count(OperatorId::Validate).records_in += 1;
        let (log_time_ms, max_skew_ms) = (record.timestamp_ms, self.config.max_event_time_skew_ms);
        match validate_payment(parsed, self.config.input_partitions, self.partition, log_time_ms, max_skew_ms) {
            Ok(payment) => {
                out.counters.count(OperatorId::Validate).records_out += 1;
                Some(payment)
            }
            Err(rejection) => {
                out.counters.count(OperatorId::Validate).records_error += 1;
                out.dead_letters.push(self.dead_letter(rejection, topic, record));
                None
            }
        }
    }

    /// The dedupe stage, counted: the payment's key if it is new, `None` for a retry
    /// (counted) or a conflict (dead-lettered).
    pub(super) fn deduplicate_payment(
        &self,
        topic: &str,
        record: &InputRecord<'_>,
        payment: &Payment,
        out: &mut OutputBatch,
    ) -> Option<DedupeKey> {
        out.counters.count(OperatorId::Deduplicate).records_in += 1;
        let key = DedupeKey::of_payment(payment);
        let what = || format!("payment_id {:?}", payment.payment_id);
        match deduplicate(&self.state.dedupe, key, &mut out.counters.retries, what) {
            Ok(true) => {
                out.counters.count(OperatorId::Deduplicate).records_out += 1;
                Some(key)
            }
            Ok(false) => None,
            Err(rejection) => {
                out.counters.count(OperatorId::Deduplicate).records_error += 1;
                out.dead_letters.push(self.dead_letter(rejection, topic, record));
                None
            }
        }
    }

    /// The features stage for a new payment: a scored kind gets its feature row (in
    /// `scratch.rows`) and its `Seen` op applied; another kind its `SeenId` op. Either
    /// waits in `scratch.pending` to be decided, its op logged then. `newest_ms`: the
    /// newest event time of the batch so far, for lateness.
    pub(super) fn featurize(
        &mut self,
        payment: Payment,
        key: DedupeKey,
        keys: (u64, u64),
        terminal: Option<TerminalFeatures>,
        newest_ms: &mut i64,
        out: &mut OutputBatch,
    ) {
        if !payment.kind.is_scored() {
            let seen = StateOp::seen_id(key, payment.event_time_ms);
            self.state.apply(&seen, &self.config, self.partition);
            self.scratch.pending.push(Pending { payment, seen, scored: None, late: false, velocity: [None; 2] });
            return;
        }
        out.counters.count(OperatorId::Features).records_in += 1;
        let amount_minor = payment.amount.minor_units();
        let t = payment.event_time_ms;
        // Late relative to everything before it, earlier payments of this batch included.
        let late = t < newest_ms.saturating_sub(self.config.feature_allowed_lateness_ms);
        *newest_ms = (*newest_ms).max(t);
        out.counters.late_feature_payments += u64::from(late);
        let (customer_hash, terminal_hash) = keys;
        let mut row = feature_row(&self.state.customers, None, keys, t, amount_minor, self.config.label_delay_ms);
        if let Some(terminal) = terminal {
            terminal.write_to(&mut row);
        }
        let seen = StateOp::Seen {
            id_hash: key.id_hash.to_le_bytes(),
            content_hash: key.content_hash.to_le_bytes(),
            customer_hash,
            terminal_hash,
            event_time_ms: t,
            amount_minor,
            approval: None,
        };
        // Applied now (the approval, if any, when decided); logged at decision time.
        self.state.apply(&seen, &self.config, self.partition);
        out.counters.count(OperatorId::Features).records_out += 1;
        let velocity = match self.config.velocity.enabled {
            true => queue_velocity_events(&payment, &mut self.scratch.velocity_events),
            false => [None; 2],
        };
        let scored = Some(self.scratch.rows.len());
        self.scratch.pending.push(Pending { payment, seen, scored, late, velocity });
        self.scratch.rows.push(row);
    }

    /// Scores the featurized batch, then decides, posts and settles its events in order
    /// and advances the watermark.
    pub(super) fn decide_batch(&mut self, velocity: Option<&[VelocityTotals]>, out: &mut OutputBatch) {
        let watermark_before = self.state.max_event_time_ms;
        let model = self.model.clone();
        score_rows(model.as_ref(), &self.scratch.rows, &mut self.scratch.scores, &mut out.counters);
        let mut max_event_time_ms = watermark_before;
        // Drained, not consumed: the next batch reuses its allocation.
        let mut pending = std::mem::take(&mut self.scratch.pending);
        for item in pending.drain(..) {
            max_event_time_ms = max_event_time_ms.max(item.payment.event_time_ms);
            let Some(index) = item.scored else {
                out.state_ops.push(item.seen);
                self.apply_ledger_event(item.payment, out);
                continue;
            };
            let velocity = velocity.map(|totals| velocity_of(&item.velocity, totals));
            let (score, review) = apply_rules(&self.config, self.scratch.scores[index], velocity.as_ref(), item.late);
            self.decide_and_post(item.payment, item.seen, &score, review, velocity, out);
        }
        self.scratch.pending = pending;
        if max_event_time_ms > watermark_before {
            let applied = self.apply(StateOp::Watermark { max_event_time_ms }, out);
            out.counters.holds_expired += applied.expired_holds.len() as u64;
            self.send_marks(applied.settlement_horizon_ms, out);
        }
    }

    /// Decide, ledger, settlement, decision record, for a scored payment or authorization.
    /// `at_least_review`: the payment may not be approved (too late for exact features,
    /// or a velocity rule).
    pub(super) fn decide_and_post(
        &mut self,
        payment: Payment,
        mut seen: StateOp,
        score: &Score,
        at_least_review: bool,
        velocity: Option<Velocity>,
        out: &mut OutputBatch,
    ) {
        let mut outcome = decide(&self.config, score, at_least_review, &mut out.counters);
        // Only approved payments move money (and may still be refused by the ledger).
        let event_time = format_rfc3339_ms(payment.event_time_ms);
        let mut score = *score;
        if outcome == Outcome::Approve {
            match self.post_new_money(&payment, &event_time, out) {
                Ok(approved) => {
                    if let StateOp::Seen { id_hash, amount_minor, event_time_ms, approval, .. } = &mut seen {
                        self.state.approve(*id_hash, &approved, *amount_minor, *event_time_ms);
                        *approval = Some(approved);
                    }
                }
                Err(reason) => {
                    out.counters.count(OperatorId::Ledger).records_error += 1;
                    out.counters.ledger_decline(reason);
                    outcome = Outcome::Decline;
                    score = with_first_reason(reason.as_str(), &score);
                }
            }
        }
        // Logged now, with the approval: see `StateOp::Seen`.
        out.state_ops.push(seen);
        out.counters.outcomes[outcome as usize] += 1;
        self.push_decision(payment, event_time, outcome, &score, velocity, out);
    }
}
