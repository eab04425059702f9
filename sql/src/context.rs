//! The SQL session: every topic's table over one source, the derived views, and the
//! `pg_catalog` psql and Grafana read.

use std::sync::Arc;

use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_postgres::auth::AuthManager;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;

use crate::cut::{Cuts, LogSource};
use crate::error::SqlError;
use crate::tables::tables;
use crate::topic_table::{ScanLimits, TopicTable};

/// Views over the tables, created with the session.
pub const VIEWS: [(&str, &str); 1] = [(
    "balances",
    "SELECT account_id, currency, CAST(sum(signed_minor) AS BIGINT) AS balance_minor, count(*) AS postings \
     FROM ledger GROUP BY account_id, currency",
)];

/// A session over `source`. `topic_of` names each table's topic from its role (the
/// pipeline's `--topic ROLE=NAME`).
pub async fn session_context(
    source: LogSource,
    topic_of: impl Fn(&str) -> String,
    limits: ScanLimits,
) -> Result<SessionContext, SqlError> {
    let definitions = tables();
    let topics: Vec<String> = definitions.iter().map(|table| topic_of(table.role)).collect();
    let cuts = Arc::new(Cuts::new(source, topics.clone()));
    let config =
        SessionConfig::new().with_information_schema(true).with_default_catalog_and_schema("datafusion", "public");
    let context = SessionContext::new_with_config(config);
    for (table, topic) in definitions.into_iter().zip(topics) {
        let name = table.name;
        context.register_table(name, Arc::new(TopicTable::new(table, topic, cuts.clone(), limits)))?;
    }
    for (name, query) in VIEWS {
        context.sql(&format!("CREATE VIEW {name} AS {query}")).await?;
    }
    setup_pg_catalog(&context, "datafusion", Arc::new(AuthManager::default()))
        .map_err(|error| SqlError::DataFusion(*error))?;
    Ok(context)
}
