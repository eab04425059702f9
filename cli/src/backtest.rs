//! `paystream backtest FILE`: the handbook's reference protocol on a handbook-layout CSV.
//!
//! Features come from `paystream_operators::features` fed in event-time order
//! with the delayed label stream (a label arrives `--delay-days` after its payment), so a
//! transaction only sees labels that had arrived by its event time. Then: train on
//! `--train-days` from `--train-start`, skip `--delay-days`, test on `--test-days`,
//! removing cards already known to be compromised (frauds of the training week, plus
//! each test day's frauds known by then), and report ROC AUC, average precision and
//! Card Precision@k (per day and mean).

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use paystream_domain::time::{MILLIS_PER_DAY, parse_date_days, parse_handbook_datetime_ms};
use paystream_domain::{Currency, Money};
use paystream_models::metrics::{ScoredTransaction, average_precision, card_precision_at_k, roc_auc};
use paystream_models::{MODEL_KINDS, TrainedModel};
use paystream_operators::features::{
    FEATURE_NAMES, PaymentKeys, REFERENCE_FEATURE_COUNT, REFERENCE_FEATURE_NAMES, ReferenceFeatures,
};
use paystream_simulator::csv::CsvLayout;

#[derive(Args)]
pub struct BacktestArgs {
    /// A CSV in the handbook layout (`paystream generate --csv FILE` writes one).
    file: PathBuf,
    /// First day of the training window (YYYY-MM-DD).
    #[arg(long, default_value = "2018-07-25")]
    train_start: String,
    #[arg(long, default_value_t = 7)]
    train_days: u32,
    /// Days between training and test windows; also how late fraud labels arrive.
    #[arg(long, default_value_t = 7)]
    delay_days: u32,
    #[arg(long, default_value_t = 7)]
    test_days: u32,
    /// Model kind: `gbt` (paystream's histogram gradient-boosted trees) or `logistic`
    /// (linfa-logistic, standardized features).
    #[arg(long, default_value = "gbt")]
    model: String,
    /// Feature set: `reference` (the handbook's 15) or `extended` (plus amount vs the
    /// customer's 30-day average and largest, the customer's recent payments above 3
    /// times its average, hours since the customer's previous payment, new terminal for
    /// the customer, terminal velocity, payments at the terminal since its newest known
    /// fraud).
    #[arg(long, default_value = "extended")]
    features: String,
    /// Cards per day for Card Precision@k.
    #[arg(long, default_value_t = 100)]
    top_k: usize,
    /// Write `TRANSACTION_ID,score` for every test transaction here.
    #[arg(long)]
    scores: Option<PathBuf>,
    /// Write the trained model file (JSON) here.
    #[arg(long)]
    model_out: Option<PathBuf>,
}

struct Row {
    transaction_id: String,
    customer: String,
    terminal: String,
    event_time_ms: i64,
    amount_minor: i64,
    is_fraud: bool,
}

/// The file's rows sorted by time; unreadable rows are reported on stderr and left out.
fn read_rows(path: &PathBuf) -> Result<Vec<Row>> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut lines = std::io::BufReader::with_capacity(1 << 20, file).lines();
    let header = lines.next().context("empty file")??;
    let layout = CsvLayout::from_header(&header)?;
    let (mut rows, mut skipped, mut rounded) = (Vec::new(), 0u64, 0u64);
    for (n, line) in lines.enumerate() {
        let line = line?;
        let parsed = layout.parse_row(&line).map_err(|e| e.to_string()).and_then(|row| {
            let time = parse_handbook_datetime_ms(row.datetime).map_err(|e| e.to_string())?;
            // The layout's amounts are floats: read as the nearest cent, and counted.
            let (amount, was_rounded) = Money::parse_rounded(row.amount, Currency::EUR).map_err(|e| e.to_string())?;
            rounded += u64::from(was_rounded);
            // The pipeline dead-letters these (non_positive_amount), so its feature
            // operators never see them; neither do training and backtests.
            if amount.minor_units() <= 0 {
                return Err(format!("amount {} is not positive (the pipeline dead-letters it)", row.amount));
            }
            Ok(Row {
                transaction_id: row.transaction_id.to_string(),
                customer: row.customer_id.to_string(),
                terminal: row.terminal_id.to_string(),
                event_time_ms: time,
                amount_minor: amount.minor_units(),
                is_fraud: row.is_fraud,
            })
        });
        match parsed {
            Ok(row) => rows.push(row),
            Err(why) => {
                skipped += 1;
                if skipped <= 5 {
                    eprintln!("warning: line {} skipped: {why}", n + 2);
                }
            }
        }
    }
    rows.sort_by_key(|r| r.event_time_ms);
    if rounded > 0 {
        eprintln!("note: {rounded} amounts had more decimals than a cent and were rounded to the nearest cent");
    }
    if skipped > 0 {
        eprintln!("warning: {skipped} rows could not be read and are left out");
    }
    Ok(rows)
}

