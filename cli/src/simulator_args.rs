//! The simulator's flags (population, days, seed) and the publisher's (currency, label
//! delay, rate, wallets).

use anyhow::{Context, Result, bail};
use clap::Args;
use paystream_domain::Currency;
use paystream_domain::time::MILLIS_PER_DAY;
use paystream_simulator::SimulatorConfig;

use crate::publish::PublishOptions;

#[derive(Args, Clone, Debug)]
pub struct SimulatorArgs {
    #[arg(long, default_value_t = 5_000)]
    pub customers: u32,
    #[arg(long, default_value_t = 10_000)]
    pub terminals: u32,
    /// Simulated days [default: 183, the reference run].
    #[arg(long)]
    pub days: Option<u32>,
    /// First simulated day (YYYY-MM-DD).
    #[arg(long, default_value = "2018-04-01")]
    pub start_date: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SimulatorArgs {
    pub fn config(&self, default_days: u32) -> Result<SimulatorConfig> {
        let days = self.days.unwrap_or(default_days);
        let start_days = paystream_domain::time::parse_date_days(&self.start_date)
            .with_context(|| format!("--start-date must be a calendar date YYYY-MM-DD, got {}", self.start_date))?;
        let (year, month, day) = paystream_domain::time::civil_from_days(start_days);
        if self.customers == 0 || self.terminals == 0 || days == 0 {
            bail!("--customers, --terminals and --days must be positive");
        }
        Ok(SimulatorConfig {
            customers: self.customers,
            terminals: self.terminals,
            days,
            start_date: (year, month, day),
            seed: self.seed,
            ..SimulatorConfig::default()
        })
    }
}

#[derive(Args, Clone, Debug)]
pub struct PublishArgs {
    /// ISO 4217 currency of simulated or CSV amounts.
    #[arg(long, default_value = "EUR")]
    pub currency: String,
    /// Fraud labels arrive this many days (event time) after their payment.
    #[arg(long, default_value_t = 7)]
    pub label_delay_days: u32,
    /// Publish at most this many payments per second.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Group numeric terminal ids into merchants of this many terminals (merchant
    /// M<terminal / n>); 1 makes each terminal its own merchant.
    #[arg(long, default_value_t = 10)]
    pub terminals_per_merchant: u32,
    /// Also publish a (genuine) label for every payment that is not fraud; by default
    /// only fraud is reported, as chargebacks and fraud reports are.
    #[arg(long)]
    pub genuine_labels: bool,
    /// This share of customers (0-100, by a hash of the id) pays from a paystream wallet:
    /// top-ups when the wallet runs low, 1 payment in 5 as an authorization and its
    /// capture, 1 in 20 half refunded, 1 in 25 followed by 5.00 sent to another customer.
    /// Default: 20 for `demo`, 0 otherwise (CSV replays stay the handbook's card payments).
    #[arg(long)]
    pub wallet_customers_percent: Option<u32>,
}

impl PublishArgs {
    /// The options, with `wallet_customers_percent` defaulting to `default_wallet_percent`.
    pub fn options(&self, default_wallet_percent: u32) -> Result<PublishOptions> {
        let wallet_customers_percent = self.wallet_customers_percent.unwrap_or(default_wallet_percent);
        if wallet_customers_percent > 100 {
            bail!("--wallet-customers-percent is a percentage (0-100), not {wallet_customers_percent}");
        }
        Ok(PublishOptions {
            currency: Currency::from_code(&self.currency)?,
            label_delay_ms: i64::from(self.label_delay_days) * MILLIS_PER_DAY,
            rate_per_second: self.rate.filter(|r| *r > 0),
            terminals_per_merchant: self.terminals_per_merchant.max(1),
            genuine_labels: self.genuine_labels,
            wallet_customers_percent,
        })
    }
}
