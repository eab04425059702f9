//! The payments API's operations. A write: claim the idempotency key → check the order →
//! record it pending → watch for its decision → publish → wait (bounded) → answer, and
//! keep the answer under the key.

use std::sync::Arc;
use std::time::Duration;

use paystream_domain::time::format_rfc3339_ms;
use paystream_http::Principal;

use crate::error::PaymentsError;
use crate::intake::PaymentIntake;
use crate::model::cursor::page_limit;
use crate::model::{
    Cursor, FollowUpBody, IdempotencyVerdict, Order, OrderKind, Original, PaymentBody, TopUpBody, payment_id,
    request_hash,
};
use crate::store::payments::ListOf;
use crate::store::{Begun, PaymentRecord, PaymentsStore};

pub use paystream_http::clock::Clock;

/// An answer to a write, as sent and as kept for replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
    pub replayed: bool,
}

/// A page of a list.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page {
    pub data: Vec<PaymentRecord>,
    pub has_more: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

fn same_terms(stored: &PaymentRecord, asked: &PaymentRecord) -> bool {
    (&stored.kind, &stored.payer_user_id, &stored.merchant_id, &stored.terminal_id, &stored.payee_user_id)
        == (&asked.kind, &asked.payer_user_id, &asked.merchant_id, &asked.terminal_id, &asked.payee_user_id)
        && (stored.amount_minor, &stored.currency, &stored.channel)
            == (asked.amount_minor, &asked.currency, &asked.channel)
}

fn parse<T: serde::de::DeserializeOwned>(body: serde_json::Value) -> Result<T, PaymentsError> {
    serde_json::from_value(body).map_err(|error| PaymentsError::invalid("invalid_body", error.to_string()))
}

/// How long the recorder waits before retrying a failed write of a decision.
const RECORD_RETRY_WAIT: Duration = Duration::from_secs(1);
/// Notices the recorder writes together at most.
pub const RECORD_BATCH_NOTICES_MAX: usize = 512;

pub struct PaymentsService {
    store: PaymentsStore,
    intake: Arc<dyn PaymentIntake>,
    clock: Clock,
}

impl PaymentsService {
    /// The service, with its recorder task (decisions into the store) started on the
    /// current tokio runtime.
    pub fn start(store: PaymentsStore, intake: Arc<dyn PaymentIntake>, clock: Clock) -> Arc<PaymentsService> {
        if let Some(mut notices) = intake.notices() {
            let recorder = store.clone();
            tokio::spawn(async move {
                // What has queued up goes in one write.
                let mut batch = Vec::with_capacity(RECORD_BATCH_NOTICES_MAX);
                while notices.recv_many(&mut batch, RECORD_BATCH_NOTICES_MAX).await > 0 {
                    while let Err(error) = recorder.record_notices(batch.clone()).await {
                        tracing::error!(%error, notices = batch.len(), "cannot record the pipeline's notices; retrying");
                        tokio::time::sleep(RECORD_RETRY_WAIT).await;
                    }
                    batch.clear();
                }
            });
        }
        Arc::new(PaymentsService { store, intake, clock })
    }

    pub fn store(&self) -> &PaymentsStore {
        &self.store
    }

    /// `POST /v1/payments`.
    pub async fn pay(
        &self,
        principal: &Principal,
        idempotency_key: &str,
        body: serde_json::Value,
        wait: Duration,
    ) -> Result<Answer, PaymentsError> {
        let payer = principal.subject.clone();
        self.write(principal, idempotency_key, "/v1/payments", body, wait, move |id, body| {
            Order::payment(&payer, id, &parse::<PaymentBody>(body)?)
        })
        .await
    }

    /// `POST /v1/wallet/top-ups`.
    pub async fn top_up(
        &self,
        principal: &Principal,
        idempotency_key: &str,
        body: serde_json::Value,
        wait: Duration,
    ) -> Result<Answer, PaymentsError> {
        let payer = principal.subject.clone();
        self.write(principal, idempotency_key, "/v1/wallet/top-ups", body, wait, move |id, body| {
            Order::top_up(&payer, id, &parse::<TopUpBody>(body)?)
        })
        .await
    }

