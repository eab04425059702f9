//! The payments API. Writes need `Idempotency-Key`; `Prefer: wait=N` (seconds, at most
//! 10) bounds how long a write waits for the pipeline's decision (default 2 s).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use paystream_http::{Access, ApiJson, Principal, Role, SecuredRouter};
use serde::Deserialize;

use crate::error::PaymentsError;
use crate::intake::{DECISION_WAIT_DEFAULT, DECISION_WAIT_MAX};
use crate::model::{OrderKind, validate_key};
use crate::service::{Answer, PaymentsService};

type Service = State<Arc<PaymentsService>>;

const CUSTOMERS: &[Role] = &[Role::Customer];
const MERCHANTS: &[Role] = &[Role::Merchant];
const PAYERS_AND_PAYEES: &[Role] = &[Role::Customer, Role::Merchant];

pub fn routes() -> SecuredRouter<Arc<PaymentsService>> {
    SecuredRouter::new()
        .route(Method::POST, "/v1/payments", Access::Roles(CUSTOMERS), create_payment)
        .route(Method::GET, "/v1/payments", Access::Roles(CUSTOMERS), list_payments)
        .route(Method::GET, "/v1/payments/{payment_id}", Access::Roles(PAYERS_AND_PAYEES), get_payment)
        .route(
            Method::POST,
            "/v1/payments/{payment_id}/capture",
            Access::Roles(MERCHANTS),
            follow_up(OrderKind::Capture),
        )
        .route(
            Method::POST,
            "/v1/payments/{payment_id}/void",
            Access::Roles(PAYERS_AND_PAYEES),
            follow_up(OrderKind::Void),
        )
        .route(Method::POST, "/v1/payments/{payment_id}/refund", Access::Roles(MERCHANTS), follow_up(OrderKind::Refund))
        .route(Method::POST, "/v1/wallet/top-ups", Access::Roles(CUSTOMERS), create_top_up)
        .route(Method::GET, "/v1/merchant/payments", Access::Roles(MERCHANTS), list_merchant_payments)
        .route(Method::GET, "/v1/balance", Access::Roles(PAYERS_AND_PAYEES), balance)
}

/// The service's router (the authenticator comes from the gateway or the caller).
pub fn router(service: Arc<PaymentsService>) -> Router {
    routes().into_parts().0.with_state(service)
}

/// `Prefer: wait=N` (RFC 7240), clamped to [`DECISION_WAIT_MAX`].
fn wait(headers: &HeaderMap) -> Duration {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|preference| {
            preference.trim().strip_prefix("wait=").and_then(|seconds| seconds.trim().parse::<u64>().ok())
        })
        .map_or(DECISION_WAIT_DEFAULT, |seconds| Duration::from_secs(seconds).min(DECISION_WAIT_MAX))
}

fn respond(answer: Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(location) = answer.location.and_then(|location| HeaderValue::from_str(&location).ok()) {
        headers.insert(header::LOCATION, location);
    }
    if answer.replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

fn idempotency_key(headers: &HeaderMap) -> Result<&str, PaymentsError> {
    validate_key(headers.get("idempotency-key").map(|value| value.to_str().unwrap_or("\u{7f}")))
}

async fn create_payment(
    State(service): Service,
    principal: Principal,
    headers: HeaderMap,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, PaymentsError> {
    Ok(respond(service.pay(&principal, idempotency_key(&headers)?, body, wait(&headers)).await?))
}

async fn create_top_up(
    State(service): Service,
    principal: Principal,
    headers: HeaderMap,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, PaymentsError> {
    Ok(respond(service.top_up(&principal, idempotency_key(&headers)?, body, wait(&headers)).await?))
}

/// A follow-up's body is optional (`{}` when absent).
fn optional_body(headers: &HeaderMap, body: &[u8]) -> Result<serde_json::Value, PaymentsError> {
    if body.is_empty() {
        return Ok(serde_json::json!({}));
    }
    if !paystream_http::json::is_json(headers) {
        return Err(PaymentsError::NotJson);
    }
    serde_json::from_slice(body).map_err(|error| PaymentsError::invalid("malformed_json", error.to_string()))
}

type Answered = Pin<Box<dyn Future<Output = Result<Response, PaymentsError>> + Send>>;

/// `POST /v1/payments/{payment_id}/capture|void|refund`: one handler, by kind.
fn follow_up(kind: OrderKind) -> impl Fn(Service, Principal, Path<String>, Request) -> Answered + Clone + Send + Sync {
    move |State(service), principal, Path(payment_id), request| {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, paystream_http::limits::REQUEST_BODY_BYTES_MAX)
                .await
                .map_err(|_| PaymentsError::TooLarge)?;
            let body = optional_body(&parts.headers, &body)?;
            let key = idempotency_key(&parts.headers)?;
            Ok(respond(service.follow_up(&principal, &payment_id, kind, key, body, wait(&parts.headers)).await?))
        })
    }
}

async fn get_payment(
    State(service): Service,
    principal: Principal,
    Path(payment_id): Path<String>,
) -> Result<Response, PaymentsError> {
    Ok(Json(service.payment(&principal, &payment_id).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    starting_after: Option<String>,
}

fn list_query(uri: &Uri) -> Result<ListQuery, PaymentsError> {
    Query::<ListQuery>::try_from_uri(uri)
        .map(|Query(query)| query)
        .map_err(|rejection| PaymentsError::invalid("invalid_query", rejection.body_text()))
}

async fn list_payments(State(service): Service, principal: Principal, uri: Uri) -> Result<Response, PaymentsError> {
    let query = list_query(&uri)?;
    let page = service.list(&principal, false, query.starting_after.as_deref(), query.limit).await?;
    Ok(Json(page).into_response())
}

async fn list_merchant_payments(
    State(service): Service,
    principal: Principal,
    uri: Uri,
) -> Result<Response, PaymentsError> {
    let query = list_query(&uri)?;
    let page = service.list(&principal, true, query.starting_after.as_deref(), query.limit).await?;
    Ok(Json(page).into_response())
}

/// The caller's wallet: one balance per currency, from the ledger's postings as recorded
/// so far (the ledger is read as the pipeline writes it; a payment just decided may take
/// a moment to show).
async fn balance(State(service): Service, principal: Principal) -> Result<Response, PaymentsError> {
    let balances = service.balances(&principal).await?;
    Ok(Json(serde_json::json!({ "balances": balances })).into_response())
}
