//! The view catalog's invariant: whatever creates and drops reach it, and however often
//! each reader polls, every reader ends with the same views, and they are what a plain
//! model says (a name's first definition while it is not defined wins; a drop removes a
//! defined name; the views file's names are never the catalog's).

use std::collections::BTreeMap;
use std::sync::Arc;

use paystream_pipeline::log::Log;
use paystream_pipeline::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use paystream_sql::views::catalog::{CATALOG_TOPIC, Catalog, CatalogRecord, append};
use paystream_sql::views::parse_views;
use proptest::prelude::*;

const NAMES: [&str; 3] = ["a", "b", "fixed"];
const STRIDES: [&str; 3] = ["1 minute", "1 hour", "1 day"];

fn statement(name: &str, stride: &str) -> String {
    format!(
        "CREATE MATERIALIZED VIEW {name} AS SELECT date_bin(INTERVAL '{stride}', event_time) AS window_start, \
         count(*) AS decisions FROM decisions GROUP BY 1"
    )
}

/// (name, Some(stride) to create, None to drop).
fn operations() -> impl Strategy<Value = Vec<(usize, Option<usize>)>> {
    prop::collection::vec((0..NAMES.len(), prop::option::of(0..STRIDES.len())), 0..16)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn every_reader_ends_with_the_same_views(operations in operations(), polls in prop::collection::vec(any::<bool>(), 16)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn Log> = Arc::new(EmbeddedLog::open(EmbeddedLogConfig::new(dir.path().join("log"))).unwrap());
        let fixed = runtime.block_on(parse_views(&statement("fixed", "1 hour"))).unwrap();
        // One reader polls between the writes it is told to, the other only at the end.
        let mut eager = Catalog::new(CATALOG_TOPIC, &fixed);
        let mut late = Catalog::new(CATALOG_TOPIC, &fixed);
        let mut model: BTreeMap<&str, String> = BTreeMap::new();
        for (index, (name, create)) in operations.iter().enumerate() {
            let name = NAMES[*name];
            let record = match create {
                Some(stride) => {
                    let text = statement(name, STRIDES[*stride]);
                    if name != "fixed" {
                        model.entry(name).or_insert_with(|| text.clone());
                    }
                    CatalogRecord::create(text, "author")
                }
                None => {
                    model.remove(name);
                    CatalogRecord::drop("author")
                }
            };
            append(log.as_ref(), CATALOG_TOPIC, name, &record).unwrap();
            if polls[index] {
                runtime.block_on(eager.poll(log.as_ref())).unwrap();
            }
        }
        runtime.block_on(eager.poll(log.as_ref())).unwrap();
        runtime.block_on(late.poll(log.as_ref())).unwrap();
        for name in NAMES {
            prop_assert_eq!(eager.definition(name), late.definition(name), "{}", name);
            prop_assert_eq!(eager.definition(name), model.get(name).map(String::as_str), "{}", name);
        }
        prop_assert_eq!(eager.views().count(), model.len());
    }
}
