//! The PostgreSQL wire protocol endpoint (`paystream sql`): psql, Grafana's PostgreSQL
//! data source and drivers connect with a user and password (SCRAM-SHA-256), and may
//! only read; the views author's login may also create and drop materialized views
//! ([`crate::ddl`]). Each connection gets its own session ([`connection_context`]) and runs
//! its queries through datafusion-postgres, after a gate that refuses anything but
//! reading (SELECT, EXPLAIN, SHOW, cursors, transactions and session SETs other than
//! DataFusion's own settings). A cancel request stops the connection's statement
//! wherever it is, rows already streaming included.
//!
//! With a certificate and key ([`SqlServerConfig::tls`]) the endpoint speaks TLS
//! (rustls) and refuses any connection that did not negotiate it, before login, so a
//! password never crosses the network in the clear. Without them it speaks plain TCP,
//! and warns when it listens beyond loopback.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{SCRAM_ITERATIONS, ScramAuth, gen_salted_password};
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use datafusion_postgres::pgwire::api::cancel::CancelHandler;
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::api::{ClientInfo, ConnectionManager, PgWireServerHandlers};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::cancel::CancelRequest;
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use datafusion_postgres::pgwire::tokio::TlsAcceptor;
use datafusion_postgres::pgwire::tokio::tokio_rustls::rustls;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::Sink;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::context::connection_context;
use crate::ddl::ViewDdl;
use crate::error::SqlError;
use crate::guard::{ConnectionGuard, StatementLimits};
use crate::handlers::{Guarded, user_error};
use crate::metrics::SqlMetrics;
use crate::views::follower::CatalogFollower;

/// Connections served at once; more are closed at accept.
pub const CONNECTIONS_MAX: usize = 64;

#[derive(Clone)]
pub struct SqlServerConfig {
    pub listen: SocketAddr,
    /// The analysts' login: reading only.
    pub user: String,
    pub password: String,
    /// The views author's login, if any: reading, and creating and dropping
    /// materialized views (through `views`).
    pub author: Option<(String, String)>,
    /// The view catalog the endpoint follows, and writes when it may.
    pub views: Option<ViewCatalogAccess>,
    pub limits: StatementLimits,
    pub metrics: Option<SqlMetrics>,
    /// PEM files of the certificate chain and its private key: TLS, and only TLS.
    pub tls: Option<TlsFiles>,
}

/// The view catalog as the endpoint uses it.
#[derive(Clone)]
pub struct ViewCatalogAccess {
    pub follower: Arc<CatalogFollower>,
    /// Where the catalog is written; `None` where this process may not write the log.
    pub writer: Option<Arc<dyn paystream_pipeline::log::Log>>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// A TLS acceptor with this certificate (ALPN `postgresql`, as PostgreSQL 17's
    /// direct TLS negotiation asks).
    fn acceptor(&self) -> Result<TlsAcceptor, SqlError> {
        let unreadable = |path: &PathBuf, error: &dyn std::fmt::Display| {
            SqlError::Config(format!("TLS: cannot read {}: {error}", path.display()))
        };
        let chain = CertificateDer::pem_file_iter(&self.certificate)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|error| unreadable(&self.certificate, &error))?;
        if chain.is_empty() {
            return Err(unreadable(&self.certificate, &"no certificate in it"));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|error| unreadable(&self.key, &error))?;
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|error| SqlError::Config(format!("TLS: the certificate and key do not fit: {error}")))?;
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// Refuses, before login, a connection that did not negotiate TLS when TLS is on.
struct TlsOnly<S> {
    inner: S,
    required: bool,
}

#[async_trait]
impl<S: StartupHandler> StartupHandler for TlsOnly<S> {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if self.required && !client.is_secure() {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28000".into(),
                "this endpoint accepts TLS connections only (sslmode=require or stronger)".into(),
            ))));
        }
        self.inner.on_startup(client, message).await
    }
}

