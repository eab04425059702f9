//! An open-addressing hash table for keys that already are uniform 64-bit hashes
//! (linear probing, slots inline in one array, at most half full).
//!
//! Why not `HashMap`: a feature update is bound by cache misses on tables of millions
//! of entries, and a lookup in a `HashMap` misses twice (control bytes, then the
//! bucket) before the address of anything behind it is known. Here a key's slot address
//! is a function of the key alone, so [`HashedTable::prefetch`] can ask for it a few
//! payments ahead without waiting for any load, and the lookup itself then hits.
//!
//! The slots are one allocation aligned to a cache line ([`CACHE_LINE_BYTES`]): a 64-byte
//! slot (a customer's or a terminal's) then spans one line. The allocator aligns large
//! blocks to 16 bytes only, which splits every such slot over two lines — two misses
//! per lookup, and a hint that fetches half of it.
//!
//! Key 0 marks an empty slot; a key that hashes to 0 is stored as [`ZERO_KEY_STAND_IN`],
//! so those two keys share a slot — like any two ids whose 64-bit hashes collide (see
//! `features`), a chance of 2⁻⁶⁴ per key.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::ptr::NonNull;

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, SerializeSeq, Serializer};

/// Stored in place of key 0, which marks empty slots.
pub const ZERO_KEY_STAND_IN: u64 = 0x9e37_79b9_7f4a_7c15;
/// Fewest slots of a table that holds anything.
const SLOTS_MIN: usize = 16;
/// What the slots are aligned to: one cache line of x86-64 and most ARM cores.
pub const CACHE_LINE_BYTES: usize = 64;

#[derive(Clone, Debug, Default)]
struct Slot<V> {
    key: u64,
    value: V,
}

#[derive(Clone, Debug)]
pub struct HashedTable<V> {
    /// A power of two long (or empty); at most half are occupied. An empty slot holds
    /// key 0 and `V::default()`.
    slots: Slots<V>,
    len: usize,
}

impl<V> Default for HashedTable<V> {
    fn default() -> Self {
        HashedTable { slots: Slots::default(), len: 0 }
    }
}

/// A fixed number of slots in one allocation aligned to [`CACHE_LINE_BYTES`] (a boxed
/// slice with a stricter alignment).
struct Slots<V> {
    ptr: NonNull<Slot<V>>,
    len: usize,
}

// SAFETY: `Slots` owns its slots like a `Box<[Slot<V>]>`.
unsafe impl<V: Send> Send for Slots<V> {}
// SAFETY: as above; shared access only hands out shared references.
unsafe impl<V: Sync> Sync for Slots<V> {}

impl<V> Slots<V> {
    fn layout(len: usize) -> Layout {
        Layout::array::<Slot<V>>(len)
            .and_then(|layout| layout.align_to(CACHE_LINE_BYTES))
            .expect("a table smaller than the address space")
    }

    /// `len` slots, slot `i` made by `make(i)`.
    fn from_fn(len: usize, mut make: impl FnMut(usize) -> Slot<V>) -> Slots<V> {
        if len == 0 {
            return Slots::default();
        }
        let layout = Slots::<V>::layout(len);
        // SAFETY: `layout` has a non-zero size (a slot holds a u64 key).
        let ptr =
            NonNull::new(unsafe { alloc(layout) }.cast::<Slot<V>>()).unwrap_or_else(|| handle_alloc_error(layout));
        for i in 0..len {
            // SAFETY: `i < len`, inside the allocation, which is aligned for `Slot<V>`. Were
            // `make` to panic, the allocation would leak, never be read.
            unsafe { ptr.as_ptr().add(i).write(make(i)) };
        }
        Slots { ptr, len }
    }
}

impl<V> Default for Slots<V> {
    fn default() -> Slots<V> {
        Slots { ptr: NonNull::dangling(), len: 0 }
    }
}

