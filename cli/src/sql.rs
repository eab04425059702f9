//! `paystream sql`: analysts' SQL over the topics. With `--execute` it runs one
//! statement and prints the result; otherwise it serves the PostgreSQL wire protocol on
//! `--listen` until stopped, for psql, Grafana and drivers.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use paystream_sql::{LogSource, ScanLimits, SqlServerConfig};

use crate::log_args::{LogArgs, LogRole};

#[derive(Args)]
pub struct SqlArgs {
    #[command(flatten)]
    log: LogArgs,
    /// Run this statement, print its rows and exit.
    #[arg(long, short = 'e')]
    execute: Option<String>,
    /// Where the PostgreSQL wire endpoint listens (PostgreSQL's own 5432 is left free).
    #[arg(long, env = "PAYSTREAM_SQL_LISTEN", default_value = "127.0.0.1:5433")]
    listen: SocketAddr,
    /// The login analysts use.
    #[arg(long, env = "PAYSTREAM_SQL_USER", default_value = "analyst")]
    user: String,
    /// Its password (at least 12 characters); required to serve.
    #[arg(long, env = "PAYSTREAM_SQL_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Rows one table scan may read in one statement.
    #[arg(long, default_value_t = ScanLimits::default().rows_max)]
    scan_rows_max: usize,
}

pub fn sql(args: SqlArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let source = match args.log.open_kafka(LogRole::Reader)? {
        Some(kafka) => LogSource::Shared(kafka),
        None => LogSource::Embedded(args.log.data_dir.clone()),
    };
    let names = args.log.topic_names()?;
    let topic_of = move |role: &str| names.of_role(role).unwrap_or(role).to_string();
    let limits = ScanLimits { rows_max: args.scan_rows_max };
    let context = runtime.block_on(paystream_sql::session_context(source, topic_of, limits))?;
    if let Some(statement) = &args.execute {
        let batches = runtime.block_on(async { context.sql(statement).await?.collect().await })?;
        println!("{}", paystream_sql::pretty(&batches)?);
        return Ok(());
    }
    let password = args.password.context("serving SQL needs a password: --password or PAYSTREAM_SQL_PASSWORD")?;
    let config = SqlServerConfig { listen: args.listen, user: args.user.clone(), password };
    let (bound, server) = runtime.block_on(paystream_sql::serve_sql(Arc::new(context), config))?;
    eprintln!("sql: postgres://{}@{bound}/datafusion", args.user);
    runtime.block_on(crate::process::stop_signal());
    server.abort();
    Ok(())
}
