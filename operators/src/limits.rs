//! Every bound of the operators, in one place. Names end in their unit, then `_MAX`.
//!
//! A bound either keeps a feature's arithmetic in range (it changes features, never
//! money) or keeps a record or transaction under the log's record size.

/// Most payments remembered per customer: a customer paying more often than this over
/// 30 days has its oldest payments forgotten early (its 30-day count saturates here).
pub const CUSTOMER_HISTORY_ENTRIES_MAX: usize = 4_096;

/// Largest amount one payment adds to a customer's window sums (minor units). With at
/// most [`CUSTOMER_HISTORY_ENTRIES_MAX`] payments in a window, sums stay below 2⁶²: the
/// running sums never overflow. A larger payment counts as this much in the averages
/// (a feature, never money).
pub const WINDOW_AMOUNT_MINOR_MAX: i64 = 1 << 50;

/// The "hours since the previous payment" feature of a customer's first payment, and
/// its largest value.
pub const SINCE_PREVIOUS_PAYMENT_HOURS_MAX: f64 = 720.0;

/// Entries probed from the back of a window's entries before a binary search: the
/// terminal index usually runs only a little ahead of the payment being scored.
pub const BACKWARD_PROBES_ENTRIES_MAX: usize = 8;

/// Entries walked from a hint before a window count falls back to a binary search.
pub const HINT_WALK_ENTRIES_MAX: usize = 16;

/// Most settlement inputs in one record of `paystream-settlement-entries`: an entry is
/// at most about 400 bytes (two identifiers of at most 128 bytes), so a record stays
/// well under `RECORD_BYTES_MAX` (1 MiB).
pub const SETTLEMENT_INPUTS_PER_RECORD_MAX: usize = 1_024;

/// Most merchant legs in one `settle:` transaction; a window closing with more merchants
/// is paid out over several (each balanced), so a ledger record stays well under
/// `RECORD_BYTES_MAX` (about 80 bytes of JSON per leg).
pub const SETTLEMENT_LEGS_PER_TRANSACTION_MAX: usize = 4_096;

/// Highest fee rate (100 %), in basis points of the amount.
pub const FEE_RATE_BASIS_POINTS_MAX: u32 = 10_000;