    /// `POST /v1/payments/{id}/capture|void|refund`. The payee merchant captures and
    /// refunds; the payer or the payee merchant voids. To anyone else the payment does
    /// not exist (404).
    pub async fn follow_up(
        &self,
        principal: &Principal,
        original_id: &str,
        kind: OrderKind,
        idempotency_key: &str,
        body: serde_json::Value,
        wait: Duration,
    ) -> Result<Answer, PaymentsError> {
        let original = self.store.payment(original_id).await?.ok_or(PaymentsError::NotFound)?;
        let payee_merchant = principal.merchant_id.is_some() && original.merchant_id == principal.merchant_id;
        let payer = original.payer_user_id == principal.subject;
        let allowed = match kind {
            OrderKind::Capture | OrderKind::Refund => payee_merchant,
            OrderKind::Void => payee_merchant || payer,
            _ => false,
        };
        if !allowed {
            return Err(PaymentsError::NotFound);
        }
        let original = Original {
            payment_id: original.payment_id,
            kind: original.kind,
            payer_user_id: original.payer_user_id,
            merchant_id: original.merchant_id,
            terminal_id: original.terminal_id,
            payee_user_id: original.payee_user_id,
            amount: original.amount,
            currency: original.currency,
            channel: original.channel,
        };
        let route = format!("/v1/payments/{original_id}/{}", kind.as_str());
        self.write(principal, idempotency_key, &route, body, wait, move |id, body| {
            Order::follow_up(kind, id, &original, &parse::<FollowUpBody>(body)?)
        })
        .await
    }

    async fn write(
        &self,
        principal: &Principal,
        idempotency_key: &str,
        route: &str,
        body: serde_json::Value,
        wait: Duration,
        build: impl FnOnce(String, serde_json::Value) -> Result<Order, PaymentsError>,
    ) -> Result<Answer, PaymentsError> {
        let client = &principal.subject;
        let now_ms = (self.clock)();
        let hash = request_hash(route, &body);
        match self.store.begin_key(client, idempotency_key, &hash, now_ms).await? {
            Begun::Claimed => {}
            Begun::Earlier(IdempotencyVerdict::Replay { status, location, body }) => {
                return Ok(Answer { status, location, body, replayed: true });
            }
            Begun::Earlier(IdempotencyVerdict::KeyReused) => return Err(PaymentsError::KeyReused),
            Begun::Earlier(_) => return Err(PaymentsError::InFlight),
        }
        let id = payment_id(client, idempotency_key);
        match self.answer(build(id, body), wait, now_ms).await {
            Ok(answer) => {
                self.store
                    .complete_key(client, idempotency_key, answer.status, answer.location.as_deref(), &answer.body)
                    .await?;
                Ok(answer)
            }
            Err(error) => {
                // Nothing was published: the client may retry with the same key.
                self.store.release_key(client, idempotency_key).await?;
                Err(error)
            }
        }
    }