impl<V> std::ops::Deref for Slots<V> {
    type Target = [Slot<V>];
    fn deref(&self) -> &[Slot<V>] {
        // SAFETY: `len` initialized slots at `ptr` (dangling and aligned when empty).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<V> std::ops::DerefMut for Slots<V> {
    fn deref_mut(&mut self) -> &mut [Slot<V>] {
        // SAFETY: as in `deref`, and `&mut self` is the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<V> Drop for Slots<V> {
    fn drop(&mut self) {
        // SAFETY: the slots are initialized and dropped once; the memory was allocated
        // with this layout when `len > 0`.
        unsafe {
            std::ptr::drop_in_place(&mut **self as *mut [Slot<V>]);
            if self.len > 0 {
                dealloc(self.ptr.as_ptr().cast(), Slots::<V>::layout(self.len));
            }
        }
    }
}

impl<V: Clone> Clone for Slots<V> {
    fn clone(&self) -> Slots<V> {
        Slots::from_fn(self.len, |i| self[i].clone())
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for Slots<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// Equal when holding the same entries, whatever their slots.
impl<V: Default + PartialEq> PartialEq for HashedTable<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().all(|(key, value)| other.get(key) == Some(value))
    }
}

impl<V: Default + Eq> Eq for HashedTable<V> {}

fn stored(key: u64) -> u64 {
    if key == 0 { ZERO_KEY_STAND_IN } else { key }
}

impl<V: Default> HashedTable<V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn home(&self, key: u64) -> usize {
        key as usize & (self.slots.len() - 1)
    }

    /// The slot holding `key` (stored form), or the empty slot where it would go.
    #[inline]
    fn find(&self, key: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut at = self.home(key);
        while self.slots[at].key != 0 && self.slots[at].key != key {
            at = (at + 1) & mask;
        }
        at
    }

    /// Hints the CPU to load `key`'s slot: computed from the key alone, no load waited
    /// for (no effect on results).
    #[inline]
    pub fn prefetch(&self, key: u64) {
        if !self.slots.is_empty() {
            prefetch_all(&self.slots[self.home(stored(key))]);
        }
    }

    #[inline]
    pub fn get(&self, key: u64) -> Option<&V> {
        if self.slots.is_empty() {
            return None;
        }
        let slot = &self.slots[self.find(stored(key))];
        (slot.key != 0).then_some(&slot.value)
    }

    #[inline]
    pub fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        if self.slots.is_empty() {
            return None;
        }
        let at = self.find(stored(key));
        let slot = &mut self.slots[at];
        (slot.key != 0).then_some(&mut slot.value)
    }

    #[inline]
    pub fn contains_key(&self, key: u64) -> bool {
        self.get(key).is_some()
    }

    /// The value of `key`, inserted from `make` when absent.
    #[inline]
    pub fn entry_or_insert_with(&mut self, key: u64, make: impl FnOnce() -> V) -> &mut V {
        let key = stored(key);
        if 2 * (self.len + 1) > self.slots.len() {
            self.grow();
        }
        let at = self.find(key);
        if self.slots[at].key == 0 {
            self.slots[at] = Slot { key, value: make() };
            self.len += 1;
        }
        &mut self.slots[at].value
    }

    /// The value of `key`, inserted as `V::default()` when absent.
    #[inline]
    pub fn entry_or_default(&mut self, key: u64) -> &mut V {
        self.entry_or_insert_with(key, V::default)
    }

    /// Inserts `key` unless it is there; false when it was.
    #[inline]
    pub fn insert_if_absent(&mut self, key: u64, value: V) -> bool {
        let len = self.len;
        self.entry_or_insert_with(key, || value);
        self.len > len
    }

    /// Sets `key`'s value; returns the one it replaces.
    #[inline]
    pub fn insert(&mut self, key: u64, value: V) -> Option<V> {
        // Taken by the insert when `key` is new; otherwise still here to replace its value.
        let mut value = Some(value);
        let slot = self.entry_or_insert_with(key, || value.take().expect("taken once"));
        value.map(|value| std::mem::replace(slot, value))
    }

    /// Removes `key`, shifting later slots of its probe run back (no tombstones).
    #[inline]
    pub fn remove(&mut self, key: u64) -> Option<V> {
        if self.slots.is_empty() {
            return None;
        }
        let at = self.find(stored(key));
        (self.slots[at].key != 0).then(|| self.remove_at(at))
    }

    /// Empties the occupied slot `hole`, moving back the later entries of its probe run
    /// that may fill it.
    fn remove_at(&mut self, mut hole: usize) -> V {
        let mask = self.slots.len() - 1;
        let removed = std::mem::take(&mut self.slots[hole].value);
        self.slots[hole].key = 0;
        let mut at = hole;
        loop {
            at = (at + 1) & mask;
            let key = self.slots[at].key;
            if key == 0 {
                break;
            }
            // The entry at `at` may fill the hole unless its home lies cyclically in (hole, at].
            let home = self.home(key);
            let stays = if hole <= at { hole < home && home <= at } else { hole < home || home <= at };
            if !stays {
                self.slots.swap(hole, at); // the empty slot moves to `at`
                hole = at;
            }
        }
        self.len -= 1;
        removed
    }

    /// Keeps the entries `keep` says yes to (in place; `keep` may see an entry twice when
    /// a removal moves it across the end of the slots).
    pub fn retain(&mut self, mut keep: impl FnMut(u64, &mut V) -> bool) {
        let mut at = 0;
        while at < self.slots.len() {
            let slot = &mut self.slots[at];
            if slot.key != 0 && !keep(slot.key, &mut slot.value) {
                self.remove_at(at); // a later entry may now be here: look again
            } else {
                at += 1;
            }
        }
    }

