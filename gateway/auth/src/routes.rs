//! The auth service's HTTP API. Every route declares the roles it admits
//! ([`paystream_http::SecuredRouter`]); see [`routes`] for the table.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use paystream_http::principal::layer as authenticator_layer;
use paystream_http::{Access, ApiJson, ClientIp, Principal, Role, SecuredRouter, SharedAuthenticator};
use serde::Deserialize;

use crate::authenticator::TokenAuthenticator;
use crate::error::AuthError;
use crate::service::AuthService;

type Service = State<Arc<AuthService>>;

const ANY_ROLE: &[Role] = &Role::ALL;
const KEY_HOLDERS: &[Role] = &[Role::Merchant, Role::Admin];
const ADMINS: &[Role] = &[Role::Admin];

/// The routes and the roles each admits.
pub fn routes() -> SecuredRouter<Arc<AuthService>> {
    SecuredRouter::new()
        .route(Method::POST, "/v1/auth/signup", Access::Public, signup)
        .route(Method::POST, "/v1/auth/login", Access::Public, login)
        .route(Method::POST, "/v1/auth/refresh", Access::Public, refresh)
        .route(Method::POST, "/v1/auth/logout", Access::Roles(ANY_ROLE), logout)
        .route(Method::GET, "/v1/me", Access::Roles(ANY_ROLE), me)
        .route(Method::GET, "/.well-known/jwks.json", Access::Public, jwks)
        .route(Method::POST, "/v1/auth/api-keys", Access::Roles(KEY_HOLDERS), create_api_key)
        .route(Method::GET, "/v1/auth/api-keys", Access::Roles(KEY_HOLDERS), list_api_keys)
        .route(Method::DELETE, "/v1/auth/api-keys/{key_id}", Access::Roles(KEY_HOLDERS), revoke_api_key)
        .route(Method::PUT, "/v1/auth/users/{user_id}/roles", Access::Roles(ADMINS), set_roles)
}

/// The authenticator other services use: this service's tokens and API keys.
pub fn authenticator(service: &Arc<AuthService>) -> SharedAuthenticator {
    Arc::new(TokenAuthenticator::new(service.clone()))
}

/// The service's router, with its authenticator installed for the guarded routes.
pub fn router(service: Arc<AuthService>) -> Router {
    let authenticator = authenticator(&service);
    let (router, _) = routes().into_parts();
    router.with_state(service).layer(axum::middleware::from_fn(move |request, next| {
        authenticator_layer(authenticator.clone(), request, next)
    }))
}

/// Responses that carry tokens must not be cached (RFC 6749 section 5.1).
fn no_store(status: StatusCode, body: impl serde::Serialize) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignupBody {
    email: String,
    password: String,
    display_name: String,
}

async fn signup(State(service): Service, ApiJson(body): ApiJson<SignupBody>) -> Result<Response, AuthError> {
    let account = service.signup(&body.email, &body.password, &body.display_name).await?;
    Ok((StatusCode::CREATED, Json(account)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
}

async fn login(
    State(service): Service,
    client: Option<Extension<ClientIp>>,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, AuthError> {
    let tokens = service.login(&body.email, &body.password, client.map(|Extension(ip)| ip)).await?;
    Ok(no_store(StatusCode::OK, tokens))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: String,
}

async fn refresh(State(service): Service, ApiJson(body): ApiJson<RefreshBody>) -> Result<Response, AuthError> {
    let tokens = service.refresh(&body.refresh_token).await?;
    Ok(no_store(StatusCode::OK, tokens))
}

async fn logout(State(service): Service, principal: Principal) -> Result<StatusCode, AuthError> {
    service.logout(&principal).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(State(service): Service, principal: Principal) -> Result<Response, AuthError> {
    Ok(Json(service.me(&principal).await?).into_response())
}

async fn jwks(State(service): Service) -> Response {
    ([(header::CACHE_CONTROL, "max-age=300")], Json(service.jwks())).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeyBody {
    name: String,
}

async fn create_api_key(
    State(service): Service,
    principal: Principal,
    ApiJson(body): ApiJson<ApiKeyBody>,
) -> Result<Response, AuthError> {
    let (view, key) = service.create_api_key(&principal, &body.name).await?;
    let mut body = serde_json::to_value(view).map_err(|error| AuthError::Internal(error.to_string()))?;
    body["api_key"] = serde_json::Value::String(key);
    Ok(no_store(StatusCode::CREATED, body))
}

async fn list_api_keys(State(service): Service, principal: Principal) -> Result<Response, AuthError> {
    Ok(Json(serde_json::json!({ "data": service.api_keys(&principal).await? })).into_response())
}

async fn revoke_api_key(
    State(service): Service,
    principal: Principal,
    Path(key_id): Path<String>,
) -> Result<StatusCode, AuthError> {
    service.revoke_api_key(&principal, &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesBody {
    roles: Vec<Role>,
    #[serde(default)]
    merchant_id: Option<String>,
}

async fn set_roles(
    State(service): Service,
    Path(user_id): Path<String>,
    ApiJson(body): ApiJson<RolesBody>,
) -> Result<Response, AuthError> {
    Ok(Json(service.set_roles(&user_id, &body.roles, body.merchant_id.as_deref()).await?).into_response())
}
