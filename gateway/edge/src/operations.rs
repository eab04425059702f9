//! The operations endpoints every process serves on its metrics address: `/metrics`
//! (Prometheus text format), `/livez` (200 while the process runs; `/healthz` is the
//! same) and `/readyz` (200 when [`Readiness`] says the process can do its job, else 503
//! with the reason).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// Renders the Prometheus text exposition of the process's metrics.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// `Ok` when the process is ready to serve; otherwise why not (shown on `/readyz`).
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

pub fn operations_router(render: RenderMetrics, readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let render = render.clone();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], render()).into_response() }
            }),
        )
        .route("/livez", get(|| async { "ok\n" }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    match readiness() {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
                    }
                }
            }),
        )
}

/// Binds `addr` and serves the operations endpoints until `shutdown` completes.
/// Returns the bound address (useful with port 0) once listening.
pub async fn serve_operations(
    addr: SocketAddr,
    render: RenderMetrics,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        axum::serve(listener, operations_router(render, readiness)).with_graceful_shutdown(shutdown).await
    });
    tracing::info!(%bound, "serving /metrics, /livez and /readyz");
    Ok((bound, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_metrics_liveness_and_readiness() {
        let render: RenderMetrics = Arc::new(|| "paystream_up 1\n".to_string());
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ready.clone();
        let readiness: Readiness =
            Arc::new(
                move || {
                    if flag.load(std::sync::atomic::Ordering::SeqCst) { Ok(()) } else { Err("restoring".into()) }
                },
            );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, handle) = serve_operations("127.0.0.1:0".parse().unwrap(), render, readiness, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("text/plain; version=0.0.4"));
        assert!(metrics.ends_with("paystream_up 1\n"));
        assert!(get(addr, "/healthz").await.ends_with("ok\n"));
        assert!(get(addr, "/livez").await.ends_with("ok\n"));
        let not_ready = get(addr, "/readyz").await;
        assert!(not_ready.starts_with("HTTP/1.1 503") && not_ready.ends_with("not ready: restoring\n"), "{not_ready}");
        ready.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        tx.send(()).unwrap();
        handle.await.unwrap().unwrap();
    }
}
