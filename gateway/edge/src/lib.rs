//! HTTP services of paystream, on axum. Today: the operations endpoints every process
//! serves (`/metrics` for Prometheus, `/healthz`). The API gateway and the auth,
//! disputes and customer services come here later.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// Renders the Prometheus text exposition of the process's metrics.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

pub fn operations_router(render: RenderMetrics) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let render = render.clone();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], render()).into_response() }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
}

/// Binds `addr` and serves the operations endpoints until `shutdown` completes.
/// Returns the bound address (useful with port 0) once listening.
pub async fn serve_operations(
    addr: SocketAddr,
    render: RenderMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let handle =
        tokio::spawn(
            async move { axum::serve(listener, operations_router(render)).with_graceful_shutdown(shutdown).await },
        );
    tracing::info!(%bound, "serving /metrics and /healthz");
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
    async fn serves_metrics_and_health() {
        let render: RenderMetrics = Arc::new(|| "paystream_up 1\n".to_string());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, handle) = serve_operations("127.0.0.1:0".parse().unwrap(), render, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("text/plain; version=0.0.4"));
        assert!(metrics.ends_with("paystream_up 1\n"));
        assert!(get(addr, "/healthz").await.ends_with("ok\n"));
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        tx.send(()).unwrap();
        handle.await.unwrap().unwrap();
    }
}
