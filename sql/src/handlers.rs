//! datafusion-postgres's query handlers as the endpoint serves them ([`Guarded`]):
//!
//! **Cancel requests.** The connection's first query message registers its guard under
//! the (process id, secret key) its cancel requests carry (`server.rs`'s `Cancels`).
//!
//! **The client's `statement_timeout`.** datafusion-postgres keeps a `SET
//! statement_timeout` in the connection's metadata but applies it to planning only;
//! each query message hands it to the connection's guard, which applies it to the whole
//! statement when it is shorter than the server's (`SET` takes effect from the next
//! query message, not later in the same one).
//!
//! **PostgreSQL's SQLSTATE codes for the endpoint's own refusals.** datafusion-postgres
//! reports every execution error as XX000 (internal_error), whether it comes before the
//! first row or while rows stream; the guard's stops and DataFusion's memory limit get
//! the codes PostgreSQL uses, so clients can tell them apart (psycopg raises
//! `QueryCanceled` for 57014, JDBC and pgx expose the code):
//! - 57014 query_canceled: the statement timeout, and a cancel request (Ctrl-C);
//! - 54000 program_limit_exceeded: the result row cap;
//! - 53200 out_of_memory: the connection's memory cap.
//!
//! Any other error keeps its XX000 and its message.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use datafusion::error::DataFusionError;
use datafusion_postgres::DfSessionService;
use datafusion_postgres::pgwire::api::portal::Portal;
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{ClientInfo, ClientPortalStore};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use futures::{Sink, StreamExt};

use crate::guard::{ConnectionGuard, GuardError};
use crate::server::Cancels;

/// Where datafusion-postgres keeps a `SET statement_timeout` (ms) in the client's
/// metadata (its `client.rs`).
const CLIENT_TIMEOUT_KEY: &str = "statement_timeout_ms";

fn client_timeout<C: ClientInfo + ?Sized>(client: &C) -> Option<std::time::Duration> {
    let ms = client.metadata().get(CLIENT_TIMEOUT_KEY)?.parse::<u64>().ok()?;
    (ms > 0).then(|| std::time::Duration::from_millis(ms))
}

/// The SQLSTATE of an error the endpoint itself raises, if it is one.
fn sqlstate_of(error: &DataFusionError) -> Option<(&'static str, String)> {
    match error.find_root() {
        DataFusionError::External(inner) => match inner.downcast_ref::<GuardError>()? {
            stopped @ GuardError::Stopped(_) => Some(("57014", stopped.to_string())),
            capped @ GuardError::RowCap(_) => Some(("54000", capped.to_string())),
        },
        exhausted @ DataFusionError::ResourcesExhausted(_) => Some(("53200", exhausted.to_string())),
        _ => None,
    }
}

/// An error the client is shown, with PostgreSQL's SQLSTATE `code`.
pub(crate) fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".to_owned(), code.to_owned(), message.into())))
}

/// `error` with its SQLSTATE when the endpoint raised it; any other error as it is.
fn with_sqlstate(error: PgWireError) -> PgWireError {
    let PgWireError::ApiError(inner) = &error else { return error };
    let Some((code, message)) = inner.downcast_ref::<DataFusionError>().and_then(sqlstate_of) else { return error };
    user_error(code, message)
}

/// A response whose streamed rows' errors get their SQLSTATE too.
fn coded(response: Response) -> Response {
    match response {
        Response::Query(mut query) => {
            let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
            query.data_rows = Box::pin(rows.map(|row| row.map_err(with_sqlstate)));
            Response::Query(query)
        }
        other => other,
    }
}

/// datafusion-postgres's handlers, with the client's timeout and coded errors.
pub(crate) struct Guarded {
    session: DfSessionService,
    guard: Arc<ConnectionGuard>,
    cancels: Arc<Cancels>,
    registered: AtomicBool,
}

impl Guarded {
    pub(crate) fn new(session: DfSessionService, guard: Arc<ConnectionGuard>, cancels: Arc<Cancels>) -> Guarded {
        Guarded { session, guard, cancels, registered: AtomicBool::new(false) }
    }

    /// Before each query message: register for cancels (once: a connection's key does
    /// not change), and take the client's `statement_timeout`.
    fn before_query<C: ClientInfo + Send + Sync>(&self, client: &C) {
        if !self.registered.swap(true, Ordering::Relaxed) {
            self.cancels.register(client, &self.guard);
        }
        self.guard.set_client_timeout(client_timeout(client));
    }
}

#[async_trait]
impl SimpleQueryHandler for Guarded {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.before_query(client);
        let responses = SimpleQueryHandler::do_query(&self.session, client, query).await.map_err(with_sqlstate)?;
        Ok(responses.into_iter().map(coded).collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for Guarded {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = <DfSessionService as ExtendedQueryHandler>::QueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.session.query_parser()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.before_query(client);
        ExtendedQueryHandler::do_query(&self.session, client, portal, max_rows).await.map(coded).map_err(with_sqlstate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::Stop;

    fn code(error: PgWireError) -> String {
        match with_sqlstate(error) {
            PgWireError::UserError(info) => info.code,
            other => format!("unchanged: {other}"),
        }
    }

    #[test]
    fn the_guards_refusals_get_postgresql_codes_and_others_keep_theirs() {
        let api = |error: DataFusionError| PgWireError::ApiError(Box::new(error));
        assert_eq!(code(api(Stop::Timeout.into())), "57014");
        assert_eq!(code(api(Stop::Cancelled.into())), "57014");
        // Wrapped as DataFusion wraps errors from inside a plan.
        let wrapped = DataFusionError::Context("while streaming".into(), Box::new(GuardError::RowCap(5).into()));
        assert_eq!(code(api(wrapped)), "54000");
        assert_eq!(code(api(DataFusionError::ResourcesExhausted("sort".into()))), "53200");
        assert!(code(api(DataFusionError::Plan("no such table".into()))).starts_with("unchanged"));
        assert!(code(PgWireError::QueryCanceled).starts_with("unchanged"));
    }
}
