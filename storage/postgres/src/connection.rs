//! One PostgreSQL connection to one schema, as each store holds it: the schema is the
//! connection's `search_path`, so the schema's tables and its own `_sqlx_migrations`
//! table are found there; it is created and migrated on connect; a database error drops
//! the connection and the next call reconnects (the server may have restarted).

use std::str::FromStr;

use paystream_storage::StorageError;
use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// Maps a driver error to [`StorageError::Database`] with what was being done.
pub(crate) fn database(context: &str) -> impl FnOnce(sqlx::Error) -> StorageError + '_ {
    move |e| StorageError::Database { context: context.to_string(), why: e.to_string() }
}

/// A schema name paystream accepts (it is interpolated into `CREATE SCHEMA`).
pub(crate) fn check_schema(schema: &str) -> Result<(), StorageError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit();
    if ok { Ok(()) } else { Err(StorageError::InvalidSchema(schema.to_string())) }
}

/// Serialises concurrent first connections (two tests, two processes) creating and
/// migrating schemas.
const SCHEMA_LOCK_KEY: i64 = 7220;

pub(crate) struct SchemaConnection {
    options: PgConnectOptions,
    schema: String,
    /// `None` after a failure: the next call reconnects.
    connection: Option<PgConnection>,
}

impl SchemaConnection {
    /// Connects to `url` with `schema` as the search path, creates the schema if missing
    /// and runs `migrator` in it.
    pub(crate) async fn open(url: &str, schema: &str, migrator: &Migrator) -> Result<SchemaConnection, StorageError> {
        check_schema(schema)?;
        let options = PgConnectOptions::from_str(url)
            .map_err(database("parse the PostgreSQL URL"))?
            .options([("search_path", schema)])
            // Names the connection in pg_stat_activity: `paystream:<schema>`.
            .application_name(&format!("paystream:{schema}"));
        let mut connection = PgConnection::connect_with(&options).await.map_err(database("connect to PostgreSQL"))?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(SCHEMA_LOCK_KEY)
            .execute(&mut connection)
            .await
            .map_err(database("lock"))?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&mut connection)
            .await
            .map_err(database("create the schema"))?;
        migrator
            .run(&mut connection)
            .await
            .map_err(|e| StorageError::Database { context: "migrate the schema".into(), why: e.to_string() })?;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(SCHEMA_LOCK_KEY)
            .execute(&mut connection)
            .await
            .map_err(database("unlock"))?;
        Ok(SchemaConnection { options, schema: schema.to_string(), connection: Some(connection) })
    }

    pub(crate) fn schema(&self) -> &str {
        &self.schema
    }

    /// Runs `f` on the connection (reconnecting first if the last call failed); a
    /// database error drops the connection so the next call starts afresh.
    pub(crate) async fn run<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut PgConnection) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        if self.connection.is_none() {
            let fresh = PgConnection::connect_with(&self.options).await.map_err(database("reconnect to PostgreSQL"))?;
            self.connection = Some(fresh);
        }
        let result = f(self.connection.as_mut().expect("connected above")).await;
        if matches!(result, Err(StorageError::Database { .. })) {
            self.connection = None;
        }
        result
    }

    /// Drops the schema and everything in it (tests and teardown).
    pub(crate) async fn drop_schema(mut self) -> Result<(), StorageError> {
        let sql = format!("DROP SCHEMA {} CASCADE", self.schema);
        self.run(async |connection| {
            sqlx::query(&sql).execute(&mut *connection).await.map_err(database("drop the schema"))?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked_before_they_reach_sql() {
        for bad in ["", "1abc", "a-b", "A", "x; DROP TABLE decisions", &"s".repeat(64)] {
            assert!(check_schema(bad).is_err(), "{bad:?}");
        }
        for good in ["paystream", "test_42", "_x"] {
            assert!(check_schema(good).is_ok(), "{good:?}");
        }
    }
}
