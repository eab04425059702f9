//! Prometheus metrics of the runtime. Updated once per batch, never per event in the hot
//! loop except the latency samples, which go to batch-local histograms first. Labels
//! are low-cardinality: operator, reason, outcome, topic, partition.

use std::sync::Mutex;

use hdrhistogram::Histogram as HdrHistogram;
use paystream_domain::{Outcome, RejectReason};
use paystream_operators::ledger::DeclineReason;
use paystream_operators::{BatchCounters, OperatorId};
use prometheus::{
    Counter, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

pub use crate::limits::LATENCY_US_MAX;

pub struct Metrics {
    pub registry: Registry,
    operator_records: IntCounterVec,
    dead_letters: IntCounterVec,
    decisions: IntCounterVec,
    pub duplicate_retries: IntCounter,
    pub late_settlement_payments: IntCounter,
    pub misplaced_settlement_entries: IntCounter,
    pub ledger_declines: IntCounterVec,
    pub holds_expired: IntCounter,
    pub transfer_legs: IntCounterVec,
    pub input_records: IntCounter,
    pub commits: IntCounter,
    pub batch_seconds: Histogram,
    pub commit_seconds: Histogram,
    pub event_to_decision_seconds: Histogram,
    /// Writing one snapshot to the store (a partition's on its snapshotter's thread, or
    /// the terminal index's).
    pub snapshot_seconds: Histogram,
    pub snapshot_bytes: Histogram,
    /// Time workers spent on snapshots themselves: only the final one at shutdown, none
    /// while deciding.
    pub snapshot_wait_seconds: Counter,
    /// Changelog records committed but not yet in the snapshotter's standby copy.
    pub snapshot_lag_records: IntGaugeVec,
    pub restore_seconds: Histogram,
    pub lag_records: IntGaugeVec,
    pub remembered_payment_ids: IntGauge,
    pub late_feature_payments: IntCounter,
    /// Fraud scores of decided payments (drift shows as a shifting distribution).
    pub fraud_scores: Histogram,
    /// Batches that stopped early to wait for the terminal index.
    pub terminal_waits: IntCounter,
    /// Round trips to the velocity feature store (one per batch) and failed attempts.
    pub velocity_store_seconds: Histogram,
    pub velocity_store_errors: IntCounter,
    /// Event time the terminal index has read through, as a Unix timestamp.
    pub terminal_read_through_timestamp_seconds: Gauge,
    /// Payments and labels indexed after payments later than them were scored.
    pub terminal_late_inputs: IntCounter,
    pub terminal_index_only_records: IntCounter,
    pub terminal_index_lock_wait_seconds: Counter,
    pub terminal_index_deferred_batches: IntCounter,
    pub terminal_index_payments: IntGauge,
    pub terminal_index_pending_labels: IntGauge,
    /// Labels indexed, by result (attached to their payment, or pending it).
    pub labels: IntCounterVec,
    pub model_reloads: IntCounterVec,
    /// Output records copied into the record store.
    pub sink_records: IntCounter,
    /// Failed attempts to write to the record store (retried).
    pub sink_errors: IntCounter,
    /// Decisions copied into the history store (ScyllaDB), and failed attempts (retried).
    pub history_sink_records: IntCounter,
    pub history_sink_errors: IntCounter,
    /// Consumer group generations this process has run (Kafka).
    pub rebalances: IntCounter,
    /// Input partitions this process owns now.
    pub assigned_partitions: IntGauge,
    pub input_partitions: IntGauge,
    pub workers: IntGauge,
    pub sink_write_seconds: Histogram,
    pub history_sink_write_seconds: Histogram,
    model_info: IntGaugeVec,
    /// The standard `process_*` metrics, in a registry of their own: they keep their
    /// conventional names, without the `paystream_` prefix.
    process: Registry,
    /// Exact event→decision latency in µs, for `paystream bench` percentiles.
    pub latency_us: Mutex<HdrHistogram<u64>>,
}

/// `registry` with `paystream_build_info{version, profile}` = 1 in it: which build runs.
fn with_build_info(registry: Registry) -> Registry {
    let info = register(
        &registry,
        IntGaugeVec::new(Opts::new("build_info", "1, labelled with the running build"), &["version", "profile"])
            .expect("valid metric"),
    );
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    info.with_label_values(&[env!("CARGO_PKG_VERSION"), profile]).set(1);
    registry
}

/// The standard `process_*` metrics of this process (CPU seconds, resident memory, open
/// file descriptors, threads, start time), read from /proc at each scrape.
fn process_registry() -> Registry {
    let registry = Registry::new();
    let collector = prometheus::process_collector::ProcessCollector::for_self();
    registry.register(Box::new(collector)).expect("one process collector");
    registry
}

/// What every paystream process exports, pipeline or not: `paystream_build_info` and the
/// standard `process_*` metrics (`serve --service auth` has nothing else of its own).
pub struct ProcessMetrics {
    registry: Registry,
    process: Registry,
}

impl ProcessMetrics {
    pub fn new() -> ProcessMetrics {
        let registry = Registry::new_custom(Some("paystream".into()), None).expect("valid prefix");
        ProcessMetrics { registry: with_build_info(registry), process: process_registry() }
    }

    pub fn render(&self) -> String {
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}

impl Default for ProcessMetrics {
    fn default() -> Self {
        ProcessMetrics::new()
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, collector: T) -> T {
    registry.register(Box::new(collector.clone())).expect("metric names are unique");
    collector
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("paystream".into()), None).expect("valid prefix");
        let latency_buckets = vec![0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];
        let operator_records = register(
            &registry,
            IntCounterVec::new(
                Opts::new("operator_records_total", "Records into, out of and in error at each operator"),
                &["operator", "kind"],
            )
            .expect("valid metric"),
        );
        for operator in OperatorId::ALL {
            for kind in ["in", "out", "error"] {
                operator_records.with_label_values(&[operator.as_str(), kind]);
            }
        }
        let dead_letters = register(
            &registry,
            IntCounterVec::new(
                Opts::new("dead_letters_total", "Input records sent to the dead-letter topic, by reason"),
                &["reason"],
            )
            .expect("valid metric"),
        );
        for reason in RejectReason::ALL {
            dead_letters.with_label_values(&[reason.as_str()]);
        }
        let ledger_declines = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "ledger_declines_total",
                    "Events the ledger refused (insufficient funds, expired authorization, ...), by reason",
                ),
                &["reason"],
            )
            .expect("valid metric"),
        );
        for reason in DeclineReason::ALL {
            ledger_declines.with_label_values(&[reason.as_str()]);
        }
        let model_reloads = register(
            &registry,
            IntCounterVec::new(Opts::new("model_reloads_total", "Model file reloads, by result"), &["result"])
                .expect("valid metric"),
        );
        for result in ["ok", "error"] {
            model_reloads.with_label_values(&[result]);
        }
        let decisions = register(
            &registry,
            IntCounterVec::new(Opts::new("decisions_total", "Decisions by outcome"), &["outcome"])
                .expect("valid metric"),
        );
        for outcome in Outcome::ALL {
            decisions.with_label_values(&[outcome.as_str()]);
        }
        let transfer_legs = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "transfer_legs_applied_total",
                    "Legs of payments to other accounts applied on the account's partition: credit (into the payee's wallet) or return (refused, back to the payer)",
                ),
                &["kind"],
            )
            .expect("valid metric"),
        );
        for kind in ["credit", "return"] {
            transfer_legs.with_label_values(&[kind]);
        }
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            register(
                &registry,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric"),
            )
        };
        let counter = |name: &str, help: &str| register(&registry, IntCounter::new(name, help).expect("valid metric"));
        Metrics {
            operator_records,
            dead_letters,
            decisions,
            duplicate_retries: counter(
                "duplicate_retries_total",
                "Payments seen again with the same content (client retries), not processed twice",
            ),
            late_settlement_payments: counter(
                "late_settlement_payments_total",
                "Payments moved to a later settlement window because theirs had closed",
            ),
            misplaced_settlement_entries: counter(
                "misplaced_settlement_entries_total",
                "Settlement entries that reached their merchant's partition after their window closed there (0 unless \
                 the settlement configuration changed between runs; reconcile names them)",
            ),
            ledger_declines,
            holds_expired: counter(
                "holds_expired_total",
                "Authorizations neither captured nor voided before their timeout, released",
            ),
            transfer_legs,
            input_records: counter("input_records_total", "Input records read by the pipeline"),
            commits: counter("commits_total", "Transactions committed by pipeline workers"),
            batch_seconds: histogram(
                "batch_seconds",
                "Wall time to process and commit one batch",
                latency_buckets.clone(),
            ),
            commit_seconds: histogram("commit_seconds", "Wall time of one atomic commit", latency_buckets.clone()),
            event_to_decision_seconds: histogram(
                "event_to_decision_seconds",
                "From an input record's timestamp to the commit of its decision",
                latency_buckets.clone(),
            ),
            snapshot_seconds: histogram(
                "snapshot_seconds",
                "Wall time to write one snapshot (a partition's or the terminal index's) to the snapshot store",
                latency_buckets.clone(),
            ),
            snapshot_bytes: histogram(
                "snapshot_bytes",
                "Size of one partition's snapshot",
                prometheus::exponential_buckets(4_096.0, 4.0, 10).expect("valid buckets"),
            ),
            snapshot_wait_seconds: register(
                &registry,
                Counter::new(
                    "snapshot_wait_seconds_total",
                    "Time workers spent taking snapshots themselves, summed over workers: only the final snapshot at shutdown (the snapshotter takes the others)",
                )
                .expect("valid metric"),
            ),
            snapshot_lag_records: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "snapshot_lag_records",
                        "Changelog records committed but not yet applied to the snapshotter's standby copy",
                    ),
                    &["partition"],
                )
                .expect("valid metric"),
            ),
            restore_seconds: histogram(
                "restore_seconds",
                "Wall time to restore one partition's state",
                latency_buckets.clone(),
            ),
            lag_records: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new("lag_records", "Committed input records not yet processed"),
                    &["topic", "partition"],
                )
                .expect("valid metric"),
            ),
            remembered_payment_ids: register(
                &registry,
                IntGauge::new("remembered_payment_ids", "Payment ids held for deduplication").expect("valid metric"),
            ),
            fraud_scores: histogram(
                "fraud_score",
                "Fraud score of each decided payment, by the model in use (see model_info)",
                vec![0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99],
            ),
            late_feature_payments: counter(
                "late_feature_payments_total",
                "Payments older than their partition's newest by more than the allowed lateness (features may be inexact)",
            ),
            terminal_waits: counter(
                "terminal_waits_total",
                "Batches stopped before a payment whose terminal features were not complete yet",
            ),
            velocity_store_seconds: histogram(
                "velocity_store_seconds",
                "Wall time of one batch's velocity counts and windows in the feature store (one round trip)",
                vec![0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5],
            ),
            velocity_store_errors: counter(
                "velocity_store_errors_total",
                "Failed attempts to reach the velocity feature store (retried until velocity_store_retry_ms)",
            ),
            terminal_read_through_timestamp_seconds: register(
                &registry,
                Gauge::new(
                    "terminal_read_through_timestamp_seconds",
                    "Event time (Unix seconds) the terminal index has read through on its slowest input partition",
                )
                .expect("valid metric"),
            ),
            terminal_late_inputs: counter(
                "terminal_late_inputs_total",
                "Payments and labels indexed after payments later than them had been scored (their features could not include them)",
            ),
            terminal_index_only_records: counter(
                "terminal_index_only_records_total",
                "Payment records a worker read into the terminal index outside its buffer (read ahead by event time, or after a restart): parsed again when scored",
            ),
            terminal_index_deferred_batches: counter(
                "terminal_index_deferred_batches_total",
                "Batches of payments a worker kept for its next turn because the terminal index's lock was taken",
            ),
            terminal_index_lock_wait_seconds: register(
                &registry,
                Counter::new(
                    "terminal_index_lock_wait_seconds_total",
                    "Time threads waited for the terminal index's lock (workers reading or indexing, labels, expiry), summed over threads",
                )
                .expect("valid metric"),
            ),
            terminal_index_payments: register(
                &registry,
                IntGauge::new("terminal_index_payments", "Payments held by the terminal index").expect("valid metric"),
            ),
            terminal_index_pending_labels: register(
                &registry,
                IntGauge::new("terminal_index_pending_labels", "Labels waiting for their payment to be indexed")
                    .expect("valid metric"),
            ),
            labels: register(
                &registry,
                IntCounterVec::new(Opts::new("labels_total", "Fraud labels indexed, by result"), &["result"])
                    .expect("valid metric"),
            ),
            sink_records: counter(
                "sink_records_total",
                "Decisions and ledger transactions copied into the record store (PostgreSQL)",
            ),
            sink_errors: counter("sink_errors_total", "Failed writes to the record store (retried with backoff)"),
            history_sink_records: counter(
                "history_sink_records_total",
                "Decisions copied into the history store (payment history and daily aggregates)",
            ),
            history_sink_errors: counter(
                "history_sink_errors_total",
                "Failed writes to the history store (retried with backoff)",
            ),
            model_reloads,
            model_info: register(
                &registry,
                IntGaugeVec::new(Opts::new("model_info", "1 for the model version in use"), &["version"])
                    .expect("valid metric"),
            ),
            rebalances: counter("rebalances_total", "Consumer group assignments this process has taken up"),
            assigned_partitions: register(
                &registry,
                IntGauge::new("assigned_partitions", "Input partitions this process owns").expect("valid metric"),
            ),
            input_partitions: register(
                &registry,
                IntGauge::new("input_partitions", "Partitions of the input topic (of every process together)")
                    .expect("valid metric"),
            ),
            workers: register(
                &registry,
                IntGauge::new("workers", "Worker threads of this process (batch_seconds divided by it: busy share)")
                    .expect("valid metric"),
            ),
            sink_write_seconds: histogram(
                "sink_write_seconds",
                "Time to write one slice of outputs into the record store (PostgreSQL)",
                latency_buckets.clone(),
            ),
            history_sink_write_seconds: histogram(
                "history_sink_write_seconds",
                "Time to write one slice of decisions into the history store (ScyllaDB)",
                latency_buckets.clone(),
            ),
            latency_us: Mutex::new(HdrHistogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid bounds")),
            process: process_registry(),
            registry: with_build_info(registry),
        }
    }

    /// Adds one batch's operator counters.
    pub fn add_counters(&self, counters: &BatchCounters) {
        for (operator, counts) in OperatorId::ALL.iter().zip(&counters.operators) {
            for (kind, value) in
                [("in", counts.records_in), ("out", counts.records_out), ("error", counts.records_error)]
            {
                if value > 0 {
                    self.operator_records.with_label_values(&[operator.as_str(), kind]).inc_by(value);
                }
            }
        }
        for (outcome, value) in Outcome::ALL.iter().zip(&counters.outcomes) {
            if *value > 0 {
                self.decisions.with_label_values(&[outcome.as_str()]).inc_by(*value);
            }
        }
        self.duplicate_retries.inc_by(counters.retries);
        self.late_settlement_payments.inc_by(counters.late_settlement_payments);
        self.misplaced_settlement_entries.inc_by(counters.misplaced_settlement_entries);
        for (reason, value) in DeclineReason::ALL.iter().zip(&counters.ledger_declines) {
            if *value > 0 {
                self.ledger_declines.with_label_values(&[reason.as_str()]).inc_by(*value);
            }
        }
        self.holds_expired.inc_by(counters.holds_expired);
        if counters.transfer_credits > 0 {
            self.transfer_legs.with_label_values(&["credit"]).inc_by(counters.transfer_credits);
        }
        if counters.transfer_returns > 0 {
            self.transfer_legs.with_label_values(&["return"]).inc_by(counters.transfer_returns);
        }
        self.late_feature_payments.inc_by(counters.late_feature_payments);
    }

    /// Marks `version` as the model in use (and `previous`, if any, as not).
    pub fn model_loaded(&self, previous: &str, version: &str) {
        if !previous.is_empty() {
            self.model_info.with_label_values(&[previous]).set(0);
        }
        self.model_info.with_label_values(&[version]).set(1);
    }

    pub fn dead_letter(&self, reason: RejectReason) {
        self.dead_letters.with_label_values(&[reason.as_str()]).inc();
    }

    pub fn dead_letters(&self, reason: RejectReason) -> u64 {
        self.dead_letters.with_label_values(&[reason.as_str()]).get()
    }

    pub fn decisions(&self, outcome: Outcome) -> u64 {
        self.decisions.with_label_values(&[outcome.as_str()]).get()
    }

    pub fn operator_records(&self, operator: OperatorId, kind: &str) -> u64 {
        self.operator_records.with_label_values(&[operator.as_str(), kind]).get()
    }

    /// The text exposition format, for `/metrics`.
    pub fn render(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        encoder.encode_to_string(&families).unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
