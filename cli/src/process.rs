//! What every long-running command sets up: the IO runtime, the metrics endpoint, signal
//! handling, and the pipeline with the stores its settings name.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use paystream_edge::{Readiness, RenderMetrics};
use paystream_pipeline::log::Log;
use paystream_pipeline::metrics::Metrics;
use paystream_pipeline::{Pipeline, PipelineConfig, RunControl};
use paystream_storage::FileSnapshotStore;
use paystream_storage_postgres::PostgresRecordStore;
use paystream_storage_scylla::ScyllaStore;

use crate::log_args::{LogArgs, LogRole};
use crate::pipeline_args::PipelineArgs;

/// A tokio runtime for the metrics server and signal handling; the pipeline itself runs
/// on its own worker threads.
pub fn io_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?)
}

/// Serves /metrics, /livez and /readyz (ready while `control` says so) unless disabled;
/// returns the bound address.
pub fn start_metrics_server(
    runtime: &tokio::runtime::Runtime,
    args: &PipelineArgs,
    metrics: &Arc<Metrics>,
    control: &Arc<RunControl>,
) -> Option<SocketAddr> {
    let render_metrics = metrics.clone();
    let control = control.clone();
    let readiness: Readiness = Arc::new(move || pipeline_readiness(&control));
    start_operations_server(runtime, args.operations_addr(), Arc::new(move || render_metrics.render()), readiness)
}

/// The pipeline's part of `/readyz`.
pub fn pipeline_readiness(control: &RunControl) -> Result<(), String> {
    if control.stopped() {
        Err("draining".into())
    } else if control.ready() {
        Ok(())
    } else {
        Err("restoring partition state".into())
    }
}

/// Serves the operations endpoints on `metrics_addr` (none when `None`) with any
/// `render` and `readiness`.
pub fn start_operations_server(
    runtime: &tokio::runtime::Runtime,
    metrics_addr: Option<SocketAddr>,
    render: RenderMetrics,
    readiness: Readiness,
) -> Option<SocketAddr> {
    let metrics_addr = metrics_addr?;
    let served =
        runtime.block_on(paystream_edge::serve_operations(metrics_addr, render, readiness, std::future::pending()));
    match served {
        Ok((addr, _)) => Some(addr),
        Err(error) => {
            eprintln!("warning: cannot serve /metrics on {metrics_addr}: {error}; continuing without");
            None
        }
    }
}

/// Stops `control` on SIGINT or SIGTERM.
pub fn stop_on_signals(runtime: &tokio::runtime::Runtime, control: Arc<RunControl>) {
    runtime.spawn(async move {
        stop_signal().await;
        eprintln!("stopping: finishing the batch in flight and committing");
        control.stop();
    });
}

/// Returns when the process gets SIGINT or SIGTERM (never, if it cannot listen for
/// SIGTERM: that is logged).
pub async fn stop_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
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

/// The pipeline `run` and `serve` run: on the embedded log, or on Kafka in the consumer
/// group (or over every partition when a part of it reads them all). Returns the log
/// too, and whether it is Kafka.
pub fn prepare_pipeline(
    log_args: &LogArgs,
    config: PipelineConfig,
    metrics: Arc<Metrics>,
) -> Result<(Pipeline, Arc<dyn Log>, bool)> {
    let role = LogRole::Pipeline { workers: config.workers };
    let kafka = log_args.open_kafka(role)?;
    let log: Arc<dyn Log> = match &kafka {
        Some(kafka) => kafka.clone(),
        None => log_args.open()?,
    };
    let mut pipeline = pipeline(log.clone(), &log_args.data_dir, config, metrics)?;
    // The topics exist before anything reads them: the views this process keeps start
    // before the pipeline runs.
    let topics = paystream_pipeline::ensure_topics(log.as_ref(), &pipeline.config)?;
    let on_kafka = kafka.is_some();
    if let Some(kafka) = kafka {
        if pipeline.reads_every_partition() {
            // These read every partition: this process takes them all (static assignment).
            eprintln!(
                "kafka: a model reading terminal features or the PostgreSQL or ScyllaDB sink runs in one process: \
                 taking every partition, not joining group {}",
                pipeline.config.group_id
            );
        } else {
            let member = kafka
                .join(&pipeline.config.group_id, &topics.payments)
                .with_context(|| format!("join consumer group {}", pipeline.config.group_id))?;
            eprintln!("kafka: joined consumer group {}", pipeline.config.group_id);
            pipeline = pipeline.with_membership(member);
        }
    }
    Ok((pipeline, log, on_kafka))
}
