//! The worker's HTTP endpoint: health, readiness and metrics.
//!
//! - `GET /healthz`: 200 while the process is serving (liveness);
//! - `GET /readyz`: 200 `ready` when configuration is loaded (it is, or the worker would not
//!   have started), the bucket is working and the worker is not shutting down; 503 `not
//!   ready: bucket unreachable` or `not ready: shutting down` otherwise;
//! - `GET /metrics`: every metric in the Prometheus text format (see `metrics`).
//!
//! Rules: the router only reads: it never claims or processes uploads. The endpoint is
//! unauthenticated, so no request to it can make the service hammer the bucket or learn its
//! name: [`Readiness`] asks the bucket at most once per interval however many callers ask
//! (they share one probe and its answer), counts the outcome of real work as well, and says
//! no more than the words above; what failed, and where, goes to the logs.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::shutdown::Shutdown;
use crate::store::{ObjectStore, S3Observer};
use crate::telemetry::Metrics;

/// How long the readiness probe waits for the bucket.
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// What the probe lists: the claims folder holds only uploads in flight, so a listing of it is
/// small, and proves the bucket answers and the credentials work.
const PROBE_PREFIX: &str = "_state/claims/";

/// Whether the bucket is working, as readiness reports it.
///
/// The bucket is working when no request failed within the last `interval` and one was
/// answered within it. The requests are real work's (through [`Readiness::observe`]; the S3
/// client reports every request as an [`S3Observer`]) and, when nothing was heard within the
/// interval, one small listing (the probe). Callers that arrive while the probe runs wait for
/// its answer instead of sending their own, so the bucket sees at most one probe per interval.
/// A failure keeps the worker not ready for the whole interval, even if later requests
/// succeed: a bucket that fails now and then is not one to report ready.
pub struct Readiness {
    clock: Arc<dyn Clock>,
    interval: chrono::Duration,
    heard: Mutex<Heard>,
    probing: tokio::sync::Mutex<()>,
}

/// The last time the bucket answered a request, and the last time it failed one.
#[derive(Debug, Default, Clone, Copy)]
struct Heard {
    answered: Option<DateTime<Utc>>,
    failed: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("interval", &self.interval)
            .field("heard", &*lock(&self.heard))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Readiness {
    /// Readiness that asks the bucket at most once per `interval` (at least one second).
    pub fn new(clock: Arc<dyn Clock>, interval: Duration) -> Readiness {
        Readiness {
            clock,
            interval: chrono::Duration::from_std(interval.max(Duration::from_secs(1)))
                .unwrap_or(chrono::Duration::MAX),
            heard: Mutex::new(Heard::default()),
            probing: tokio::sync::Mutex::new(()),
        }
    }

    /// Records that the bucket answered a request (`true`) or failed it (`false`), now.
    pub fn observe(&self, answered: bool) {
        let now = self.clock.now();
        let mut heard = lock(&self.heard);
        if answered {
            heard.answered = Some(now);
        } else {
            heard.failed = Some(now);
        }
    }

    /// What was heard within the interval: `Some(false)` after a failure, `Some(true)` after
    /// an answer, `None` when nothing was.
    fn recent(&self) -> Option<bool> {
        let now = self.clock.now();
        let heard = *lock(&self.heard);
        let within = |at: Option<DateTime<Utc>>| at.is_some_and(|at| now - at < self.interval);
        if within(heard.failed) {
            Some(false)
        } else if within(heard.answered) {
            Some(true)
        } else {
            None
        }
    }

    /// Whether the bucket is working, probing `store` when nothing was heard of it within the
    /// interval.
    pub async fn bucket_ok(&self, store: &dyn ObjectStore) -> bool {
        if let Some(ok) = self.recent() {
            return ok;
        }
        let _probe = self.probing.lock().await;
        // Another caller may have probed while this one waited.
        if let Some(ok) = self.recent() {
            return ok;
        }
        let ok = match tokio::time::timeout(READY_TIMEOUT, store.list(PROBE_PREFIX)).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "not ready: the bucket failed the readiness listing");
                false
            }
            Err(_) => {
                tracing::warn!(
                    location = %store.location(PROBE_PREFIX),
                    seconds = READY_TIMEOUT.as_secs(),
                    "not ready: the bucket did not answer the readiness listing in time"
                );
                false
            }
        };
        self.observe(ok);
        ok
    }
}

impl S3Observer for Readiness {
    fn finished(&self, _operation: &str, answered: bool) {
        self.observe(answered);
    }
}

