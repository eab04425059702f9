//! The users store on PostgreSQL: table `users` in a schema of the users' own (e.g.
//! `paystream_users`), created by the users chain of migrations (`migrations/users`),
//! which has nothing to do with the record sink's tables or chain.

use paystream_storage::StorageError;
use paystream_storage::users::{KycStatus, User};
use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgRow;

use crate::connection::{SchemaConnection, database};

static USERS_MIGRATOR: Migrator = sqlx::migrate!("./migrations/users");

/// Users by id and e-mail (the semantics of `paystream_storage::users::UserStore`).
/// Async: use `Blocking` where the synchronous `UserStore` is needed.
pub struct PostgresUserStore {
    connection: SchemaConnection,
}

impl PostgresUserStore {
    /// Connects to `url`, creates `schema` if missing and migrates it with the users
    /// chain. A schema that holds another chain (the record sink's) is refused: its
    /// applied migrations do not match this chain's.
    pub async fn connect(url: &str, schema: &str) -> Result<PostgresUserStore, StorageError> {
        let connection = SchemaConnection::open(url, schema, &USERS_MIGRATOR).await?;
        Ok(PostgresUserStore { connection })
    }

    /// Drops the schema and everything in it (tests and teardown).
    pub async fn drop_schema(self) -> Result<(), StorageError> {
        self.connection.drop_schema().await
    }

    /// Creates a user; an id or e-mail address taken already is [`StorageError::Conflict`].
    pub async fn create_user(&mut self, user: &User) -> Result<(), StorageError> {
        self.connection
            .run(async |connection| {
                let inserted = sqlx::query(
                    "INSERT INTO users (user_id, email, display_name, kyc_status, created_at_ms) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(&user.user_id)
                .bind(&user.email)
                .bind(&user.display_name)
                .bind(user.kyc_status.as_str())
                .bind(user.created_at_ms)
                .execute(&mut *connection)
                .await
                .map_err(database("insert a user"))?;
                if inserted.rows_affected() == 1 {
                    return Ok(());
                }
                let by_id = sqlx::query("SELECT 1 FROM users WHERE user_id = $1")
                    .bind(&user.user_id)
                    .fetch_optional(&mut *connection)
                    .await
                    .map_err(database("look a user up"))?;
                Err(StorageError::Conflict(match by_id {
                    Some(_) => format!("user {:?} exists", user.user_id),
                    None => format!("e-mail {:?} is taken", user.email),
                }))
            })
            .await
    }

    pub async fn user(&mut self, user_id: &str) -> Result<Option<User>, StorageError> {
        self.user_where("user_id", user_id.to_string()).await
    }

    /// Looks the address up lower-cased.
    pub async fn user_by_email(&mut self, email: &str) -> Result<Option<User>, StorageError> {
        self.user_where("email", email.trim().to_lowercase()).await
    }

    /// Sets the KYC state; `Ok(false)` if there is no such user.
    pub async fn set_kyc_status(&mut self, user_id: &str, status: KycStatus) -> Result<bool, StorageError> {
        self.connection
            .run(async |connection| {
                let updated = sqlx::query("UPDATE users SET kyc_status = $2 WHERE user_id = $1")
                    .bind(user_id)
                    .bind(status.as_str())
                    .execute(&mut *connection)
                    .await
                    .map_err(database("update a user's KYC status"))?;
                Ok(updated.rows_affected() == 1)
            })
            .await
    }

    /// The user whose `column` (a unique one: `user_id` or `email`) equals `value`.
    async fn user_where(&mut self, column: &'static str, value: String) -> Result<Option<User>, StorageError> {
        let sql =
            format!("SELECT user_id, email, display_name, kyc_status, created_at_ms FROM users WHERE {column} = $1");
        self.connection
            .run(async |connection| {
                let row = sqlx::query(&sql)
                    .bind(&value)
                    .fetch_optional(&mut *connection)
                    .await
                    .map_err(database("read a user"))?;
                row.map(|row| user_from_row(&row)).transpose()
            })
            .await
    }
}

fn user_from_row(row: &PgRow) -> Result<User, StorageError> {
    let column = |e: sqlx::Error| StorageError::Database { context: "read a user row".into(), why: e.to_string() };
    Ok(User {
        user_id: row.try_get("user_id").map_err(column)?,
        email: row.try_get("email").map_err(column)?,
        display_name: row.try_get("display_name").map_err(column)?,
        kyc_status: KycStatus::parse(row.try_get::<&str, _>("kyc_status").map_err(column)?)?,
        created_at_ms: row.try_get("created_at_ms").map_err(column)?,
    })
}
