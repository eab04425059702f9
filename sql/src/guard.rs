//! The server's limits on every statement, which a client cannot `SET` away: a deadline
//! that holds while rows stream (not only while planning), cancel (psql's Ctrl-C) at any
//! point, and a cap on the rows a result may have. The memory cap is the connection's
//! own runtime (see [`crate::context::connection_context`]).
//!
//! Each connection has one [`ConnectionGuard`]; every physical plan made for it starts a
//! new [`Budget`] (the statement's deadline and cancel flag). Table scans check the
//! budget between fetches; [`GuardExec`], the root of every plan, races the result
//! stream against it and counts the rows.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use futures::Stream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::{Outcome, SqlMetrics};

/// What the server allows one statement.
#[derive(Debug, Clone, Copy)]
pub struct StatementLimits {
    /// From planning to the last row.
    pub timeout: Duration,
    /// Rows one result may have.
    pub result_rows_max: u64,
    /// Memory one connection's operators (sorts, joins, aggregates) may hold; nothing
    /// spills to disk.
    pub connection_memory_bytes_max: usize,
}

impl Default for StatementLimits {
    fn default() -> Self {
        StatementLimits {
            timeout: Duration::from_secs(60),
            result_rows_max: 1_000_000,
            connection_memory_bytes_max: 512 << 20,
        }
    }
}

/// Why a statement stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Timeout,
    Cancelled,
}

/// What the guard stops a statement for, carried inside DataFusion's error so the
/// metrics can tell it from other failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardError {
    Stopped(Stop),
    RowCap(u64),
}

impl std::fmt::Display for GuardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // PostgreSQL's own words, so psql users recognise them.
        match self {
            GuardError::Stopped(Stop::Timeout) => f.write_str("canceling statement due to statement timeout"),
            GuardError::Stopped(Stop::Cancelled) => f.write_str("canceling statement due to user request"),
            GuardError::RowCap(max) => {
                write!(f, "the result has more than {max} rows (the server's cap): add a LIMIT or aggregate")
            }
        }
    }
}

impl std::error::Error for GuardError {}

impl From<GuardError> for DataFusionError {
    fn from(error: GuardError) -> Self {
        DataFusionError::External(Box::new(error))
    }
}

impl From<Stop> for DataFusionError {
    fn from(stop: Stop) -> Self {
        GuardError::Stopped(stop).into()
    }
}

/// One statement's deadline and cancel flag.
#[derive(Debug)]
pub struct Budget {
    deadline: Instant,
    cancelled: AtomicBool,
    wake: Notify,
}

impl Budget {
    fn new(timeout: Duration) -> Budget {
        Budget { deadline: Instant::now() + timeout, cancelled: AtomicBool::new(false), wake: Notify::new() }
    }

    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    /// Whether the statement may go on, for blocking work that cannot be raced.
    pub fn check(&self) -> Result<(), Stop> {
        if self.cancelled.load(Ordering::SeqCst) {
            Err(Stop::Cancelled)
        } else if Instant::now() >= self.deadline {
            Err(Stop::Timeout)
        } else {
            Ok(())
        }
    }

    /// Resolves when the statement must stop.
    pub async fn stopped(&self) -> Stop {
        let cancelled = async {
            loop {
                // Registered before the flag is read, so a cancel in between still wakes it.
                let woken = self.wake.notified();
                if self.cancelled.load(Ordering::SeqCst) {
                    return;
                }
                woken.await;
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(self.deadline) => Stop::Timeout,
            () = cancelled => Stop::Cancelled,
        }
    }
}

/// One connection's current statement.
#[derive(Debug)]
pub struct ConnectionGuard {
    limits: StatementLimits,
    current: Mutex<Arc<Budget>>,
    metrics: Option<SqlMetrics>,
    /// The client's `SET statement_timeout`, in ms (0: none).
    client_timeout_ms: AtomicU64,
}

impl ConnectionGuard {
    pub fn new(limits: StatementLimits, metrics: Option<SqlMetrics>) -> ConnectionGuard {
        ConnectionGuard {
            limits,
            current: Mutex::new(Arc::new(Budget::new(limits.timeout))),
            metrics,
            client_timeout_ms: AtomicU64::new(0),
        }
    }

