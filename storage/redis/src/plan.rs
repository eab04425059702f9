//! How a batch of counter items becomes script calls: grouped by entity (the script reads
//! an entity's window once and adds each later event in Lua), entities grouped by key
//! shard (every key of one call shares the shard's Cluster hash tag), each call holding at
//! most [`CALL_ITEMS_MAX`] items. Pure: no IO.
//!
//! Order: the calls of one batch run in one pipeline, in order, and an entity's items keep
//! their batch order within and across calls, so each item sees exactly the items of its
//! entity before it — what one call per item in batch order saw.

use std::collections::HashMap;

/// Entities are spread over this many key shards (Cluster hash tags): a batch is at most
/// this many script calls (more past [`CALL_ITEMS_MAX`]), and a cluster spreads the
/// counters over up to this many slots.
pub(crate) const KEY_SHARDS: u64 = 16;

/// Items (events or window queries) per script call: Redis runs one script at a time, so
/// this bounds how long one call holds the server.
pub(crate) const CALL_ITEMS_MAX: usize = 256;

/// The key shard of an entity, by its 64-bit hash.
pub(crate) fn shard_of(entity_hash: u64) -> u64 {
    entity_hash % KEY_SHARDS
}

/// One entity's items in one call, in batch order (indexes into the batch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EntityRun {
    pub(crate) entity_hash: u64,
    pub(crate) items: Vec<usize>,
}

/// One script call: entities of one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CallPlan {
    pub(crate) shard: u64,
    pub(crate) runs: Vec<EntityRun>,
}

impl CallPlan {
    pub(crate) fn items(&self) -> usize {
        self.runs.iter().map(|run| run.items.len()).sum()
    }
}

/// The calls for a batch whose items belong to the entities with these hashes, in order.
pub(crate) fn plan(entity_hashes: impl IntoIterator<Item = u64>) -> Vec<CallPlan> {
    // Per shard, its entities in order of first appearance, each with its items.
    let mut shards: Vec<Vec<EntityRun>> = vec![Vec::new(); KEY_SHARDS as usize];
    let mut position: HashMap<u64, usize> = HashMap::new();
    for (item, entity_hash) in entity_hashes.into_iter().enumerate() {
        let runs = &mut shards[shard_of(entity_hash) as usize];
        let at = *position.entry(entity_hash).or_insert_with(|| {
            runs.push(EntityRun { entity_hash, items: Vec::new() });
            runs.len() - 1
        });
        runs[at].items.push(item);
    }
    let mut calls = Vec::new();
    for (shard, runs) in shards.into_iter().enumerate() {
        let mut call = CallPlan { shard: shard as u64, runs: Vec::new() };
        for run in runs {
            for chunk in run.items.chunks(CALL_ITEMS_MAX) {
                if call.items() + chunk.len() > CALL_ITEMS_MAX {
                    let full = std::mem::take(&mut call.runs);
                    calls.push(CallPlan { shard: shard as u64, runs: full });
                }
                call.runs.push(EntityRun { entity_hash: run.entity_hash, items: chunk.to_vec() });
            }
        }
        if !call.runs.is_empty() {
            calls.push(call);
        }
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every item is in exactly one call, calls respect the item cap and one shard,
        /// and each entity's items keep their order across the calls.
        #[test]
        fn every_item_once_in_order_within_limits(hashes in proptest::collection::vec(0u64..40, 0..1_200)) {
            let calls = plan(hashes.iter().copied());
            let mut seen = vec![0u32; hashes.len()];
            let mut last_of_entity: HashMap<u64, usize> = HashMap::new();
            for call in &calls {
                prop_assert!(call.items() > 0 && call.items() <= CALL_ITEMS_MAX);
                for run in &call.runs {
                    prop_assert_eq!(shard_of(run.entity_hash), call.shard);
                    for &item in &run.items {
                        prop_assert_eq!(hashes[item], run.entity_hash);
                        seen[item] += 1;
                        if let Some(&before) = last_of_entity.get(&run.entity_hash) {
                            prop_assert!(before < item, "entity {} out of order", run.entity_hash);
                        }
                        last_of_entity.insert(run.entity_hash, item);
                    }
                }
            }
            prop_assert!(seen.iter().all(|&n| n == 1));
            // Greedy packing: two calls of a shard in a row hold more than the cap.
            for shard in 0..KEY_SHARDS {
                let items = hashes.iter().filter(|&&h| shard_of(h) == shard).count();
                let shard_calls = calls.iter().filter(|c| c.shard == shard).count();
                prop_assert!(shard_calls <= 2 * items / CALL_ITEMS_MAX + 1);
            }
        }
    }

    #[test]
    fn a_batch_of_one_entity_is_split_at_the_cap_in_order() {
        let calls = plan(std::iter::repeat_n(7u64, CALL_ITEMS_MAX + 3));
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].runs[0].items, (0..CALL_ITEMS_MAX).collect::<Vec<_>>());
        assert_eq!(calls[1].runs[0].items, (CALL_ITEMS_MAX..CALL_ITEMS_MAX + 3).collect::<Vec<_>>());
    }

    #[test]
    fn entities_of_one_shard_share_a_call() {
        let calls = plan([1, 1 + KEY_SHARDS, 1, 2]);
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(
            calls[0].runs,
            vec![
                EntityRun { entity_hash: 1, items: vec![0, 2] },
                EntityRun { entity_hash: 1 + KEY_SHARDS, items: vec![1] },
            ]
        );
    }
}
