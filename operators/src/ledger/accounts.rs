//! Accounts and transfers for the ledger to build on: TigerBeetle's transfer semantics —
//! immutable transfers, a *pending* transfer that reserves funds and is then posted
//! (fully or partly), voided or expired, balance limits checked when funds are reserved —
//! and Stripe's idempotency: a transfer id seen again returns its first outcome (refusals
//! included), and the same id with other content is refused.
//!
//! Pure state, no IO and no clock: time is the transfers' event time, and expiry happens
//! when the caller says what time it is ([`Accounts::expire`]). The ledger operator keeps
//! one `Accounts` per partition for the accounts whose limits or holds decide outcomes
//! (wallets, authorizations) and drives it through [`Accounts::execute`] (it deduplicates
//! payment ids itself); [`Accounts::apply`] adds the transfer-id memory for other callers.
//!
//! Balances are TigerBeetle's four counters per account; an account with a limit keeps
//! `credits_posted − debits_posted − debits_pending ≥ −overdraft_limit_minor`, so money
//! reserved by a hold is no longer available, and a hold can always be posted.
//!
//! [`Accounts::execute`] is deterministic: the same transfers in the same order give the
//! same outcomes and state. A refused transfer changes nothing — limits and overflow are
//! checked before any counter moves — except that a post or void naming a hold past its
//! expiry expires the hold. This is why the ledger logs a transfer op whatever its
//! outcome: applying the changelog again reproduces every outcome.

use std::collections::{BTreeSet, HashMap, VecDeque};

use paystream_domain::Currency;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What an account is for; it decides the default limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccountKind {
    /// A customer's money: never below zero unless an overdraft limit says otherwise.
    CustomerWallet,
    /// What is owed to a merchant: never below zero by default.
    Merchant,
    Fees,
    /// Money in flight between partitions or phases; nets to zero over time.
    Clearing,
    /// Merchant payouts on their way to the bank.
    Settlement,
    /// The world outside (a bank): the source and sink of money, unlimited.
    External,
}

impl AccountKind {
    /// The default overdraft limit: `Some(0)` (never below zero) or `None` (unlimited).
    pub fn default_limit_minor(self) -> Option<i64> {
        match self {
            AccountKind::CustomerWallet | AccountKind::Merchant => Some(0),
            AccountKind::Fees | AccountKind::Clearing | AccountKind::Settlement | AccountKind::External => None,
        }
    }
}

/// TigerBeetle's balance counters, in minor units of the account's currency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balances {
    pub debits_posted: i64,
    pub credits_posted: i64,
    pub debits_pending: i64,
    pub credits_pending: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub currency: Currency,
    pub kind: AccountKind,
    pub owner: String,
    /// How far below zero `credits − debits − debits pending` may go; `None`: no limit.
    pub overdraft_limit_minor: Option<i64>,
    pub balances: Balances,
}

impl Account {
    pub fn new(id: &str, currency: Currency, kind: AccountKind, owner: &str) -> Account {
        Account {
            id: id.to_string(),
            currency,
            kind,
            owner: owner.to_string(),
            overdraft_limit_minor: kind.default_limit_minor(),
            balances: Balances::default(),
        }
    }

    /// Credits minus debits, posted only.
    pub fn balance_minor(&self) -> i64 {
        self.balances.credits_posted - self.balances.debits_posted
    }

    /// What may still be debited: the balance minus holds, plus the overdraft limit.
    pub fn available_minor(&self) -> Option<i64> {
        self.overdraft_limit_minor.map(|limit| self.balance_minor() - self.balances.debits_pending + limit)
    }

