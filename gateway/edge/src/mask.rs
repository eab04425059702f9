//! Response masking: sensitive fields of JSON responses are masked at the edge by
//! configured rules, whatever service wrote them. A rule names a field (at any depth)
//! and how to mask its string values: `last4` keeps the last four characters
//! (`************4242`), `email` keeps the first character of the local part and the
//! domain (`a***@example.com`), `redact` keeps nothing. A rule may be scoped to paths
//! under a prefix, and routes where the caller reads their own account are exempt from
//! the default e-mail rule.
//!
//! A response is parsed only when its body mentions a ruled field's name; one larger
//! than [`MASKED_BODY_BYTES_MAX`] that would need masking is refused (502) rather than
//! sent unmasked.

use std::str::FromStr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use paystream_http::Problem;
use serde_json::Value;

/// The largest response body the gateway reads to mask.
pub const MASKED_BODY_BYTES_MAX: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskStyle {
    Last4,
    Email,
    Redact,
}

/// `FIELD:STYLE` or `FIELD:STYLE@PREFIX`, e.g. `card_number:last4`, `email:email@/v1/support`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskRule {
    pub field: String,
    pub style: MaskStyle,
    /// Only responses to paths under this prefix; every path without one.
    pub prefix: Option<String>,
    /// Paths (exact) the rule skips.
    pub except: Vec<String>,
}

impl FromStr for MaskRule {
    type Err = String;

    fn from_str(text: &str) -> Result<MaskRule, String> {
        let (rule, prefix) = match text.split_once('@') {
            Some((rule, prefix)) if prefix.starts_with('/') => (rule, Some(prefix.trim_end_matches('/').to_string())),
            Some(_) => return Err(format!("{text:?}: the scope after @ is a path prefix such as /v1/support")),
            None => (text, None),
        };
        let (field, style) =
            rule.split_once(':').ok_or_else(|| format!("{text:?}: a mask rule is FIELD:STYLE[@PREFIX]"))?;
        if field.is_empty() || !field.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(format!("{text:?}: the field is a JSON key (letters, digits, _ and -)"));
        }
        let style = match style {
            "last4" => MaskStyle::Last4,
            "email" => MaskStyle::Email,
            "redact" => MaskStyle::Redact,
            other => return Err(format!("{text:?}: {other:?} is not a style (last4, email, redact)")),
        };
        Ok(MaskRule { field: field.to_string(), style, prefix, except: Vec::new() })
    }
}

/// What is masked without configuration: card and account numbers everywhere, and
/// e-mail addresses everywhere but where callers read or make their own account.
pub fn default_mask_rules() -> Vec<MaskRule> {
    let last4 = |field: &str| MaskRule { field: field.into(), style: MaskStyle::Last4, prefix: None, except: vec![] };
    vec![
        last4("card_number"),
        last4("pan"),
        last4("account_number"),
        last4("iban"),
        MaskRule {
            field: "email".into(),
            style: MaskStyle::Email,
            prefix: None,
            except: vec!["/v1/me".into(), "/v1/auth/signup".into()],
        },
    ]
}

fn applies(rule: &MaskRule, path: &str) -> bool {
    let in_scope = rule
        .prefix
        .as_deref()
        .is_none_or(|prefix| path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/')));
    in_scope && !rule.except.iter().any(|except| except == path)
}

pub fn mask_value(style: MaskStyle, text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    match style {
        MaskStyle::Redact => "****".to_string(),
        MaskStyle::Last4 => {
            let keep = if chars.len() > 4 { 4 } else { 0 };
            let hidden = chars.len() - keep;
            "*".repeat(hidden.max(4)) + &chars[hidden..].iter().collect::<String>()
        }
        MaskStyle::Email => match text.split_once('@') {
            Some((local, domain)) if !local.is_empty() => {
                format!("{}***@{domain}", local.chars().next().expect("not empty"))
            }
            _ => "****".to_string(),
        },
    }
}

/// Masks every string value under a ruled key, at any depth; whether anything changed.
fn mask_json(value: &mut Value, rules: &[&MaskRule]) -> bool {
    let mut changed = false;
    match value {
        Value::Object(map) => {
            for (key, member) in map.iter_mut() {
                match (rules.iter().find(|rule| rule.field == *key), &*member) {
                    (Some(rule), Value::String(text)) => {
                        *member = Value::String(mask_value(rule.style, text));
                        changed = true;
                    }
                    _ => changed |= mask_json(member, rules),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                changed |= mask_json(item, rules);
            }
        }
        _ => {}
    }
    changed
}

/// Middleware: masks JSON responses by `rules`.
pub async fn mask(State(rules): State<Arc<Vec<MaskRule>>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let rules: Vec<&MaskRule> = rules.iter().filter(|rule| applies(rule, &path)).collect();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if rules.is_empty() || !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MASKED_BODY_BYTES_MAX).await else {
        tracing::error!(%path, limit_bytes = MASKED_BODY_BYTES_MAX, "a response too large to mask is withheld");
        return Problem::new(StatusCode::BAD_GATEWAY, "response_too_large", "The service's answer is too large")
            .into_response();
    };
    let mentions = |field: &str| {
        let needle = format!("\"{field}\"");
        bytes.windows(needle.len()).any(|window| window == needle.as_bytes())
    };
    if !rules.iter().any(|rule| mentions(&rule.field)) {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes)); // not JSON after all: no field to mask
    };
    if !mask_json(&mut value, &rules) {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let masked = serde_json::to_vec(&value).expect("a JSON value serializes");
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(masked.len()));
    Response::from_parts(parts, Body::from(masked))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_masked_by_style() {
        assert_eq!(mask_value(MaskStyle::Last4, "4242424242424242"), "************4242");
        assert_eq!(mask_value(MaskStyle::Last4, "1234"), "****", "short values show nothing");
        assert_eq!(mask_value(MaskStyle::Email, "ada@example.com"), "a***@example.com");
        assert_eq!(mask_value(MaskStyle::Email, "not-an-address"), "****");
        assert_eq!(mask_value(MaskStyle::Redact, "secret"), "****");
    }

    #[test]
    fn rules_parse_scope_and_reach_every_depth() {
        let rule: MaskRule = "email:email@/v1/support/".parse().unwrap();
        assert_eq!(rule.prefix.as_deref(), Some("/v1/support"));
        assert!(applies(&rule, "/v1/support/tickets/1") && applies(&rule, "/v1/support"));
        assert!(!applies(&rule, "/v1/supporters") && !applies(&rule, "/v1/me"));
        for (bad, says) in [("email", "FIELD:STYLE"), ("email:stars", "not a style"), ("e mail:last4", "JSON key")] {
            assert!(bad.parse::<MaskRule>().unwrap_err().contains(says), "{bad}");
        }
        let rules = default_mask_rules();
        let ruled: Vec<&MaskRule> = rules.iter().filter(|rule| applies(rule, "/v1/customers/1")).collect();
        let mut value = json!({"data": [{"email": "bob@example.com", "card": {"card_number": "4000056655665556"}}],
                               "iban": 7, "note": "email"});
        assert!(mask_json(&mut value, &ruled));
        assert_eq!(
            value,
            json!({"data": [{"email": "b***@example.com", "card": {"card_number": "************5556"}}],
                   "iban": 7, "note": "email"})
        );
        let own: Vec<&MaskRule> = rules.iter().filter(|rule| applies(rule, "/v1/me")).collect();
        assert!(!mask_json(&mut json!({"email": "ada@example.com"}), &own), "the caller's own account");
    }
}
