//! A service's database: one query layer (sqlx's `Any` driver, SQL written once in the
//! subset SQLite and PostgreSQL share) over
//!
//! - **SQLite** (`sqlite://…`): the embedded default, durable on local disk (WAL,
//!   `synchronous=FULL`: an answered write survives SIGKILL and power loss);
//! - **PostgreSQL** (`postgres://…`): production, each service in its own schema
//!   (`search_path`) with its own chain of migrations, so replicas share it.
//!
//! Each service keeps a migrations directory per backend (their DDL differs a little);
//! its queries are the same on both.

use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

/// Connections per process: SQLite writes one at a time anyway.
pub const SQLITE_CONNECTIONS_MAX: u32 = 4;
pub const POSTGRES_CONNECTIONS_MAX: u32 = 16;
/// How long a request waits for a connection before the store counts as unavailable.
pub const ACQUIRE_TIMEOUT_MS: u64 = 3_000;
/// How long SQLite waits for another writer before failing.
pub const SQLITE_BUSY_TIMEOUT_MS: u64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("the store URL must be sqlite:… or postgres://…")]
    UnknownScheme,
    #[error("schema {0:?}: 1 to 63 lower-case letters, digits and _, not starting with a digit")]
    InvalidSchema(String),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub fn valid_schema(schema: &str) -> bool {
    !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The migrations of one service, per backend.
pub struct Migrations {
    pub sqlite: &'static Migrator,
    pub postgres: &'static Migrator,
}

/// Connects to `url` and migrates it; on PostgreSQL everything lives in `schema`,
/// created if missing.
pub async fn connect(url: &str, schema: &str, migrations: &Migrations) -> Result<(AnyPool, Backend), DatabaseError> {
    static DRIVERS: Once = Once::new();
    DRIVERS.call_once(install_default_drivers);
    let backend = if url.starts_with("sqlite:") {
        Backend::Sqlite
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Backend::Postgres
    } else {
        return Err(DatabaseError::UnknownScheme);
    };
    let options = AnyPoolOptions::new().acquire_timeout(Duration::from_millis(ACQUIRE_TIMEOUT_MS));
    let pool = match backend {
        Backend::Sqlite => {
            let url = if url.contains('?') { url.to_string() } else { format!("{url}?mode=rwc") };
            options
                .max_connections(SQLITE_CONNECTIONS_MAX)
                .after_connect(|connection, _| {
                    Box::pin(async move {
                        let pragmas = format!(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
                             PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS};"
                        );
                        connection.execute(pragmas.as_str()).await?;
                        Ok(())
                    })
                })
                .connect(&url)
                .await?
        }
        Backend::Postgres => {
            if !valid_schema(schema) {
                return Err(DatabaseError::InvalidSchema(schema.to_string()));
            }
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
        Backend::Sqlite => migrations.sqlite,
        Backend::Postgres => migrations.postgres,
    };
    migrator.run(&pool).await?;
    Ok((pool, backend))
}

/// The embedded default: `file` in `directory` (created if missing).
pub async fn open_embedded(
    directory: &std::path::Path,
    file: &str,
    migrations: &Migrations,
) -> Result<(AnyPool, Backend), DatabaseError> {
    std::fs::create_dir_all(directory)
        .map_err(|error| DatabaseError::Io(format!("create {}: {error}", directory.display())))?;
    let path = directory.join(file);
    let path = path.to_str().ok_or_else(|| DatabaseError::Io(format!("{} is not UTF-8", path.display())))?;
    if path.contains(['?', '#']) {
        return Err(DatabaseError::Io(format!("{path}: ? and # cannot be in a SQLite path")));
    }
    connect(&format!("sqlite://{path}"), "", migrations).await
}

/// Drops `schema` (PostgreSQL; tests and teardown) and closes the pool.
pub async fn drop_schema(pool: &AnyPool, backend: Backend, schema: &str) -> Result<(), DatabaseError> {
    if backend == Backend::Postgres && valid_schema(schema) {
        pool.execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str()).await?;
    }
    pool.close().await;
    Ok(())
}

/// What a client sees when a store query failed: 503 (retry) when the database is
/// unreachable or saturated, else 500. The cause is logged here, never returned.
pub fn problem_for(error: &sqlx::Error, store: &str) -> crate::Problem {
    tracing::error!(%error, "{store} store failed");
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => crate::Problem::unavailable(),
        _ => crate::Problem::internal(),
    }
}

/// Whether a write failed on a unique constraint.
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database) if database.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        assert!(valid_schema("paystream_auth"));
        assert!(valid_schema("_x1"));
        for bad in ["", "1abc", "Auth", "a-b", "a;drop", &"a".repeat(64)] {
            assert!(!valid_schema(bad), "{bad}");
        }
    }
}
