//! `paystream sql` serves analysts' SQL over the topics on the PostgreSQL wire protocol
//! (psql, Grafana, drivers) until stopped; `paystream query` runs one statement from the
//! shell and prints its rows as a table, CSV or JSON lines. `serve` starts the same
//! endpoint beside the HTTP API when it is given a password.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use paystream_pipeline::log::Log;
use paystream_sql::output::Format;
use paystream_sql::views::follower::CatalogFollower;
use paystream_sql::views::{RunningView, ViewDef};
use paystream_sql::{
    LogSource, SCAN_CACHE_BYTES_MAX_DEFAULT, ScanCache, ScanLimits, SqlMetrics, SqlServerConfig, StatementLimits,
    ViewCatalogAccess,
};

use crate::log_args::{LogArgs, LogRole};
use crate::view_keeper::ViewKeeper;

/// What one statement may use, on the endpoint and in `query`.
#[derive(Args, Clone)]
pub struct SqlLimitArgs {
    /// Rows one table scan may read in one statement.
    #[arg(long, default_value_t = ScanLimits::default().rows_max)]
    scan_rows_max: usize,
    /// Rows one result may have.
    #[arg(long, default_value_t = StatementLimits::default().result_rows_max)]
    result_rows_max: u64,
    /// A statement's time from planning to its last row; a client's
    /// `SET statement_timeout` can only shorten it.
    #[arg(long, default_value_t = StatementLimits::default().timeout.as_millis() as u64)]
    statement_timeout_ms: u64,
    /// Memory one connection's sorts, joins and aggregates may hold (nothing spills).
    #[arg(long, default_value_t = StatementLimits::default().connection_memory_bytes_max)]
    connection_memory_bytes_max: usize,
    /// Decoded columns kept between statements, shared by every connection, so a topic
    /// is parsed once, not per query (0: off; the least recently read partitions go
    /// first).
    #[arg(long, default_value_t = SCAN_CACHE_BYTES_MAX_DEFAULT)]
    scan_cache_bytes_max: usize,
}

impl SqlLimitArgs {
    fn statement(&self) -> StatementLimits {
        StatementLimits {
            timeout: Duration::from_millis(self.statement_timeout_ms),
            result_rows_max: self.result_rows_max,
            connection_memory_bytes_max: self.connection_memory_bytes_max,
        }
    }
}

/// The materialized views: `run` and `serve` keep them, `sql` and `query` show them.
#[derive(Args, Clone)]
pub struct ViewsArgs {
    /// A file of `CREATE MATERIALIZED VIEW` statements (windowed aggregates over one
    /// topic table; see the README's "Continuous views").
    #[arg(long, env = "PAYSTREAM_VIEWS")]
    pub views: Option<PathBuf>,
    /// The topic of the views created over the wire (`CREATE MATERIALIZED VIEW`), which
    /// endpoints write and keepers follow.
    #[arg(long, env = "PAYSTREAM_VIEW_CATALOG_TOPIC", default_value = paystream_sql::views::catalog::CATALOG_TOPIC)]
    pub view_catalog_topic: String,
}

impl ViewsArgs {
    pub async fn load(&self) -> Result<Vec<ViewDef>> {
        let Some(path) = &self.views else { return Ok(Vec::new()) };
        let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        Ok(paystream_sql::views::parse_views(&text).await?)
    }

    /// Starts the views of the file and, with `catalog`, those of the view catalog,
    /// which it follows: on Kafka each over a log of the view's own, whose
    /// transactional id (`paystream-view-<name>`) fences any other process keeping it;
    /// on the embedded log over `embedded`, the log this process owns.
    pub fn start(
        &self,
        catalog: bool,
        log_args: &LogArgs,
        embedded: Option<Arc<dyn Log>>,
        flags: (Arc<AtomicBool>, Arc<AtomicBool>),
        metrics: Option<SqlMetrics>,
    ) -> Result<ViewKeeper> {
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        let fixed = runtime.block_on(self.load())?;
        let catalog = catalog.then_some(self.view_catalog_topic.as_str());
        ViewKeeper::start(fixed, catalog, log_args, embedded, flags, metrics)
    }
}

