//! The scheduled worker: claims and concurrency through the library, then the real
//! `force-returns worker` process against a local bucket: uploads picked up on the next tick,
//! `/metrics` moving, SIGTERM mid-processing with nothing partial left, and a restart that
//! finishes the backlog exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use force_returns::layout::{CLAIMS, Parted, UNROUTED};
use force_returns::model::Decision;
use force_returns::pipeline::{RunOptions, Service};
use force_returns::scheduler::PipelineRunner;
use force_returns::shutdown::ShutdownController;
use force_returns::store::{self, LocalStore, ObjectMeta, ObjectStore, PutMode};
use force_returns::telemetry::Metrics;
use parquet::file::reader::FileReader as _;

use crate::common::{
    TestBucket, TokioClock, check_processed_exactly_once, copy_dir, done_records, manifest_dir,
    on_both_backends, parted_json_in, project, state_of,
};

const HEADER: &str = "Type,Date,Part of a policing operation,Policing operation,Latitude,Longitude,Gender,Age range,Self-defined ethnicity,Officer-defined ethnicity,Legislation,Object of search,Outcome,Outcome linked to object of search,Removal of more than just outer clothing\n";

/// A clean January 2020 extract of `rows` distinct searches.
fn extract(rows: usize) -> Vec<u8> {
    extract_from(0, rows)
}

/// January's records numbered `first..first + rows`: two forces' returns of different numbers
/// hold different records (the same records would be one file sent again).
fn extract_from(first: usize, rows: usize) -> Vec<u8> {
    let mut s = String::with_capacity(HEADER.len() + rows * 240);
    s.push_str(HEADER);
    for i in first..first + rows {
        // Every day of January has records, as a whole month's extract does.
        let (day, second) = (i % 31 + 1, (i / 31) % 86_400);
        let _ = writeln!(
            s,
            "Person search,2020-01-{day:02}T{:02}:{:02}:{:02}+00:00,False,,51.{:04},0.{:04},Male,18-24,White - English/Welsh/Scottish/Northern Irish/British,White,Misuse of Drugs Act 1971 (section 23),Controlled drugs,A no further action disposal,False,False",
            second / 3600,
            second / 60 % 60,
            second % 60,
            i % 1000,
            i % 997,
        );
    }
    s.into_bytes()
}

fn key(force: &str, file: &str) -> String {
    format!("incoming/{force}/stop_search/2020-01/{file}")
}

// ---------------------------------------------------------------------------------------------
// Through the library: claims, abandonment, concurrency.

/// A local store that can stall or slow snapshot writes, slow downloads down, refuse to renew
/// claims, and counts live claims.
#[derive(Debug)]
struct Gate {
    inner: LocalStore,
    stall_snapshots: bool,
    snapshot_delay: Duration,
    download_delay: Duration,
    fail_renewals: bool,
    stalled: tokio::sync::Notify,
    live_claims: AtomicUsize,
    max_claims: AtomicUsize,
}

