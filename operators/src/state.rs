//! The state of one input partition, its changes ([`StateOp`]) and their encodings.
//!
//! Per input partition, [`PartitionState`] holds:
//! - the partition's max event time (its watermark);
//! - the dedupe set: payment-id hash → content hash and event time, evicted
//!   `dedupe_retention_ms` (default 7 days) of event time after;
//! - the customer windows ([`CustomerWindows`]): every payment of the last 30 days plus
//!   the allowed lateness, 24 bytes each, at most
//!   [`CUSTOMER_HISTORY_ENTRIES_MAX`](crate::limits::CUSTOMER_HISTORY_ENTRIES_MAX) per
//!   customer; idle customers dropped once a day of event time;
//! - the settlement state ([`SettlementState`]): its horizon and, as a merchant
//!   partition, every source's last mark and its merchants' open windows;
//! - the ledger state ([`LedgerState`]): the accounts that need limits or holds, and one
//!   record per approved payment or authorization (≈ 100 bytes, kept `refund_window_ms`,
//!   default 30 days).
//!
//! Every change MUST go through [`PartitionState::apply`] as a [`StateOp`], live and on
//! restore alike, so a restored partition equals the live one. How the runtime logs,
//! snapshots and restores them: `pipeline/src/runtime/state.rs` and `snapshotter.rs`.
//!
//! Encodings are postcard (compact, versioned by [`STATE_FORMAT_VERSION`]); a changelog
//! record holds the ops of one batch, a snapshot the whole state.

use paystream_domain::Settlement;
use serde::{Deserialize, Serialize};

use paystream_domain::time::MILLIS_PER_DAY;

use crate::config::OperatorConfig;
use crate::dedupe::{DedupeKey, DedupeSnapshot, DedupeState};
use crate::error::{OperatorError, check_version};
use crate::features::CustomerWindows;
use crate::ledger::accounts::{Account, Transfer, TransferError, TransferOutcome};
use crate::ledger::{Approval, LedgerState};
use crate::settlement::{SettlementEntry, SettlementState};

pub use crate::error::STATE_FORMAT_VERSION;

/// One change to a partition's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateOp {
    /// A new payment or authorization passed validation and deduplication: remember its
    /// id and count it in its customer's windows; if it was approved, remember it for
    /// the captures, voids and refunds that may follow (`approval`).
    ///
    /// Live, the id and windows change when the payment is featurized and the approval
    /// is added when it is decided, later in the batch; the op is logged then, once,
    /// with both (one op per payment, not two: it is the changelog's bulk). Replaying it
    /// in that position gives the same state: `Seen` and `SeenId` ops are all logged at
    /// decision time, so ids and windows still change in arrival order, and nothing
    /// logged in between reads the ids, the windows or the records of payments not yet
    /// decided.
    Seen {
        /// Fixed-size little-endian bytes: denser than postcard's varints for hashes.
        id_hash: [u8; 16],
        content_hash: [u8; 8],
        customer_hash: u64,
        terminal_hash: u64,
        event_time_ms: i64,
        amount_minor: i64,
        approval: Option<Approval>,
    },
    /// A new event that is not scored (capture, void, refund, chargeback, top-up):
    /// remember its id only.
    SeenId { id_hash: [u8; 16], content_hash: [u8; 8], event_time_ms: i64 },
    /// Merchant side: a settlement entry read from `paystream-settlement-entries` is
    /// counted in its window. Boxed: its strings would make every op as large.
    SettleEntry { entry: Box<SettlementEntry> },
    /// Merchant side: a source partition's mark; may close settlement windows.
    SettlementMark { source_partition: u32, open_from_ms: i64 },
    /// Payer side: the partition, idle, takes on a later settlement horizon
    /// ([`SettlementState::idle_horizon`]).
    SettlementHorizon { open_from_ms: i64 },
    /// A wallet's overdraft limit changed in the configuration: its new limit.
    SetOverdraft { account_id: String, limit_minor: Option<i64> },
    /// Opens a ledger account (on first use). Boxed, like `Transfer`: rare and large, they
    /// would make every op (one per payment at least) as large as they are.
    OpenAccount { account: Box<Account> },
    /// A transfer on the ledger's accounts ([`crate::ledger::accounts::Accounts::execute`]). It is
    /// logged whatever its outcome: applying it again gives the same outcome.
    Transfer { transfer: Box<Transfer> },
    /// A capture posted `amount_minor` of the authorization `id_hash`.
    Captured { id_hash: [u8; 16], amount_minor: i64 },
    /// A refund or chargeback returned `amount_minor` of the payment `id_hash`.
    Returned { id_hash: [u8; 16], amount_minor: i64 },
    /// The partition's event time advanced: evict old ids and records, expire holds,
    /// move the settlement horizon.
    Watermark { max_event_time_ms: i64 },
}