    fn within_limit(&self) -> bool {
        self.available_minor().is_none_or(|available| available >= 0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransferKind {
    /// Moves the amount at once.
    Single { debit: String, credit: String },
    /// Reserves the amount on both accounts until posted, voided, or `timeout_ms` after
    /// the transfer's time.
    Pending { debit: String, credit: String, timeout_ms: i64 },
    /// Posts `amount_minor` (≤ the hold) of a pending transfer and releases the rest.
    Post { pending_id: String },
    /// Releases a pending transfer (the amount must be 0).
    Void { pending_id: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Transfer {
    /// The idempotency key.
    pub id: String,
    pub kind: TransferKind,
    pub amount_minor: i64,
    pub currency: Currency,
    /// Event time, milliseconds since the epoch.
    pub time_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferOutcome {
    Posted,
    Reserved {
        expires_at_ms: i64,
    },
    /// A pending transfer posted; `released_minor` of its hold went back.
    Captured {
        released_minor: i64,
    },
    Voided,
}

/// How a pending transfer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    Posted,
    Voided,
    Expired,
}

#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferError {
    #[error("amount {0} must be positive (zero for a void)")]
    InvalidAmount(i64),
    #[error("debit and credit are the same account {0:?}")]
    SameAccount(String),
    #[error("unknown account {0:?}")]
    UnknownAccount(String),
    #[error("account {account:?} holds {expected}, the transfer is in {found}")]
    CurrencyMismatch { account: String, expected: Currency, found: Currency },
    #[error("account {account:?} has {available_minor} available, the transfer needs {requested_minor}")]
    ExceedsLimit { account: String, available_minor: i64, requested_minor: i64 },
    #[error("no pending transfer {0:?}")]
    UnknownPending(String),
    #[error("pending transfer {pending_id:?} was already {resolution:?}")]
    PendingResolved { pending_id: String, resolution: Resolution },
    #[error("pending transfer {pending_id:?} holds {held_minor}, cannot post {requested_minor}")]
    PostExceedsHold { pending_id: String, held_minor: i64, requested_minor: i64 },
    #[error("pending transfer timeout {0} ms must be positive")]
    InvalidTimeout(i64),
    #[error("transfer {0:?} was seen before with different content")]
    IdConflict(String),
    #[error("balance overflow on account {0:?}")]
    Overflow(String),
}

#[derive(Serialize, Deserialize)]
struct Hold {
    debit: String,
    credit: String,
    amount_minor: i64,
    expires_at_ms: i64,
    resolution: Option<Resolution>,
}

#[derive(Serialize, Deserialize)]
struct Seen {
    content: Transfer,
    result: Result<TransferOutcome, TransferError>,
}

/// The accounts of one partition, its holds, and the transfer ids it remembers.
///
/// Bytes: an account ≈ 120 + its id and owner; a hold ≈ 100 + its id and accounts' ids
/// (kept after it ends, to answer a late capture, until [`Accounts::forget_resolved_before`]).
#[derive(Serialize, Deserialize)]
pub struct Accounts {
    accounts: HashMap<String, Account>,
    holds: HashMap<String, Hold>,
    /// Open holds by expiry.
    expiries: BTreeSet<(i64, String)>,
    /// Ended holds in the order they ended, with the time, for forgetting them.
    resolved: VecDeque<(i64, String)>,
    seen: HashMap<String, Seen>,
    /// Ids in the order seen, with their time, for retention.
    seen_order: VecDeque<(i64, String)>,
    /// How long (event time) an id is remembered; older ids may be reused.
    pub id_retention_ms: i64,
}

impl Accounts {
    pub fn new(id_retention_ms: i64) -> Accounts {
        Accounts {
            accounts: HashMap::new(),
            holds: HashMap::new(),
            expiries: BTreeSet::new(),
            resolved: VecDeque::new(),
            seen: HashMap::new(),
            seen_order: VecDeque::new(),
            id_retention_ms,
        }
    }

    /// Opens an account; an id already open keeps the account it has.
    pub fn open(&mut self, account: Account) {
        self.accounts.entry(account.id.clone()).or_insert(account);
    }

    pub fn get(&self, id: &str) -> Option<&Account> {
        self.accounts.get(id)
    }

    /// Changes an open account's overdraft limit (`None`: unlimited). A limit lowered
    /// below what the account already owes refuses further debits; credits still apply.
    pub fn set_overdraft_limit(&mut self, id: &str, limit_minor: Option<i64>) {
        if let Some(account) = self.accounts.get_mut(id) {
            account.overdraft_limit_minor = limit_minor;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    /// Applies a transfer once: an id seen (within the retention) returns its first
    /// outcome without changing anything, or `IdConflict` if the content differs.
    pub fn apply(&mut self, transfer: &Transfer) -> Result<TransferOutcome, TransferError> {
        self.forget_before(transfer.time_ms.saturating_sub(self.id_retention_ms));
        if let Some(seen) = self.seen.get(&transfer.id) {
            if seen.content != *transfer {
                return Err(TransferError::IdConflict(transfer.id.clone()));
            }
            return seen.result.clone();
        }
        let result = self.execute(transfer);
        self.seen.insert(transfer.id.clone(), Seen { content: transfer.clone(), result: result.clone() });
        self.seen_order.push_back((transfer.time_ms, transfer.id.clone()));
        result
    }

    /// Voids every pending transfer whose timeout has passed at `now_ms`; returns their ids.
    pub fn expire(&mut self, now_ms: i64) -> Vec<String> {
        let mut expired = Vec::new();
        while let Some((expires_at_ms, id)) = self.expiries.first().cloned() {
            if expires_at_ms > now_ms {
                break;
            }
            self.expiries.pop_first();
            self.release(&id, Resolution::Expired, 0, now_ms);
            expired.push(id);
        }
        expired
    }

    /// Forgets holds that ended before `time_ms`: a capture or void naming one later is
    /// refused as `UnknownPending` instead of `PendingResolved`.
    pub fn forget_resolved_before(&mut self, time_ms: i64) {
        while self.resolved.front().is_some_and(|(t, _)| *t < time_ms) {
            let (_, id) = self.resolved.pop_front().expect("checked front");
            self.holds.remove(&id);
        }
    }

    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// Holds not yet posted, voided or expired.
    pub fn open_holds(&self) -> usize {
        self.expiries.len()
    }

    fn forget_before(&mut self, time_ms: i64) {
        while self.seen_order.front().is_some_and(|(t, _)| *t < time_ms) {
            let (_, id) = self.seen_order.pop_front().expect("checked front");
            self.seen.remove(&id);
        }
    }

    /// Applies a transfer without remembering its id (the caller deduplicates): the same
    /// transfers in the same order always give the same outcomes and state. A refused
    /// transfer changes nothing, except that a post or void naming a hold past its expiry
    /// expires the hold.
    pub fn execute(&mut self, transfer: &Transfer) -> Result<TransferOutcome, TransferError> {
        let amount = transfer.amount_minor;
        match &transfer.kind {
            TransferKind::Single { debit, credit } => {
                self.check_pair(debit, credit, transfer.currency, amount)?;
                self.check_limit(debit, amount)?;
                self.check_add(debit, |b| b.debits_posted, amount)?;
                self.check_add(credit, |b| b.credits_posted, amount)?;
                let (debit, credit) = (debit.clone(), credit.clone());
                self.add(&debit, |b| &mut b.debits_posted, amount);
                self.add(&credit, |b| &mut b.credits_posted, amount);
                Ok(TransferOutcome::Posted)
            }
            TransferKind::Pending { debit, credit, timeout_ms } => {
                if *timeout_ms <= 0 {
                    return Err(TransferError::InvalidTimeout(*timeout_ms));
                }
                self.check_pair(debit, credit, transfer.currency, amount)?;
                self.check_limit(debit, amount)?;
                self.check_add(debit, |b| b.debits_pending, amount)?;
                self.check_add(credit, |b| b.credits_pending, amount)?;
                let (debit, credit) = (debit.clone(), credit.clone());
                self.add(&debit, |b| &mut b.debits_pending, amount);
                self.add(&credit, |b| &mut b.credits_pending, amount);
                let expires_at_ms = transfer.time_ms.saturating_add(*timeout_ms);
                self.holds.insert(
                    transfer.id.clone(),
                    Hold { debit, credit, amount_minor: amount, expires_at_ms, resolution: None },
                );
                self.expiries.insert((expires_at_ms, transfer.id.clone()));
                Ok(TransferOutcome::Reserved { expires_at_ms })
            }
            TransferKind::Post { pending_id } => {
                let (debit, held_minor) = self.open_hold(pending_id, transfer.time_ms)?;
                if amount <= 0 {
                    return Err(TransferError::InvalidAmount(amount));
                }
                if amount > held_minor {
                    return Err(TransferError::PostExceedsHold {
                        pending_id: pending_id.clone(),
                        held_minor,
                        requested_minor: amount,
                    });
                }
                self.check_currency(&debit, transfer.currency)?;
                self.release(pending_id, Resolution::Posted, amount, transfer.time_ms);
                Ok(TransferOutcome::Captured { released_minor: held_minor - amount })
            }
            TransferKind::Void { pending_id } => {
                let (debit, _) = self.open_hold(pending_id, transfer.time_ms)?;
                if amount != 0 {
                    return Err(TransferError::InvalidAmount(amount));
                }
                self.check_currency(&debit, transfer.currency)?;
                self.release(pending_id, Resolution::Voided, 0, transfer.time_ms);
                Ok(TransferOutcome::Voided)
            }
        }
    }

    /// The debit account and amount of a hold still open at `time_ms` (a hold past its
    /// expiry is expired first).
    fn open_hold(&mut self, pending_id: &str, time_ms: i64) -> Result<(String, i64), TransferError> {
        let Some(hold) = self.holds.get(pending_id) else {
            return Err(TransferError::UnknownPending(pending_id.to_string()));
        };
        if hold.resolution.is_none() && hold.expires_at_ms <= time_ms {
            self.expiries.remove(&(hold.expires_at_ms, pending_id.to_string()));
            let expires_at_ms = hold.expires_at_ms;
            self.release(pending_id, Resolution::Expired, 0, expires_at_ms);
        }
        let hold = &self.holds[pending_id];
        match hold.resolution {
            Some(resolution) => Err(TransferError::PendingResolved { pending_id: pending_id.to_string(), resolution }),
            None => Ok((hold.debit.clone(), hold.amount_minor)),
        }
    }

    /// Ends a hold at `time_ms`: its pending amounts go, and `posted_minor` of it is posted.
    fn release(&mut self, pending_id: &str, resolution: Resolution, posted_minor: i64, time_ms: i64) {
        let hold = self.holds.get_mut(pending_id).expect("a hold being released exists");
        hold.resolution = Some(resolution);
        self.resolved.push_back((time_ms, pending_id.to_string()));
        let (debit, credit, held) = (hold.debit.clone(), hold.credit.clone(), hold.amount_minor);
        if resolution != Resolution::Expired {
            self.expiries.remove(&(hold.expires_at_ms, pending_id.to_string()));
        }
        // Cannot overflow: posting moves at most what the pending counters already held.
        let debit = self.accounts.get_mut(&debit).expect("hold accounts exist");
        debit.balances.debits_pending -= held;
        debit.balances.debits_posted += posted_minor;
        let credit = self.accounts.get_mut(&credit).expect("hold accounts exist");
        credit.balances.credits_pending -= held;
        credit.balances.credits_posted += posted_minor;
    }

    fn check_pair(&self, debit: &str, credit: &str, currency: Currency, amount: i64) -> Result<(), TransferError> {
        if amount <= 0 {
            return Err(TransferError::InvalidAmount(amount));
        }
        if debit == credit {
            return Err(TransferError::SameAccount(debit.to_string()));
        }
        self.check_currency(debit, currency)?;
        self.check_currency(credit, currency)
    }

    fn check_currency(&self, id: &str, currency: Currency) -> Result<(), TransferError> {
        let account = self.accounts.get(id).ok_or_else(|| TransferError::UnknownAccount(id.to_string()))?;
        if account.currency != currency {
            return Err(TransferError::CurrencyMismatch {
                account: id.to_string(),
                expected: account.currency,
                found: currency,
            });
        }
        Ok(())
    }

    fn check_limit(&self, debit: &str, amount: i64) -> Result<(), TransferError> {
        let account = &self.accounts[debit];
        match account.available_minor() {
            Some(available) if available < amount => Err(TransferError::ExceedsLimit {
                account: debit.to_string(),
                available_minor: available,
                requested_minor: amount,
            }),
            _ => Ok(()),
        }
    }

    fn check_add(&self, id: &str, counter: impl Fn(&Balances) -> i64, amount: i64) -> Result<(), TransferError> {
        match counter(&self.accounts[id].balances).checked_add(amount) {
            Some(_) => Ok(()),
            None => Err(TransferError::Overflow(id.to_string())),
        }
    }

    /// Adds to a counter checked by [`Accounts::check_add`].
    fn add(&mut self, id: &str, counter: impl Fn(&mut Balances) -> &mut i64, amount: i64) {
        let account = self.accounts.get_mut(id).expect("checked account");
        *counter(&mut account.balances) += amount;
        debug_assert!(account.within_limit());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EUR: Currency = Currency::EUR;

    fn accounts() -> Accounts {
        let mut accounts = Accounts::new(86_400_000);
        accounts.open(Account::new("bank", EUR, AccountKind::External, "bank"));
        accounts.open(Account::new("wallet:c1", EUR, AccountKind::CustomerWallet, "c1"));
        accounts.open(Account::new("merchant:m1", EUR, AccountKind::Merchant, "m1"));
        accounts
    }

    fn transfer(id: &str, kind: TransferKind, amount_minor: i64, time_ms: i64) -> Transfer {
        Transfer { id: id.into(), kind, amount_minor, currency: EUR, time_ms }
    }

    fn single(id: &str, debit: &str, credit: &str, amount: i64) -> Transfer {
        transfer(id, TransferKind::Single { debit: debit.into(), credit: credit.into() }, amount, 0)
    }

    fn hold(id: &str, amount: i64, time_ms: i64) -> Transfer {
        let kind = TransferKind::Pending { debit: "wallet:c1".into(), credit: "merchant:m1".into(), timeout_ms: 1_000 };
        transfer(id, kind, amount, time_ms)
    }

    fn post(id: &str, pending: &str, amount: i64, time_ms: i64) -> Transfer {
        transfer(id, TransferKind::Post { pending_id: pending.into() }, amount, time_ms)
    }

    #[test]
    fn a_wallet_cannot_go_below_zero_and_holds_reserve_funds() {
        let mut a = accounts();
        let refused = a.apply(&single("t1", "wallet:c1", "merchant:m1", 1)).unwrap_err();
        assert!(matches!(refused, TransferError::ExceedsLimit { available_minor: 0, requested_minor: 1, .. }));
        assert_eq!(a.apply(&single("top-up", "bank", "wallet:c1", 10_000)), Ok(TransferOutcome::Posted));
        assert_eq!(a.apply(&hold("h1", 6_000, 0)), Ok(TransferOutcome::Reserved { expires_at_ms: 1_000 }));
        // The hold is not available any more: 4,000 is.
        let refused = a.apply(&hold("h2", 4_001, 0)).unwrap_err();
        assert!(matches!(refused, TransferError::ExceedsLimit { available_minor: 4_000, .. }));
        // Partial capture: 5,000 posted, 1,000 released.
        assert_eq!(a.apply(&post("p1", "h1", 5_000, 10)), Ok(TransferOutcome::Captured { released_minor: 1_000 }));
        let wallet = a.get("wallet:c1").unwrap();
        assert_eq!(
            (wallet.balance_minor(), wallet.balances.debits_pending, wallet.available_minor()),
            (5_000, 0, Some(5_000))
        );
        assert_eq!(a.get("merchant:m1").unwrap().balance_minor(), 5_000);
        // Resolved once only.
        let again = a.apply(&post("p2", "h1", 1, 20)).unwrap_err();
        assert!(matches!(again, TransferError::PendingResolved { resolution: Resolution::Posted, .. }));
    }

    #[test]
    fn holds_void_expire_and_cannot_be_posted_beyond_their_amount() {
        let mut a = accounts();
        a.apply(&single("top-up", "bank", "wallet:c1", 10_000)).unwrap();
        a.apply(&hold("h1", 3_000, 0)).unwrap();
        let too_much = a.apply(&post("p1", "h1", 3_001, 1)).unwrap_err();
        assert!(matches!(too_much, TransferError::PostExceedsHold { held_minor: 3_000, requested_minor: 3_001, .. }));
        let void = transfer("v1", TransferKind::Void { pending_id: "h1".into() }, 0, 2);
        assert_eq!(a.apply(&void), Ok(TransferOutcome::Voided));
        assert_eq!(a.get("wallet:c1").unwrap().available_minor(), Some(10_000));

        a.apply(&hold("h2", 2_000, 100)).unwrap();
        assert_eq!(a.expire(1_099), Vec::<String>::new());
        assert_eq!(a.expire(1_100), ["h2"]);
        assert_eq!(a.get("wallet:c1").unwrap().balances.debits_pending, 0);
        let late = a.apply(&post("p2", "h2", 1, 1_200)).unwrap_err();
        assert!(matches!(late, TransferError::PendingResolved { resolution: Resolution::Expired, .. }));
        // A post arriving after the expiry time expires the hold even before expire() runs.
        a.apply(&hold("h3", 1_000, 2_000)).unwrap();
        let late = a.apply(&post("p3", "h3", 1_000, 3_000)).unwrap_err();
        assert!(matches!(late, TransferError::PendingResolved { resolution: Resolution::Expired, .. }));
        assert!(a.expire(10_000).is_empty(), "an expired hold is not expired twice");
    }

    #[test]
    fn an_id_seen_again_returns_its_first_outcome_and_other_content_is_refused() {
        let mut a = accounts();
        let refused = a.apply(&single("t1", "wallet:c1", "merchant:m1", 500)).unwrap_err();
        a.apply(&single("top-up", "bank", "wallet:c1", 10_000)).unwrap();
        // The retry returns the original refusal, even though funds are there now.
        assert_eq!(a.apply(&single("t1", "wallet:c1", "merchant:m1", 500)), Err(refused));
        assert_eq!(a.apply(&single("top-up", "bank", "wallet:c1", 10_000)), Ok(TransferOutcome::Posted));
        assert_eq!(a.get("wallet:c1").unwrap().balance_minor(), 10_000, "the retry moved nothing");
        assert_eq!(
            a.apply(&single("top-up", "bank", "wallet:c1", 9_999)),
            Err(TransferError::IdConflict("top-up".into()))
        );
        // After the retention, the id may be used again.
        let mut later = single("top-up", "bank", "wallet:c1", 1);
        later.time_ms = 86_400_001;
        assert_eq!(a.apply(&later), Ok(TransferOutcome::Posted));
    }

    #[test]
    fn bad_transfers_are_refused_with_their_reason() {
        let mut a = accounts();
        assert_eq!(a.apply(&single("a", "bank", "bank", 1)), Err(TransferError::SameAccount("bank".into())));
        assert_eq!(a.apply(&single("b", "bank", "nobody", 1)), Err(TransferError::UnknownAccount("nobody".into())));
        assert_eq!(a.apply(&single("c", "bank", "wallet:c1", 0)), Err(TransferError::InvalidAmount(0)));
        let mut usd = single("d", "bank", "wallet:c1", 1);
        usd.currency = Currency::USD;
        assert!(matches!(a.apply(&usd), Err(TransferError::CurrencyMismatch { .. })));
        let no_timeout = TransferKind::Pending { debit: "bank".into(), credit: "wallet:c1".into(), timeout_ms: 0 };
        assert_eq!(a.apply(&transfer("e", no_timeout, 1, 0)), Err(TransferError::InvalidTimeout(0)));
        assert_eq!(a.apply(&post("f", "nothing", 1, 0)), Err(TransferError::UnknownPending("nothing".into())));
    }
}