/// What the endpoint reads.
#[derive(Clone)]
pub struct ApiState {
    /// The worker's metrics.
    pub metrics: Arc<Metrics>,
    /// The bucket, for the readiness probe.
    pub store: Arc<dyn ObjectStore>,
    /// Whether the bucket is working.
    pub readiness: Arc<Readiness>,
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

async fn readyz(State(state): State<ApiState>) -> (StatusCode, &'static str) {
    if state.shutdown.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        );
    }
    if state.readiness.bucket_ok(state.store.as_ref()).await {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: bucket unreachable\n",
        )
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
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::clock::FixedClock;
    use crate::shutdown::ShutdownController;
    use crate::store::{self, Downloaded, Feed, LocalStore, ObjectMeta, PutMode};

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

    fn clock() -> Arc<FixedClock> {
        Arc::new(FixedClock::new("2020-03-05T09:00:00Z".parse().unwrap()))
    }

    fn later(clock: &FixedClock, seconds: i64) {
        clock.set(clock.now() + chrono::Duration::seconds(seconds));
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
                readiness: Arc::new(Readiness::new(clock(), Duration::from_secs(30))),
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
            (503, "not ready: shutting down\n".to_owned())
        );
        assert_eq!(call("/healthz").await.unwrap().0, 200);
        stop_tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bucket_that_cannot_be_listed_is_not_ready_and_the_answer_names_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
        // A file where the claims folder should be: listing it fails.
        std::fs::write(dir.path().join("_state"), b"not a folder").unwrap();
        let (_controller, shutdown) = ShutdownController::new();
        let app = ApiState {
            metrics: Arc::new(Metrics::new(["stop_search"])),
            store,
            readiness: Arc::new(Readiness::new(clock(), Duration::from_secs(30))),
            shutdown,
        };
        let (status, body) = readyz(State(app)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "not ready: bucket unreachable\n");
    }

    /// A local store whose listings are counted and wait for a permit.
    #[derive(Debug)]
    struct Counted {
        inner: LocalStore,
        lists: AtomicUsize,
        permits: tokio::sync::Semaphore,
    }

    impl Counted {
        fn new(root: &Path, permits: usize) -> Counted {
            Counted {
                inner: LocalStore::new(root).unwrap(),
                lists: AtomicUsize::new(0),
                permits: tokio::sync::Semaphore::new(permits),
            }
        }

        fn lists(&self) -> usize {
            self.lists.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl ObjectStore for Counted {
        fn location(&self, key: &str) -> String {
            self.inner.location(key)
        }
        async fn list(&self, prefix: &str) -> store::Result<Vec<ObjectMeta>> {
            self.lists.fetch_add(1, Ordering::SeqCst);
            self.permits.acquire().await.unwrap().forget();
            self.inner.list(prefix).await
        }
        async fn get(&self, key: &str) -> store::Result<(Vec<u8>, ObjectMeta)> {
            self.inner.get(key).await
        }
        async fn download(
            &self,
            key: &str,
            dest: &Path,
            feed: Option<Feed>,
        ) -> store::Result<Downloaded> {
            self.inner.download(key, dest, feed).await
        }
        async fn put(&self, key: &str, bytes: Vec<u8>, mode: PutMode) -> store::Result<ObjectMeta> {
            self.inner.put(key, bytes, mode).await
        }
        async fn put_file(
            &self,
            key: &str,
            src: &Path,
            mode: PutMode,
        ) -> store::Result<ObjectMeta> {
            self.inner.put_file(key, src, mode).await
        }
        async fn copy(&self, from: &str, to: &str) -> store::Result<ObjectMeta> {
            self.inner.copy(from, to).await
        }
        async fn delete(&self, key: &str) -> store::Result<()> {
            self.inner.delete(key).await
        }

        async fn delete_version(&self, key: &str, etag: &str) -> store::Result<()> {
            self.inner.delete_version(key, etag).await
        }
    }

    #[tokio::test]
    async fn callers_share_one_probe_and_its_answer_holds_for_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Counted::new(dir.path(), 0));
        let clock = clock();
        let readiness = Arc::new(Readiness::new(clock.clone(), Duration::from_secs(30)));
        let callers: Vec<_> = (0..16)
            .map(|_| {
                let (readiness, store) = (Arc::clone(&readiness), Arc::clone(&store));
                tokio::spawn(async move { readiness.bucket_ok(store.as_ref()).await })
            })
            .collect();
        // The probe has started and is held; every other caller is waiting for it.
        while store.lists() == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        store.permits.add_permits(100);
        for caller in callers {
            assert!(caller.await.unwrap());
        }
        assert_eq!(store.lists(), 1, "sixteen callers, one listing");
        later(&clock, 29);
        assert!(readiness.bucket_ok(store.as_ref()).await);
        assert_eq!(store.lists(), 1, "the answer holds for the interval");
        later(&clock, 1);
        assert!(readiness.bucket_ok(store.as_ref()).await);
        assert_eq!(store.lists(), 2, "then the bucket is asked again");
    }

    #[tokio::test]
    async fn real_work_counts_and_a_failure_holds_for_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let store = Counted::new(dir.path(), 100);
        let clock = clock();
        let readiness = Readiness::new(clock.clone(), Duration::from_secs(30));
        readiness.finished("PutObject", true);
        assert!(readiness.bucket_ok(&store).await);
        later(&clock, 10);
        readiness.finished("GetObject", false);
        assert!(!readiness.bucket_ok(&store).await);
        later(&clock, 10);
        readiness.finished("PutObject", true);
        assert!(
            !readiness.bucket_ok(&store).await,
            "an answer after a failure does not make up for it within the interval"
        );
        assert_eq!(store.lists(), 0, "real work told it all: no probe");
        later(&clock, 20);
        assert!(readiness.bucket_ok(&store).await);
        assert_eq!(
            store.lists(),
            0,
            "the failure is past and an answer is recent"
        );
        later(&clock, 30);
        assert!(readiness.bucket_ok(&store).await);
        assert_eq!(store.lists(), 1, "nothing recent: one probe");
    }
}
