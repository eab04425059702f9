//! The auth service's store (accounts, sessions, refresh tokens, API keys) on SQLite
//! (`<dir>/auth.sqlite`, the embedded default) or PostgreSQL (schema `paystream_auth`),
//! through [`paystream_http::database`]. Every API test runs on both
//! (`tests/common/mod.rs`).

mod accounts;
mod api_keys;
mod sessions;

use paystream_http::database::{self, Backend, Migrations};
use sqlx::AnyPool;
use sqlx::migrate::Migrator;

pub use accounts::Account;
pub use api_keys::ApiKeyRecord;
pub use sessions::{RefreshRecord, SessionCheck};

use crate::error::AuthError;

static MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE_MIGRATOR, postgres: &POSTGRES_MIGRATOR };
static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone)]
pub struct AuthStore {
    pool: AnyPool,
    backend: Backend,
}

impl AuthStore {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) and migrates it. On PostgreSQL
    /// everything lives in `schema`, created if missing.
    pub async fn connect(url: &str, schema: &str) -> Result<AuthStore, AuthError> {
        let (pool, backend) = database::connect(url, schema, &MIGRATIONS).await?;
        Ok(AuthStore { pool, backend })
    }

    /// The embedded default: `auth.sqlite` in `data_dir`.
    pub async fn open_embedded(data_dir: &std::path::Path) -> Result<AuthStore, AuthError> {
        let (pool, backend) = database::open_embedded(data_dir, "auth.sqlite", &MIGRATIONS).await?;
        Ok(AuthStore { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Drops the schema (PostgreSQL; tests and teardown).
    pub async fn drop_schema(self, schema: &str) -> Result<(), AuthError> {
        Ok(database::drop_schema(&self.pool, self.backend, schema).await?)
    }

    /// A round trip to the database (readiness checks).
    pub async fn ping(&self) -> Result<(), AuthError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
