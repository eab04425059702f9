//! The SQL layer's metrics, in the registry of the process they run in (prefixed
//! `paystream_` there): statements by outcome and their duration for the endpoint, the
//! scan cache's size and the rows it served, and each continuous view's progress.

use prometheus::{GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// How a statement ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Timeout,
    Cancelled,
    RowCap,
    Error,
}

impl Outcome {
    const ALL: [Outcome; 5] = [Outcome::Ok, Outcome::Timeout, Outcome::Cancelled, Outcome::RowCap, Outcome::Error];

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
            Outcome::RowCap => "row_cap",
            Outcome::Error => "error",
        }
    }
}

#[derive(Clone)]
pub struct SqlMetrics {
    statements_total: IntCounterVec,
    statement_seconds: Histogram,
    pub connections: IntGauge,
    view_windows_emitted_total: IntCounterVec,
    view_late_rows_total: IntCounterVec,
    view_closed_through_timestamp_seconds: GaugeVec,
    view_open_rows: IntGaugeVec,
    view_running: IntGaugeVec,
    pub(crate) scan_cache_bytes: IntGauge,
    pub(crate) scan_rows_total: IntCounterVec,
}

impl std::fmt::Debug for SqlMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqlMetrics")
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, collector: T) -> T {
    registry.register(Box::new(collector.clone())).expect("metric names are unique");
    collector
}

/// Bytes of decoded columns the scan cache holds.
pub(crate) fn scan_cache_bytes() -> IntGauge {
    IntGauge::new("sql_scan_cache_bytes", "Bytes of decoded columns the SQL scan cache holds").expect("valid metric")
}

/// Rows table scans produced, by source: `cache` or `log` (decoded).
pub(crate) fn scan_rows_total() -> IntCounterVec {
    IntCounterVec::new(
        Opts::new("sql_scan_rows_total", "Rows SQL table scans produced, by where they came from"),
        &["source"],
    )
    .expect("valid metric")
}

impl SqlMetrics {
    pub fn new(registry: &Registry) -> SqlMetrics {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(registry, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        let metrics = SqlMetrics {
            statements_total: counter("sql_statements_total", "SQL statements run, by how they ended", &["outcome"]),
            statement_seconds: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new("sql_statement_seconds", "A statement's time from planning to its last row")
                        .buckets(vec![0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0]),
                )
                .expect("valid metric"),
            ),
            connections: register(
                registry,
                IntGauge::new("sql_connections", "Open connections to the SQL endpoint").expect("valid metric"),
            ),
            view_windows_emitted_total: counter(
                "view_windows_emitted_total",
                "Windows a continuous view closed and emitted",
                &["view"],
            ),
            view_late_rows_total: counter(
                "view_late_rows_total",
                "Rows that came after their window closed, routed to <view>_late",
                &["view"],
            ),
            view_closed_through_timestamp_seconds: register(
                registry,
                GaugeVec::new(
                    Opts::new(
                        "view_closed_through_timestamp_seconds",
                        "Event time up to which a view's windows are closed",
                    ),
                    &["view"],
                )
                .expect("valid metric"),
            ),
            view_open_rows: register(
                registry,
                IntGaugeVec::new(Opts::new("view_open_rows", "Rows a view holds in open windows"), &["view"])
                    .expect("valid metric"),
            ),
            view_running: register(
                registry,
                IntGaugeVec::new(
                    Opts::new("view_running", "1 while a continuous view runs, 0 once it stopped on an error"),
                    &["view"],
                )
                .expect("valid metric"),
            ),
            scan_cache_bytes: register(registry, scan_cache_bytes()),
            scan_rows_total: register(registry, scan_rows_total()),
        };
        // Every series exists at 0 from the start: dashboards and rate() see the first one.
        for outcome in Outcome::ALL {
            metrics.statements_total.with_label_values(&[outcome.label()]);
        }
        for source in ["cache", "log"] {
            metrics.scan_rows_total.with_label_values(&[source]);
        }
        metrics
    }

    pub fn statement(&self, outcome: Outcome, seconds: f64) {
        self.statements_total.with_label_values(&[outcome.label()]).inc();
        self.statement_seconds.observe(seconds);
    }

    /// Whether `view` runs (it started) or stopped on an error.
    pub fn view_running(&self, view: &str, running: bool) {
        self.view_running.with_label_values(&[view]).set(i64::from(running));
    }

    /// A dropped view's series go.
    pub fn forget_view(&self, view: &str) {
        let _ = self.view_running.remove_label_values(&[view]);
        let _ = self.view_windows_emitted_total.remove_label_values(&[view]);
        let _ = self.view_late_rows_total.remove_label_values(&[view]);
        let _ = self.view_closed_through_timestamp_seconds.remove_label_values(&[view]);
        let _ = self.view_open_rows.remove_label_values(&[view]);
    }

    /// When a view opens and after each of its commits: its totals so far, its close line
    /// (`i64::MIN` before its first window closed) and the rows in its open windows.
    pub fn view(&self, view: &str, windows: u64, late: u64, closed_through_ms: i64, open_rows: usize) {
        let set_total = |counter: &IntCounterVec, total: u64| {
            let counter = counter.with_label_values(&[view]);
            counter.inc_by(total.saturating_sub(counter.get()));
        };
        set_total(&self.view_windows_emitted_total, windows);
        set_total(&self.view_late_rows_total, late);
        // NaN until the view has closed a window: no close line yet.
        let closed_through = if closed_through_ms > i64::MIN { closed_through_ms as f64 / 1000.0 } else { f64::NAN };
        self.view_closed_through_timestamp_seconds.with_label_values(&[view]).set(closed_through);
        self.view_open_rows.with_label_values(&[view]).set(i64::try_from(open_rows).unwrap_or(i64::MAX));
    }
}
