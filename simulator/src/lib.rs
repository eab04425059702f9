//! The reference card-fraud transaction simulator of *Reproducible Machine Learning for
//! Credit Card Fraud Detection — Practical Handbook* (chapter 3), implemented from its
//! description (see `shared/docs/fraud-simulator.md`), deterministic by seed, plus the
//! handbook CSV layout. Pure computation: the caller does any IO.

pub mod csv;
pub mod rng;

use paystream_domain::time::{MILLIS_PER_DAY, days_from_civil};
use rng::Rng;

/// Parameters of one simulated data set.
#[derive(Clone, Debug)]
pub struct SimulatorConfig {
    pub customers: u32,
    pub terminals: u32,
    pub days: u32,
    /// First simulated day, as (year, month, day).
    pub start_date: (i64, u32, u32),
    /// Customers use terminals closer than this (Euclidean, on the 100×100 grid).
    pub radius: f64,
    pub seed: u64,
}

impl Default for SimulatorConfig {
    /// The reference run: 5,000 customers, 10,000 terminals, 183 days from 2018-04-01.
    fn default() -> Self {
        SimulatorConfig {
            customers: 5_000,
            terminals: 10_000,
            days: 183,
            start_date: (2018, 4, 1),
            radius: 5.0,
            seed: 0,
        }
    }
}

impl SimulatorConfig {
    pub fn start_ms(&self) -> i64 {
        let (year, month, day) = self.start_date;
        days_from_civil(year, month, day) * MILLIS_PER_DAY
    }
}

/// One simulated transaction, in the handbook's terms. Amounts are integer cents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub transaction_id: u64,
    /// Seconds since the start of the first day.
    pub time_seconds: i64,
    pub customer_id: u32,
    pub terminal_id: u32,
    pub amount_cents: i64,
    pub is_fraud: bool,
    /// 0 genuine, 1 amount > 220, 2 compromised terminal, 3 compromised customer.
    pub fraud_scenario: u8,
}

impl Transaction {
    pub fn day(&self) -> i64 {
        self.time_seconds.div_euclid(86_400)
    }

    pub fn event_time_ms(&self, config: &SimulatorConfig) -> i64 {
        config.start_ms() + self.time_seconds * 1_000
    }
}

struct CustomerProfile {
    x: f64,
    y: f64,
    mean_amount: f64,
    std_amount: f64,
    mean_transactions_per_day: f64,
    available_terminals: Vec<u32>,
}

/// Stream identifiers, so each stage draws from its own random stream.
const STREAM_CUSTOMERS: u64 = 1;
const STREAM_TERMINALS: u64 = 2;
const STREAM_TRANSACTIONS: u64 = 3;
const STREAM_TERMINAL_FRAUD: u64 = 4;
const STREAM_CUSTOMER_FRAUD: u64 = 5;

/// Scenario 1: every transaction above this amount (cents) is fraud.
pub const SCENARIO_1_AMOUNT_CENTS_MIN_EXCLUSIVE: i64 = 22_000;
pub const SCENARIO_2_TERMINALS_PER_DAY: usize = 2;
pub const SCENARIO_2_DAYS: i64 = 28;
pub const SCENARIO_3_CUSTOMERS_PER_DAY: usize = 3;
pub const SCENARIO_3_DAYS: i64 = 14;

/// Generates the whole data set, sorted by time, with fraud scenarios applied.
pub fn simulate(config: &SimulatorConfig) -> Vec<Transaction> {
    let mut rng = Rng::for_stream(config.seed, STREAM_TERMINALS);
    let terminals: Vec<(f64, f64)> =
        (0..config.terminals).map(|_| (rng.uniform_range(0.0, 100.0), rng.uniform_range(0.0, 100.0))).collect();
    let mut rng = Rng::for_stream(config.seed, STREAM_CUSTOMERS);
    let customers: Vec<CustomerProfile> = (0..config.customers)
        .map(|_| {
            let (x, y) = (rng.uniform_range(0.0, 100.0), rng.uniform_range(0.0, 100.0));
            let mean_amount = rng.uniform_range(5.0, 100.0);
            let mean_transactions_per_day = rng.uniform_range(0.0, 4.0);
            let radius_squared = config.radius * config.radius;
            let available_terminals = terminals
                .iter()
                .enumerate()
                .filter(|(_, (tx, ty))| (tx - x).powi(2) + (ty - y).powi(2) < radius_squared)
                .map(|(id, _)| id as u32)
                .collect();
            CustomerProfile {
                x,
                y,
                mean_amount,
                std_amount: mean_amount / 2.0,
                mean_transactions_per_day,
                available_terminals,
            }
        })
        .collect();

    let mut transactions = Vec::new();
    for (customer_id, customer) in customers.iter().enumerate() {
        debug_assert!(customer.x >= 0.0 && customer.y >= 0.0);
        if customer.available_terminals.is_empty() {
            continue;
        }
        let mut rng = Rng::for_stream(config.seed, STREAM_TRANSACTIONS ^ ((customer_id as u64 + 1) << 8));
        for day in 0..i64::from(config.days) {
            let count = rng.poisson(customer.mean_transactions_per_day);
            for _ in 0..count {
                let time_of_day = rng.normal(43_200.0, 20_000.0) as i64;
                if !(time_of_day > 0 && time_of_day < 86_400) {
                    continue; // dropped, not redrawn, as in the handbook
                }
                let mut amount = rng.normal(customer.mean_amount, customer.std_amount);
                if amount < 0.0 {
                    amount = rng.uniform_range(0.0, customer.mean_amount * 2.0);
                }
                let amount_cents = (amount * 100.0).round() as i64;
                let terminal =
                    customer.available_terminals[rng.below(customer.available_terminals.len() as u64) as usize];
                transactions.push(Transaction {
                    transaction_id: 0,
                    time_seconds: day * 86_400 + time_of_day,
                    customer_id: customer_id as u32,
                    terminal_id: terminal,
                    amount_cents,
                    is_fraud: false,
                    fraud_scenario: 0,
                });
            }
        }
    }
    transactions.sort_by_key(|t| (t.time_seconds, t.customer_id, t.terminal_id));
    for (index, transaction) in transactions.iter_mut().enumerate() {
        transaction.transaction_id = index as u64;
    }
    apply_fraud_scenarios(config, &mut transactions);
    transactions
}