impl StateOp {
    /// The `SeenId` op of a new event that is not scored.
    pub(crate) fn seen_id(key: DedupeKey, event_time_ms: i64) -> StateOp {
        StateOp::SeenId {
            id_hash: key.id_hash.to_le_bytes(),
            content_hash: key.content_hash.to_le_bytes(),
            event_time_ms,
        }
    }
}

pub struct PartitionState {
    pub(crate) max_event_time_ms: i64,
    pub(crate) dedupe: DedupeState,
    pub(crate) customers: CustomerWindows,
    pub(crate) settlement: SettlementState,
    pub(crate) ledger: LedgerState,
}

impl Default for PartitionState {
    fn default() -> Self {
        PartitionState {
            max_event_time_ms: i64::MIN,
            dedupe: DedupeState::default(),
            customers: CustomerWindows::default(),
            settlement: SettlementState::default(),
            ledger: LedgerState::default(),
        }
    }
}

/// What applying an op did beyond changing state.
#[derive(Debug, Default)]
pub struct Applied {
    /// Settlement windows the op closed.
    pub closed_settlements: Vec<Settlement>,
    /// The op's settlement entry arrived for a window closed here (see `settlement`).
    pub misplaced_settlement_entry: bool,
    /// The settlement horizon the op moved to: marks must go to every partition.
    pub settlement_horizon_ms: Option<i64>,
    /// The outcome of a `Transfer` op.
    pub transfer: Option<Result<TransferOutcome, TransferError>>,
    /// Holds the op expired (their authorization ids).
    pub expired_holds: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u16,
    max_event_time_ms: i64,
    dedupe: DedupeSnapshot,
    customers: CustomerWindows,
    settlement: SettlementState,
    ledger: LedgerState,
}

#[derive(Serialize, Deserialize)]
struct OpsRecord {
    version: u16,
    ops: Vec<StateOp>,
}

pub fn encode_ops(ops: &[StateOp]) -> Vec<u8> {
    #[derive(Serialize)]
    struct OpsRef<'a> {
        version: u16,
        ops: &'a [StateOp],
    }
    postcard::to_stdvec(&OpsRef { version: STATE_FORMAT_VERSION, ops }).expect("encoding to a Vec cannot fail")
}

pub fn decode_ops(bytes: &[u8]) -> Result<Vec<StateOp>, OperatorError> {
    check_version(bytes, "changelog record")?;
    let record: OpsRecord = postcard::from_bytes(bytes)
        .map_err(|source| OperatorError::CorruptState { what: "changelog record", source })?;
    Ok(record.ops)
}

impl PartitionState {
    /// Applies one op. The same function runs live and on restore.
    pub fn apply(&mut self, op: &StateOp, config: &OperatorConfig, partition: u32) -> Applied {
        let mut applied = Applied::default();
        match op {
            StateOp::Seen {
                id_hash,
                content_hash,
                customer_hash,
                terminal_hash,
                event_time_ms,
                amount_minor,
                approval,
            } => {
                self.dedupe.insert(u128::from_le_bytes(*id_hash), u64::from_le_bytes(*content_hash), *event_time_ms);
                let lateness_ms = config.feature_allowed_lateness_ms;
                self.customers.add(*customer_hash, *terminal_hash, *event_time_ms, *amount_minor, lateness_ms);
                if let Some(approval) = approval {
                    self.approve(*id_hash, approval, *amount_minor, *event_time_ms);
                }
            }
            StateOp::SeenId { id_hash, content_hash, event_time_ms } => {
                self.dedupe.insert(u128::from_le_bytes(*id_hash), u64::from_le_bytes(*content_hash), *event_time_ms);
            }
            StateOp::OpenAccount { account } => self.ledger.open(Account::clone(account)),
            StateOp::SetOverdraft { account_id, limit_minor } => {
                self.ledger.accounts.set_overdraft_limit(account_id, *limit_minor)
            }
            StateOp::Transfer { transfer } => applied.transfer = Some(self.ledger.accounts.execute(transfer)),
            StateOp::Captured { id_hash, amount_minor } => {
                if let Some(record) = self.ledger.record_mut(u128::from_le_bytes(*id_hash)) {
                    record.captured_minor += amount_minor;
                }
            }
            StateOp::Returned { id_hash, amount_minor } => {
                if let Some(record) = self.ledger.record_mut(u128::from_le_bytes(*id_hash)) {
                    record.returned_minor += amount_minor;
                }
            }
            StateOp::SettleEntry { entry } => {
                applied.misplaced_settlement_entry = self.settlement.add(entry).1;
            }
            StateOp::SettlementMark { source_partition, open_from_ms } => {
                applied.closed_settlements = self.settlement.mark(
                    *source_partition,
                    *open_from_ms,
                    config.input_partitions.unwrap_or(1),
                    config.settlement_window_ms,
                    partition,
                );
            }
            StateOp::SettlementHorizon { open_from_ms } => {
                if self.settlement.advance_horizon(*open_from_ms) {
                    applied.settlement_horizon_ms = Some(*open_from_ms);
                }
            }
            StateOp::Watermark { max_event_time_ms } => {
                let day_before = self.max_event_time_ms.div_euclid(MILLIS_PER_DAY);
                self.max_event_time_ms = self.max_event_time_ms.max(*max_event_time_ms);
                // Idle customers go once a day of event time (not every batch: it scans them all).
                if self.max_event_time_ms.div_euclid(MILLIS_PER_DAY) > day_before {
                    self.customers
                        .expire_idle(self.max_event_time_ms.saturating_sub(config.feature_allowed_lateness_ms));
                }
                self.dedupe.evict_before(self.max_event_time_ms.saturating_sub(config.dedupe_retention_ms));
                // Expiry waits for the allowed lateness, like settlement: a capture up to that
                // late still finds its hold (it expires the hold itself if past its timeout).
                let expired_through = self.max_event_time_ms.saturating_sub(config.settlement_allowed_lateness_ms);
                applied.expired_holds = self.ledger.accounts.expire(expired_through);
                self.ledger
                    .accounts
                    .forget_resolved_before(self.max_event_time_ms.saturating_sub(config.dedupe_retention_ms));
                self.ledger.forget_records_before(self.max_event_time_ms.saturating_sub(config.refund_window_ms));
                // Entries of windows ending at or before the watermark less the allowed
                // lateness are late: the horizon is the first window ending after that.
                let closed_through = self.max_event_time_ms.saturating_sub(config.settlement_allowed_lateness_ms);
                let horizon = crate::settlement::window_start(closed_through, config.settlement_window_ms);
                if self.settlement.advance_horizon(horizon) {
                    applied.settlement_horizon_ms = Some(horizon);
                }
            }
        }
        applied
    }

