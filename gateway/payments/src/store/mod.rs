//! Payments and idempotency records on SQLite (`<dir>/payments.sqlite`, the embedded
//! default) or PostgreSQL (schema `paystream_payments`), through
//! [`paystream_http::database`].

mod idempotency;
pub mod payments;

use paystream_http::database::{self, Backend, Migrations};
use sqlx::AnyPool;
use sqlx::migrate::Migrator;

pub use idempotency::Begun;
pub use payments::PaymentRecord;

use crate::error::PaymentsError;

static MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE_MIGRATOR, postgres: &POSTGRES_MIGRATOR };
static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone)]
pub struct PaymentsStore {
    pool: AnyPool,
    backend: Backend,
}

impl PaymentsStore {
    pub async fn connect(url: &str, schema: &str) -> Result<PaymentsStore, PaymentsError> {
        let (pool, backend) = database::connect(url, schema, &MIGRATIONS).await?;
        Ok(PaymentsStore { pool, backend })
    }

    pub async fn open_embedded(directory: &std::path::Path) -> Result<PaymentsStore, PaymentsError> {
        let (pool, backend) = database::open_embedded(directory, "payments.sqlite", &MIGRATIONS).await?;
        Ok(PaymentsStore { pool, backend })
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