/// Where the endpoint listens and who may log in; shared by `sql` and `serve`.
#[derive(Args, Clone)]
pub struct SqlEndpointArgs {
    /// Where the PostgreSQL wire endpoint listens (PostgreSQL's own 5432 is left free).
    #[arg(long, alias = "listen", env = "PAYSTREAM_SQL_ADDR", default_value = "127.0.0.1:5433")]
    pub sql_addr: SocketAddr,
    /// The login analysts use (database `paystream`).
    #[arg(long, env = "PAYSTREAM_SQL_USER", default_value = "analyst")]
    pub sql_user: String,
    /// Its password (at least 12 characters). `sql` requires it; `serve` starts the
    /// endpoint only when it is set.
    #[arg(long, env = "PAYSTREAM_SQL_PASSWORD", hide_env_values = true)]
    pub sql_password: Option<String>,
    /// The login that may also create and drop materialized views (`CREATE MATERIALIZED
    /// VIEW`, `DROP MATERIALIZED VIEW`), when it has a password.
    #[arg(long, env = "PAYSTREAM_SQL_AUTHOR_USER", default_value = "views_author")]
    pub sql_author_user: String,
    /// Its password (at least 12 characters); without it no login may change views.
    #[arg(long, env = "PAYSTREAM_SQL_AUTHOR_PASSWORD", hide_env_values = true)]
    pub sql_author_password: Option<String>,
    /// A PEM certificate chain: the endpoint then speaks TLS and refuses connections
    /// that do not (with `--sql-tls-key`).
    #[arg(long, env = "PAYSTREAM_SQL_TLS_CERT", requires = "sql_tls_key")]
    pub sql_tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key.
    #[arg(long, env = "PAYSTREAM_SQL_TLS_KEY", requires = "sql_tls_cert")]
    pub sql_tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub limits: SqlLimitArgs,
}

/// Where `sql` and `views` serve their metrics.
#[derive(Args)]
pub struct SqlMetricsArgs {
    /// Where `/metrics`, `/livez` and `/readyz` are served.
    #[arg(long, env = "PAYSTREAM_METRICS_ADDR", default_value = "127.0.0.1:9899")]
    metrics_addr: SocketAddr,
    /// Serve no metrics.
    #[arg(long)]
    no_metrics: bool,
}

impl SqlMetricsArgs {
    /// The SQL layer's metrics and the process's, served where these say (with `/livez`
    /// and `/readyz`) unless `--no-metrics`.
    pub fn serve(&self, runtime: &tokio::runtime::Runtime) -> Result<SqlMetrics> {
        let registry = prometheus::Registry::new_custom(Some("paystream".into()), None)?;
        let metrics = SqlMetrics::new(&registry);
        let process = paystream_pipeline::metrics::ProcessMetrics::new();
        let render: paystream_edge::RenderMetrics = Arc::new(move || {
            let mut text = process.render();
            text.push_str(&prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap_or_default());
            text
        });
        let addr = (!self.no_metrics).then_some(self.metrics_addr);
        if let Some(addr) = crate::process::start_operations_server(runtime, addr, render, Arc::new(|| Ok(()))) {
            eprintln!("metrics: http://{addr}/metrics");
        }
        Ok(metrics)
    }
}

/// Waits for each view's thread and prints what it did; returns the names of the views
/// that stopped on an error (each logged its reason).
pub fn join_views(running: Vec<RunningView>) -> Vec<String> {
    let mut failed = Vec::new();
    for view in running {
        let _ = view.thread.join();
        let stats = &view.stats;
        eprintln!(
            "materialized view {}: {} windows emitted, {} late rows",
            view.name,
            stats.windows_emitted_total.load(Ordering::Relaxed),
            stats.late_rows_total.load(Ordering::Relaxed)
        );
        if stats.stopped.load(Ordering::SeqCst) {
            failed.push(view.name);
        }
    }
    failed
}

#[derive(Args)]
pub struct SqlArgs {
    #[command(flatten)]
    views: ViewsArgs,
    #[command(flatten)]
    metrics: SqlMetricsArgs,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    endpoint: SqlEndpointArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    /// Aligned, as psql prints.
    Table,
    /// A header line, then one line per row.
    Csv,
    /// One JSON object per row (JSON lines).
    Json,
}

#[derive(Args)]
pub struct QueryArgs {
    /// The statement (SELECT, EXPLAIN or SHOW).
    statement: String,
    #[arg(long, value_enum, default_value = "table")]
    format: OutputFormat,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    limits: SqlLimitArgs,
    #[command(flatten)]
    views: ViewsArgs,
}