/// Payments between expiries of idle customers and terminals.
const IDLE_EXPIRY_EVENTS: usize = 65_536;

/// Parses `--features` into (extended?, names in vector order).
fn feature_set(features: &str) -> Result<(bool, Vec<&'static str>)> {
    match features {
        "reference" => Ok((false, REFERENCE_FEATURE_NAMES.to_vec())),
        "extended" => Ok((true, FEATURE_NAMES.to_vec())),
        other => bail!("--features {other}: use reference or extended"),
    }
}

/// Every row's features, computed online in event time by the feature operator, with
/// each label arriving `delay_ms` after its payment.
fn online_features(rows: &[Row], delay_ms: i64, extended: bool) -> Vec<Vec<f64>> {
    let mut state = ReferenceFeatures::new(delay_ms);
    let mut labels: VecDeque<(i64, usize)> = VecDeque::new();
    let mut features: Vec<Vec<f64>> = Vec::with_capacity(rows.len());
    let keys: Vec<PaymentKeys> =
        rows.iter().map(|r| PaymentKeys::new(&r.transaction_id, &r.customer, &r.terminal)).collect();
    for (i, row) in rows.iter().enumerate() {
        while let Some(&(reported_ms, j)) = labels.front() {
            if reported_ms > row.event_time_ms {
                break;
            }
            labels.pop_front();
            let labelled = &rows[j];
            state.observe_label(&labelled.transaction_id, labelled.is_fraud, reported_ms);
        }
        state.prefetch_ahead(&keys, i);
        let f = state.observe(keys[i], row.event_time_ms, row.amount_minor);
        features.push(if extended { f.to_vec() } else { f[..REFERENCE_FEATURE_COUNT].to_vec() });
        labels.push_back((row.event_time_ms + delay_ms, i));
        if i % IDLE_EXPIRY_EVENTS == 0 {
            state.expire_idle(row.event_time_ms);
        }
    }
    features
}

/// Trains a model of `kind` on simulated transactions, their features computed by the
/// same operators as in the pipeline (labels arriving `delay_ms` late).
pub fn train_on_simulation(
    transactions: &[paystream_simulator::Transaction],
    config: &paystream_simulator::SimulatorConfig,
    kind: &str,
    delay_ms: i64,
) -> Result<TrainedModel> {
    check_model_kind(kind)?;
    let rows: Vec<Row> = transactions
        .iter()
        .filter(|t| t.amount_cents > 0) // the pipeline dead-letters the others
        .map(|t| Row {
            transaction_id: t.transaction_id.to_string(),
            customer: t.customer_id.to_string(),
            terminal: t.terminal_id.to_string(),
            event_time_ms: t.event_time_ms(config),
            amount_minor: t.amount_cents,
            is_fraud: t.is_fraud,
        })
        .collect();
    let features = online_features(&rows, delay_ms, true);
    let labels: Vec<bool> = rows.iter().map(|r| r.is_fraud).collect();
    let description = format!("simulation seed {}: {} days, {} transactions", config.seed, config.days, rows.len());
    let mut model = TrainedModel::train(kind, &FEATURE_NAMES, &features, &labels, &description)?;
    model.set_label_delay_ms(delay_ms);
    Ok(model)
}

