//! The feature vector every paystream fraud model reads, in this order. The feature
//! operators (`paystream-operators`) compute it online; training, backtests and the live
//! pipeline all use the same operators, so a model sees in production exactly the
//! features it was trained on.
//!
//! The first 15 are the fraud handbook's reference features; the rest are paystream's
//! additions, each computable from what the stream has delivered by the payment's event
//! time. Amounts are in major units (minor units / 100).

pub const REFERENCE_FEATURE_COUNT: usize = 15;
pub const EXTRA_FEATURE_COUNT: usize = 7;
pub const FEATURE_COUNT: usize = REFERENCE_FEATURE_COUNT + EXTRA_FEATURE_COUNT;

/// One payment's features, in [`FEATURE_NAMES`] order.
pub type FeatureRow = [f64; FEATURE_COUNT];

/// Names in vector order (the reference ones are the handbook's column names).
pub const FEATURE_NAMES: [&str; FEATURE_COUNT] = [
    "TX_AMOUNT",
    "TX_DURING_WEEKEND",
    "TX_DURING_NIGHT",
    "CUSTOMER_ID_NB_TX_1DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW",
    "CUSTOMER_ID_NB_TX_7DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW",
    "CUSTOMER_ID_NB_TX_30DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW",
    "TERMINAL_ID_NB_TX_1DAY_WINDOW",
    "TERMINAL_ID_RISK_1DAY_WINDOW",
    "TERMINAL_ID_NB_TX_7DAY_WINDOW",
    "TERMINAL_ID_RISK_7DAY_WINDOW",
    "TERMINAL_ID_NB_TX_30DAY_WINDOW",
    "TERMINAL_ID_RISK_30DAY_WINDOW",
    // Amount over the customer's average of the previous 30 days (1 without history).
    "AMOUNT_TO_CUSTOMER_AVG_30DAY_RATIO",
    // Hours since the customer's previous payment (capped at 720).
    "CUSTOMER_HOURS_SINCE_PREVIOUS_TX",
    // 1 when the customer has not paid at this terminal in the previous 30 days.
    "CUSTOMER_NEW_TERMINAL_30DAY",
    // Payments at the terminal in the day before this one, undelayed (terminal velocity).
    "TERMINAL_ID_NB_TX_1DAY_NOW",
    // Amount over the largest of the customer's previous 30 days (1 without history).
    "AMOUNT_TO_CUSTOMER_MAX_30DAY_RATIO",
    // The customer's previous payments in the last 14 days above 3 times its previous
    // 30-day average (a card being drained pays several such amounts).
    "CUSTOMER_NB_TX_ABOVE_3X_AVG_14DAY",
    // Payments at the terminal after its newest known fraud, up to the label delay: the
    // newest fraud in (t − d − 30 days, t − d] reported by t, payments in (fraud, t − d];
    // −1 when there is none. 0 is a terminal whose every known payment since is fraud.
    "TERMINAL_ID_NB_TX_SINCE_KNOWN_FRAUD",
];

pub const REFERENCE_FEATURE_NAMES: &[&str] = FEATURE_NAMES.split_at(REFERENCE_FEATURE_COUNT).0;
pub const EXTRA_FEATURE_NAMES: &[&str] = FEATURE_NAMES.split_at(REFERENCE_FEATURE_COUNT).1;

/// Positions in [`FeatureRow`] that code reads by name.
pub mod index {
    pub const TX_AMOUNT: usize = 0;
    pub const TX_DURING_WEEKEND: usize = 1;
    pub const TX_DURING_NIGHT: usize = 2;
    /// Customer windows: count and average for 1, 7, 30 days at `CUSTOMER_WINDOWS + 2 i`.
    pub const CUSTOMER_WINDOWS: usize = 3;
    pub const CUSTOMER_NB_TX_1DAY: usize = 3;
    pub const CUSTOMER_NB_TX_30DAY: usize = 7;
    /// Terminal windows: count and risk for 1, 7, 30 days at `TERMINAL_WINDOWS + 2 i`.
    pub const TERMINAL_WINDOWS: usize = 9;
    pub const AMOUNT_TO_CUSTOMER_AVG_30DAY_RATIO: usize = 15;
    pub const CUSTOMER_HOURS_SINCE_PREVIOUS_TX: usize = 16;
    pub const CUSTOMER_NEW_TERMINAL_30DAY: usize = 17;
    pub const TERMINAL_NB_TX_1DAY_NOW: usize = 18;
    pub const AMOUNT_TO_CUSTOMER_MAX_30DAY_RATIO: usize = 19;
    pub const CUSTOMER_NB_TX_ABOVE_3X_AVG_14DAY: usize = 20;
    pub const TERMINAL_NB_TX_SINCE_KNOWN_FRAUD: usize = 21;
}

/// Whether feature `i` is keyed by terminal (computed from every partition's payments
/// and the label stream, not from the payer's own partition).
pub fn is_terminal_feature(i: usize) -> bool {
    (index::TERMINAL_WINDOWS..index::TERMINAL_WINDOWS + 6).contains(&i)
        || i == index::TERMINAL_NB_TX_1DAY_NOW
        || i == index::TERMINAL_NB_TX_SINCE_KNOWN_FRAUD
}

/// The position of a feature by name.
pub fn feature_index(name: &str) -> Option<usize> {
    FEATURE_NAMES.iter().position(|n| *n == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_indices_agree() {
        assert_eq!(REFERENCE_FEATURE_NAMES.len(), 15);
        assert_eq!(EXTRA_FEATURE_NAMES[0], "AMOUNT_TO_CUSTOMER_AVG_30DAY_RATIO");
        assert_eq!(feature_index("CUSTOMER_ID_NB_TX_1DAY_WINDOW"), Some(index::CUSTOMER_NB_TX_1DAY));
        assert_eq!(feature_index("CUSTOMER_ID_NB_TX_30DAY_WINDOW"), Some(index::CUSTOMER_NB_TX_30DAY));
        assert_eq!(feature_index("TERMINAL_ID_NB_TX_1DAY_WINDOW"), Some(index::TERMINAL_WINDOWS));
        assert_eq!(feature_index("TERMINAL_ID_NB_TX_1DAY_NOW"), Some(index::TERMINAL_NB_TX_1DAY_NOW));
        assert_eq!(feature_index("CUSTOMER_NEW_TERMINAL_30DAY"), Some(index::CUSTOMER_NEW_TERMINAL_30DAY));
        let terminal: Vec<&str> =
            (0..FEATURE_COUNT).filter(|&i| is_terminal_feature(i)).map(|i| FEATURE_NAMES[i]).collect();
        assert!(terminal.iter().all(|n| n.starts_with("TERMINAL_")), "{terminal:?}");
        assert_eq!(terminal.len(), 8);
        assert_eq!(feature_index("TERMINAL_ID_NB_TX_SINCE_KNOWN_FRAUD"), Some(index::TERMINAL_NB_TX_SINCE_KNOWN_FRAUD));
        assert_eq!(feature_index("CUSTOMER_NB_TX_ABOVE_3X_AVG_14DAY"), Some(index::CUSTOMER_NB_TX_ABOVE_3X_AVG_14DAY));
    }
}