fn apply_fraud_scenarios(config: &SimulatorConfig, transactions: &mut [Transaction]) {
    // Scenario 1: large amounts.
    for t in transactions.iter_mut() {
        if t.amount_cents > SCENARIO_1_AMOUNT_CENTS_MIN_EXCLUSIVE {
            t.is_fraud = true;
            t.fraud_scenario = 1;
        }
    }
    // Index transactions by day for the windowed scenarios.
    let days = i64::from(config.days);
    let mut by_day: Vec<Vec<usize>> = vec![Vec::new(); config.days as usize];
    for (index, t) in transactions.iter().enumerate() {
        by_day[t.day() as usize].push(index);
    }
    // Scenario 2: two compromised terminals a day, for that day and the next 27.
    for day in 0..days {
        let mut rng = Rng::for_stream(config.seed, STREAM_TERMINAL_FRAUD ^ ((day as u64 + 1) << 8));
        let compromised = rng.sample_indices(config.terminals as usize, SCENARIO_2_TERMINALS_PER_DAY);
        for d in day..(day + SCENARIO_2_DAYS).min(days) {
            for &index in &by_day[d as usize] {
                if compromised.contains(&(transactions[index].terminal_id as usize)) {
                    transactions[index].is_fraud = true;
                    transactions[index].fraud_scenario = 2;
                }
            }
        }
    }
    // Scenario 3: three compromised customers a day; a third of their transactions over
    // that day and the next 13 get five times the amount and are fraud.
    for day in 0..days {
        let mut rng = Rng::for_stream(config.seed, STREAM_CUSTOMER_FRAUD ^ ((day as u64 + 1) << 8));
        let compromised = rng.sample_indices(config.customers as usize, SCENARIO_3_CUSTOMERS_PER_DAY);
        let candidates: Vec<usize> = (day..(day + SCENARIO_3_DAYS).min(days))
            .flat_map(|d| by_day[d as usize].iter().copied())
            .filter(|&index| compromised.contains(&(transactions[index].customer_id as usize)))
            .collect();
        let chosen = rng.sample_indices(candidates.len(), candidates.len() / 3);
        for position in chosen {
            let t = &mut transactions[candidates[position]];
            t.amount_cents *= 5;
            t.is_fraud = true;
            t.fraud_scenario = 3;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SimulatorConfig {
        SimulatorConfig { customers: 500, terminals: 1_000, days: 60, seed: 42, ..SimulatorConfig::default() }
    }

    #[test]
    fn deterministic_by_seed() {
        let a = simulate(&small());
        let b = simulate(&small());
        assert_eq!(a, b);
        let c = simulate(&SimulatorConfig { seed: 43, ..small() });
        assert_ne!(a, c);
    }

    #[test]
    fn matches_the_reference_shape() {
        let data = simulate(&small());
        // 500 customers × ~2 a day × 60 days, minus time-of-day draws outside the day
        // and customers with no terminal nearby.
        assert!((45_000..=65_000).contains(&data.len()), "{} transactions", data.len());
        assert!(data.windows(2).all(|w| w[0].time_seconds <= w[1].time_seconds));
        assert!(data.iter().enumerate().all(|(i, t)| t.transaction_id == i as u64));
        assert!(data.iter().all(|t| t.amount_cents >= 0 && (0..60).contains(&t.day())));
        let scenario = |s| data.iter().filter(|t| t.fraud_scenario == s).count();
        assert!(scenario(1) > 0 && scenario(2) > 0 && scenario(3) > 0);
        assert!(data.iter().filter(|t| t.fraud_scenario == 1).all(|t| t.amount_cents > 22_000 && t.is_fraud));
        let fraud_rate = data.iter().filter(|t| t.is_fraud).count() as f64 / data.len() as f64;
        // The handbook's reference run has ~0.84 %; with a tenth of the terminals
        // compromised terminals weigh more, so allow a wide band.
        assert!((0.002..0.08).contains(&fraud_rate), "fraud rate {fraud_rate}");
    }
}
