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
