//! Inputs: publishing simulated transactions and replaying files into the input topics.

use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use paystream_domain::event::INPUT_RECORD_BYTES_MAX;
use paystream_domain::event::PaymentWire;
use paystream_domain::money::format_minor_units;
use paystream_domain::time::{format_rfc3339_ms, parse_handbook_datetime_ms};
use paystream_domain::{Currency, DeadLetter, FraudLabel, Money, RejectReason, Rejection};
use paystream_pipeline::PipelineTopics;
use paystream_pipeline::clock::now_ms;
use paystream_pipeline::log::{Log, RECORD_BYTES_MAX, Transaction};
use paystream_simulator::csv::CsvLayout;
use paystream_simulator::{SimulatorConfig, Transaction as SimTransaction};
use std::borrow::Cow;

/// Records per producer commit.
pub const PUBLISH_BATCH_RECORDS_MAX: usize = 8_192;

#[derive(Clone, Debug)]
pub struct PublishOptions {
    pub currency: Currency,
    /// Labels are published this long (event time) after their payment.
    pub label_delay_ms: i64,
    /// Payments per second of wall time; `None` publishes as fast as possible.
    pub rate_per_second: Option<u64>,
    /// Numeric terminal ids are grouped into merchants of this many terminals
    /// (merchant `M<terminal / n>`); 1 makes every terminal its own merchant.
    pub terminals_per_merchant: u32,
    /// Also publish a label for every genuine payment. Off by default: the label stream
    /// carries fraud reports (chargebacks, confirmed fraud) and a payment without one is
    /// genuine, which is all the terminal features need.
    pub genuine_labels: bool,
    /// This share of customers (0–100, chosen by a hash of the id) pays from a wallet:
    /// see [`Publisher::wallet_payment`].
    pub wallet_customers_percent: u32,
}

/// A wallet customer's top-up: at least this much (minor units), or three times the
/// payment that needs it.
const WALLET_TOP_UP_MIN_MINOR: i64 = 50_000;

/// One event of a wallet customer's payment (see [`Publisher::wallet_payment`]).
struct WalletEvent<'a> {
    id: String,
    kind: &'a str,
    original: Option<&'a str>,
    amount_minor: i64,
    time_ms: i64,
    /// A payment to another customer's account instead of the merchant.
    payee: Option<String>,
}

/// What a wallet customer sends a friend now and then (1 payment in 25).
const WALLET_TRANSFER_MINOR: i64 = 500;

/// The merchant of a handbook terminal: `M<terminal / terminals_per_merchant>` for
/// numeric ids, the terminal itself otherwise.
pub fn merchant_of(terminal: &str, terminals_per_merchant: u32) -> Cow<'_, str> {
    match terminal.parse::<u64>() {
        Ok(id) if terminals_per_merchant > 1 => Cow::Owned(format!("M{}", id / u64::from(terminals_per_merchant))),
        _ => Cow::Borrowed(terminal),
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Transactions (rows) published; a wallet customer's may be several events.
    pub payments: u64,
    /// Records on the payments topic: payments and their top-ups, captures, refunds.
    pub events: u64,
    pub labels: u64,
    pub dead_letters: u64,
    /// CSV amounts with more decimals than the currency has, published rounded to the
    /// nearest minor unit (the handbook layout's amounts are floats).
    pub rounded_amounts: u64,
}

/// A payment event v1 for a handbook-style transaction.
#[allow(clippy::too_many_arguments)] // the event's fields, each its own argument
fn payment_json(
    out: &mut Vec<u8>,
    payment_id: &str,
    customer: &str,
    terminal: &str,
    merchant: &str,
    amount: &str,
    currency: Currency,
    event_time_ms: i64,
) -> Result<()> {
    let wire = PaymentWire {
        schema: None,
        kind: None,
        payment_id: Cow::Borrowed(payment_id),
        original_payment_id: None,
        payer_account_id: Cow::Borrowed(customer),
        payee_account_id: None,
        merchant_id: Some(Cow::Borrowed(merchant)),
        terminal_id: Some(Cow::Borrowed(terminal)),
        amount: Cow::Borrowed(amount),
        currency: Cow::Borrowed(currency.code()),
        event_time: Cow::Owned(format_rfc3339_ms(event_time_ms)),
        channel: Cow::Borrowed("card_present"),
        device_id: None,
        geo: None,
    };
    serde_json::to_writer(out, &wire)?;
    Ok(())
}

