//! Maps keyed by 128-bit hashes of ids (already uniform): the dedupe state's and the
//! ledger's payment records.

use std::collections::HashMap;

/// A `BuildHasher` for maps keyed by 128-bit hashes of ids (already uniform): their
/// low 64 bits, not SipHash of them.
#[derive(Clone, Copy, Default)]
pub struct IdHashBuilder;

pub struct IdHasher(u64);

impl std::hash::BuildHasher for IdHashBuilder {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys are hashed with it; anything else still hashes, just slowly.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

/// A map keyed by 128-bit id hashes.
pub type IdHashMap<V> = HashMap<u128, V, IdHashBuilder>;
