//! What the runtime tests share.

use paystream_pipeline::log::{Log, Transaction};
use paystream_pipeline::{PipelineConfig, ensure_topics};

/// Publishes wallet payments `from..to` to `payments`, 100 per transaction: payment `i`
/// is `p<i>` by payer `c<i mod 37>` at one of 5 merchants, `spacing_ms` of event time
/// after the one before.
pub fn publish_payments(log: &dyn Log, config: &PipelineConfig, from: u32, to: u32, spacing_ms: i64) {
    let topics = ensure_topics(log, config).unwrap();
    for chunk in (from..to).collect::<Vec<_>>().chunks(100) {
        let mut transaction = Transaction::new();
        for &i in chunk {
            let payer = format!("c{}", i % 37);
            let value = format!(
                r#"{{"payment_id":"p{i}","payer_account_id":"{payer}","merchant_id":"m{}","terminal_id":"t","amount":"{}.00","currency":"EUR","event_time":"{}","channel":"wallet"}}"#,
                i % 5,
                1 + i % 300,
                paystream_domain::time::format_rfc3339_ms(1_522_540_800_000 + i64::from(i) * spacing_ms)
            );
            transaction.send(&topics.payments, payer.as_bytes(), value.as_bytes(), 0).unwrap();
        }
        log.commit(transaction).unwrap();
    }
}