    async fn answer(
        &self,
        order: Result<Order, PaymentsError>,
        wait: Duration,
        now_ms: i64,
    ) -> Result<Answer, PaymentsError> {
        let order = order?;
        let payer = order.payer_user_id.as_str();
        // Checked before anything is stored: a refused order leaves no trace.
        let event = order.event(&format_rfc3339_ms(now_ms))?;
        let mut record = PaymentRecord {
            payment_id: order.payment_id.clone(),
            kind: order.kind.as_str().to_string(),
            payer_user_id: order.payer_user_id.clone(),
            merchant_id: order.merchant_id.clone(),
            terminal_id: order.terminal_id.clone(),
            payee_user_id: order.payee_user_id.clone(),
            amount: order.amount.to_decimal_string(),
            amount_minor: order.amount.minor_units(),
            currency: order.amount.currency().code().to_string(),
            channel: order.channel.clone(),
            status: "pending".to_string(),
            reasons: Vec::new(),
            created_at_ms: now_ms,
            decided_at_ms: None,
        };
        self.store.insert_payment(&record).await?;
        let location = format!("/v1/payments/{}", record.payment_id);
        // A request taken over from one that died: the payment may exist already. Its
        // event is rebuilt with the first attempt's time, so the log holds the same
        // event (the pipeline counts a retry, never a conflict), and a payment already
        // decided is answered as it stands.
        let stored = self.store.payment(&record.payment_id).await?.ok_or(PaymentsError::NotFound)?;
        // The key was freed after an error and reused with other terms: the payment it
        // names is the first one, never another.
        if !same_terms(&stored, &record) {
            return Err(PaymentsError::KeyReused);
        }
        if stored.status != "pending" {
            let body = serde_json::to_string(&stored).map_err(|error| PaymentsError::Internal(error.to_string()))?;
            return Ok(Answer { status: 201, location: Some(location), body, replayed: false });
        }
        let event = if stored.created_at_ms == now_ms {
            event
        } else {
            record.created_at_ms = stored.created_at_ms;
            order.event(&format_rfc3339_ms(stored.created_at_ms))?
        };
        // `Prefer: wait=0`: answer 202 at once, even if the decision is quick.
        let watched = if wait.is_zero() { None } else { self.intake.watch(&record.payment_id) };
        if let Err(error) = self.intake.submit(payer, event, now_ms).await {
            self.intake.unwatch(&record.payment_id);
            return Err(PaymentsError::Intake(error));
        }
        let notice = match watched {
            Some(receiver) => match tokio::time::timeout(wait, receiver).await {
                Ok(Ok(notice)) => Some(notice),
                _ => {
                    self.intake.unwatch(&record.payment_id);
                    None
                }
            },
            None => None,
        };
        let status = match notice {
            Some(notice) => {
                self.store.record_decision(&notice).await?;
                record.status = notice.status.to_string();
                record.reasons = notice.reasons;
                record.decided_at_ms = Some(notice.decided_at_ms);
                201
            }
            None => 202,
        };
        let body = serde_json::to_string(&record).map_err(|error| PaymentsError::Internal(error.to_string()))?;
        Ok(Answer { status, location: Some(location), body, replayed: false })
    }

    /// A payment the caller may see: its payer's, or a merchant's payment made to it.
    /// Anything else is "not found", so existence never leaks.
    /// `GET /v1/balance`: the caller's own wallet.
    pub async fn balances(&self, principal: &Principal) -> Result<Vec<crate::store::Balance>, PaymentsError> {
        self.store.balances(&principal.subject).await
    }

    pub async fn payment(&self, principal: &Principal, payment_id: &str) -> Result<PaymentRecord, PaymentsError> {
        let record = self.store.payment(payment_id).await?.ok_or(PaymentsError::NotFound)?;
        let payer = record.payer_user_id == principal.subject;
        let merchant = principal.merchant_id.is_some() && record.merchant_id == principal.merchant_id;
        if payer || merchant { Ok(record) } else { Err(PaymentsError::NotFound) }
    }

    /// The caller's payments (`merchant`: those made to the caller's merchant).
    pub async fn list(
        &self,
        principal: &Principal,
        merchant: bool,
        starting_after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page, PaymentsError> {
        let limit = page_limit(limit)?;
        let cursor = starting_after.map(Cursor::decode).transpose()?;
        let of = if merchant {
            ListOf::Merchant(principal.merchant_id.as_deref().ok_or(PaymentsError::NotFound)?)
        } else {
            ListOf::Payer(&principal.subject)
        };
        let (data, has_more) = self.store.list(of, cursor.as_ref(), limit).await?;
        let next_cursor = has_more.then(|| {
            let last = data.last().expect("a page with more after it is not empty");
            Cursor { created_at_ms: last.created_at_ms, payment_id: last.payment_id.clone() }.encode()
        });
        Ok(Page { data, has_more, next_cursor })
    }
}