    /// The approval of a `Seen` op: applied with it on replay, live when the payment is
    /// decided (the op, logged then, carries it).
    pub(crate) fn approve(&mut self, id_hash: [u8; 16], approval: &Approval, amount_minor: i64, event_time_ms: i64) {
        self.ledger.remember(u128::from_le_bytes(id_hash), approval.record(amount_minor), event_time_ms);
    }

    pub fn max_event_time_ms(&self) -> Option<i64> {
        (self.max_event_time_ms != i64::MIN).then_some(self.max_event_time_ms)
    }

    pub fn remembered_payment_ids(&self) -> usize {
        self.dedupe.len()
    }

    pub fn customers(&self) -> usize {
        self.customers.len()
    }

    pub fn customer_windows(&self) -> &CustomerWindows {
        &self.customers
    }

    pub fn settlement(&self) -> &SettlementState {
        &self.settlement
    }

    pub fn ledger(&self) -> &LedgerState {
        &self.ledger
    }

    pub fn to_snapshot_bytes(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct SnapshotRef<'a> {
            version: u16,
            max_event_time_ms: i64,
            dedupe: DedupeSnapshot,
            customers: &'a CustomerWindows,
            settlement: &'a SettlementState,
            ledger: &'a LedgerState,
        }
        postcard::to_stdvec(&SnapshotRef {
            version: STATE_FORMAT_VERSION,
            max_event_time_ms: self.max_event_time_ms,
            dedupe: self.dedupe.snapshot(),
            customers: &self.customers,
            settlement: &self.settlement,
            ledger: &self.ledger,
        })
        .expect("encoding to a Vec cannot fail")
    }

    pub fn from_snapshot_bytes(bytes: &[u8]) -> Result<PartitionState, OperatorError> {
        check_version(bytes, "snapshot")?;
        let snapshot: Snapshot =
            postcard::from_bytes(bytes).map_err(|source| OperatorError::CorruptState { what: "snapshot", source })?;
        Ok(PartitionState {
            max_event_time_ms: snapshot.max_event_time_ms,
            dedupe: DedupeState::restore(snapshot.dedupe),
            customers: snapshot.customers,
            settlement: snapshot.settlement,
            ledger: snapshot.ledger,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_stay_small() {
        // At least one op per payment is built, moved and encoded: the rare large ones
        // (accounts, transfers) are boxed so they do not set the size of all.
        assert!(std::mem::size_of::<StateOp>() <= 88, "{}", std::mem::size_of::<StateOp>());
    }

    #[test]
    fn bytes_of_another_format_version_are_named_as_such() {
        let mut bytes = encode_ops(&[StateOp::Watermark { max_event_time_ms: 5 }]);
        assert_eq!(decode_ops(&bytes).unwrap(), vec![StateOp::Watermark { max_event_time_ms: 5 }]);
        bytes[0] = 2; // format 2, as written by earlier builds
        let error = decode_ops(&bytes).unwrap_err();
        assert!(matches!(error, OperatorError::StateVersion { found: 2, expected: STATE_FORMAT_VERSION, .. }));
        assert!(error.to_string().contains("another version"), "{error}");
        let error = PartitionState::from_snapshot_bytes(&bytes).err().unwrap();
        assert!(matches!(error, OperatorError::StateVersion { found: 2, .. }), "{error}");
        assert!(matches!(decode_ops(&[]), Err(OperatorError::CorruptState { .. })));
    }
}
