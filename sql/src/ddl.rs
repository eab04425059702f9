//! Materialized views created and dropped over the wire, by the roles allowed to
//! ([`ViewDdl`]), through the view catalog ([`crate::views::catalog`]), which every
//! endpoint follows ([`crate::views::follower`]).
//!
//! The endpoint writes the catalog only where it may write the log: on Kafka (a
//! producer of its own), or in the process that owns the embedded log (`serve`). A
//! standalone `paystream sql` on the embedded log reads a log another process owns, so
//! it refuses the DDL and says where to send it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::common::{DFSchema, ParamValues};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{ObjectType, Statement};
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::{ClientInfo, METADATA_USER};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::response::TransactionStatus;
use paystream_pipeline::log::Log;

use crate::context::late_table;
use crate::error::SqlError;
use crate::handlers::user_error;
use crate::views::catalog::{CATALOG_VIEWS_MAX, CatalogRecord, append};
use crate::views::definition::{parse_views, view_name};
use crate::views::follower::CatalogFollower;
use crate::views::runner::last_progress;

/// How long a CREATE waits for its own catalog record to read back (on Kafka a commit
/// shows to readers a moment after it returns, a new topic's metadata a moment later).
const CATALOG_READBACK_WAIT_MS: u64 = 10_000;
const CATALOG_READBACK_POLL_MS: u64 = 100;

/// `CREATE MATERIALIZED VIEW` and `DROP MATERIALIZED VIEW`, for the roles in `authors`
/// only; every other statement passes on to the read-only gate.
pub struct ViewDdl {
    /// The roles that may create and drop views.
    pub authors: Vec<String>,
    /// Where the catalog is written; `None` where this process may not write the log.
    pub writer: Option<Arc<dyn Log>>,
    pub follower: Arc<CatalogFollower>,
}

/// What a DDL statement asks.
enum Ddl {
    Create { name: String },
    Drop { names: Vec<String>, if_exists: bool },
}

fn ddl_of(statement: &Statement) -> Option<Ddl> {
    match statement {
        Statement::CreateView(create) if create.materialized => Some(Ddl::Create { name: view_name(&create.name) }),
        Statement::Drop { object_type: ObjectType::MaterializedView, names, if_exists, .. } => {
            Some(Ddl::Drop { names: names.iter().map(view_name).collect(), if_exists: *if_exists })
        }
        _ => None,
    }
}

/// The catalog could not be written or read: the cause is logged, not shown.
fn catalog_failed(what: &str, cause: &dyn std::fmt::Display) -> PgWireError {
    tracing::error!(%cause, "view catalog: {what} failed");
    user_error("58000", format!("the view catalog could not be {what}; the server's log says why"))
}

impl ViewDdl {
    /// Whether the client may run `ddl` here; the refusal if not.
    fn allowed<C: ClientInfo + ?Sized>(&self, client: &C) -> Result<String, PgWireError> {
        let user = client.metadata().get(METADATA_USER).cloned().unwrap_or_default();
        if !self.authors.contains(&user) {
            return Err(user_error(
                "42501",
                "permission denied: creating and dropping materialized views is for the views author role \
                 (--sql-author-user)",
            ));
        }
        if self.writer.is_none() {
            return Err(user_error(
                "25006",
                "this endpoint reads an embedded log another process owns: create and drop views through \
                 that process's endpoint (paystream serve)",
            ));
        }
        // The catalog is a log: a view created cannot be rolled back with a transaction
        // (a driver that opens one by itself, as psycopg does, needs autocommit).
        if client.transaction_status() != TransactionStatus::Idle {
            return Err(user_error("25001", "CREATE and DROP MATERIALIZED VIEW cannot run inside a transaction block"));
        }
        Ok(user)
    }

    async fn execute(&self, statement: &Statement, ddl: Ddl, user: &str) -> PgWireResult<Response> {
        let writer = self.writer.clone().expect("allowed() checked the writer");
        match ddl {
            Ddl::Create { name } => self.create(statement, &name, writer, user).await,
            Ddl::Drop { names, if_exists } => self.drop(names, if_exists, writer, user).await,
        }
    }

