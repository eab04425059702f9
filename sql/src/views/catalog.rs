//! The views created over the wire. `CREATE MATERIALIZED VIEW` (by a role allowed to)
//! appends the statement to the catalog topic (by default [`CATALOG_TOPIC`]), keyed by the view's
//! name, and `DROP MATERIALIZED VIEW` appends a drop. Every process reads the same topic
//! in the same order, so all agree on the views: keepers start and stop them as records
//! arrive, endpoints register and drop their tables.
//!
//! A record for a name already taken (by the views file or an earlier record) does not
//! count, so two endpoints creating one name at once end with the first one's
//! definition everywhere. A dropped view's topic keeps its windows: the same definition
//! created again under its name resumes from them; another one is refused.

use std::collections::{BTreeMap, BTreeSet};

use paystream_domain::time::format_rfc3339_ms;
use paystream_pipeline::clock::now_ms;
use paystream_pipeline::log::{Log, Transaction, read_to_written_end};
use serde::{Deserialize, Serialize};

use super::definition::{ViewDef, parse_views};
use crate::error::SqlError;
use crate::topic_table::FETCH_RECORDS_MAX;

/// The default topic of view definitions (one partition, kept for good).
pub const CATALOG_TOPIC: &str = "view-definitions";
/// Views the catalog holds at once: each is a thread (on Kafka, and a producer) in its
/// keeper. A create past it does not count.
pub const CATALOG_VIEWS_MAX: usize = 64;

/// One catalog record: a view created (its statement) or dropped.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CatalogRecord {
    /// The `CREATE MATERIALIZED VIEW` statement; `None` drops the view.
    pub definition: Option<String>,
    /// The role that wrote it.
    pub by: String,
    /// When, RFC 3339.
    pub at: String,
}

impl CatalogRecord {
    pub fn create(definition: String, by: &str) -> CatalogRecord {
        CatalogRecord { definition: Some(definition), by: by.to_string(), at: format_rfc3339_ms(now_ms()) }
    }

    pub fn drop(by: &str) -> CatalogRecord {
        CatalogRecord { definition: None, by: by.to_string(), at: format_rfc3339_ms(now_ms()) }
    }
}

/// Appends `record` for the view `name` to the catalog, creating the topic if needed.
pub fn append(log: &dyn Log, catalog: &str, name: &str, record: &CatalogRecord) -> Result<(), SqlError> {
    let topic = log.create_topic(catalog, 1)?;
    let value = serde_json::to_vec(record).map_err(|error| SqlError::Config(error.to_string()))?;
    let mut transaction = Transaction::new();
    transaction.send_to_partition(&topic, 0, name.as_bytes(), &value, now_ms())?;
    log.commit(transaction)?;
    Ok(())
}

/// What changed in the catalog.
#[derive(Debug, Clone)]
pub enum Change {
    Created(ViewDef),
    Dropped(String),
}

/// The catalog as read so far.
#[derive(Debug)]
pub struct Catalog {
    /// Its topic.
    topic: String,
    /// Names the catalog may not take: the views file's.
    fixed: BTreeSet<String>,
    /// The catalog's views, by name, with the statement that created each.
    views: BTreeMap<String, (String, ViewDef)>,
    /// The next catalog offset to read.
    next: u64,
}