/// The logins, checked by SCRAM: the server keeps only their salted passwords.
#[derive(Debug)]
struct Logins {
    salt: Vec<u8>,
    /// By user.
    salted: HashMap<String, Vec<u8>>,
    /// What an unknown user is checked against, so it fails like a wrong password.
    decoy: Vec<u8>,
}

impl Logins {
    fn new(logins: &[(String, String)]) -> Result<Logins, SqlError> {
        let salt: [u8; 16] = rand_bytes();
        let mut salted = HashMap::new();
        for (user, password) in logins {
            if password.len() < PASSWORD_LENGTH_MIN {
                return Err(SqlError::Config(format!(
                    "the SQL password of {user} must be at least {PASSWORD_LENGTH_MIN} characters"
                )));
            }
            if salted.insert(user.clone(), gen_salted_password(password, &salt, SCRAM_ITERATIONS)).is_some() {
                return Err(SqlError::Config(format!("two SQL logins are named {user}")));
            }
        }
        // Random bytes no password salts to.
        Ok(Logins { salt: salt.to_vec(), salted, decoy: rand_bytes::<32>().to_vec() })
    }
}

#[async_trait]
impl AuthSource for Logins {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let salted = login.user().and_then(|user| self.salted.get(user)).unwrap_or(&self.decoy);
        Ok(Password::new(Some(self.salt.clone()), salted.clone()))
    }
}

/// The shortest password a login may have.
pub const PASSWORD_LENGTH_MIN: usize = 12;

/// Lets reading through and refuses everything else.
struct ReadOnly;

impl ReadOnly {
    fn check(statement: &Statement) -> Option<PgWireError> {
        match statement {
            Statement::Query(_)
            | Statement::Explain { .. }
            | Statement::ExplainTable { .. }
            | Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Declare { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. } => None,
            Statement::Set(set) => {
                let text = set.to_string().to_ascii_lowercase();
                text.contains("datafusion.").then(|| user_error("25006", "DataFusion's settings are the server's"))
            }
            _ => Some(user_error("25006", "paystream sql is read-only: SELECT, EXPLAIN, SHOW and SET only")),
        }
    }
}

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        ReadOnly::check(statement).map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        ReadOnly::check(statement).map(Err)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _logical_plan: &LogicalPlan,
        _params: &ParamValues,
        _session_context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        ReadOnly::check(statement).map(Err)
    }
}

/// A connection's (process id, secret key), which its cancel requests carry.
type CancelKey = (i32, Vec<u8>);

/// Cancel requests: pgwire's (which stops a statement while it is being planned) and
/// the guard's (which also stops its rows while they stream).
pub(crate) struct Cancels {
    connections: Arc<ConnectionManager>,
    /// By the (process id, secret key) each connection was given at startup.
    guards: Mutex<HashMap<CancelKey, Weak<ConnectionGuard>>>,
}

impl Cancels {
    /// Cancel requests naming `client`'s (process id, secret key) now stop `guard`'s
    /// statements; guards of closed connections are forgotten.
    pub(crate) fn register(&self, client: &(dyn ClientInfo + Send + Sync), guard: &Arc<ConnectionGuard>) {
        let (pid, secret) = client.pid_and_secret_key();
        let mut guards = self.guards.lock().expect("the cancel map's lock is never poisoned");
        guards.retain(|_, guard| guard.strong_count() > 0);
        guards.insert((pid, secret.to_bytes().to_vec()), Arc::downgrade(guard));
    }
}

#[async_trait]
impl CancelHandler for Cancels {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let key = (request.pid, request.secret_key.to_bytes().to_vec());
        let guard =
            self.guards.lock().expect("the cancel map's lock is never poisoned").get(&key).and_then(Weak::upgrade);
        if let Some(guard) = guard {
            guard.cancel();
        }
        self.connections.cancel(request.pid, &request.secret_key).await;
    }
}

