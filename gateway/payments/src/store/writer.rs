//! One writer per store: the writes of concurrent requests are queued and committed
//! together, one transaction per batch (group commit), so an fsync is paid per batch, not
//! per write. On SQLite, which writes one transaction at a time, this is what lets the
//! API go past a few hundred requests per second. If a batch fails, each of its writes
//! is retried alone, so one bad write fails only its own request.

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::idempotency::{Begun, begin_key, complete_key, release_key};
use super::payments::{PaymentRecord, insert_payment, record_decision};
use super::wallets::insert_posting;
use crate::error::PaymentsError;
use crate::intake::{DecisionNotice, PipelineNotice};

/// Writes committed together at most.
pub const WRITE_BATCH_OPS_MAX: usize = 256;
/// Writes queued at most; callers wait when it is full.
pub const WRITE_QUEUE_DEPTH_MAX: usize = 4_096;

pub(super) enum Write {
    BeginKey {
        client_id: String,
        key: String,
        request_hash: String,
        now_ms: i64,
        reply: oneshot::Sender<Result<Begun, PaymentsError>>,
    },
    CompleteKey {
        client_id: String,
        key: String,
        status: u16,
        location: Option<String>,
        body: String,
        reply: oneshot::Sender<Result<(), PaymentsError>>,
    },
    ReleaseKey {
        client_id: String,
        key: String,
        reply: oneshot::Sender<Result<(), PaymentsError>>,
    },
    InsertPayment {
        record: Box<PaymentRecord>,
        reply: oneshot::Sender<Result<(), PaymentsError>>,
    },
    RecordDecision {
        notice: DecisionNotice,
        reply: oneshot::Sender<Result<bool, PaymentsError>>,
    },
    /// The recorder's notices, as they come off the log.
    RecordNotices {
        notices: Vec<PipelineNotice>,
        reply: oneshot::Sender<Result<(), PaymentsError>>,
    },
}

/// What one write produced, held until its batch commits.
enum Outcome {
    Begun(Begun),
    Done,
    Recorded(bool),
}

async fn apply(connection: &mut sqlx::AnyConnection, write: &Write) -> Result<Outcome, PaymentsError> {
    Ok(match write {
        Write::BeginKey { client_id, key, request_hash, now_ms, .. } => {
            Outcome::Begun(begin_key(connection, client_id, key, request_hash, *now_ms).await?)
        }
        Write::CompleteKey { client_id, key, status, location, body, .. } => {
            complete_key(connection, client_id, key, *status, location.as_deref(), body).await?;
            Outcome::Done
        }
        Write::ReleaseKey { client_id, key, .. } => {
            release_key(connection, client_id, key).await?;
            Outcome::Done
        }
        Write::InsertPayment { record, .. } => {
            insert_payment(connection, record).await?;
            Outcome::Done
        }
        Write::RecordDecision { notice, .. } => Outcome::Recorded(record_decision(connection, notice).await?),
        Write::RecordNotices { notices, .. } => {
            for notice in notices {
                match notice {
                    PipelineNotice::Decision(decision) => {
                        record_decision(connection, decision).await?;
                    }
                    PipelineNotice::Posting(posting) => insert_posting(connection, posting).await?,
                }
            }
            Outcome::Done
        }
    })
}

fn answer(write: Write, outcome: Result<Outcome, PaymentsError>) {
    let mismatch = || PaymentsError::Internal("a write produced another kind of outcome".into());
    match write {
        Write::BeginKey { reply, .. } => {
            let _ = reply.send(outcome.and_then(|outcome| match outcome {
                Outcome::Begun(begun) => Ok(begun),
                _ => Err(mismatch()),
            }));
        }
        Write::RecordDecision { reply, .. } => {
            let _ = reply.send(outcome.and_then(|outcome| match outcome {
                Outcome::Recorded(recorded) => Ok(recorded),
                _ => Err(mismatch()),
            }));
        }
        Write::CompleteKey { reply, .. }
        | Write::ReleaseKey { reply, .. }
        | Write::InsertPayment { reply, .. }
        | Write::RecordNotices { reply, .. } => {
            let _ = reply.send(outcome.map(|_| ()));
        }
    }
}

/// Runs one batch in one transaction; `Err` if any write or the commit failed (nothing
/// of the batch is kept then).
async fn run_batch(pool: &AnyPool, batch: &[Write]) -> Result<Vec<Outcome>, PaymentsError> {
    let mut transaction = pool.begin().await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for write in batch {
        outcomes.push(apply(&mut transaction, write).await?);
    }
    transaction.commit().await?;
    Ok(outcomes)
}

/// The writer task: ends when every sender is gone.
pub(super) async fn run_writer(pool: AnyPool, mut queue: mpsc::Receiver<Write>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH_OPS_MAX {
            match queue.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        match run_batch(&pool, &batch).await {
            Ok(outcomes) => {
                for (write, outcome) in batch.into_iter().zip(outcomes) {
                    answer(write, Ok(outcome));
                }
            }
            Err(error) => {
                tracing::warn!(%error, writes = batch.len(), "a write batch failed; retrying its writes one by one");
                for write in batch {
                    let outcome = match run_batch(&pool, std::slice::from_ref(&write)).await {
                        Ok(mut outcomes) => Ok(outcomes.pop().expect("one outcome per write")),
                        Err(error) => Err(error),
                    };
                    answer(write, outcome);
                }
            }
        }
    }
}
