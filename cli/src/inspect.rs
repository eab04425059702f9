//! Reading whole topics back: `paystream log dump` and the run summaries.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result};
use base64::Engine as _;
use paystream_domain::{Decision, LedgerTransaction, Outcome, Settlement};
use paystream_pipeline::log::{Log, Record, Topic};

/// Records fetched per call while scanning a topic.
const SCAN_RECORDS_MAX: usize = 8_192;

/// Calls `visit` for every committed record of `topic` (partition by partition) or of
/// one partition.
pub fn scan(
    log: &dyn Log,
    topic: &Topic,
    partition: Option<u32>,
    mut visit: impl FnMut(u32, &Record) -> Result<()>,
) -> Result<()> {
    let partitions: Vec<u32> = match partition {
        Some(p) => vec![p],
        None => (0..topic.partitions).collect(),
    };
    for p in partitions {
        let mut offset = log.offsets(topic, p)?.start;
        loop {
            let records = log.fetch(topic, p, offset, SCAN_RECORDS_MAX)?;
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            for record in &records {
                visit(p, record)?;
            }
        }
    }
    Ok(())
}

/// `paystream log dump`: one JSON object per record, like `kcat -C -J`.
pub fn dump(log: &dyn Log, topic: &Topic, partition: Option<u32>, out: &mut impl Write) -> Result<u64> {
    let mut count = 0;
    scan(log, topic, partition, |p, record| {
        let value = match std::str::from_utf8(&record.value) {
            Ok(text) => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(json) => serde_json::json!({ "value": json }),
                Err(_) => serde_json::json!({ "value_text": text }),
            },
            Err(_) => {
                serde_json::json!({ "value_base64": base64::engine::general_purpose::STANDARD.encode(&record.value) })
            }
        };
        let mut line = serde_json::json!({
            "topic": &*topic.name,
            "partition": p,
            "offset": record.offset,
            "timestamp_ms": record.timestamp_ms,
            "key": String::from_utf8_lossy(&record.key),
        });
        if let (Some(line), Some(value)) = (line.as_object_mut(), value.as_object()) {
            line.extend(value.clone());
        }
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
        count += 1;
        Ok(())
    })?;
    Ok(count)
}

/// Totals of one currency over closed settlement windows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SettlementTotals {
    pub windows: u64,
    pub payments: u64,
    pub late_payments: u64,
    pub gross_minor: i128,
    pub fees_minor: i128,
    /// Refunds and chargebacks.
    pub returns_minor: i128,
    pub net_minor: i128,
}

/// What the output topics say, checked.
#[derive(Clone, Debug, Default)]
pub struct OutputSummary {
    pub decisions: BTreeMap<Outcome, u64>,
    pub decided: Vec<(String, Outcome)>,
    /// Declines by the ledger's reason (insufficient_funds, …).
    pub ledger_declines: BTreeMap<String, u64>,
    pub ledger_transactions: u64,
    pub ledger_by_kind: BTreeMap<paystream_domain::TransactionKind, u64>,
    pub unbalanced_transactions: u64,
    /// Sum of signed postings per currency; all zero when the ledger balances.
    pub posting_sums: BTreeMap<String, i128>,
    pub settlements: BTreeMap<String, SettlementTotals>,
    pub dead_letters: BTreeMap<String, u64>,
    /// Every closed settlement against the postings that name it.
    pub reconciliation: paystream_operators::settlement::Reconciliation,
    /// Decisions carrying velocity features, and the most payments seen at one merchant
    /// and from one device in an hour.
    pub velocity_decisions: u64,
    pub merchant_tx_1h_max: u64,
    pub device_tx_1h_max: u64,
}

impl OutputSummary {
    pub fn ledger_balanced(&self) -> bool {
        self.unbalanced_transactions == 0 && self.posting_sums.values().all(|s| *s == 0)
    }
}

pub fn summarize_outputs(log: &dyn Log, topics: &paystream_pipeline::PipelineTopics) -> Result<OutputSummary> {
    let mut summary = OutputSummary::default();
    scan(log, &topics.decisions, None, |_, record| {
        let decision: Decision = serde_json::from_slice(&record.value).context("decode decision")?;
        *summary.decisions.entry(decision.outcome).or_default() += 1;
        if let Some(reason) =
            decision.reasons.first().filter(|r| paystream_operators::ledger::DeclineReason::from_code(r).is_some())
        {
            *summary.ledger_declines.entry(reason.to_string()).or_default() += 1;
        }
        if let Some(velocity) = decision.velocity {
            summary.velocity_decisions += 1;
            summary.merchant_tx_1h_max = summary.merchant_tx_1h_max.max(velocity.merchant_tx_1h.unwrap_or(0));
            summary.device_tx_1h_max = summary.device_tx_1h_max.max(velocity.device_tx_1h.unwrap_or(0));
        }
        summary.decided.push((decision.payment_id, decision.outcome));
        Ok(())
    })?;
    let mut settlements = Vec::new();
    scan(log, &topics.settlements, None, |_, record| {
        settlements.push(serde_json::from_slice::<Settlement>(&record.value).context("decode settlement")?);
        Ok(())
    })?;
    let mut reconciler = paystream_operators::settlement::Reconciler::new(settlements);
    scan(log, &topics.ledger, None, |_, record| {
        let transaction: LedgerTransaction =
            serde_json::from_slice(&record.value).context("decode ledger transaction")?;
        reconciler.add(&transaction);
        let sum: i128 = transaction.postings.iter().map(|p| i128::from(p.signed_minor_units())).sum();
        summary.ledger_transactions += 1;
        *summary.ledger_by_kind.entry(transaction.kind).or_default() += 1;
        if sum != 0 {
            summary.unbalanced_transactions += 1;
        }
        *summary.posting_sums.entry(transaction.currency.code().to_string()).or_default() += sum;
        Ok(())
    })?;
    summary.reconciliation = reconciler.finish();
    scan(log, &topics.settlements, None, |_, record| {
        let settlement: Settlement = serde_json::from_slice(&record.value).context("decode settlement")?;
        let totals = summary.settlements.entry(settlement.currency.code().to_string()).or_default();
        totals.windows += 1;
        totals.payments += settlement.payment_count;
        totals.late_payments += settlement.late_payment_count;
        totals.gross_minor += settlement.gross_minor;
        totals.fees_minor += settlement.fees_minor;
        totals.returns_minor += settlement.refunds_minor + settlement.chargebacks_minor;
        totals.net_minor += settlement.net_minor;
        Ok(())
    })?;
    scan(log, &topics.dead_letters, None, |_, record| {
        let letter: serde_json::Value = serde_json::from_slice(&record.value).context("decode dead letter")?;
        let reason = letter.get("reason").and_then(|r| r.as_str()).unwrap_or("unknown").to_string();
        *summary.dead_letters.entry(reason).or_default() += 1;
        Ok(())
    })?;
    Ok(summary)
}
