//! Deny by default: a service's routes are added through [`SecuredRouter::route`], which
//! takes the roles the route admits. `Access::Roles` routes are wrapped in a guard that
//! authenticates the caller (401) and checks the roles (403) before the handler runs;
//! `Access::Public` is explicit too. The router keeps the table of what it admitted, so
//! tests can walk every route × role (the access matrix).
//!
//! Object-level authorization (is this payment the caller's?) is the handler's job: a
//! route's roles say who may call it at all.

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};

use crate::principal::{Principal, Role};
use crate::problem::Problem;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a credential (sign-up, login, key sets).
    Public,
    /// An authenticated caller holding one of these roles.
    Roles(&'static [Role]),
}

/// One row of a service's access table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAccess {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

pub struct SecuredRouter<S> {
    router: Router<S>,
    table: Vec<RouteAccess>,
}

impl<S: Clone + Send + Sync + 'static> Default for SecuredRouter<S> {
    fn default() -> Self {
        SecuredRouter { router: Router::new(), table: Vec::new() }
    }
}

impl<S: Clone + Send + Sync + 'static> SecuredRouter<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `handler` for `method` on `path`, admitting `access`.
    pub fn route<H, T>(mut self, method: Method, path: &'static str, access: Access, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
        let mut endpoint = on(filter, handler);
        if let Access::Roles(roles) = access {
            assert!(!roles.is_empty(), "{method} {path}: a route admits at least one role");
            endpoint = endpoint
                .route_layer(middleware::from_fn(move |request: Request, next: Next| guard(roles, request, next)));
        }
        self.router = self.router.route(path, endpoint);
        self.table.push(RouteAccess { method, path, access });
        self
    }

    pub fn table(&self) -> &[RouteAccess] {
        &self.table
    }

    pub fn into_parts(self) -> (Router<S>, Vec<RouteAccess>) {
        (self.router, self.table)
    }
}

async fn guard(roles: &'static [Role], request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let principal = match Principal::from_request_parts(&mut parts, &()).await {
        Ok(principal) => principal,
        Err(refusal) => return refusal,
    };
    if !principal.has_any(roles) {
        tracing::info!(subject = %principal.subject, "role refused");
        return Problem::forbidden().into_response();
    }
    parts.extensions.insert(principal);
    next.run(Request::from_parts(parts, body)).await
}