/// One connection's handlers (SASL keeps per-connection state, and so does the session).
struct Handlers {
    session: Arc<Guarded>,
    startup: Arc<TlsOnly<SASLAuthStartupHandler<DefaultServerParameterProvider>>>,
    cancel: Arc<Cancels>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl datafusion_postgres::pgwire::api::query::SimpleQueryHandler> {
        self.session.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl datafusion_postgres::pgwire::api::query::ExtendedQueryHandler> {
        self.session.clone()
    }

    fn startup_handler(&self) -> Arc<impl datafusion_postgres::pgwire::api::auth::StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl datafusion_postgres::pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}

/// Binds `config.listen` and serves sessions over `context` until the returned task is
/// aborted; returns the bound address.
pub async fn serve_sql(
    context: Arc<SessionContext>,
    config: SqlServerConfig,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), SqlError> {
    let logins: Vec<(String, String)> =
        std::iter::once((config.user.clone(), config.password.clone())).chain(config.author.clone()).collect();
    let analyst = Arc::new(Logins::new(&logins)?);
    let connections = Arc::new(ConnectionManager::new());
    let cancels = Arc::new(Cancels { connections: connections.clone(), guards: Mutex::default() });
    let mut hooks: Vec<Arc<dyn QueryHook>> = Vec::new();
    if let Some(views) = &config.views {
        hooks.push(Arc::new(ViewDdl {
            authors: config.author.iter().map(|(user, _)| user.clone()).collect(),
            writer: views.writer.clone(),
            follower: views.follower.clone(),
        }));
    }
    hooks.extend::<[Arc<dyn QueryHook>; 4]>([
        Arc::new(ReadOnly),
        Arc::new(datafusion_postgres::hooks::cursor::CursorStatementHook),
        Arc::new(datafusion_postgres::hooks::set_show::SetShowHook),
        Arc::new(datafusion_postgres::hooks::transactions::TransactionStatementHook),
    ]);
    let limits = config.limits;
    let metrics = config.metrics.clone();
    let parameters = Arc::new(DefaultServerParameterProvider::default());
    let tls = config.tls.as_ref().map(TlsFiles::acceptor).transpose()?;
    let listener = TcpListener::bind(config.listen).await?;
    let bound = listener.local_addr()?;
    if tls.is_none() && !bound.ip().is_loopback() {
        tracing::warn!(%bound, "SQL endpoint without TLS beyond loopback: passwords and rows cross the network in the clear");
    }
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let task = tokio::spawn(async move {
        loop {
            let (socket, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "SQL endpoint: accept failed");
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%peer, limit = CONNECTIONS_MAX, "SQL endpoint: too many connections; closed");
                continue;
            };
            let (session, guard) = match connection_context(&context, limits, metrics.clone()) {
                Ok(made) => made,
                Err(error) => {
                    tracing::warn!(%peer, %error, "SQL endpoint: no session for a connection; closed");
                    continue;
                }
            };
            let handlers = Handlers {
                session: Arc::new(Guarded::new(
                    DfSessionService::new_with_hooks(Arc::new(session), hooks.clone()),
                    guard,
                    cancels.clone(),
                )),
                startup: Arc::new(TlsOnly {
                    inner: SASLAuthStartupHandler::new(parameters.clone())
                        .with_scram(ScramAuth::new(analyst.clone()))
                        .with_connection_manager(connections.clone()),
                    required: tls.is_some(),
                }),
                cancel: cancels.clone(),
            };
            let connections = metrics.as_ref().map(|metrics| metrics.connections.clone());
            let tls = tls.clone();
            tokio::spawn(async move {
                let _slot = slot;
                if let Some(gauge) = &connections {
                    gauge.inc();
                }
                if let Err(error) = datafusion_postgres::pgwire::tokio::process_socket(socket, tls, handlers).await {
                    tracing::debug!(%peer, %error, "SQL connection ended with an error");
                }
                if let Some(gauge) = &connections {
                    gauge.dec();
                }
            });
        }
    });
    tracing::info!(%bound, "SQL endpoint listening");
    Ok((bound, task))
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes
}