impl Catalog {
    /// The catalog in `topic`, beside the views `fixed` (the views file's), which it
    /// never replaces.
    pub fn new(topic: &str, fixed: &[ViewDef]) -> Catalog {
        Catalog {
            topic: topic.to_string(),
            fixed: fixed.iter().map(|view| view.name.clone()).collect(),
            views: BTreeMap::new(),
            next: 0,
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Whether `name` is a view of the views file.
    pub fn is_fixed(&self, name: &str) -> bool {
        self.fixed.contains(name)
    }

    /// The statement that created the catalog's view `name`.
    pub fn definition(&self, name: &str) -> Option<&str> {
        self.views.get(name).map(|(statement, _)| statement.as_str())
    }

    pub fn views(&self) -> impl Iterator<Item = &ViewDef> {
        self.views.values().map(|(_, view)| view)
    }

    /// Reads the records committed since the last call and applies them.
    pub async fn poll(&mut self, log: &dyn Log) -> Result<Vec<Change>, SqlError> {
        let unread = read_new(log, &self.topic, self.next)?;
        Ok(self.apply_unread(unread).await)
    }

    /// The offset [`read_new`] reads on from.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Applies what [`read_new`] read from [`Catalog::next`] (read apart, off an async
    /// runtime: the read blocks).
    pub async fn apply_unread(&mut self, unread: Unread) -> Vec<Change> {
        if unread.from != self.next {
            return Vec::new();
        }
        self.next = unread.next;
        let mut changes = Vec::new();
        for (name, record) in unread.records {
            changes.extend(self.apply(name, record).await);
        }
        changes
    }

    async fn apply(&mut self, name: String, record: CatalogRecord) -> Option<Change> {
        let Some(statement) = record.definition else {
            return self.views.remove(&name).map(|_| Change::Dropped(name));
        };
        if self.fixed.iter().chain(self.views.keys()).any(|taken| clash(taken, &name)) {
            tracing::warn!(view = %name, by = %record.by, "view catalog: the name is taken; this definition does not count");
            return None;
        }
        if self.views.len() >= CATALOG_VIEWS_MAX {
            tracing::warn!(view = %name, limit = CATALOG_VIEWS_MAX, "view catalog: full; this definition does not count");
            return None;
        }
        match parse_views(&statement).await {
            Ok(mut views) if views.len() == 1 && views[0].name == name => {
                let view = views.remove(0);
                self.views.insert(name, (statement, view.clone()));
                Some(Change::Created(view))
            }
            Ok(_) => {
                tracing::warn!(view = %name, "view catalog: the record's statement does not define it; skipped");
                None
            }
            Err(error) => {
                tracing::warn!(view = %name, %error, "view catalog: a definition this version cannot keep; skipped");
                None
            }
        }
    }
}

/// Whether views named `a` and `b` would share a table (`<view>` or `<view>_late`).
fn clash(a: &str, b: &str) -> bool {
    let late = |view: &str| format!("{view}_late");
    a == b || late(a) == b || a == late(b)
}

/// Catalog records read from `from` up to `next`.
#[derive(Debug)]
pub struct Unread {
    from: u64,
    records: Vec<(String, CatalogRecord)>,
    next: u64,
}

/// The records of the catalog in `catalog` from offset `from` on, through every
/// transaction committed before now (on Kafka, past the last stable offset's lag). No
/// catalog topic yet: none.
pub fn read_new(log: &dyn Log, catalog: &str, from: u64) -> Result<Unread, SqlError> {
    let Ok(topic) = log.topic(catalog) else { return Ok(Unread { from, records: Vec::new(), next: from }) };
    let mut records = Vec::new();
    let next = read_to_written_end(log, &topic, 0, from, FETCH_RECORDS_MAX, |record| {
        let name = String::from_utf8_lossy(&record.key).to_string();
        match serde_json::from_slice::<CatalogRecord>(&record.value) {
            Ok(value) => records.push((name, value)),
            Err(error) => tracing::warn!(offset = record.offset, %error, "view catalog: an unreadable record; skipped"),
        }
        Ok::<_, SqlError>(())
    })?;
    Ok(Unread { from, records, next })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use paystream_pipeline::log::embedded::{EmbeddedLog, EmbeddedLogConfig};

    use super::*;

    fn statement(name: &str, stride: &str) -> String {
        format!(
            "CREATE MATERIALIZED VIEW {name} AS SELECT date_bin(INTERVAL '{stride}', event_time) AS window_start, \
             count(*) AS decisions FROM decisions GROUP BY 1"
        )
    }

    #[tokio::test]
    async fn every_reader_agrees_the_first_definition_of_a_name_counts() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn Log> = Arc::new(EmbeddedLog::open(EmbeddedLogConfig::new(dir.path().join("log"))).unwrap());
        let mut catalog = Catalog::new(CATALOG_TOPIC, &parse_views(&statement("fixed", "1 hour")).await.unwrap());
        assert!(catalog.poll(log.as_ref()).await.unwrap().is_empty(), "no catalog topic yet: no views");

        append(log.as_ref(), CATALOG_TOPIC, "hourly", &CatalogRecord::create(statement("hourly", "1 hour"), "a"))
            .unwrap();
        append(log.as_ref(), CATALOG_TOPIC, "hourly", &CatalogRecord::create(statement("hourly", "5 minutes"), "b"))
            .unwrap();
        append(log.as_ref(), CATALOG_TOPIC, "fixed", &CatalogRecord::create(statement("fixed", "1 day"), "a")).unwrap();
        append(
            log.as_ref(),
            CATALOG_TOPIC,
            "fixed_late",
            &CatalogRecord::create(statement("fixed_late", "1 day"), "a"),
        )
        .unwrap();
        append(log.as_ref(), CATALOG_TOPIC, "hourly", &CatalogRecord::drop("a")).unwrap();
        append(log.as_ref(), CATALOG_TOPIC, "hourly", &CatalogRecord::create(statement("hourly", "1 day"), "b"))
            .unwrap();
        let changes = catalog.poll(log.as_ref()).await.unwrap();
        let described: Vec<String> = changes
            .iter()
            .map(|change| match change {
                Change::Created(view) => format!("+{} {}", view.name, view.stride_ms),
                Change::Dropped(name) => format!("-{name}"),
            })
            .collect();
        assert_eq!(described, ["+hourly 3600000", "-hourly", "+hourly 86400000"]);
        assert!(catalog.is_fixed("fixed") && catalog.definition("fixed").is_none());
        assert!(catalog.definition("fixed_late").is_none(), "it would replace the table of fixed's late rows");
        assert_eq!(catalog.definition("hourly"), Some(statement("hourly", "1 day").as_str()));

        // A second reader, from the start, ends where the first did.
        let mut other = Catalog::new(CATALOG_TOPIC, &[]);
        other.poll(log.as_ref()).await.unwrap();
        assert_eq!(other.definition("hourly"), catalog.definition("hourly"));
        assert!(catalog.poll(log.as_ref()).await.unwrap().is_empty(), "nothing new");
    }
}