    /// Every (key, value), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> {
        self.slots.iter().filter(|s| s.key != 0).map(|s| (s.key, &s.value))
    }

    /// Rare (each doubles the table), so kept out of the inserts' inlined path.
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let mut slots = std::mem::take(&mut self.slots);
        self.rebuild(self.len + 1, slots.iter_mut().filter(|s| s.key != 0).map(std::mem::take));
    }

    /// A table with room for `room` entries holding `entries` (stored keys; the last of
    /// a repeated key wins).
    fn rebuild(&mut self, room: usize, entries: impl Iterator<Item = Slot<V>>) {
        self.len = 0;
        let size = (2 * room).next_power_of_two().max(SLOTS_MIN);
        self.slots = Slots::from_fn(size, |_| Slot::default());
        for entry in entries {
            let at = self.find(entry.key);
            self.len += usize::from(self.slots[at].key == 0); // a repeated key replaces
            self.slots[at] = entry;
        }
    }
}

impl<V: Default + Serialize> Serialize for HashedTable<V> {
    /// As the list of (key, value) pairs held: no empty slots.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        for entry in self.iter() {
            seq.serialize_element(&entry)?;
        }
        seq.end()
    }
}

impl<'de, V: Default + Deserialize<'de>> Deserialize<'de> for HashedTable<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries: Vec<(u64, V)> = Vec::deserialize(deserializer)?;
        let mut table = HashedTable::default();
        if !entries.is_empty() {
            let room = entries.len();
            table.rebuild(room, entries.into_iter().map(|(key, value)| Slot { key: stored(key), value }));
        }
        Ok(table)
    }
}

/// Asks the CPU to start loading `value`'s cache line: a hint, with no effect on any
/// result.
#[inline(always)]
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and changes no memory; the address is a live reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((value as *const T).cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// [`prefetch`] for every cache line `value` spans: a value whose size does not divide
/// the line (a 24-byte slot or entry), or one in a block aligned to 16 bytes only (a
/// `VecDeque`'s), may start near the end of a line and end in the next.
#[inline(always)]
pub(crate) fn prefetch_all<T>(value: &T) {
    prefetch(value);
    if size_of::<T>() > 16 {
        // SAFETY: the last byte of a live `T`; only its address is used, by `prefetch`.
        prefetch(unsafe { &*(value as *const T).cast::<u8>().add(size_of::<T>() - 1) });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64, i64),
        Remove(u64),
        Retain(i64),
    }

    /// Few distinct keys, with crowded homes (low bits shared) and key 0, so probe runs
    /// wrap around and removals shift entries.
    fn key() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0u64), (0u64..40).prop_map(|k| k << 3), (0u64..40).prop_map(|k| (k << 40) | 7), any::<u64>()]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (key(), any::<i64>()).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => key().prop_map(Op::Remove),
            1 => any::<i64>().prop_map(Op::Retain),
        ]
    }

    proptest! {
        #[test]
        fn behaves_as_a_map(ops in proptest::collection::vec(op(), 0..400)) {
            let mut table = HashedTable::<i64>::default();
            let mut model = HashMap::<u64, i64>::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(table.insert(k, v), model.insert(k, v)),
                    Op::Remove(k) => prop_assert_eq!(table.remove(k), model.remove(&k)),
                    Op::Retain(limit) => {
                        table.retain(|_, v| *v > limit);
                        model.retain(|_, v| *v > limit);
                    }
                }
                prop_assert_eq!(table.len(), model.len());
                for (k, v) in &model {
                    prop_assert_eq!(table.get(*k), Some(v));
                }
                prop_assert!(2 * table.len() <= table.slots.len().max(SLOTS_MIN));
                prop_assert!(table.slots.is_empty() || (table.slots.as_ptr() as usize).is_multiple_of(CACHE_LINE_BYTES));
            }
            let bytes = postcard::to_stdvec(&table).unwrap();
            let back: HashedTable<i64> = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(back.len(), model.len());
            for (k, v) in &model {
                prop_assert_eq!(back.get(*k), Some(v));
            }
        }
    }

    #[test]
    fn owned_values_survive_growth_clones_and_removal() {
        let mut table = HashedTable::<String>::default();
        for k in 1..=1_000u64 {
            table.insert(k, format!("value {k}"));
        }
        let copy = table.clone();
        for k in (1..=1_000u64).step_by(2) {
            assert_eq!(table.remove(k), Some(format!("value {k}")));
        }
        table.retain(|k, _| k % 4 == 0);
        assert_eq!(table.len(), 250);
        assert_eq!(copy.len(), 1_000);
        for k in 1..=1_000u64 {
            assert_eq!(copy.get(k), Some(&format!("value {k}")));
            assert_eq!(table.get(k).is_some(), k % 4 == 0);
        }
        assert!((copy.slots.as_ptr() as usize).is_multiple_of(CACHE_LINE_BYTES), "clones are aligned too");
    }

    #[test]
    fn missing_keys_are_absent() {
        let mut table = HashedTable::<i64>::default();
        assert_eq!(table.get(5), None);
        assert_eq!(table.remove(5), None);
        table.insert(5, 1);
        assert_eq!(table.get(6), None);
        assert_eq!(table.remove(6), None);
        assert_eq!(table.remove(5), Some(1));
        assert!(table.is_empty());
    }
}