/// Publishes payments and, `label_delay_ms` of event time later, their labels, in the
/// order a live system would see them. Paces to `rate_per_second` if set.
struct Publisher<'a> {
    log: &'a dyn Log,
    topics: &'a PipelineTopics,
    options: &'a PublishOptions,
    transaction: Transaction,
    pending_labels: std::collections::VecDeque<(i64, FraudLabel)>,
    report: PublishReport,
    started: Instant,
    progress: &'a AtomicU64,
    value: Vec<u8>,
    /// What each wallet customer's wallet holds, as far as the publisher knows (declined
    /// payments leave more).
    wallets: std::collections::HashMap<String, i64>,
}

impl<'a> Publisher<'a> {
    fn new(
        log: &'a dyn Log,
        topics: &'a PipelineTopics,
        options: &'a PublishOptions,
        progress: &'a AtomicU64,
    ) -> Publisher<'a> {
        Publisher {
            log,
            topics,
            options,
            transaction: Transaction::new(),
            pending_labels: Default::default(),
            report: PublishReport::default(),
            started: Instant::now(),
            progress,
            value: Vec::with_capacity(512),
            wallets: Default::default(),
        }
    }

    fn is_wallet_customer(&self, customer: &str) -> bool {
        xxhash_rust::xxh3::xxh3_64(customer.as_bytes()) % 100 < u64::from(self.options.wallet_customers_percent)
    }

    /// A wallet customer's payment: a top-up first when the wallet would not cover it;
    /// then, by a hash of the payment id, an authorization and its full capture (1 in 5)
    /// or a wallet payment; for 1 in 20, a refund of half of it; for 1 in 25, 5.00 sent
    /// to another customer's wallet. The authorization or payment carries `payment_id`
    /// (labels name it); the others add `-top-up`, `-capture`, `-refund`, `-p2p`. Event
    /// times stay in order: +1, +2, +3 ms.
    fn wallet_payment(
        &mut self,
        payment_id: &str,
        customer: &str,
        terminal: &str,
        amount: &str,
        time_ms: i64,
    ) -> Result<()> {
        let currency = self.options.currency;
        let amount_minor = paystream_domain::Money::parse(amount, currency)
            .with_context(|| format!("payment {payment_id}: amount {amount:?}"))?
            .minor_units();
        let merchant = merchant_of(terminal, self.options.terminals_per_merchant).into_owned();
        let balance = self.wallets.entry(customer.to_string()).or_insert(0);
        let mut events: Vec<WalletEvent<'_>> = Vec::with_capacity(5);
        if *balance < amount_minor + WALLET_TRANSFER_MINOR {
            let top_up = WALLET_TOP_UP_MIN_MINOR.max(amount_minor.saturating_mul(3));
            *balance += top_up;
            events.push(WalletEvent {
                id: format!("{payment_id}-top-up"),
                kind: "top_up",
                original: None,
                amount_minor: top_up,
                time_ms,
                payee: None,
            });
        }
        *balance -= amount_minor;
        let roll = xxhash_rust::xxh3::xxh3_64(payment_id.as_bytes()) % 100;
        if roll < 20 {
            events.push(WalletEvent {
                id: payment_id.to_string(),
                kind: "authorize",
                original: None,
                amount_minor,
                time_ms,
                payee: None,
            });
            events.push(WalletEvent {
                id: format!("{payment_id}-capture"),
                kind: "capture",
                original: Some(payment_id),
                amount_minor,
                time_ms: time_ms + 1,
                payee: None,
            });
        } else {
            events.push(WalletEvent {
                id: payment_id.to_string(),
                kind: "payment",
                original: None,
                amount_minor,
                time_ms,
                payee: None,
            });
        }
        if roll % 20 == 7 {
            let half = (amount_minor / 2).max(1);
            *balance += half;
            events.push(WalletEvent {
                id: format!("{payment_id}-refund"),
                kind: "refund",
                original: Some(payment_id),
                amount_minor: half,
                time_ms: time_ms + 2,
                payee: None,
            });
        }
        if roll % 25 == 3 {
            // Money to a friend: another customer's wallet, on that customer's partition.
            let friend = format!("{}", xxhash_rust::xxh3::xxh3_64(payment_id.as_bytes()) % 5_000);
            if friend != customer {
                *balance -= WALLET_TRANSFER_MINOR;
                let id = format!("{payment_id}-p2p");
                events.push(WalletEvent {
                    id,
                    kind: "payment",
                    original: None,
                    amount_minor: WALLET_TRANSFER_MINOR,
                    time_ms: time_ms + 3,
                    payee: Some(friend),
                });
            }
        }
        self.send_wallet_events(events, customer, terminal, &merchant)
    }

    /// Publishes a wallet customer's events as payment records.
    fn send_wallet_events(
        &mut self,
        events: Vec<WalletEvent<'_>>,
        customer: &str,
        terminal: &str,
        merchant: &str,
    ) -> Result<()> {
        let currency = self.options.currency;
        for WalletEvent { id, kind, original, amount_minor: minor, time_ms: time, payee } in events {
            let digits = currency.minor_unit_digits();
            let wire = PaymentWire {
                schema: None,
                kind: (kind != "payment").then_some(Cow::Borrowed(kind)),
                payment_id: Cow::Borrowed(&id),
                original_payment_id: original.map(Cow::Borrowed),
                payer_account_id: Cow::Borrowed(customer),
                payee_account_id: payee.as_deref().map(Cow::Borrowed),
                merchant_id: (kind != "top_up" && payee.is_none()).then_some(Cow::Borrowed(merchant)),
                terminal_id: (kind != "top_up" && payee.is_none()).then_some(Cow::Borrowed(terminal)),
                amount: Cow::Owned(format_minor_units(minor, digits)),
                currency: Cow::Borrowed(currency.code()),
                event_time: Cow::Owned(format_rfc3339_ms(time)),
                channel: Cow::Borrowed(if kind == "top_up" { "bank_transfer" } else { "wallet" }),
                device_id: None,
                geo: None,
            };
            self.value.clear();
            serde_json::to_writer(&mut self.value, &wire)?;
            self.transaction.send(&self.topics.payments, customer.as_bytes(), &self.value, now_ms())?;
            self.report.events += 1;
        }
        Ok(())
    }

    fn payment(
        &mut self,
        payment_id: &str,
        customer: &str,
        terminal: &str,
        amount: &str,
        event_time_ms: i64,
        is_fraud: bool,
    ) -> Result<()> {
        while self.pending_labels.front().is_some_and(|(due, _)| *due <= event_time_ms) {
            let (_, label) = self.pending_labels.pop_front().expect("checked non-empty");
            self.label(&label)?;
        }
        if self.is_wallet_customer(customer) {
            self.wallet_payment(payment_id, customer, terminal, amount, event_time_ms)?;
        } else {
            self.value.clear();
            let merchant = merchant_of(terminal, self.options.terminals_per_merchant);
            payment_json(
                &mut self.value,
                payment_id,
                customer,
                terminal,
                &merchant,
                amount,
                self.options.currency,
                event_time_ms,
            )?;
            self.transaction.send(&self.topics.payments, customer.as_bytes(), &self.value, now_ms())?;
            self.report.events += 1;
        }
        self.report.payments += 1;
        if !is_fraud && !self.options.genuine_labels {
            return self.maybe_flush();
        }
        let reported_ms = event_time_ms + self.options.label_delay_ms;
        self.pending_labels.push_back((
            reported_ms,
            FraudLabel {
                payment_id: payment_id.to_string(),
                is_fraud,
                reported_at: format_rfc3339_ms(reported_ms),
                payer_account_id: Some(customer.to_string()),
                terminal_id: Some(terminal.to_string()),
                payment_event_time: Some(format_rfc3339_ms(event_time_ms)),
            },
        ));
        self.maybe_flush()
    }

    fn label(&mut self, label: &FraudLabel) -> Result<()> {
        self.value.clear();
        serde_json::to_writer(&mut self.value, label)?;
        let key = label.payer_account_id.as_deref().unwrap_or_default().as_bytes();
        self.transaction.send(&self.topics.labels, key, &self.value, now_ms())?;
        self.report.labels += 1;
        Ok(())
    }

    /// A line the log cannot take as one record (within `INPUT_RECORD_BYTES_MAX` of
    /// `RECORD_BYTES_MAX`, leaving room for its key) goes to the dead-letter topic as
    /// `record_too_large` with its line number; true if it did. Smaller lines over the
    /// input limit are published, and the pipeline dead-letters them.
    fn dead_letter_if_too_large(&mut self, source: &str, line_number: u64, line: &str) -> Result<bool> {
        if line.len() + INPUT_RECORD_BYTES_MAX <= RECORD_BYTES_MAX {
            return Ok(false);
        }
        let detail =
            format!("line {line_number}: {} bytes exceed the log's record limit of {RECORD_BYTES_MAX}", line.len());
        let rejection = Rejection::new(RejectReason::RecordTooLarge, detail);
        let letter = DeadLetter::new(rejection, source, 0, line_number, &[], line.as_bytes());
        self.dead_letter(&letter)?;
        Ok(true)
    }

    fn dead_letter(&mut self, letter: &DeadLetter) -> Result<()> {
        self.value.clear();
        serde_json::to_writer(&mut self.value, letter)?;
        self.transaction.send_to_partition(&self.topics.dead_letters, 0, &[], &self.value, now_ms())?;
        self.report.dead_letters += 1;
        Ok(())
    }

    fn maybe_flush(&mut self) -> Result<()> {
        let batch = match self.options.rate_per_second {
            // Small batches keep a paced stream smooth: about 1 ms of payments each.
            Some(rate) => (rate / 1_000).clamp(1, PUBLISH_BATCH_RECORDS_MAX as u64) as usize,
            None => PUBLISH_BATCH_RECORDS_MAX,
        };
        if self.transaction.record_count() as usize >= batch {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(rate) = self.options.rate_per_second {
            let due = Duration::from_secs_f64(self.report.payments as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let transaction = std::mem::take(&mut self.transaction);
        self.log.commit(transaction).context("commit published records")?;
        self.progress.store(self.report.payments, Ordering::Relaxed);
        Ok(())
    }

    fn finish(mut self) -> Result<PublishReport> {
        while let Some((_, label)) = self.pending_labels.pop_front() {
            self.label(&label)?;
            if self.transaction.record_count() as usize >= PUBLISH_BATCH_RECORDS_MAX {
                self.flush()?;
            }
        }
        self.flush()?;
        Ok(self.report)
    }
}

/// Publishes simulated transactions (already generated) with their delayed labels.
pub fn publish_simulation(
    log: &dyn Log,
    topics: &PipelineTopics,
    config: &SimulatorConfig,
    transactions: &[SimTransaction],
    options: &PublishOptions,
    progress: &AtomicU64,
    stop: &AtomicBool,
) -> Result<PublishReport> {
    let mut publisher = Publisher::new(log, topics, options, progress);
    let mut amount = String::new();
    for t in transactions {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        amount.clear();
        amount.push_str(&format_minor_units(t.amount_cents, options.currency.minor_unit_digits().min(2)));
        publisher.payment(
            &t.transaction_id.to_string(),
            &t.customer_id.to_string(),
            &t.terminal_id.to_string(),
            &amount,
            t.event_time_ms(config),
            t.is_fraud,
        )?;
    }
    publisher.finish()
}

/// Replays a file into the input topics: the handbook CSV layout (labels from
/// `TX_FRAUD`) or JSON lines of payment events (published byte for byte; the pipeline
/// validates them). Unreadable CSV rows go to the dead-letter topic.
pub fn replay(
    log: &dyn Log,
    topics: &PipelineTopics,
    path: &std::path::Path,
    options: &PublishOptions,
    progress: &AtomicU64,
) -> Result<PublishReport> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut lines = std::io::BufReader::with_capacity(1 << 20, file).lines();
    let Some(first) = lines.next().transpose().context("read first line")? else {
        return Ok(PublishReport::default());
    };
    let mut publisher = Publisher::new(log, topics, options, progress);
    let source = path.display().to_string();
    if first.trim_start().starts_with('{') {
        #[derive(serde::Deserialize)]
        struct KeyOnly<'a> {
            #[serde(borrow)]
            payer_account_id: Option<Cow<'a, str>>,
        }
        for (number, line) in std::iter::once(Ok(first)).chain(lines).enumerate() {
            let line = line.context("read line")?;
            if line.trim().is_empty() {
                continue;
            }
            if publisher.dead_letter_if_too_large(&source, number as u64 + 1, &line)? {
                continue;
            }
            // The key only picks the partition; a line without a readable payer goes to
            // the partition of the empty key and is rejected there by validation.
            let key =
                serde_json::from_str::<KeyOnly<'_>>(&line).ok().and_then(|k| k.payer_account_id).unwrap_or_default();
            publisher.transaction.send(&topics.payments, key.as_bytes(), line.as_bytes(), now_ms())?;
            publisher.report.payments += 1;
            publisher.report.events += 1;
            publisher.maybe_flush()?;
        }
        return publisher.finish();
    }
    let layout = CsvLayout::from_header(&first)
        .with_context(|| format!("{}: not the handbook CSV layout nor JSON lines", path.display()))?;
    for (number, line) in lines.enumerate() {
        let line = line.context("read line")?;
        let line_number = number as u64 + 2;
        if line.trim().is_empty() || publisher.dead_letter_if_too_large(&source, line_number, &line)? {
            continue;
        }
        let currency = options.currency;
        let parsed = layout.parse_row(&line).map_err(|e| e.to_string()).and_then(|row| {
            let event_time_ms = parse_handbook_datetime_ms(row.datetime).map_err(|e| e.to_string())?;
            let (amount, rounded) = Money::parse_rounded(row.amount, currency).map_err(|e| e.to_string())?;
            Ok((row, event_time_ms, amount, rounded))
        });
        match parsed {
            Ok((row, event_time_ms, amount, rounded)) => {
                publisher.report.rounded_amounts += u64::from(rounded);
                let amount = format_minor_units(amount.minor_units(), currency.minor_unit_digits());
                publisher.payment(
                    row.transaction_id,
                    row.customer_id,
                    row.terminal_id,
                    &amount,
                    event_time_ms,
                    row.is_fraud,
                )?
            }
            Err(why) => {
                let rejection = Rejection::new(RejectReason::MalformedCsvRow, format!("line {line_number}: {why}"));
                let letter = DeadLetter::new(rejection, &source, 0, line_number, &[], line.as_bytes());
                publisher.dead_letter(&letter)?;
            }
        }
    }
    publisher.finish()
}

/// Writes the simulation in the handbook CSV layout.
pub fn write_csv(path: &std::path::Path, config: &SimulatorConfig, transactions: &[SimTransaction]) -> Result<()> {
    use std::io::Write;
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    writeln!(out, "{}", paystream_simulator::csv::HEADER)?;
    let mut row = String::with_capacity(128);
    for t in transactions {
        row.clear();
        paystream_simulator::csv::write_row(&mut row, t, config);
        out.write_all(row.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}
