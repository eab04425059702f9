//! Fixtures shared by the criterion benchmarks in `benches/`.

use paystream_domain::Payment;
use paystream_simulator::{SimulatorConfig, simulate};

/// `count` payment events v1 as JSON bytes, from the reference simulator (seed 7).
pub fn payment_records(count: usize) -> Vec<Vec<u8>> {
    let config = SimulatorConfig { days: (count / 9_000 + 2) as u32, seed: 7, ..SimulatorConfig::default() };
    simulate(&config)
        .into_iter()
        .take(count)
        .map(|t| {
            let json = format!(
                r#"{{"payment_id":"{}","payer_account_id":"{}","merchant_id":"M{}","terminal_id":"{}","amount":"{}","currency":"EUR","event_time":"{}","channel":"card_present"}}"#,
                t.transaction_id,
                t.customer_id,
                t.terminal_id / 10,
                t.terminal_id,
                paystream_domain::money::format_minor_units(t.amount_cents.max(1), 2),
                paystream_domain::time::format_rfc3339_ms(t.event_time_ms(&config)),
            );
            debug_assert!(Payment::from_json(json.as_bytes()).is_ok());
            json.into_bytes()
        })
        .collect()
}

/// `count` events of wallet activity as JSON bytes: the simulator's payments (seed 7) paid
/// from wallets (`channel: wallet`), each customer's first preceded by a top-up that
/// funds all of them. Every event moves money: a top-up 2 postings, a payment 3.
pub fn wallet_records(count: usize) -> Vec<Vec<u8>> {
    let mut funded = std::collections::HashSet::new();
    let mut records = Vec::with_capacity(count);
    for payment in payment_records(count) {
        if records.len() + 2 > count {
            break;
        }
        let text = String::from_utf8(payment).expect("JSON is UTF-8");
        let parsed = Payment::from_json(text.as_bytes()).expect("valid");
        if funded.insert(parsed.payer_account_id.clone()) {
            let top_up = format!(
                r#"{{"type":"top_up","payment_id":"top-up-{}","payer_account_id":"{}","amount":"1000000.00","currency":"EUR","event_time":"{}","channel":"bank_transfer"}}"#,
                parsed.payer_account_id,
                parsed.payer_account_id,
                paystream_domain::time::format_rfc3339_ms(parsed.event_time_ms),
            );
            records.push(top_up.into_bytes());
        }
        records.push(text.replace(r#""channel":"card_present""#, r#""channel":"wallet""#).into_bytes());
    }
    records
}