/// The shared session over `log`'s topics, the views of the file and those of the view
/// catalog (read once here, through `catalog_log` if given; the follower keeps them in
/// step).
async fn shared_context(
    log: &LogArgs,
    limits: &SqlLimitArgs,
    views_args: &ViewsArgs,
    metrics: Option<&SqlMetrics>,
    catalog_log: Option<Arc<dyn Log>>,
) -> Result<(Arc<paystream_sql::SessionContext>, Arc<CatalogFollower>)> {
    let source = match log.open_kafka(LogRole::Reader)? {
        Some(kafka) => LogSource::Shared(kafka),
        None => LogSource::Embedded(log.data_dir.clone()),
    };
    let names = log.topic_names()?;
    let topic_of = move |role: &str| names.of_role(role).unwrap_or(role).to_string();
    let scan = ScanLimits { rows_max: limits.scan_rows_max };
    let views = views_args.load().await?;
    let cache = Arc::new(ScanCache::new(limits.scan_cache_bytes_max, metrics));
    let (context, cuts) = paystream_sql::shared_session(source, topic_of, scan, cache, &views).await?;
    let context = Arc::new(context);
    let topic = &views_args.view_catalog_topic;
    let follower = Arc::new(CatalogFollower::new(context.clone(), cuts, topic, &views, catalog_log));
    // No log yet (a fresh volume) or a broker away: the follower retries.
    if let Err(error) = follower.refresh().await {
        tracing::warn!(%error, "the view catalog could not be read yet");
    }
    Ok((context, follower))
}

/// Starts the endpoint over `log` on the current runtime; returns its address and task.
/// `catalog_writer` is the log this process owns (the embedded log, in `serve`), where
/// the views author's DDL is written; on Kafka the endpoint opens a producer of its own.
pub async fn start_endpoint(
    log: &LogArgs,
    endpoint: &SqlEndpointArgs,
    views: &ViewsArgs,
    catalog_writer: Option<Arc<dyn Log>>,
    password: String,
    metrics: Option<SqlMetrics>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let author = endpoint.sql_author_password.clone().map(|password| (endpoint.sql_author_user.clone(), password));
    let writer = match (&author, catalog_writer) {
        (None, _) => None,
        (Some(_), Some(owned)) => Some(owned),
        (Some(_), None) => log.open_kafka_for_catalog(&views.view_catalog_topic)?.map(|kafka| kafka as Arc<dyn Log>),
    };
    // The catalog is read back through the log it is written to.
    let (context, follower) = shared_context(log, &endpoint.limits, views, metrics.as_ref(), writer.clone()).await?;
    let config = SqlServerConfig {
        listen: endpoint.sql_addr,
        user: endpoint.sql_user.clone(),
        password,
        author,
        views: Some(ViewCatalogAccess { follower: follower.clone(), writer }),
        limits: endpoint.limits.statement(),
        metrics,
        tls: endpoint
            .sql_tls_cert
            .clone()
            .zip(endpoint.sql_tls_key.clone())
            .map(|(certificate, key)| paystream_sql::server::TlsFiles { certificate, key }),
    };
    let (bound, server) = paystream_sql::serve_sql(context, config).await?;
    let following = follower.follow();
    // Aborting the returned task stops both: the server and the catalog's follower.
    let stops = AbortOnDrop(vec![server.abort_handle(), following.abort_handle()]);
    let task = tokio::spawn(async move {
        let _stops = stops;
        let _ = server.await;
    });
    eprintln!("sql: postgres://{}@{bound}/{}", endpoint.sql_user, paystream_sql::DATABASE);
    Ok((bound, task))
}

/// Aborts its tasks when dropped (with the task that holds it).
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

pub fn sql(args: SqlArgs) -> Result<()> {
    let password = args
        .endpoint
        .sql_password
        .clone()
        .context("serving SQL needs a password: --sql-password or PAYSTREAM_SQL_PASSWORD")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let metrics = args.metrics.serve(&runtime)?;
    let (_, server) =
        runtime.block_on(start_endpoint(&args.log, &args.endpoint, &args.views, None, password, Some(metrics)))?;
    runtime.block_on(crate::process::stop_signal());
    server.abort();
    Ok(())
}

pub fn query(args: QueryArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (schema, batches) = runtime.block_on(async {
        // One statement: nothing to keep between statements.
        let limits = SqlLimitArgs { scan_cache_bytes_max: 0, ..args.limits.clone() };
        let (shared, _) = shared_context(&args.log, &limits, &args.views, None, None).await?;
        let (session, _guard) = paystream_sql::connection_context(&shared, args.limits.statement(), None)?;
        let frame = session.sql(&args.statement).await?;
        let schema = paystream_sql::SchemaRef::new(frame.schema().as_arrow().clone());
        anyhow::Ok((schema, frame.collect().await?))
    })?;
    let format = match args.format {
        OutputFormat::Table => Format::Table,
        OutputFormat::Csv => Format::Csv,
        OutputFormat::Json => Format::JsonLines,
    };
    paystream_sql::output::write(&batches, &schema, format, std::io::stdout().lock())?;
    Ok(())
}
