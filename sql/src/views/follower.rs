//! The endpoint's tables of the view catalog's views ([`super::catalog`]), kept in step
//! with it whichever endpoint wrote it: registered when a view is created, dropped when
//! it is dropped.

use std::sync::Arc;
use std::time::Duration;

use datafusion::prelude::SessionContext;
use paystream_pipeline::log::Log;
use tokio::sync::Mutex;

use super::catalog::{Catalog, Change, read_new};
use super::definition::ViewDef;
use crate::context::{deregister_view, register_view};
use crate::cut::Cuts;
use crate::error::SqlError;

/// How often an endpoint looks for views other endpoints created or dropped.
pub const CATALOG_POLL_INTERVAL_MS: u64 = 1_000;
/// The same for an endpoint reading an embedded log another process owns: each look
/// reopens the log (about 0.1 s on the demo's log), and views are created elsewhere.
pub const CATALOG_SNAPSHOT_POLL_INTERVAL_MS: u64 = 5_000;
/// The endpoint's tables of the catalog's views, kept in step with it.
pub struct CatalogFollower {
    pub(crate) catalog: Mutex<Catalog>,
    pub(crate) context: Arc<SessionContext>,
    cuts: Arc<Cuts>,
    /// The log the catalog is read through: the one the endpoint writes, if it writes;
    /// else each look takes the log as the tables' cuts do.
    log: Option<Arc<dyn Log>>,
}

impl CatalogFollower {
    /// Follows the catalog in `topic` beside `fixed` (the views file's views, already
    /// registered), through `log` if given (the log the endpoint writes the catalog to).
    pub fn new(
        context: Arc<SessionContext>,
        cuts: Arc<Cuts>,
        topic: &str,
        fixed: &[ViewDef],
        log: Option<Arc<dyn Log>>,
    ) -> CatalogFollower {
        CatalogFollower { catalog: Mutex::new(Catalog::new(topic, fixed)), context, cuts, log }
    }

    /// Registers the tables of views created since the last call and drops those of
    /// views dropped since.
    pub async fn refresh(&self) -> Result<(), SqlError> {
        let mut catalog = self.catalog.lock().await;
        let (cuts, log, topic, from) =
            (self.cuts.clone(), self.log.clone(), catalog.topic().to_string(), catalog.next());
        let unread = tokio::task::spawn_blocking(move || {
            let log = match log {
                Some(log) => log,
                None => cuts.log()?,
            };
            read_new(log.as_ref(), &topic, from)
        })
        .await
        .map_err(|error| SqlError::Config(format!("reading the view catalog: {error}")))??;
        for change in catalog.apply_unread(unread).await {
            match change {
                Change::Created(view) => register_view(&self.context, &self.cuts, &view)?,
                Change::Dropped(name) => deregister_view(&self.context, &name)?,
            }
        }
        Ok(())
    }

    /// Refreshes every [`CATALOG_POLL_INTERVAL_MS`] ([`CATALOG_SNAPSHOT_POLL_INTERVAL_MS`]
    /// over an embedded log another process owns) until the task is aborted.
    pub fn follow(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        let reopens = self.log.is_none() && self.cuts.reopens_log();
        let interval_ms = if reopens { CATALOG_SNAPSHOT_POLL_INTERVAL_MS } else { CATALOG_POLL_INTERVAL_MS };
        tokio::spawn(async move {
            let mut poll = tokio::time::interval(Duration::from_millis(interval_ms));
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                poll.tick().await;
                if let Err(error) = self.refresh().await {
                    tracing::warn!(%error, "SQL endpoint: reading the view catalog failed; retrying");
                }
            }
        })
    }
}
