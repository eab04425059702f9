//! Keys of the features: 64-bit hashes of customer, terminal and payment ids.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use paystream_domain::Payment;

/// Hasher for keys that already are uniform hashes.
#[derive(Clone, Copy, Default)]
pub struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used by u64 keys; correct (if slow) for anything else.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub type PreHashedMap<K, V> = HashMap<K, V, BuildHasherDefault<PreHashed>>;

/// The 64-bit key of a customer or terminal id.
pub fn key_hash(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

/// The key of a payment id in the terminal index (64 bits: among the ~10⁶ payments an
/// index holds at a time, two ids collide with a chance of about 3 × 10⁻⁸).
pub fn payment_hash(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes()).rotate_left(17) // not the key hash of the same string
}

/// A payment's ids, hashed once ([`payment_hash`], [`key_hash`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaymentKeys {
    pub payment_hash: u64,
    pub customer_hash: u64,
    pub terminal_hash: u64,
}

impl PaymentKeys {
    pub fn new(payment_id: &str, customer: &str, terminal: &str) -> PaymentKeys {
        PaymentKeys {
            payment_hash: payment_hash(payment_id),
            customer_hash: key_hash(customer),
            terminal_hash: key_hash(terminal),
        }
    }
}

/// The (customer, terminal) keys of a payment's features. Payments without a terminal
/// (account transfers, online) share one "no terminal" key.
pub fn payment_keys(payment: &Payment) -> (u64, u64) {
    (key_hash(&payment.payer_account_id), terminal_key(payment))
}

fn terminal_key(payment: &Payment) -> u64 {
    key_hash(payment.terminal_id().unwrap_or(""))
}

/// A payment as the terminal index holds it: what
/// [`TerminalIndex::add_payments`](super::TerminalIndex::add_payments) takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TerminalIndexEntry {
    /// [`payment_hash`] of the payment id: a label finds its
    /// payment by it.
    pub payment_hash: u64,
    /// [`key_hash`] of the terminal id ("" without a terminal).
    pub terminal_hash: u64,
    pub event_time_ms: i64,
}

/// What the terminal index holds of a payment; `None` for captures, voids, refunds and
/// top-ups: terminal features count payments and authorizations, as the payer's windows
/// do.
pub fn terminal_index_entry(payment: &Payment) -> Option<TerminalIndexEntry> {
    payment.kind.is_scored().then(|| TerminalIndexEntry {
        payment_hash: payment_hash(&payment.payment_id),
        terminal_hash: terminal_key(payment),
        event_time_ms: payment.event_time_ms,
    })
}
