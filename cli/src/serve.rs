//! `paystream serve`: the pipeline, the API gateway and the services behind it (auth and
//! payments) in one process (the embedded default), or one part alone, for Kubernetes:
//! `--service auth`, `--service payments` (on the embedded log with the pipeline, which
//! owns the log; on Kafka alone), or `--service gateway` with `--route PREFIX=URL` to the
//! others. A service alone
//! still runs behind the gateway's stack; it authenticates callers itself, from the
//! auth store and signing keys it shares with the auth service (PostgreSQL and one key
//! file).
//!
//! With `--service all` and a SQL password (`PAYSTREAM_SQL_PASSWORD`), the analysts' SQL
//! endpoint (`paystream sql`) runs in the process too.
//!
//! Service state is in SQLite files under `<data-dir>/services/` by default, or in
//! PostgreSQL with `--postgres-url` (each service in its own schema). The auth service's
//! signing keys are in `<data-dir>/services/auth-keys.json` (created at first start) or
//! the file `--auth-key-file` names (a mounted secret in production).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use paystream_auth::{AuthConfig, AuthService, AuthStore, Keyring};
use paystream_edge::client_ip::IpBlock;
use paystream_edge::proxy::Route;
use paystream_edge::rate_limit::RateLimitConfig;
use paystream_edge::{GatewayConfig, HttpMetrics, Readiness, RenderMetrics};
use paystream_http::clock::{now_ms, system_clock};
use paystream_payments::{PaymentsService, PaymentsStore};
use paystream_pipeline::metrics::Metrics;
use paystream_pipeline::{RunControl, RunMode};

use crate::log_args::{LogArgs, LogRole};
use crate::pipeline_args::PipelineArgs;
use crate::process::{self, pipeline_readiness};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Service {
    /// The pipeline, the gateway and every service.
    All,
    /// The gateway alone, forwarding to the services named by `--route`.
    Gateway,
    /// The authentication service alone (behind the gateway's stack), no pipeline.
    Auth,
    /// The payments API (behind the gateway's stack); on the embedded log with the
    /// pipeline, on Kafka alone (the pipeline is `paystream run`).
    Payments,
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Address of the public HTTP API.
    #[arg(long, env = "PAYSTREAM_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// What this process runs.
    #[arg(long, value_enum, env = "PAYSTREAM_SERVICE", default_value = "all")]
    service: Service,
    /// With `--service gateway`: requests under PREFIX go to the service at URL, e.g.
    /// `/v1/auth=http://auth:8080`; repeatable (or comma-separated).
    #[arg(long = "route", env = "PAYSTREAM_ROUTES", value_delimiter = ',')]
    routes: Vec<Route>,
    /// PostgreSQL schema of the auth service's tables (with --postgres-url).
    #[arg(long, env = "PAYSTREAM_AUTH_SCHEMA", default_value = "paystream_auth")]
    auth_schema: String,
    /// PostgreSQL schema of the payments API's tables (with --postgres-url).
    #[arg(long, env = "PAYSTREAM_PAYMENTS_SCHEMA", default_value = "paystream_payments")]
    payments_schema: String,
    /// The auth service's signing keys (JSON key file, e.g. a mounted secret). Default:
    /// `<data-dir>/services/auth-keys.json`, created at first start.
    #[arg(long, env = "PAYSTREAM_AUTH_KEY_FILE")]
    auth_key_file: Option<PathBuf>,
    /// A proxy (address or CIDR block) whose X-Forwarded-For is believed; repeatable.
    /// Without one, the client address is the TCP peer.
    #[arg(long = "trusted-proxy", env = "PAYSTREAM_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<IpBlock>,
    /// Redis shared by the gateway replicas for rate limits (redis://host:6379). Without
    /// it, limits are per process. While it is down, payments and top-ups are refused
    /// (503) and other routes are limited in process.
    #[arg(long, env = "PAYSTREAM_REDIS_URL")]
    redis_url: Option<String>,
    /// Prefix of the rate-limit keys in Redis (one per deployment sharing a server).
    #[arg(long, env = "PAYSTREAM_RATE_LIMIT_PREFIX", default_value = paystream_edge::gateway::RATE_LIMIT_KEY_PREFIX)]
    rate_limit_prefix: String,
    /// Requests per minute per client address and per credential.
    #[arg(long, default_value_t = RateLimitConfig::default().default_per_minute, value_parser = clap::value_parser!(u32).range(1..))]
    rate_limit_per_minute: u32,
    /// Requests per minute per client address to sign-up, login and refresh.
    #[arg(long, default_value_t = RateLimitConfig::default().auth_per_minute, value_parser = clap::value_parser!(u32).range(1..))]
    auth_rate_limit_per_minute: u32,
    /// A field to mask in JSON responses, besides the defaults (card and account numbers
    /// to their last 4, e-mail partly): FIELD:last4|email|redact[@PATH-PREFIX];
    /// repeatable.
    #[arg(long = "mask-rule", env = "PAYSTREAM_MASK_RULES", value_delimiter = ',')]
    mask_rules: Vec<paystream_edge::mask::MaskRule>,
    /// The longest a request may take before the gateway answers 504.
    #[arg(long, default_value_t = paystream_edge::gateway::REQUEST_TIMEOUT_MS_DEFAULT)]
    request_timeout_ms: u64,
    /// The analysts' SQL endpoint, started with `--service all` when it has a password.
    #[command(flatten)]
    sql: crate::sql::SqlEndpointArgs,
    #[command(flatten)]
    views: crate::sql::ViewsArgs,
}