    /// What the client's `SET statement_timeout` asks for (None: unset or 0). It can
    /// only shorten the server's timeout, never lift it.
    pub fn set_client_timeout(&self, timeout: Option<Duration>) {
        let ms = timeout.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1));
        self.client_timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// The next statement's timeout.
    fn timeout(&self) -> Duration {
        match self.client_timeout_ms.load(Ordering::Relaxed) {
            0 => self.limits.timeout,
            ms => self.limits.timeout.min(Duration::from_millis(ms)),
        }
    }

    fn start(&self) -> Arc<Budget> {
        let budget = Arc::new(Budget::new(self.timeout()));
        *self.current.lock().expect("the guard's lock is never poisoned") = budget.clone();
        budget
    }

    /// The statement running now (or the last one).
    pub fn current(&self) -> Arc<Budget> {
        self.current.lock().expect("the guard's lock is never poisoned").clone()
    }

    /// Stops the statement running now (a client's cancel request).
    pub fn cancel(&self) {
        self.current().cancel();
    }
}

/// Plans as DataFusion does, within the statement's budget, under a [`GuardExec`].
#[derive(Debug)]
pub struct GuardPlanner {
    pub guard: Arc<ConnectionGuard>,
}

#[async_trait]
impl QueryPlanner for GuardPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let budget = self.guard.start();
        let started = Instant::now();
        let planner = DefaultPhysicalPlanner::default();
        let planned = tokio::select! {
            planned = planner.create_physical_plan(logical_plan, session) => planned,
            stop = budget.stopped() => Err(stop.into()),
        };
        let plan = match planned {
            Ok(plan) => plan,
            Err(error) => {
                if let Some(metrics) = &self.guard.metrics {
                    metrics.statement(outcome_of(&error), started.elapsed().as_secs_f64());
                }
                return Err(error);
            }
        };
        let partitions = plan.properties().output_partitioning().partition_count();
        let tally = Arc::new(Tally {
            partitions_left: AtomicUsize::new(partitions),
            failed: AtomicBool::new(false),
            started,
            metrics: self.guard.metrics.clone(),
        });
        Ok(Arc::new(GuardExec {
            input: plan,
            budget,
            rows: Arc::new(AtomicU64::new(0)),
            rows_max: self.guard.limits.result_rows_max,
            tally,
        }))
    }
}

/// How a statement's error counts.
fn outcome_of(error: &DataFusionError) -> Outcome {
    let DataFusionError::External(inner) = error.find_root() else { return Outcome::Error };
    match inner.downcast_ref::<GuardError>() {
        Some(GuardError::Stopped(Stop::Timeout)) => Outcome::Timeout,
        Some(GuardError::Stopped(Stop::Cancelled)) => Outcome::Cancelled,
        Some(GuardError::RowCap(_)) => Outcome::RowCap,
        None => Outcome::Error,
    }
}

/// Counts a statement once, however many partitions its result has: its first failure,
/// or success when its last partition ends.
#[derive(Debug)]
struct Tally {
    partitions_left: AtomicUsize,
    failed: AtomicBool,
    started: Instant,
    metrics: Option<SqlMetrics>,
}

impl Tally {
    fn partition_ended(&self, outcome: Outcome) {
        let Some(metrics) = &self.metrics else { return };
        let seconds = self.started.elapsed().as_secs_f64();
        if outcome != Outcome::Ok {
            if !self.failed.swap(true, Ordering::SeqCst) {
                metrics.statement(outcome, seconds);
            }
        } else if self.partitions_left.fetch_sub(1, Ordering::SeqCst) == 1 && !self.failed.load(Ordering::SeqCst) {
            metrics.statement(Outcome::Ok, seconds);
        }
    }
}

/// The root of every plan: stops its result at the deadline or on cancel, and fails it
/// past the row cap.
#[derive(Debug)]
pub struct GuardExec {
    input: Arc<dyn ExecutionPlan>,
    budget: Arc<Budget>,
    rows: Arc<AtomicU64>,
    rows_max: u64,
    tally: Arc<Tally>,
}

