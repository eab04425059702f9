//! Hand-written JSON encoders for the two outputs written for (almost) every payment:
//! [`Decision`] and [`LedgerTransaction`]. They produce exactly what their serde
//! `Serialize` derive produces (tested below), about twice as fast: field names are
//! constants and values skip escaping when they need none.

use crate::event::{Decision, Direction, LedgerTransaction, PaymentKind, TransactionKind};

/// Whether `bytes` holds a byte a JSON string must escape (a control character, a quote
/// or a backslash), tested 8 bytes at a time: a word has a byte below n (n <= 128) iff
/// (w - n·0x01..) & !w & 0x80.. is not zero, and a byte equal to c iff w ^ c·0x01.. has
/// a byte below 1.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let w = u64::from_le_bytes(chunk.try_into().expect("chunks of 8"));
        if below(w, 0x20) | below(w ^ (ONES * u64::from(b'"')), 1) | below(w ^ (ONES * u64::from(b'\\')), 1) != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Appends `value` as a JSON string.
pub fn write_str(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    if !needs_escape(value.as_bytes()) {
        out.extend_from_slice(value.as_bytes());
    } else {
        for c in value.chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                '\u{08}' => out.extend_from_slice(b"\\b"),
                '\u{0c}' => out.extend_from_slice(b"\\f"),
                c if (c as u32) < 0x20 => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[(c as usize) >> 4]);
                    out.push(HEX[(c as usize) & 0xf]);
                }
                c => {
                    let mut buffer = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
                }
            }
        }
    }
    out.push(b'"');
}

fn write_i64(out: &mut Vec<u8>, value: i64) {
    let mut reversed = [0u8; 20];
    let mut len = 0;
    let mut magnitude = value.unsigned_abs();
    loop {
        reversed[len] = b'0' + (magnitude % 10) as u8;
        len += 1;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    if value < 0 {
        out.push(b'-');
    }
    out.extend(reversed[..len].iter().rev());
}

impl Decision {
    /// Appends this decision as JSON (same bytes as `serde_json::to_writer`).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        if self.kind != PaymentKind::Payment {
            out.extend_from_slice(b"\"type\":");
            write_str(out, self.kind.as_str());
            out.push(b',');
        }
        out.extend_from_slice(b"\"payment_id\":");
        write_str(out, &self.payment_id);
        if let Some(original) = &self.original_payment_id {
            out.extend_from_slice(b",\"original_payment_id\":");
            write_str(out, original);
        }
        out.extend_from_slice(b",\"payer_account_id\":");
        write_str(out, &self.payer_account_id);
        if let Some(merchant_id) = &self.merchant_id {
            out.extend_from_slice(b",\"merchant_id\":");
            write_str(out, merchant_id);
        }
        out.extend_from_slice(b",\"amount\":");
        write_str(out, &self.amount);
        out.extend_from_slice(b",\"currency\":");
        write_str(out, self.currency.code());
        out.extend_from_slice(b",\"event_time\":");
        write_str(out, &self.event_time);
        out.extend_from_slice(b",\"outcome\":");
        write_str(out, self.outcome.as_str());
        out.extend_from_slice(b",\"score\":");
        // Floats are rare to format and subtle: leave them to serde_json.
        serde_json::to_writer(&mut *out, &self.score).expect("writing to a Vec cannot fail");
        out.extend_from_slice(b",\"reasons\":[");
        for (i, reason) in self.reasons.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, reason);
        }
        out.extend_from_slice(b"],\"model_version\":");
        write_str(out, &self.model_version);
        if let Some(velocity) = &self.velocity {
            out.extend_from_slice(b",\"velocity\":{");
            let mut first = true;
            let counts = [("merchant_tx_1h", velocity.merchant_tx_1h), ("device_tx_1h", velocity.device_tx_1h)];
            let amounts = [
                ("merchant_amount_1h_minor", velocity.merchant_amount_1h_minor),
                ("device_amount_1h_minor", velocity.device_amount_1h_minor),
            ];
            // serde's field order: merchant count, merchant amount, device count, device amount.
            for ((count_name, count), (amount_name, amount)) in counts.into_iter().zip(amounts) {
                for (name, value) in [(count_name, count.map(|c| c as i64)), (amount_name, amount)] {
                    let Some(value) = value else { continue };
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    write_str(out, name);
                    out.push(b':');
                    write_i64(out, value);
                }
            }
            out.push(b'}');
        }
        out.push(b'}');
    }
}