/// How often `/readyz` re-checks that the service store answers.
const STORE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

pub fn serve(args: ServeArgs) -> Result<()> {
    match (args.service, args.routes.is_empty()) {
        (Service::Gateway, true) => anyhow::bail!("--service gateway needs at least one --route PREFIX=URL"),
        (Service::Gateway, false) | (_, true) => {}
        (_, false) => anyhow::bail!("--route is for --service gateway (the other services answer themselves)"),
    }
    let config = args.pipeline.config(&args.log, "off")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let control = Arc::new(RunControl::new(true));
    process::stop_on_signals(&runtime, control.clone());

    let services_dir = args.log.data_dir.join("services");
    let auth = match args.service {
        Service::Gateway => None,
        Service::All | Service::Auth | Service::Payments => Some(open_auth(&args, &config, &services_dir, &runtime)?),
    };
    let store_reachable = Arc::new(AtomicBool::new(true));
    if let Some(auth) = &auth {
        let (store, reachable) = (auth.store().clone(), store_reachable.clone());
        runtime.spawn(async move {
            loop {
                reachable.store(store.ping().await.is_ok(), Ordering::SeqCst);
                tokio::time::sleep(STORE_CHECK_INTERVAL).await;
            }
        });
    }

    // On the embedded log the pipeline owns the log, so the payments API runs beside it;
    // on Kafka the pipeline runs as `paystream run` processes and the payments API only
    // publishes to the log and reads it.
    let on_kafka = args.log.kafka.kafka_brokers.is_some();
    let with_pipeline = match args.service {
        Service::All => true,
        Service::Payments => !on_kafka,
        Service::Gateway | Service::Auth => false,
    };
    let serves_payments = matches!(args.service, Service::All | Service::Payments);
    let metrics = Arc::new(Metrics::new());
    let mut services = match (args.service, &auth) {
        (Service::All | Service::Auth, Some(auth)) => paystream_auth::router(auth.clone()),
        (Service::Gateway, _) => paystream_edge::proxy::proxy_router(&args.routes).map_err(anyhow::Error::msg)?,
        _ => axum::Router::new(),
    };
    let views_stop = Arc::new(AtomicBool::new(false));
    let mut views = None;
    // The SQL endpoint and the views run with the pipeline, whose registry they share.
    let sql_metrics = with_pipeline.then(|| paystream_sql::SqlMetrics::new(&metrics.registry));
    let (pipeline, log) = if with_pipeline {
        let (pipeline, log, _) = process::prepare_pipeline(&args.log, config.clone(), metrics.clone())?;
        let drain = Arc::new(AtomicBool::new(false));
        // On Kafka the catalog's views are the views process's (the one keeper, which
        // would otherwise be fenced); on the embedded log this process owns the log.
        let catalog = args.log.kafka.kafka_brokers.is_none();
        let flags = (views_stop.clone(), drain);
        views = Some(args.views.start(catalog, &args.log, Some(log.clone()), flags, sql_metrics.clone())?);
        (Some(pipeline), Some(log))
    } else if serves_payments {
        let log: Arc<dyn paystream_pipeline::log::Log> =
            args.log.open_kafka(LogRole::Publisher)?.context("the payments API alone runs on Kafka")?;
        (None, Some(log))
    } else {
        (None, None)
    };
    // The embedded log this process owns is where its SQL endpoint writes the view catalog.
    let catalog_writer = log.clone().filter(|_| args.log.kafka.kafka_brokers.is_none());
    let intake_stop = Arc::new(AtomicBool::new(false));
    if let Some(log) = log.filter(|_| serves_payments) {
        let topics = paystream_pipeline::ensure_topics(log.as_ref(), &config)?;
        let clock = system_clock();
        let intake = paystream_payments::LogIntake::start(log, &topics, clock.clone(), intake_stop.clone())?;
        let store = runtime
            .block_on(async {
                match &config.postgres_url {
                    Some(url) => PaymentsStore::connect(url, &args.payments_schema).await,
                    None => PaymentsStore::open_embedded(&services_dir).await,
                }
            })
            .context("open the payments store")?;
        let payments = {
            let _entered = runtime.enter();
            PaymentsService::start(store, intake, clock)
        };
        services = services.merge(paystream_payments::router(payments));
    }

    let http_metrics = Arc::new(HttpMetrics::default());
    let gateway_config = GatewayConfig {
        trusted_proxies: args.trusted_proxies.clone(),
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        rate_limits: RateLimitConfig {
            default_per_minute: args.rate_limit_per_minute,
            auth_per_minute: args.auth_rate_limit_per_minute,
        },
        redis_url: args.redis_url.clone(),
        rate_limit_prefix: args.rate_limit_prefix.clone(),
        mask_rules: paystream_edge::mask::default_mask_rules().into_iter().chain(args.mask_rules.clone()).collect(),
    };
    let authenticator: paystream_http::SharedAuthenticator = match &auth {
        Some(auth) => paystream_auth::authenticator(auth),
        None => Arc::new(NothingHere),
    };
    let router = paystream_edge::gateway_router(services, authenticator, gateway_config, http_metrics.clone())
        .map_err(anyhow::Error::msg)?;
    let stopping = control.clone();
    let shutdown = async move {
        while !stopping.stopped() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (addr, gateway) = runtime
        .block_on(paystream_edge::serve_gateway(args.http_addr, router, shutdown))
        .with_context(|| format!("listen on {}", args.http_addr))?;
    eprintln!("gateway: http://{addr}");
    let sql = match (&args.sql.sql_password, args.service) {
        (Some(password), Service::All) => {
            let started = runtime.block_on(crate::sql::start_endpoint(
                &args.log,
                &args.sql,
                &args.views,
                catalog_writer,
                password.clone(),
                sql_metrics.clone(),
            ));
            Some(started.context("start the SQL endpoint")?.1)
        }
        _ => None,
    };

    let render_metrics = metrics.clone();
    let render_http = http_metrics.clone();
    // Without the pipeline, the process still says what it runs and what it uses.
    let process_metrics = (!with_pipeline).then(paystream_pipeline::metrics::ProcessMetrics::new);
    let render: RenderMetrics = Arc::new(move || {
        let http = render_http.render();
        match &process_metrics {
            Some(process) => process.render() + &http,
            None => render_metrics.render() + &http,
        }
    });
    let ready_control = control.clone();
    let readiness: Readiness = Arc::new(move || {
        if !store_reachable.load(Ordering::SeqCst) {
            return Err("the service store does not answer".into());
        }
        if with_pipeline {
            pipeline_readiness(&ready_control)
        } else if ready_control.stopped() {
            Err("draining".into())
        } else {
            Ok(())
        }
    });
    if let Some(addr) = process::start_operations_server(&runtime, args.pipeline.operations_addr(), render, readiness) {
        eprintln!("metrics: http://{addr}/metrics");
    }

    let outcome = if let Some(pipeline) = pipeline {
        pipeline.run(RunMode::Forever, &control).map(|_| ()).map_err(anyhow::Error::from)
    } else {
        while !control.stopped() {
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    };
    control.stop();
    intake_stop.store(true, Ordering::SeqCst);
    views_stop.store(true, Ordering::SeqCst);
    if let Some(views) = views {
        views.join();
    }
    if let Some(sql) = sql {
        sql.abort();
    }
    runtime.block_on(gateway).context("the gateway task")?.context("the gateway")?;
    outcome
}

/// The auth service (or, for `--service payments`, what authenticates its callers): its
/// store and signing keys.
fn open_auth(
    args: &ServeArgs,
    config: &paystream_pipeline::PipelineConfig,
    services_dir: &std::path::Path,
    runtime: &tokio::runtime::Runtime,
) -> Result<Arc<AuthService>> {
    let store = runtime
        .block_on(async {
            match &config.postgres_url {
                Some(url) => AuthStore::connect(url, &args.auth_schema).await,
                None => AuthStore::open_embedded(services_dir).await,
            }
        })
        .context("open the auth store")?;
    let keys = match &args.auth_key_file {
        Some(path) => Keyring::load(path),
        None => Keyring::load_or_create(&services_dir.join("auth-keys.json"), now_ms()),
    }
    .context("load the auth service's signing keys")?;
    Ok(Arc::new(runtime.block_on(AuthService::new(store, keys, AuthConfig::default(), system_clock()))?))
}

/// The gateway alone has no service of its own to authenticate for: its routes forward
/// requests, credentials and all, and the services authenticate them.
struct NothingHere;

impl paystream_http::Authenticator for NothingHere {
    fn authenticate<'a>(&'a self, _: &'a str) -> paystream_http::principal::AuthFuture<'a> {
        Box::pin(async { Err(paystream_http::AuthFailure::Unavailable) })
    }
}