impl Gate {
    fn plain(root: &Path) -> Gate {
        Gate {
            inner: LocalStore::new(root).unwrap(),
            stall_snapshots: false,
            snapshot_delay: Duration::ZERO,
            download_delay: Duration::ZERO,
            fail_renewals: false,
            stalled: tokio::sync::Notify::new(),
            live_claims: AtomicUsize::new(0),
            max_claims: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl ObjectStore for Gate {
    fn location(&self, key: &str) -> String {
        self.inner.location(key)
    }
    async fn list(&self, prefix: &str) -> store::Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn get(&self, key: &str) -> store::Result<(Vec<u8>, ObjectMeta)> {
        self.inner.get(key).await
    }
    async fn download(
        &self,
        key: &str,
        dest: &Path,
        feed: Option<store::Feed>,
    ) -> store::Result<store::Downloaded> {
        tokio::time::sleep(self.download_delay).await;
        self.inner.download(key, dest, feed).await
    }
    async fn put(&self, key: &str, bytes: Vec<u8>, mode: PutMode) -> store::Result<ObjectMeta> {
        let claim = key.starts_with("_state/claims/") && mode == PutMode::Create;
        if claim && self.fail_renewals && !key.ends_with(".0.json") {
            return Err(store::StoreError::Backend {
                action: "write",
                location: self.location(key),
                message: "the test refuses renewals".into(),
            });
        }
        let meta = self.inner.put(key, bytes, mode).await?;
        if claim {
            let live = self.live_claims.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_claims.fetch_max(live, Ordering::SeqCst);
        }
        Ok(meta)
    }
    async fn put_file(&self, key: &str, src: &Path, mode: PutMode) -> store::Result<ObjectMeta> {
        if self.stall_snapshots && key.starts_with("snapshots/") {
            self.stalled.notify_one();
            std::future::pending::<()>().await;
        }
        if key.starts_with("snapshots/") {
            tokio::time::sleep(self.snapshot_delay).await;
        }
        self.inner.put_file(key, src, mode).await
    }
    async fn copy(&self, from: &str, to: &str) -> store::Result<ObjectMeta> {
        self.inner.copy(from, to).await
    }
    async fn delete(&self, key: &str) -> store::Result<()> {
        if key.starts_with("_state/claims/") {
            let _ = self
                .live_claims
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        }
        self.inner.delete(key).await
    }
    async fn delete_version(&self, key: &str, etag: &str) -> store::Result<()> {
        self.inner.delete_version(key, etag).await
    }
}

fn runner(
    bucket: &TestBucket,
    store: Arc<dyn ObjectStore>,
    max_in_flight: usize,
) -> PipelineRunner {
    let project = project();
    let service = Arc::new(Service::new(
        Arc::clone(&project),
        store,
        bucket.clock.clone(),
        RunOptions::default(),
    ));
    PipelineRunner::new(
        service,
        &project,
        bucket.clock.clone(),
        Arc::new(Metrics::new(["stop_search"])),
        max_in_flight,
    )
}

#[tokio::test]
async fn an_upload_finished_by_another_worker_after_listing_is_not_processed_again() {
    let bucket = TestBucket::new();
    bucket.upload(&key("durham", "a.csv"), extract(5)).await;
    let late = bucket.service(RunOptions::default());
    let listed = late.discover().await.unwrap();
    assert_eq!(listed.len(), 1);
    // Another worker processes it between this worker's listing and its claim.
    assert_eq!(bucket.run().await.processed.len(), 1);
    assert!(late.try_claim(&listed[0]).await.unwrap().is_none());
    assert!(bucket.keys("_state/claims/").await.is_empty());
}

#[tokio::test]
async fn an_abandoned_upload_gives_its_claim_back_and_the_next_run_finishes_it() {
    let bucket = TestBucket::new();
    let upload = key("durham", "a.csv");
    bucket.upload(&upload, extract(50)).await;
    let gate = Arc::new(Gate {
        stall_snapshots: true,
        ..Gate::plain(bucket.dir.path())
    });
    let stalled = runner(&bucket, gate.clone(), 2);
    let (controller, shutdown) = ShutdownController::new();
    let run = tokio::spawn(async move { stalled.run_dataset("stop_search", &shutdown).await });
    // The check is done and the snapshot is being written when the deadline passes.
    gate.stalled.notified().await;
    assert_eq!(bucket.keys("_state/claims/").await.len(), 1);
    controller.drain();
    controller.abandon();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.released, std::slice::from_ref(&upload));
    assert!(report.processed.is_empty());
    assert!(bucket.keys("_state/claims/").await.is_empty());
    assert!(bucket.keys("_state/done/").await.is_empty());
    // Outputs written beside the stalled snapshot may be there (the next run writes them again
    // under the same keys); the snapshot and the manifest naming it are not.
    assert!(bucket.keys("snapshots/stop_search/").await.is_empty());

    let plain: Arc<dyn ObjectStore> = bucket.store.clone();
    let (_c, shutdown) = ShutdownController::new();
    let report = runner(&bucket, plain, 2)
        .run_dataset("stop_search", &shutdown)
        .await
        .unwrap();
    assert_eq!(report.processed.len(), 1);
    assert_eq!(report.processed[0].decision, Decision::Accepted);
    assert_eq!(bucket.keys("_state/done/").await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_claim_is_renewed_while_a_slow_upload_is_processed_so_no_one_takes_it_over() {
    let bucket = TestBucket::new();
    let upload = key("durham", "slow.csv");
    bucket.upload(&upload, extract(20)).await;
    // Time is tokio's, paused: writing the snapshot takes five minutes of it, ten claim
    // lifetimes.
    let clock = TokioClock::starting("2020-03-05T09:00:00Z");
    let options = |worker: &str| RunOptions {
        claim_ttl: Duration::from_secs(30),
        worker_id: worker.to_owned(),
        ..RunOptions::default()
    };
    let slow = Arc::new(Gate {
        snapshot_delay: Duration::from_mins(5),
        ..Gate::plain(bucket.dir.path())
    });
    let first = Service::new(project(), slow, clock.clone(), options("first"));
    let rival = Service::new(project(), bucket.store.clone(), clock, options("rival"));
    let listed = first.discover().await.unwrap();
    let claimed = first.try_claim(&listed[0]).await.unwrap().unwrap();
    let rival_runs = async {
        let mut outcomes = Vec::new();
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(70)).await;
            outcomes.push(rival.run_once().await.unwrap());
        }
        outcomes
    };
    let (processed, outcomes) = tokio::join!(first.process_claim(&claimed), rival_runs);
    let processed = processed.unwrap().expect("processed by the first worker");
    assert_eq!(processed.received.upload.source_key, upload);
    for (i, o) in outcomes.iter().enumerate() {
        assert!(
            o.processed.is_empty(),
            "run {i} of the rival took the upload over: {:?}",
            o.processed
        );
        assert_eq!(o.skipped, 1, "run {i}");
    }
    assert!(bucket.keys(CLAIMS).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_cannot_renew_its_claim_stops_before_committing_and_another_finishes() {
    let bucket = TestBucket::new();
    let upload = key("durham", "slow.csv");
    bucket.upload(&upload, extract(20)).await;
    let clock = TokioClock::starting("2020-03-05T09:00:00Z");
    let options = |worker: &str| RunOptions {
        claim_ttl: Duration::from_secs(30),
        worker_id: worker.to_owned(),
        ..RunOptions::default()
    };
    // The store answers everything but this worker's renewals, and it is slow to write.
    let cut_off = Arc::new(Gate {
        snapshot_delay: Duration::from_mins(5),
        fail_renewals: true,
        ..Gate::plain(bucket.dir.path())
    });
    let first = Service::new(project(), cut_off, clock.clone(), options("first"));
    let listed = first.discover().await.unwrap();
    let claimed = first.try_claim(&listed[0]).await.unwrap().unwrap();
    let failed = first.process_claim(&claimed).await.unwrap_err();
    assert!(
        failed.to_string().contains("was lost"),
        "stopped for losing its claim: {failed}"
    );
    let store = Arc::clone(&bucket.store);
    assert!(
        done_records(&store).await.is_empty(),
        "nothing was committed"
    );
    assert!(
        bucket
            .keys("snapshots/stop_search/_manifest")
            .await
            .is_empty()
    );

    let next = Service::new(project(), bucket.store.clone(), clock, options("next"))
        .run_once()
        .await
        .unwrap();
    assert_eq!(next.processed.len(), 1);
    check_processed_exactly_once(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_than_max_in_flight_uploads_are_processed_at_once() {
    let bucket = TestBucket::new();
    for i in 0..6 {
        bucket
            .upload(&key("durham", &format!("{i}.csv")), extract(20))
            .await;
    }
    let gate = Arc::new(Gate {
        download_delay: Duration::from_millis(200),
        ..Gate::plain(bucket.dir.path())
    });
    let (_c, shutdown) = ShutdownController::new();
    let report = runner(&bucket, gate.clone(), 2)
        .run_dataset("stop_search", &shutdown)
        .await
        .unwrap();
    assert_eq!(report.processed.len(), 6);
    assert_eq!(gate.max_claims.load(Ordering::SeqCst), 2);
    assert_eq!(gate.live_claims.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_run_writes_the_status_of_expected_returns_as_run_once_does() {
    let bucket = TestBucket::new();
    bucket
        .upload(&key("durham", "return.csv"), extract(20))
        .await;
    let (_c, shutdown) = ShutdownController::new();
    let status = force_returns::layout::status_key("stop_search");
    let report = runner(&bucket, bucket.store.clone(), 2)
        .run_dataset("stop_search", &shutdown)
        .await
        .unwrap();
    assert_eq!(report.processed.len(), 1);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let (bytes, _) = bucket.store.get(&status).await.expect("the status table");
    let rows = parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(bytes))
        .unwrap()
        .metadata()
        .file_metadata()
        .num_rows();
    assert!(rows > 0, "one row per force and expected month");

    // The same table as a run of `run --once` over the same bucket writes.
    let before = bucket.store.get(&status).await.unwrap().0;
    bucket.run().await;
    assert!(bucket.store.get(&status).await.unwrap().0 == before);
}

// ---------------------------------------------------------------------------------------------
// The real process.

/// A project folder like the real one, with the stop-and-search pipeline on `schedule`.
fn project_with_schedule(schedule: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&manifest_dir().join("schemas"), &dir.path().join("schemas"));
    let real = std::fs::read_to_string(manifest_dir().join("pipelines/stop_search.toml")).unwrap();
    let line = real.lines().find(|l| l.starts_with("schedule = ")).unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    std::fs::write(
        dir.path().join("pipelines/stop_search.toml"),
        real.replace(line, &format!("schedule = \"{schedule}\"")),
    )
    .unwrap();
    dir
}

/// A running `force-returns worker`, its JSON log collected line by line.
struct WorkerProcess {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<serde_json::Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl WorkerProcess {
    fn start(project: &Path, bucket: &Path, extra: &[&str]) -> WorkerProcess {
        Self::start_with(project, bucket.as_os_str(), extra, &[])
    }

    /// A worker on `bucket` (a directory or `s3://...`), with `env` added.
    fn start_with(
        project: &Path,
        bucket: &OsStr,
        extra: &[&str],
        env: &[(&'static str, String)],
    ) -> WorkerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_force-returns"))
            .arg("--project")
            .arg(project)
            .args(["--log-format", "json", "worker", "--listen", "127.0.0.1:0"])
            .arg("--bucket")
            .arg(bucket)
            .args(extra)
            .env_remove("FORCE_RETURNS_BUCKET")
            .env_remove("FORCE_RETURNS_CLAIM_TTL_SECONDS")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("FORCE_RETURNS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the worker starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "fields": { "message": line } }));
                sink.lock().unwrap().push(value);
            }
        });
        let mut worker = WorkerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            reader: Some(reader),
        };
        let started = worker.wait_for_event("worker started", Duration::from_secs(30));
        worker.addr = started["fields"]["address"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        worker
    }

    fn events(&self, message: &str) -> Vec<serde_json::Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|e| {
                e["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
            })
            .cloned()
            .collect()
    }

    fn wait_for_event(&mut self, message: &str, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = self.events(message).pop() {
                return e;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the worker exited ({status}) before logging `{message}`: {:#?}",
                    self.log.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no `{message}` within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A plain HTTP/1.1 GET: status and body.
    fn get(&self, path: &str) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(self.addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let status = text[9..12].parse().unwrap();
        (status, text.split_once("\r\n\r\n").unwrap().1.to_owned())
    }

    /// The value of one series on `/metrics`, written as the exposition shows it.
    fn metric_f64(&self, series: &str) -> f64 {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200);
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{body}"))
    }

    /// A series that counts whole things.
    fn metric(&self, series: &str) -> u64 {
        let value = self.metric_f64(series);
        assert!(
            value >= 0.0 && value.fract() < f64::EPSILON,
            "{series} = {value}"
        );
        value as u64
    }

    fn wait_for_metric(&self, series: &str, value: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.metric(series) < value {
            assert!(
                Instant::now() < deadline,
                "{series} did not reach {value} within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM and waits for the exit: its status and how long it took. Every line it
    /// logged has been read when this returns.
    fn terminate(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let sent = Instant::now();
        let kill = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let took = sent.elapsed();
                if let Some(reader) = self.reader.take() {
                    reader.join().unwrap();
                }
                return (status, took);
            }
            assert!(
                sent.elapsed() < within,
                "the worker did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn accepted(dataset: &str) -> String {
    format!(r#"force_returns_uploads_processed_total{{dataset="{dataset}",decision="accepted"}}"#)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Nothing half-written is visible: every snapshot is a whole Parquet file, the manifest names
/// only snapshots that exist, and every done-marker's outputs exist. Returns the done-markers
/// by upload key.
fn assert_consistent(bucket: &Path) -> BTreeMap<String, serde_json::Value> {
    for snapshot in files(&bucket.join("snapshots")) {
        if snapshot.extension().is_some_and(|e| e == "parquet") {
            let file = std::fs::File::open(&snapshot).unwrap();
            parquet::file::reader::SerializedFileReader::new(file)
                .unwrap_or_else(|e| panic!("{} is not whole: {e}", snapshot.display()));
        }
    }
    let manifest = parted_json_in(bucket, Parted::Manifest, "stop_search");
    let mut in_manifest = BTreeSet::new();
    for entry in manifest["current"].as_array().into_iter().flatten() {
        let snapshot = entry["snapshot_key"].as_str().unwrap();
        assert!(
            bucket.join(snapshot).is_file(),
            "the manifest names a missing {snapshot}"
        );
        assert!(
            in_manifest.insert(entry["submission_id"].as_str().unwrap().to_owned()),
            "the manifest holds {} twice",
            entry["submission_id"]
        );
    }
    let mut done = BTreeMap::new();
    for marker in files(&bucket.join("_state/done")) {
        let m = json(&marker);
        let sid = m["submission_id"].as_str().unwrap();
        let report = files(&bucket.join("feedback"))
            .into_iter()
            .find(|p| p.ends_with(format!("{sid}.json")))
            .unwrap_or_else(|| panic!("done-marker for {sid} but no report"));
        let report = json(&report);
        // An upload whose key has no place is reported without a dataset; its rows are under
        // `_unrouted`.
        let dataset = report["dataset"].as_str().unwrap_or(UNROUTED);
        for table in ["submissions", "findings"] {
            let key = format!("quality/{table}/dataset={dataset}/{sid}.parquet");
            assert!(bucket.join(&key).is_file(), "{key} is missing");
        }
        if m["decision"] != "rejected" {
            assert!(
                bucket
                    .join(report["outputs"]["snapshot"].as_str().unwrap())
                    .is_file()
            );
            assert!(
                in_manifest.contains(sid),
                "{sid} is done but not in the manifest"
            );
        }
        assert!(
            done.insert(m["key"].as_str().unwrap().to_owned(), m)
                .is_none()
        );
    }
    done
}

#[test]
fn the_worker_takes_the_backlog_then_new_uploads_on_the_next_tick_and_counts_them() {
    let project = project_with_schedule("*/2 * * * * *");
    let bucket = tempfile::tempdir().unwrap();
    let store = LocalStore::new(bucket.path()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let upload = |key: String, bytes: Vec<u8>| {
        runtime
            .block_on(store.put(&key, bytes, PutMode::Overwrite))
            .unwrap();
    };
    upload(key("durham", "backlog.csv"), extract(30));

    let mut worker = WorkerProcess::start(project.path(), bucket.path(), &[]);
    assert_eq!(worker.get("/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(worker.get("/readyz"), (200, "ready\n".to_owned()));
    worker.wait_for_metric(&accepted("stop_search"), 1, Duration::from_secs(30));
    assert_eq!(
        worker.metric(r#"force_returns_rows_accepted_total{dataset="stop_search"}"#),
        30
    );
    // The run ends (status table, then its metrics) after its last upload is counted.
    worker.wait_for_metric(
        r#"force_returns_runs_total{dataset="stop_search",outcome="ok"}"#,
        1,
        Duration::from_secs(30),
    );
    assert!(
        worker.metric_f64(
            r#"force_returns_last_successful_run_timestamp_seconds{dataset="stop_search"}"#
        ) > 1.5e9
    );

    // Uploads made while it runs: taken on the next tick (every 2 s), not at start.
    let uploaded = Instant::now();
    upload(key("kent", "new.csv"), extract_from(100, 40));
    upload(
        key("durham", "blank-type.csv"),
        std::fs::read(manifest_dir().join("tests/fixtures/defects/blank_type/input.csv")).unwrap(),
    );
    upload(
        "incoming/kent/use_of_force/2020-01/x.csv".to_owned(),
        extract(3),
    );
    worker.wait_for_metric(&accepted("stop_search"), 2, Duration::from_secs(30));
    worker.wait_for_metric(
        r#"force_returns_uploads_processed_total{dataset="stop_search",decision="rejected"}"#,
        1,
        Duration::from_secs(30),
    );
    worker.wait_for_metric(
        r#"force_returns_uploads_processed_total{dataset="_unrouted",decision="rejected"}"#,
        1,
        Duration::from_secs(30),
    );
    let picked_up = uploaded.elapsed();
    assert_eq!(
        worker.metric(r#"force_returns_rows_accepted_total{dataset="stop_search"}"#),
        70
    );
    assert_eq!(
        worker.metric(r#"force_returns_rows_read_total{dataset="stop_search"}"#),
        80
    );
    assert_eq!(
        worker.metric(r#"force_returns_findings_total{dataset="stop_search",severity="error",code="value_required"}"#),
        1
    );
    assert_eq!(
        worker.metric(r#"force_returns_findings_total{dataset="_unrouted",severity="error",code="upload_location_invalid"}"#),
        1
    );
    assert_eq!(
        worker.metric(r#"force_returns_upload_processing_seconds_count{dataset="stop_search"}"#),
        3
    );
    assert_eq!(
        worker.metric(r#"force_returns_backlog_uploads{dataset="stop_search"}"#),
        0
    );
    assert_eq!(worker.metric("force_returns_uploads_in_flight"), 0);
    // The run ends (status table, then its metrics) after its last upload is counted.
    worker.wait_for_metric(
        r#"force_returns_runs_total{dataset="stop_search",outcome="ok"}"#,
        2,
        Duration::from_secs(30),
    );

    let (status, took) = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    eprintln!("picked up new uploads after {picked_up:?}; idle shutdown took {took:?}");

    // Each processed upload is logged in its run's span and its own, with what it was.
    let processed = worker.events("upload processed");
    let new = processed
        .iter()
        .find(|e| e["span"]["key"] == key("kent", "new.csv"))
        .expect("the new upload's log line");
    let spans = new["spans"].as_array().unwrap();
    assert_eq!(spans[0]["name"], "run");
    assert_eq!(spans[0]["dataset"], "stop_search");
    assert_eq!(spans[0]["reason"], "schedule");
    for (field, value) in [
        ("dataset", "stop_search"),
        ("force", "kent"),
        ("period", "2020-01"),
    ] {
        assert_eq!(new["span"][field], value, "{new}");
    }
    assert_eq!(
        new["span"]["submission"].as_str().unwrap().len(),
        24,
        "{new}"
    );
    let first = processed
        .iter()
        .find(|e| e["span"]["key"] == key("durham", "backlog.csv"))
        .unwrap();
    assert_eq!(first["spans"][0]["reason"], "backlog at start");

    let done = assert_consistent(bucket.path());
    assert_eq!(done.len(), 4);
    assert!(files(&bucket.path().join("_state/claims")).is_empty());
}

#[test]
fn sigterm_mid_processing_leaves_nothing_partial_and_restarts_finish_the_backlog_exactly_once() {
    let project = project_with_schedule("*/2 * * * * *");
    let bucket = tempfile::tempdir().unwrap();
    let store = LocalStore::new(bucket.path()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let forces = ["durham", "kent", "essex", "surrey"];
    for (i, force) in forces.into_iter().enumerate() {
        // Each force its own records: the same file from two forces is a file sent again.
        let records = extract_from(i * 100_000, 60_000);
        runtime
            .block_on(store.put(&key(force, "big.csv"), records, PutMode::Overwrite))
            .unwrap();
    }
    let claims = |n: usize| {
        let deadline = Instant::now() + Duration::from_mins(1);
        while files(&bucket.path().join("_state/claims")).len() < n {
            assert!(Instant::now() < deadline, "{n} claims never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut processed_by_key: BTreeMap<String, usize> = BTreeMap::new();
    let mut count = |worker: &WorkerProcess| {
        for e in worker.events("upload processed") {
            *processed_by_key
                .entry(e["span"]["key"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    };

    // 1. SIGTERM while two uploads are in flight, with time to finish them: they finish,
    //    the other two are not started.
    let mut worker = WorkerProcess::start(
        project.path(),
        bucket.path(),
        &["--max-in-flight", "2", "--shutdown-deadline", "5m"],
    );
    claims(2);
    let (status, drained_in) = worker.terminate(Duration::from_mins(5));
    assert!(status.success(), "{status}");
    assert_eq!(
        worker
            .events("worker stopped after finishing the uploads in flight")
            .len(),
        1
    );
    count(&worker);
    let done = assert_consistent(bucket.path());
    assert_eq!(done.len(), 2, "the two in flight finished");
    assert!(files(&bucket.path().join("_state/claims")).is_empty());

    // 2. SIGTERM with a deadline of zero, which no upload can meet however fast the machine:
    //    the uploads in flight are dropped, their claims released, nothing of them becomes
    //    visible.
    let mut worker = WorkerProcess::start(
        project.path(),
        bucket.path(),
        &["--shutdown-deadline", "0s"],
    );
    claims(2);
    let (status, abandoned_in) = worker.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    assert_eq!(
        worker
            .events("shutdown: upload dropped and its claim released")
            .len(),
        2
    );
    count(&worker);
    assert_eq!(
        assert_consistent(bucket.path()).len(),
        2,
        "nothing more is done"
    );
    assert!(
        files(&bucket.path().join("_state/claims")).is_empty(),
        "claims are released"
    );

    // 3. A restart finishes the backlog.
    let mut worker = WorkerProcess::start(project.path(), bucket.path(), &[]);
    worker.wait_for_metric(&accepted("stop_search"), 2, Duration::from_mins(2));
    let (status, _) = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    count(&worker);

    let done = assert_consistent(bucket.path());
    let expected: BTreeSet<String> = forces.iter().map(|f| key(f, "big.csv")).collect();
    assert_eq!(done.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(
        processed_by_key.keys().cloned().collect::<BTreeSet<_>>(),
        expected
    );
    assert!(
        processed_by_key.values().all(|n| *n == 1),
        "each upload processed exactly once over the three lives: {processed_by_key:?}"
    );
    let manifest = parted_json_in(bucket.path(), Parted::Manifest, "stop_search");
    assert_eq!(manifest["current"].as_array().unwrap().len(), 4);
    eprintln!("drained two uploads in {drained_in:?}; abandoned two in {abandoned_in:?}");
}

#[test]
fn check_config_and_the_worker_refuse_an_invalid_schedule_with_file_and_line() {
    // Five fields, as classic cron writes them: this parser needs the seconds field first.
    let project = project_with_schedule("*/15 * * * *");
    let file = project.path().join("pipelines/stop_search.toml");
    let line = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("schedule = "))
        .unwrap()
        + 1;
    let expected = format!(
        "{}:{line}: schedule `*/15 * * * *` is not a valid cron expression",
        file.display()
    );
    for args in [
        &["check-config"][..],
        &["worker", "--listen", "127.0.0.1:0", "--bucket"][..],
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_force-returns"));
        command.arg("--project").arg(project.path()).args(args);
        if args[0] == "worker" {
            command.arg(project.path().join("bucket"));
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&expected), "{args:?}: {stderr}");
    }
}

/// A clean return of `force` for `period`: `rows` searches on the month's days, `salt` making
/// two uploads of one month differ.
fn month_return(period: &str, rows: usize, salt: usize) -> Vec<u8> {
    let mut s = String::from(HEADER);
    for i in 0..rows {
        let _ = writeln!(
            s,
            "Person search,{period}-{:02}T{:02}:{:02}:00+00:00,False,,51.{:04},0.{:04},Male,18-24,White - English/Welsh/Scottish/Northern Irish/British,White,Misuse of Drugs Act 1971 (section 23),Controlled drugs,A no further action disposal,False,False",
            i % 28 + 1,
            i % 24,
            (i + salt) % 60,
            i + salt,
            i,
        );
    }
    s.into_bytes()
}

on_both_backends!(four_worker_processes_share_two_hundred_uploads_each_processed_exactly_once);
async fn four_worker_processes_share_two_hundred_uploads_each_processed_exactly_once(
    bucket: TestBucket,
) {
    const WORKERS: usize = 4;
    let forces: Vec<String> = project().code_lists.forces().unwrap().codes[..43]
        .iter()
        .map(|c| c.code.clone())
        .collect();
    let mut uploads = Vec::new();
    for month in 1..=5 {
        let period = format!("2020-{month:02}");
        for (i, force) in forces.iter().enumerate() {
            uploads.push((
                format!("incoming/{force}/stop_search/{period}/return.csv"),
                month_return(&period, 5 + i % 4, i),
            ));
        }
    }
    // Ten months sent again (the later upload becomes current), and keys with no place.
    for force in &forces[..10] {
        uploads.push((
            format!("incoming/{force}/stop_search/2020-03/corrected.csv"),
            month_return("2020-03", 6, 99),
        ));
    }
    for odd in [
        "incoming/Durham/stop_search/2020-01/a.csv",
        "incoming/kent/stop_search/2020-01/extra/a.csv",
        "incoming/gotham/stop_search/2020-01/a.csv",
    ] {
        uploads.push((odd.to_owned(), month_return("2020-01", 3, 0)));
    }
    for (key, bytes) in &uploads {
        bucket.upload(key, bytes.clone()).await;
    }
    assert!(uploads.len() >= 200);

    let project = project_with_schedule("0 0 0 1 1 *");
    let (target, env) = bucket.for_processes();
    let started = Instant::now();
    let mut workers: Vec<WorkerProcess> = (0..WORKERS)
        .map(|_| {
            WorkerProcess::start_with(
                project.path(),
                OsStr::new(&target),
                &["--max-in-flight", "2"],
                &env,
            )
        })
        .collect();
    let state = state_of(&bucket.store);
    let deadline = Instant::now() + Duration::from_mins(15);
    while state.done().await.unwrap().markers.len() < uploads.len() {
        assert!(Instant::now() < deadline, "not every upload was processed");
        for w in &mut workers {
            assert!(w.child.try_wait().unwrap().is_none(), "a worker ended");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();
    let mut times: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_worker = Vec::new();
    for w in &mut workers {
        let (status, _) = w.terminate(Duration::from_mins(1));
        assert!(status.success(), "{status}");
        let processed = w.events("upload processed");
        per_worker.push(processed.len());
        for e in processed {
            *times
                .entry(e["span"]["key"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "processed more than once: {twice:?}");
    assert_eq!(times.len(), uploads.len(), "{per_worker:?}");
    let rows = check_processed_exactly_once(&bucket.store).await;
    eprintln!(
        "race: {} uploads, {WORKERS} worker processes of 2 in flight, {:.1}s; processed per worker {per_worker:?}; {rows} snapshot rows",
        uploads.len(),
        elapsed.as_secs_f64()
    );
    assert!(bucket.run().await.processed.is_empty());
}

#[test]
fn a_killed_workers_downloaded_upload_is_removed_when_the_next_worker_starts() {
    let project = project_with_schedule("0 0 0 1 1 *");
    let bucket = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let store = LocalStore::new(bucket.path()).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(store.put(
            &key("durham", "big.csv"),
            extract(300_000),
            PutMode::Overwrite,
        ))
        .unwrap();
    let work_dir = work.path().display().to_string();
    let mut first = WorkerProcess::start(project.path(), bucket.path(), &["--work-dir", &work_dir]);
    // Killed while the force's upload lies in its work folder.
    let deadline = Instant::now() + Duration::from_mins(1);
    let left = loop {
        let downloads: Vec<PathBuf> = files(work.path())
            .into_iter()
            .filter(|p| p.ends_with("upload"))
            .collect();
        if let [download] = downloads.as_slice() {
            break download.clone();
        }
        assert!(Instant::now() < deadline, "no download appeared");
        std::thread::sleep(Duration::from_millis(10));
    };
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(left.exists(), "SIGKILL leaves the download behind");

    // The next worker clears it before anything else (the upload is still claimed by the dead
    // worker, so it does not download it again).
    let mut next = WorkerProcess::start(project.path(), bucket.path(), &["--work-dir", &work_dir]);
    let remaining: Vec<PathBuf> = files(work.path())
        .into_iter()
        .filter(|p| p.extension().is_none_or(|e| e != "lock"))
        .collect();
    assert!(remaining.is_empty(), "left in the work root: {remaining:?}");
    let (status, _) = next.terminate(Duration::from_secs(30));
    assert!(status.success());
    assert!(
        files(work.path()).is_empty(),
        "a worker stopped removes its folder"
    );
}
