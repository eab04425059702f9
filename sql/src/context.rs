//! The SQL session: every topic's table over one source, the derived views, and the
//! `pg_catalog` and `information_schema` psql and Grafana read; and each connection's own session over it, with
//! its own memory cap and [`crate::guard`] (a `SET` on one connection changes nothing for
//! another).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::TableProvider;

use datafusion::execution::SessionStateBuilder;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_postgres::auth::AuthManager;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;

use crate::as_of::{BalancesAsOf, OpenSettlementsAsOf, open_settlements_plan};
use crate::cut::{Cuts, LogSource};
use crate::error::SqlError;
use crate::guard::{ConnectionGuard, GuardPlanner, StatementLimits};
use crate::metrics::SqlMetrics;
use crate::scan_cache::ScanCache;
use crate::tables::tables;
use crate::topic_table::{ScanLimits, TopicTable};
use crate::views::ViewDef;
use crate::views::table::{ViewRows, ViewTable, late_schema};

/// The database clients connect to (the catalog's name).
pub const DATABASE: &str = "paystream";

/// Tables the session derives from the topic tables besides [`VIEWS`].
pub const DERIVED_TABLES: [&str; 1] = ["open_settlements"];

/// Views over the tables, created with the session.
pub const VIEWS: [(&str, &str); 1] = [(
    "balances",
    "SELECT account_id, currency, CAST(sum(signed_minor) AS BIGINT) AS balance_minor, count(*) AS postings \
     FROM ledger GROUP BY account_id, currency",
)];

/// A session over `source`. `topic_of` names each table's topic from its role (the
/// pipeline's `--topic ROLE=NAME`); the tables keep decoded columns in `cache`; each materialized view in `views` is a table of its
/// closed windows and one of its late rows (`<view>_late`).
pub async fn session_context(
    source: LogSource,
    topic_of: impl Fn(&str) -> String,
    limits: ScanLimits,
    cache: Arc<ScanCache>,
    views: &[ViewDef],
) -> Result<SessionContext, SqlError> {
    Ok(shared_session(source, topic_of, limits, cache, views).await?.0)
}

/// [`session_context`], and the cuts its tables read (a view registered later with
/// [`register_view`] reads them too).
pub async fn shared_session(
    source: LogSource,
    topic_of: impl Fn(&str) -> String,
    limits: ScanLimits,
    cache: Arc<ScanCache>,
    views: &[ViewDef],
) -> Result<(SessionContext, Arc<Cuts>), SqlError> {
    let definitions = tables();
    let topics: Vec<String> = definitions.iter().map(|table| topic_of(table.role)).collect();
    let every_topic = topics.iter().cloned().chain(views.iter().map(ViewDef::topic)).collect();
    let cuts = Arc::new(Cuts::new(source, every_topic));
    // DataFusion's own information_schema would shadow PostgreSQL's shape of it.
    let config =
        SessionConfig::new().with_information_schema(false).with_default_catalog_and_schema(DATABASE, "public");
    let context = SessionContext::new_with_config(config);
    let mut providers: HashMap<&str, Arc<dyn TableProvider>> = HashMap::new();
    let mut topic_of_table: HashMap<&str, String> = HashMap::new();
    for (table, topic) in definitions.into_iter().zip(topics) {
        topic_of_table.insert(table.name, topic.clone());
        let name = table.name;
        let provider = Arc::new(TopicTable::new(table, topic, cuts.clone(), limits, cache.clone()));
        context.register_table(name, provider.clone())?;
        providers.insert(name, provider);
    }
    let (ledger, settlements) = (providers["ledger"].clone(), providers["settlements"].clone());
    context.register_udtf(
        "balances_as_of",
        Arc::new(BalancesAsOf {
            ledger: ledger.clone(),
            ledger_topic: topic_of_table["ledger"].clone(),
            cuts: cuts.clone(),
        }),
    );
    let open = open_settlements_plan(ledger.clone(), settlements.clone(), None)?;
    context.register_table(DERIVED_TABLES[0], Arc::new(datafusion::catalog::view::ViewTable::new(open, None)))?;
    let open_as_of = OpenSettlementsAsOf {
        ledger,
        settlements,
        ledger_topic: topic_of_table["ledger"].clone(),
        settlements_topic: topic_of_table["settlements"].clone(),
        cuts: cuts.clone(),
    };
    context.register_udtf("open_settlements_as_of", Arc::new(open_as_of));
    for view in views {
        register_view(&context, &cuts, view)?;
    }
    for (name, query) in VIEWS {
        context.sql(&format!("CREATE VIEW {name} AS {query}")).await?;
    }
    crate::information_schema::register(&context, DATABASE)?;
    setup_pg_catalog(&context, DATABASE, Arc::new(AuthManager::default()))
        .map_err(|error| SqlError::DataFusion(*error))?;
    Ok((context, cuts))
}

/// The tables of the materialized view `view`: `<view>` (its closed windows) and
/// `<view>_late`, both over its topic in each statement's cut.
pub fn register_view(context: &SessionContext, cuts: &Arc<Cuts>, view: &ViewDef) -> Result<(), SqlError> {
    cuts.add_topic(view.topic());
    let windows = ViewTable::new(view.topic(), ViewRows::Windows, view.output.clone(), cuts.clone());
    context.register_table(view.name.as_str(), Arc::new(windows))?;
    let late = ViewTable::new(view.topic(), ViewRows::Late, late_schema(), cuts.clone());
    context.register_table(late_table(&view.name).as_str(), Arc::new(late))?;
    Ok(())
}

/// Drops the tables [`register_view`] made (its topic stays, with its windows).
pub fn deregister_view(context: &SessionContext, name: &str) -> Result<(), SqlError> {
    context.deregister_table(name)?;
    context.deregister_table(late_table(name).as_str())?;
    Ok(())
}

/// The table of a view's late rows.
pub fn late_table(view: &str) -> String {
    format!("{view}_late")
}

/// One connection's session over `shared`: the same tables, its own settings, at most
/// `limits.connection_memory_bytes_max` for its operators (nothing spills) and every
/// statement under the returned guard.
pub fn connection_context(
    shared: &SessionContext,
    limits: StatementLimits,
    metrics: Option<SqlMetrics>,
) -> Result<(SessionContext, Arc<ConnectionGuard>), SqlError> {
    let guard = Arc::new(ConnectionGuard::new(limits, metrics));
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(limits.connection_memory_bytes_max, 1.0)
        .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
        .build_arc()?;
    let state = SessionStateBuilder::new_from_existing(shared.state())
        .with_config(shared.copied_config().with_extension(guard.clone()))
        .with_runtime_env(runtime)
        .with_query_planner(Arc::new(GuardPlanner { guard: guard.clone() }))
        .build();
    Ok((SessionContext::new_with_state(state), guard))
}