fn check_model_kind(kind: &str) -> Result<()> {
    if !MODEL_KINDS.contains(&kind) {
        bail!("--model {kind}: use one of {}", MODEL_KINDS.join(", "));
    }
    Ok(())
}

#[derive(Args)]
pub struct TrainArgs {
    /// A CSV in the handbook layout.
    file: PathBuf,
    /// Where to write the model file (JSON).
    #[arg(long)]
    out: PathBuf,
    /// First training day (YYYY-MM-DD); default: the first day of the data.
    #[arg(long)]
    train_start: Option<String>,
    /// Training days; default: through the end of the data.
    #[arg(long)]
    train_days: Option<u32>,
    /// How late fraud labels arrive (also the terminal-risk delay).
    #[arg(long, default_value_t = 7)]
    delay_days: u32,
    /// `logistic` or `gbt`.
    #[arg(long, default_value = "gbt")]
    model: String,
    /// `reference` or `extended`.
    #[arg(long, default_value = "extended")]
    features: String,
}

/// `paystream train`: replays a data set through the feature operator, trains, and
/// writes a versioned model file.
pub fn train(args: TrainArgs) -> Result<()> {
    check_model_kind(&args.model)?;
    let (extended, feature_names) = feature_set(&args.features)?;
    let started = Instant::now();
    let rows = read_rows(&args.file)?;
    let Some(first) = rows.first() else { bail!("{} has no transactions", args.file.display()) };
    let features = online_features(&rows, i64::from(args.delay_days) * MILLIS_PER_DAY, extended);
    let day_of = |row: &Row| row.event_time_ms.div_euclid(MILLIS_PER_DAY);
    let start = match &args.train_start {
        Some(date) => parse_date_days(date)?,
        None => day_of(first),
    };
    let end = args.train_days.map_or(i64::MAX, |days| start + i64::from(days));
    let chosen: Vec<usize> = (0..rows.len()).filter(|&i| (start..end).contains(&day_of(&rows[i]))).collect();
    let train_rows: Vec<Vec<f64>> = chosen.iter().map(|&i| features[i].clone()).collect();
    let labels: Vec<bool> = chosen.iter().map(|&i| rows[i].is_fraud).collect();
    let description = format!("{}: {} transactions from day {start}", args.file.display(), chosen.len());
    let mut model = TrainedModel::train(&args.model, &feature_names, &train_rows, &labels, &description)?;
    model.set_label_delay_ms(i64::from(args.delay_days) * MILLIS_PER_DAY);
    std::fs::write(&args.out, model.to_json()).with_context(|| format!("write {}", args.out.display()))?;
    println!(
        "trained {} ({}) on {} transactions ({} frauds) in {:.1} s; wrote {}",
        model.version(),
        model.kind(),
        chosen.len(),
        model.training_frauds(),
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

/// The reference protocol's split: training days from `--train-start`, then, after the
/// label delay, test days without the cards known to be compromised by then. Returns
/// the row indices of the training and the test set.
fn reference_split(rows: &[Row], args: &BacktestArgs) -> Result<(Vec<usize>, Vec<usize>)> {
    let day_of = |row: &Row| row.event_time_ms.div_euclid(MILLIS_PER_DAY);
    let train_start = parse_date_days(&args.train_start)?;
    let train_end = train_start + i64::from(args.train_days);
    let train: Vec<usize> = (0..rows.len()).filter(|&i| (train_start..train_end).contains(&day_of(&rows[i]))).collect();
    let mut known_compromised: HashSet<&str> =
        train.iter().filter(|&&i| rows[i].is_fraud).map(|&i| rows[i].customer.as_str()).collect();
    let mut test: Vec<usize> = Vec::new();
    for k in 0..i64::from(args.test_days) {
        let test_day = train_end + i64::from(args.delay_days) + k;
        // Frauds of the day `delay` before this test day are known by now.
        let known_day = train_end + k - 1;
        known_compromised
            .extend(rows.iter().filter(|r| day_of(r) == known_day && r.is_fraud).map(|r| r.customer.as_str()));
        test.extend(
            (0..rows.len())
                .filter(|&i| day_of(&rows[i]) == test_day && !known_compromised.contains(rows[i].customer.as_str())),
        );
    }
    if train.is_empty() || test.is_empty() {
        bail!("the data has no transactions in the training or test window; check --train-start");
    }

    Ok((train, test))
}

pub fn backtest(args: BacktestArgs) -> Result<()> {
    check_model_kind(&args.model)?;
    let (extended, feature_names) = feature_set(&args.features)?;
    let started = Instant::now();
    let rows = read_rows(&args.file)?;
    let delay_ms = i64::from(args.delay_days) * MILLIS_PER_DAY;
    let features = online_features(&rows, delay_ms, extended);
    let feature_seconds = started.elapsed().as_secs_f64();

    let day_of = |row: &Row| row.event_time_ms.div_euclid(MILLIS_PER_DAY);
    let (train, test) = reference_split(&rows, &args)?;

    let train_rows: Vec<Vec<f64>> = train.iter().map(|&i| features[i].clone()).collect();
    let train_labels: Vec<bool> = train.iter().map(|&i| rows[i].is_fraud).collect();
    let description = format!(
        "{}: train {} + {} days, delay {} days",
        args.file.display(),
        args.train_start,
        args.train_days,
        args.delay_days
    );
    let mut model = TrainedModel::train(&args.model, &feature_names, &train_rows, &train_labels, &description)?;
    model.set_label_delay_ms(delay_ms);
    let test_rows: Vec<Vec<f64>> = test.iter().map(|&i| features[i].clone()).collect();
    let scores = model.score_batch(&test_rows)?;
    let test_labels: Vec<bool> = test.iter().map(|&i| rows[i].is_fraud).collect();
    let auc = roc_auc(&scores, &test_labels);
    let ap = average_precision(&scores, &test_labels);
    let scored: Vec<ScoredTransaction<'_>> = test
        .iter()
        .zip(&scores)
        .map(|(&i, &score)| ScoredTransaction {
            day: day_of(&rows[i]),
            card: &rows[i].customer,
            score,
            is_fraud: rows[i].is_fraud,
        })
        .collect();
    let (per_day, card_precision) = card_precision_at_k(&scored, args.top_k);

    if let Some(path) = &args.scores {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        writeln!(out, "TRANSACTION_ID,score")?;
        for (&i, score) in test.iter().zip(&scores) {
            writeln!(out, "{},{score}", rows[i].transaction_id)?;
        }
        out.flush()?;
    }
    if let Some(path) = &args.model_out {
        std::fs::write(path, model.to_json())?;
    }
    let format = |m: Option<f64>| m.map_or("n/a".to_string(), |v| format!("{v:.3}"));
    println!(
        "backtest {} ({} transactions, features in {feature_seconds:.1} s, total {:.1} s)",
        args.file.display(),
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "  model          {} ({}, {} features: {})",
        model.version(),
        model.kind(),
        feature_names.len(),
        args.features
    );
    println!(
        "  train          {} transactions, {} frauds, from {} for {} days",
        train.len(),
        model.training_frauds(),
        args.train_start,
        args.train_days
    );
    println!(
        "  test           {} transactions, {} frauds, after a {}-day delay, {} days, known-compromised cards removed",
        test.len(),
        test_labels.iter().filter(|l| **l).count(),
        args.delay_days,
        args.test_days
    );
    println!("  ROC AUC        {}", format(auc));
    println!("  avg precision  {}", format(ap));
    println!("  CP@{:<3}         {card_precision:.3}", args.top_k);
    let days: Vec<String> = per_day.iter().map(|(_, p)| format!("{p:.2}")).collect();
    println!("  CP@{} per day  {}", args.top_k, days.join(" "));
    Ok(())
}
