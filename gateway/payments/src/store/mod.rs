//! Payments and idempotency records on SQLite (`<dir>/payments.sqlite`, the embedded
//! default) or PostgreSQL (schema `paystream_payments`), through
//! [`paystream_http::database`].

mod idempotency;
pub mod payments;
mod wallets;
mod writer;

use paystream_http::database::{self, Backend, Migrations};
use sqlx::AnyPool;
use sqlx::migrate::Migrator;
use tokio::sync::{mpsc, oneshot};

pub use idempotency::Begun;
pub use payments::PaymentRecord;
pub use wallets::Balance;

use crate::error::PaymentsError;
use crate::intake::{DecisionNotice, PipelineNotice};
use writer::Write;

static MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE_MIGRATOR, postgres: &POSTGRES_MIGRATOR };
static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The store. Reads go to the pool; writes to the writer task, which commits them in
/// batches ([`writer`]). Must be made inside a tokio runtime (the writer is spawned).
#[derive(Clone)]
pub struct PaymentsStore {
    pool: AnyPool,
    backend: Backend,
    writes: mpsc::Sender<Write>,
}

impl PaymentsStore {
    pub async fn connect(url: &str, schema: &str) -> Result<PaymentsStore, PaymentsError> {
        let (pool, backend) = database::connect(url, schema, &MIGRATIONS).await?;
        Ok(PaymentsStore::with_writer(pool, backend))
    }

    pub async fn open_embedded(directory: &std::path::Path) -> Result<PaymentsStore, PaymentsError> {
        let (pool, backend) = database::open_embedded(directory, "payments.sqlite", &MIGRATIONS).await?;
        Ok(PaymentsStore::with_writer(pool, backend))
    }

    fn with_writer(pool: AnyPool, backend: Backend) -> PaymentsStore {
        let (writes, queue) = mpsc::channel(writer::WRITE_QUEUE_DEPTH_MAX);
        tokio::spawn(writer::run_writer(pool.clone(), queue));
        PaymentsStore { pool, backend, writes }
    }

    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, PaymentsError>>) -> Write,
    ) -> Result<T, PaymentsError> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(make(reply))
            .await
            .map_err(|_| PaymentsError::Internal("the store's writer stopped".into()))?;
        answer.await.map_err(|_| PaymentsError::Internal("the store's writer stopped".into()))?
    }

    /// Claims (client, key) for a request with `request_hash`, or says what an earlier
    /// request with that key did.
    pub async fn begin_key(
        &self,
        client_id: &str,
        key: &str,
        request_hash: &str,
        now_ms: i64,
    ) -> Result<Begun, PaymentsError> {
        self.write(|reply| Write::BeginKey {
            client_id: client_id.to_string(),
            key: key.to_string(),
            request_hash: request_hash.to_string(),
            now_ms,
            reply,
        })
        .await
    }

    /// Stores the answer; later requests with the key replay it.
    pub async fn complete_key(
        &self,
        client_id: &str,
        key: &str,
        status: u16,
        location: Option<&str>,
        body: &str,
    ) -> Result<(), PaymentsError> {
        self.write(|reply| Write::CompleteKey {
            client_id: client_id.to_string(),
            key: key.to_string(),
            status,
            location: location.map(str::to_string),
            body: body.to_string(),
            reply,
        })
        .await
    }

    /// Forgets a claimed key whose request failed before any effect (validation, the log
    /// unavailable), so the client may retry it.
    pub async fn release_key(&self, client_id: &str, key: &str) -> Result<(), PaymentsError> {
        self.write(|reply| Write::ReleaseKey { client_id: client_id.to_string(), key: key.to_string(), reply }).await
    }

    /// Records a payment as pending; an existing one (a taken-over request) is kept.
    pub async fn insert_payment(&self, payment: &PaymentRecord) -> Result<(), PaymentsError> {
        self.write(|reply| Write::InsertPayment { record: Box::new(payment.clone()), reply }).await
    }

    /// Records the pipeline's decision on a pending payment (once: a decision is final).
    pub async fn record_decision(&self, notice: &DecisionNotice) -> Result<bool, PaymentsError> {
        self.write(|reply| Write::RecordDecision { notice: notice.clone(), reply }).await
    }

    /// Records what the pipeline reported, in one write: decisions on pending payments
    /// (final once made) and wallet postings (each once).
    pub async fn record_notices(&self, notices: Vec<PipelineNotice>) -> Result<(), PaymentsError> {
        self.write(|reply| Write::RecordNotices { notices, reply }).await
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn ping(&self) -> Result<(), PaymentsError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn drop_schema(self, schema: &str) -> Result<(), PaymentsError> {
        Ok(database::drop_schema(&self.pool, self.backend, schema).await?)
    }
}
