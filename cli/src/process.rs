//! What every long-running command sets up: the IO runtime, the metrics endpoint, signal
//! handling, and the pipeline with the stores its settings name.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use paystream_pipeline::log::Log;
use paystream_pipeline::metrics::Metrics;
use paystream_pipeline::{Pipeline, PipelineConfig, RunControl};
use paystream_storage::FileSnapshotStore;
use paystream_storage_postgres::PostgresRecordStore;
use paystream_storage_scylla::ScyllaStore;

use crate::pipeline_args::PipelineArgs;

/// A tokio runtime for the metrics server and signal handling; the pipeline itself runs
/// on its own worker threads.
pub fn io_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?)
}

/// Serves /metrics unless disabled; returns the bound address.
pub fn start_metrics_server(
    runtime: &tokio::runtime::Runtime,
    args: &PipelineArgs,
    metrics: &Arc<Metrics>,
) -> Option<SocketAddr> {
    if args.no_metrics {
        return None;
    }
    let render_metrics = metrics.clone();
    let render: paystream_edge::RenderMetrics = Arc::new(move || render_metrics.render());
    let served = runtime.block_on(paystream_edge::serve_operations(args.metrics_addr, render, std::future::pending()));
    match served {
        Ok((addr, _)) => Some(addr),
        Err(error) => {
            eprintln!("warning: cannot serve /metrics on {}: {error}; continuing without", args.metrics_addr);
            None
        }
    }
}

/// Stops `control` on SIGINT or SIGTERM.
pub fn stop_on_signals(runtime: &tokio::runtime::Runtime, control: Arc<RunControl>) {
    runtime.spawn(async move {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        eprintln!("stopping: finishing the batch in flight and committing");
        control.stop();
    });
}

pub fn pipeline(log: Arc<dyn Log>, data_dir: &Path, config: PipelineConfig, metrics: Arc<Metrics>) -> Result<Pipeline> {
    let snapshots = FileSnapshotStore::open(data_dir.join("snapshots"))?;
    let model: Arc<dyn paystream_models::FraudModel> = match &config.model_file {
        Some(path) => Arc::new(paystream_pipeline::load_model_file(path, config.operators.label_delay_ms)?),
        None => paystream_operators::default_model(&config.operators),
    };
    let record_store = match &config.postgres_url {
        Some(url) => Some(
            paystream_storage_postgres::Blocking::<PostgresRecordStore>::connect(url, &config.postgres_schema)
                .with_context(|| format!("record store: PostgreSQL schema {}", config.postgres_schema))?,
        ),
        None => None,
    };
    let history_store = match &config.scylla {
        Some(scylla) => {
            let mut store = paystream_storage_scylla::Blocking::<ScyllaStore>::connect(scylla.clone())
                .with_context(|| format!("history store: ScyllaDB at {}", scylla.nodes.join(",")))?;
            store.migrate().with_context(|| format!("history store: ScyllaDB keyspace {}", scylla.keyspace))?;
            Some(store)
        }
        None => None,
    };
    let mut pipeline = Pipeline::new(log, Arc::new(snapshots), model, config).with_metrics(metrics);
    if let Some(store) = record_store {
        pipeline = pipeline.with_record_store(Box::new(store));
    }
    if let Some(store) = history_store {
        pipeline = pipeline.with_history_store(Box::new(store));
    }
    Ok(pipeline)
}