    async fn create(
        &self,
        statement: &Statement,
        name: &str,
        writer: Arc<dyn Log>,
        user: &str,
    ) -> PgWireResult<Response> {
        self.refresh().await?;
        let context = &self.follower.context;
        for table in [name.to_string(), late_table(name)] {
            if context.table_exist(table.as_str()).unwrap_or(true) {
                return Err(user_error("42P07", format!("relation \"{table}\" already exists")));
            }
        }
        let text = statement.to_string();
        let view = match parse_views(&text).await {
            Ok(mut views) if views.len() == 1 => views.remove(0),
            Ok(_) => return Err(user_error("42601", "one CREATE MATERIALIZED VIEW at a time")),
            Err(SqlError::Config(why)) => return Err(user_error("42601", why)),
            Err(other) => {
                tracing::error!(view = name, error = %other, "materialized view: planning failed");
                return Err(user_error("XX000", "the view could not be planned; the server's log says why"));
            }
        };
        let name = view.name.clone();
        if self.follower.catalog.lock().await.views().count() >= CATALOG_VIEWS_MAX {
            return Err(user_error(
                "54000",
                format!("the view catalog holds {CATALOG_VIEWS_MAX} views, its most: drop one first"),
            ));
        }
        let (topic, hash) = (view.topic(), view.plan_hash);
        let (log, record) = (writer.clone(), CatalogRecord::create(text.clone(), user));
        let catalog = self.catalog_topic().await;
        let written = tokio::task::spawn_blocking(move || -> Result<Option<String>, SqlError> {
            // A dropped view's windows stay in its topic: only its own definition may
            // resume them.
            if let Ok(topic) = log.topic(&topic)
                && let Some(progress) = last_progress(log.as_ref(), &topic)?
                && progress.plan_hash != hash
            {
                return Ok(Some(topic.name.to_string()));
            }
            append(log.as_ref(), &catalog, &name, &record)?;
            Ok(None)
        })
        .await
        .map_err(|cause| catalog_failed("written", &cause))?
        .map_err(|cause| catalog_failed("written", &cause))?;
        if let Some(topic) = written {
            return Err(user_error(
                "42P07",
                format!(
                    "{topic} holds the windows of an earlier view \"{}\" with another definition; give this one \
                     another name",
                    view.name
                ),
            ));
        }
        // Read back until the catalog shows a definition under the name: this one, or
        // one another endpoint committed first.
        let deadline = std::time::Instant::now() + Duration::from_millis(CATALOG_READBACK_WAIT_MS);
        loop {
            self.refresh().await?;
            if self.follower.catalog.lock().await.definition(&view.name).is_some() {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(catalog_failed("read back", &format!("{} was written but did not read back", view.name)));
            }
            tokio::time::sleep(Duration::from_millis(CATALOG_READBACK_POLL_MS)).await;
        }
        let catalog = self.follower.catalog.lock().await;
        if catalog.definition(&view.name) != Some(text.as_str()) {
            return Err(user_error(
                "42P07",
                format!("materialized view \"{}\" was created meanwhile with another definition", view.name),
            ));
        }
        tracing::info!(view = %view.name, by = user, "materialized view created");
        Ok(Response::Execution(Tag::new("CREATE MATERIALIZED VIEW")))
    }

    async fn drop(
        &self,
        names: Vec<String>,
        if_exists: bool,
        writer: Arc<dyn Log>,
        user: &str,
    ) -> PgWireResult<Response> {
        self.refresh().await?;
        let mut dropping = Vec::new();
        {
            let catalog = self.follower.catalog.lock().await;
            for name in names {
                if catalog.is_fixed(&name) {
                    return Err(user_error(
                        "42501",
                        format!("materialized view \"{name}\" is defined in the views file (--views): remove it there"),
                    ));
                }
                match catalog.definition(&name) {
                    Some(_) => dropping.push(name),
                    None if if_exists => {}
                    None => return Err(user_error("42P01", format!("materialized view \"{name}\" does not exist"))),
                }
            }
        }
        let (log, by) = (writer, user.to_string());
        let (names, catalog) = (dropping.clone(), self.catalog_topic().await);
        tokio::task::spawn_blocking(move || -> Result<(), SqlError> {
            for name in &names {
                append(log.as_ref(), &catalog, name, &CatalogRecord::drop(&by))?;
            }
            Ok(())
        })
        .await
        .map_err(|cause| catalog_failed("written", &cause))?
        .map_err(|cause| catalog_failed("written", &cause))?;
        self.refresh().await?;
        // The keeper stops the view and drops its metrics as it reads the catalog.
        for name in &dropping {
            tracing::info!(view = %name, by = user, "materialized view dropped");
        }
        Ok(Response::Execution(Tag::new("DROP MATERIALIZED VIEW")))
    }

    async fn catalog_topic(&self) -> String {
        self.follower.catalog.lock().await.topic().to_string()
    }

    /// `statement` if it is view DDL: refused, or run for its author.
    async fn handle<C: ClientInfo + Sync + ?Sized>(
        &self,
        statement: &Statement,
        client: &C,
    ) -> Option<PgWireResult<Response>> {
        let ddl = ddl_of(statement)?;
        Some(match self.allowed(client) {
            Ok(user) => self.execute(statement, ddl, &user).await,
            Err(refused) => Err(refused),
        })
    }

    async fn refresh(&self) -> PgWireResult<()> {
        self.follower.refresh().await.map_err(|cause| catalog_failed("read", &cause))
    }
}

#[async_trait]
impl QueryHook for ViewDdl {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.handle(statement, client).await
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        ddl_of(statement)?;
        Some(self.allowed(client).map(|_| {
            LogicalPlan::EmptyRelation(EmptyRelation { produce_one_row: false, schema: Arc::new(DFSchema::empty()) })
        }))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _logical_plan: &LogicalPlan,
        _params: &ParamValues,
        _session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.handle(statement, client).await
    }
}
