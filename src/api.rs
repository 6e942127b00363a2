//! The worker's HTTP endpoint: health, readiness and metrics.
//!
//! - `GET /healthz`: 200 while the process is serving (liveness);
//! - `GET /readyz`: 200 when configuration is loaded (it is, or the worker would not have
//!   started), the bucket answers a small listing within [`READY_TIMEOUT`], and the worker is
//!   not shutting down; 503 with the reason otherwise;
//! - `GET /metrics`: every metric in the Prometheus text format (see `metrics`).
//!
//! The router only reads: it never claims or processes uploads.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::ObjectStore;

/// How long the readiness check waits for the bucket.
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoint reads.
#[derive(Clone)]
pub struct ApiState {
    /// The worker's metrics.
    pub metrics: Arc<Metrics>,
    /// The bucket, for the readiness check.
    pub store: Arc<dyn ObjectStore>,
    /// The worker's shutdown phase.
    pub shutdown: Shutdown,
}

/// The router: `/healthz`, `/readyz`, `/metrics`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves the router on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(stop)
        .await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<ApiState>) -> (StatusCode, String) {
    if state.shutdown.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_owned(),
        );
    }
    // The claims folder holds only uploads in flight: a cheap listing that proves the bucket
    // answers and the credentials work.
    match tokio::time::timeout(READY_TIMEOUT, state.store.list("_state/claims/")).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n".to_owned()),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the bucket is not reachable: {e}\n"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the bucket did not answer within {} s\n",
                READY_TIMEOUT.as_secs()
            ),
        ),
    }
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::shutdown::ShutdownController;
    use crate::store::LocalStore;

    /// A plain HTTP/1.1 GET over a socket: status and body.
    fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let status = text[9..12].parse().unwrap();
        let body = text.split_once("\r\n\r\n").unwrap().1.to_owned();
        (status, body)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn health_readiness_and_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
        let metrics = Arc::new(Metrics::new(["stop_search"]));
        let (controller, shutdown) = ShutdownController::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            ApiState {
                metrics,
                store,
                shutdown,
            },
            async {
                let _ = stop_rx.await;
            },
        ));
        let call = |path: &'static str| tokio::task::spawn_blocking(move || get(addr, path));
        assert_eq!(call("/healthz").await.unwrap(), (200, "ok\n".to_owned()));
        assert_eq!(call("/readyz").await.unwrap(), (200, "ready\n".to_owned()));
        let (status, body) = call("/metrics").await.unwrap();
        assert_eq!(status, 200);
        assert!(
            body.contains(
                "force_returns_uploads_processed_total{dataset=\"stop_search\",decision=\"accepted\"} 0\n"
            ),
            "{body}"
        );
        assert_eq!(call("/nothing").await.unwrap().0, 404);
        controller.drain();
        assert_eq!(
            call("/readyz").await.unwrap(),
            (503, "shutting down\n".to_owned())
        );
        assert_eq!(call("/healthz").await.unwrap().0, 200);
        stop_tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn not_ready_when_the_bucket_cannot_be_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
        // A file where the claims folder should be: listing it fails.
        std::fs::write(dir.path().join("_state"), b"not a folder").unwrap();
        let (_controller, shutdown) = ShutdownController::new();
        let app = ApiState {
            metrics: Arc::new(Metrics::new(["stop_search"])),
            store,
            shutdown,
        };
        let (status, body) = readyz(State(app)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.starts_with("the bucket is not reachable: "), "{body}");
    }
}