impl DisplayAs for GuardExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GuardExec: rows_max={}", self.rows_max)
    }
}

impl ExecutionPlan for GuardExec {
    fn name(&self) -> &str {
        "GuardExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal("GuardExec has one input".into()));
        }
        Ok(Arc::new(GuardExec {
            input: children.swap_remove(0),
            budget: self.budget.clone(),
            rows: self.rows.clone(),
            rows_max: self.rows_max,
            tally: self.tally.clone(),
        }))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let budget = self.budget.clone();
        Ok(Box::pin(Guarded {
            schema: input.schema(),
            input: Some(input),
            stopped: Box::pin(async move { budget.stopped().await }),
            rows: self.rows.clone(),
            rows_max: self.rows_max,
            tally: self.tally.clone(),
            ended: false,
        }))
    }
}

struct Guarded {
    schema: SchemaRef,
    /// `None` once the stream ended or failed: the plan under it is dropped (and its
    /// tasks stopped) at once.
    input: Option<SendableRecordBatchStream>,
    stopped: Pin<Box<dyn Future<Output = Stop> + Send>>,
    rows: Arc<AtomicU64>,
    rows_max: u64,
    tally: Arc<Tally>,
    /// Whether this partition's end was counted.
    ended: bool,
}

impl Guarded {
    fn end(&mut self, outcome: Outcome) {
        if !self.ended {
            self.ended = true;
            self.tally.partition_ended(outcome);
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // Dropped before its end: the client went away, or a LIMIT above had enough.
        self.end(Outcome::Ok);
    }
}

impl Stream for Guarded {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.input.is_none() {
            return Poll::Ready(None);
        }
        let outcome = if let Poll::Ready(stop) = self.stopped.as_mut().poll(cx) {
            Poll::Ready(Some(Err(stop.into())))
        } else {
            let input = self.input.as_mut().expect("checked above");
            match input.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(batch))) => {
                    let added = batch.num_rows() as u64;
                    if self.rows.fetch_add(added, Ordering::Relaxed) + added <= self.rows_max {
                        return Poll::Ready(Some(Ok(batch)));
                    }
                    Poll::Ready(Some(Err(GuardError::RowCap(self.rows_max).into())))
                }
                Poll::Ready(other) => Poll::Ready(other),
            }
        };
        self.input = None;
        let ended = match &outcome {
            Poll::Ready(Some(Err(error))) => outcome_of(error),
            _ => Outcome::Ok,
        };
        self.end(ended);
        outcome
    }
}

impl RecordBatchStream for Guarded {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_budget_stops_at_its_deadline_or_on_cancel() {
        let guard =
            ConnectionGuard::new(StatementLimits { timeout: Duration::from_millis(20), ..Default::default() }, None);
        let budget = guard.start();
        assert_eq!(budget.check(), Ok(()));
        assert_eq!(budget.stopped().await, Stop::Timeout);
        assert_eq!(budget.check(), Err(Stop::Timeout));

        let guard =
            ConnectionGuard::new(StatementLimits { timeout: Duration::from_secs(600), ..Default::default() }, None);
        let budget = guard.start();
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.stopped().await }
        });
        tokio::task::yield_now().await;
        guard.cancel();
        assert_eq!(waiting.await.unwrap(), Stop::Cancelled);
        assert_eq!(budget.check(), Err(Stop::Cancelled));
        assert_eq!(guard.start().check(), Ok(()), "the next statement starts afresh");
    }

    #[test]
    fn the_metrics_tell_the_guard_s_stops_from_other_errors() {
        assert_eq!(outcome_of(&Stop::Timeout.into()), Outcome::Timeout);
        let wrapped = DataFusionError::Context("scanning".into(), Box::new(Stop::Cancelled.into()));
        assert_eq!(outcome_of(&wrapped), Outcome::Cancelled);
        assert_eq!(outcome_of(&GuardError::RowCap(5).into()), Outcome::RowCap);
        assert_eq!(outcome_of(&DataFusionError::ResourcesExhausted("memory".into())), Outcome::Error);
    }
}