impl LedgerTransaction {
    /// Appends this transaction as JSON (same bytes as `serde_json::to_writer`).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"transaction_id\":");
        write_str(out, &self.transaction_id);
        if self.kind != TransactionKind::Payment {
            out.extend_from_slice(b",\"type\":");
            write_str(out, self.kind.as_str());
        }
        out.extend_from_slice(b",\"payment_id\":");
        write_str(out, &self.payment_id);
        if let Some(original) = &self.original_payment_id {
            out.extend_from_slice(b",\"original_payment_id\":");
            write_str(out, original);
        }
        out.extend_from_slice(b",\"event_time\":");
        write_str(out, &self.event_time);
        out.extend_from_slice(b",\"currency\":");
        write_str(out, self.currency.code());
        out.extend_from_slice(b",\"postings\":[");
        for (i, posting) in self.postings.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"account_id\":");
            write_str(out, &posting.account_id);
            out.extend_from_slice(match posting.direction {
                Direction::Debit => b",\"direction\":\"debit\",\"amount_minor\":",
                Direction::Credit => b",\"direction\":\"credit\",\"amount_minor\":",
            });
            write_i64(out, posting.amount_minor);
            out.push(b'}');
        }
        out.push(b']');
        if let Some(settlement_id) = &self.settlement_id {
            out.extend_from_slice(b",\"settlement_id\":");
            write_str(out, settlement_id);
        }
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{LedgerPosting, Outcome};
    use crate::{Currency, Payment};
    use proptest::prelude::*;

    fn decision(id: &str, merchant: Option<&str>, reasons: Vec<&'static str>, score: f32) -> Decision {
        Decision {
            kind: if id.len().is_multiple_of(2) { PaymentKind::Payment } else { PaymentKind::Refund },
            payment_id: id.to_string(),
            original_payment_id: id.len().is_multiple_of(3).then(|| format!("orig {id}")),
            payer_account_id: format!("payer {id}"),
            merchant_id: merchant.map(str::to_string),
            amount: "12.34".into(),
            currency: Currency::EUR,
            event_time: "2018-04-01T00:00:00.000Z".into(),
            outcome: Outcome::Review,
            score,
            reasons: reasons.into_iter().map(std::borrow::Cow::Borrowed).collect(),
            model_version: std::sync::Arc::from("rules-v1"),
            velocity: None,
        }
    }

    proptest! {
        #[test]
        fn decisions_match_serde(
            id in "\\PC{0,12}|[\"\\\\\n\t\u{1}\u{1f}]{0,4}",
            merchant in proptest::option::of("\\PC{0,8}"),
            score in 0.0f32..=1.0,
            velocity in proptest::option::of((
                proptest::option::of(any::<u32>()),
                proptest::option::of(any::<i64>()),
                proptest::option::of(any::<u32>()),
                proptest::option::of(any::<i64>()),
            )),
        ) {
            let mut d = decision(&id, merchant.as_deref(), vec!["a", "b\"c"], score);
            d.velocity = velocity.map(|(mc, ma, dc, da)| crate::event::Velocity {
                merchant_tx_1h: mc.map(u64::from),
                merchant_amount_1h_minor: ma,
                device_tx_1h: dc.map(u64::from),
                device_amount_1h_minor: da,
            });
            let mut ours = Vec::new();
            d.write_json(&mut ours);
            prop_assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&d).unwrap());
        }

        #[test]
        fn strings_match_serde(value in "(\\PC|[\"\\\\\u{0}-\u{1f}\u{7f}\u{80}-\u{ff}]){0,40}") {
            let mut ours = Vec::new();
            write_str(&mut ours, &value);
            prop_assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&value).unwrap());
            let escapes = value.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
            prop_assert_eq!(needs_escape(value.as_bytes()), escapes);
        }

        #[test]
        fn one_escape_anywhere_is_found(
            before in "[a-zA-Z0-9 ~\u{e9}]{0,20}",
            special in prop_oneof![0u8..0x20, Just(b'"'), Just(b'\\')],
            after in "[a-zA-Z0-9 ~\u{e9}]{0,20}",
        ) {
            let value = format!("{before}{}{after}", special as char);
            let plain = before.clone() + &after;
            prop_assert!(needs_escape(value.as_bytes()));
            prop_assert!(!needs_escape(plain.as_bytes()));
            let mut ours = Vec::new();
            write_str(&mut ours, &value);
            prop_assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&value).unwrap());
        }

        #[test]
        fn ledger_transactions_match_serde(account in "\\PC{0,12}", amount in any::<i64>(), settled in any::<bool>(), refund in any::<bool>()) {
            let t = LedgerTransaction {
                transaction_id: "pay:x".into(),
                kind: if refund { TransactionKind::Refund } else { TransactionKind::Payment },
                payment_id: "x".into(),
                original_payment_id: refund.then(|| account.clone()),
                event_time: "2018-04-01T00:00:00.000Z".into(),
                currency: Currency::EUR,
                postings: vec![
                    LedgerPosting { account_id: account.clone(), direction: Direction::Debit, amount_minor: amount },
                    LedgerPosting { account_id: "fees".into(), direction: Direction::Credit, amount_minor: 0 },
                ],
                settlement_id: settled.then(|| format!("{account}/EUR/2018-04-01T00:00:00.000Z/p0")),
            };
            let mut ours = Vec::new();
            t.write_json(&mut ours);
            prop_assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&t).unwrap());
        }
    }

    #[test]
    fn no_reasons_and_no_merchant() {
        let d = decision("p", None, vec![], 0.0);
        let mut ours = Vec::new();
        d.write_json(&mut ours);
        assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&d).unwrap());
        let _ = Payment::from_json(b"{}");
    }
}
