//! The auth service's store: one query layer (sqlx's `Any` driver, SQL written once in
//! the subset SQLite and PostgreSQL share) over two databases:
//!
//! - **SQLite** (`sqlite://DIR/auth.sqlite`): the embedded default, durable on local
//!   disk (WAL, `synchronous=FULL`: a committed sign-up survives SIGKILL and power loss).
//! - **PostgreSQL** (`postgres://…`): production, in the service's own schema
//!   (`search_path`), with its own chain of migrations, so replicas share it.
//!
//! Each backend has its own migrations directory (their DDL differs slightly); the
//! queries are the same. The conformance suite (`tests/store_conformance.rs`) runs on
//! both.

mod accounts;
mod api_keys;
mod sessions;

use std::str::FromStr;
use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

pub use accounts::Account;
pub use api_keys::ApiKeyRecord;
pub use sessions::{RefreshRecord, SessionCheck};

use crate::error::AuthError;

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections per process: SQLite writes one at a time anyway.
pub const SQLITE_CONNECTIONS_MAX: u32 = 4;
pub const POSTGRES_CONNECTIONS_MAX: u32 = 16;
/// How long a request waits for a connection before the store counts as unavailable.
pub const ACQUIRE_TIMEOUT_MS: u64 = 3_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct AuthStore {
    pool: AnyPool,
    backend: Backend,
}

fn valid_schema(schema: &str) -> bool {
    !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl AuthStore {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) and migrates it. On PostgreSQL
    /// everything lives in `schema`, created if missing.
    pub async fn connect(url: &str, schema: &str) -> Result<AuthStore, AuthError> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(install_default_drivers);
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(AuthError::Internal("the auth store URL must be sqlite:… or postgres://…".to_string()));
        };
        let options = AnyPoolOptions::new().acquire_timeout(Duration::from_millis(ACQUIRE_TIMEOUT_MS));
        let pool = match backend {
            Backend::Sqlite => {
                // Create the file if missing; `mode=rwc` in the URL does the same.
                let options_url = if url.contains('?') { url.to_string() } else { format!("{url}?mode=rwc") };
                options
                    .max_connections(SQLITE_CONNECTIONS_MAX)
                    .after_connect(|connection, _| {
                        Box::pin(async move {
                            connection
                                .execute(
                                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                                )
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(&options_url)
                    .await?
            }
            Backend::Postgres => {
                if !valid_schema(schema) {
                    return Err(AuthError::Internal(format!("schema {schema:?}: lower-case letters, digits and _")));
                }
                // Create the schema on a plain connection first.
                let bootstrap = AnyPoolOptions::new().max_connections(1).connect(url).await?;
                bootstrap.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str()).await?;
                bootstrap.close().await;
                let set_path = format!("SET search_path TO {schema}");
                options
                    .max_connections(POSTGRES_CONNECTIONS_MAX)
                    .after_connect(move |connection, _| {
                        let set_path = set_path.clone();
                        Box::pin(async move {
                            connection.execute(set_path.as_str()).await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?
            }
        };
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        };
        migrator.run(&pool).await?;
        Ok(AuthStore { pool, backend })
    }

    /// The embedded default: `auth.sqlite` in `data_dir`.
    pub async fn open_embedded(data_dir: &std::path::Path) -> Result<AuthStore, AuthError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|error| AuthError::Internal(format!("create {}: {error}", data_dir.display())))?;
        let path = data_dir.join("auth.sqlite");
        let url = format!("sqlite://{}", path.display());
        // Reject paths the URL cannot carry rather than open another file.
        sqlx::sqlite::SqliteConnectOptions::from_str(&url).map_err(|error| AuthError::Internal(error.to_string()))?;
        AuthStore::connect(&url, "").await
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Drops the schema (PostgreSQL; tests and teardown).
    pub async fn drop_schema(self, schema: &str) -> Result<(), AuthError> {
        if self.backend == Backend::Postgres && valid_schema(schema) {
            self.pool.execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str()).await?;
        }
        self.pool.close().await;
        Ok(())
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

/// Whether an insert failed on a unique constraint.
fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database) if database.is_unique_violation())
}
