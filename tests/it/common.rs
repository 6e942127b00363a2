//! Shared helpers: a fresh bucket per test (local or on the S3 test server), the project, the
//! independent readers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use force_returns::clock::{Clock, FixedClock, SystemClock};
use force_returns::config::Project;
use force_returns::layout::{self, Parted, feedback_base};
use force_returns::pipeline::{RunOptions, RunOutcome, Service, parse_upload_key};
use force_returns::state::{DoneRecord, State, StateOptions};
use force_returns::store::{
    Downloaded, Feed, LocalStore, ObjectMeta, ObjectStore, PutMode, S3Location, S3Options, S3Store,
};
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::Value;

/// A clean stop-and-search return of `rows` records dated in `period` (`YYYY-MM`), every
/// record a different time, with self-defined ethnicity `ethnicity`.
pub fn stop_search_file(period: &str, rows: usize, ethnicity: &str) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut s = String::from(
        "Type,Date,Part of a policing operation,Policing operation,Latitude,Longitude,Gender,Age range,Self-defined ethnicity,Officer-defined ethnicity,Legislation,Object of search,Outcome,Outcome linked to object of search,Removal of more than just outer clothing\n",
    );
    for i in 0..rows {
        let _ = writeln!(
            s,
            "Person search,{period}-{:02}T{:02}:{:02}:00+00:00,False,,53.4,-1.4,Female,25-34,{ethnicity},White,Police and Criminal Evidence Act 1984 (section 1),Stolen goods,Arrest,True,False",
            i % 28 + 1,
            i % 24,
            i % 60
        );
    }
    s.into_bytes()
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn project() -> Arc<Project> {
    Arc::new(Project::load(&manifest_dir()).expect("the project's own configuration loads"))
}

/// A piece the test needs is missing: the test fails, saying how to get it. No test passes
/// by skipping what it is there to check.
/// Copies a folder and everything in it (a project's `schemas/` into a test's own folder).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

pub fn missing(what: &str) -> ! {
    panic!(
        "{what} is missing: run `bash tests/run`, which installs the test tools (into .venv/ and \
         .tools/, and chromium and curl with apt-get as root) and starts the S3 test server; to \
         run one test by hand, export the FORCE_RETURNS_TEST_* variables tests/run sets"
    )
}

/// `../shared/fixtures` beside the checkout.
pub fn shared_fixtures() -> PathBuf {
    let dir = manifest_dir().join("../shared/fixtures");
    if dir.is_dir() {
        dir
    } else {
        missing("../shared/fixtures")
    }
}

/// Runs the service binary, as a user does, from the project folder.
pub fn force_returns(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_force-returns"))
        .args(args)
        .current_dir(manifest_dir())
        .output()
        .expect("the binary runs")
}

/// What a process printed, standard output then standard error.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The Python with pyarrow, duckdb and openpyxl.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FORCE_RETURNS_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = manifest_dir().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        missing("python with pyarrow, duckdb and openpyxl")
    }
}

/// LibreOffice's `soffice` (Debian `libreoffice-calc-nogui`, which `tests/run` installs).
pub fn soffice() -> PathBuf {
    match std::env::var_os("FORCE_RETURNS_TEST_SOFFICE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => missing("LibreOffice (soffice, FORCE_RETURNS_TEST_SOFFICE)"),
    }
}

/// Saves `file` as `format` (`xlsx`, `ods`) with headless LibreOffice, into `dir`, with a
/// profile of its own so that conversions running at once do not share one; returns the path.
pub fn libreoffice_save_as(file: &Path, format: &str, dir: &Path) -> PathBuf {
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(soffice())
        .arg(format!(
            "-env:UserInstallation=file://{}",
            profile.path().display()
        ))
        .args(["--headless", "--convert-to", format, "--outdir"])
        .arg(dir)
        .arg(file)
        .output()
        .expect("soffice runs");
    let saved = dir.join(file.with_extension(format).file_name().unwrap());
    assert!(
        out.status.success() && saved.is_file(),
        "LibreOffice did not save {}: {}",
        saved.display(),
        output_text(&out)
    );
    saved
}

/// Reads a bucket with `pyarrow` and `DuckDB` (`tests/py/read_bucket.py`).
pub fn read_bucket(bucket: &Path, dataset: &str) -> serde_json::Value {
    let python = python();
    let out = std::process::Command::new(python)
        .arg(manifest_dir().join("tests/py/read_bucket.py"))
        .arg(bucket)
        .arg(dataset)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "read_bucket.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("read_bucket.py prints JSON")
}

/// The S3 test server (moto) `tests/run` starts, as `http://127.0.0.1:<port>`.
pub fn s3_endpoint() -> String {
    match std::env::var("FORCE_RETURNS_TEST_S3_ENDPOINT") {
        Ok(e) if !e.trim().is_empty() => e,
        _ => missing("the S3 test server (FORCE_RETURNS_TEST_S3_ENDPOINT)"),
    }
}

/// A new, empty bucket on the S3 test server, with a unique name.
pub async fn new_s3_bucket(endpoint: &str) -> Arc<S3Store> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "it-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .region(Region::from_static("us-east-1"))
        .load()
        .await;
    let store = S3Store::from_sdk_config(
        &sdk,
        S3Location::parse(&format!("s3://{name}")).unwrap(),
        S3Options {
            endpoint: Some(endpoint.to_owned()),
            path_style: true,
            ..S3Options::default()
        },
    );
    store
        .client()
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap();
    Arc::new(store)
}

/// The environment a `force-returns` process needs to reach `bucket` on the test server:
/// static test credentials, no instance metadata, the endpoint, path-style addressing.
pub fn s3_env(endpoint: &str, bucket: &S3Store) -> Vec<(&'static str, String)> {
    vec![
        (
            "FORCE_RETURNS_BUCKET",
            format!("s3://{}", bucket.s3_location().bucket),
        ),
        ("FORCE_RETURNS_S3_ENDPOINT", endpoint.to_owned()),
        ("FORCE_RETURNS_S3_PATH_STYLE", "true".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_CONFIG_FILE", "/nonexistent".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".into()),
        (
            "FORCE_RETURNS_PROJECT",
            manifest_dir().display().to_string(),
        ),
    ]
}

/// Copies every object of `store` under `prefix` into `dir`, at its key.
pub async fn mirror(store: &dyn ObjectStore, prefix: &str, dir: &Path) {
    for meta in store.list(prefix).await.unwrap() {
        let dest = dir.join(&meta.key);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        store.download(&meta.key, &dest, None).await.unwrap();
    }
}

/// Defines one test per backend running the async function of the same name with a fresh
/// bucket: `<name>::local` and `<name>::s3`.
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn local() {
                super::$name(crate::common::TestBucket::new()).await;
            }

            #[tokio::test]
            async fn s3() {
                super::$name(crate::common::TestBucket::s3().await).await;
            }
        }
    };
}
pub(crate) use on_both_backends;

pub struct TestBucket {
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn ObjectStore>,
    pub clock: Arc<FixedClock>,
    /// The S3 bucket, when on the test server.
    s3: Option<Arc<S3Store>>,
}

impl TestBucket {
    /// A bucket in a temporary directory.
    pub fn new() -> TestBucket {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::new(dir.path()).unwrap());
        TestBucket {
            dir,
            store,
            clock: Self::clock(),
            s3: None,
        }
    }

    /// A bucket on the S3 test server.
    pub async fn s3() -> TestBucket {
        let endpoint = s3_endpoint();
        let s3 = new_s3_bucket(&endpoint).await;
        TestBucket {
            dir: tempfile::tempdir().unwrap(),
            store: Arc::clone(&s3) as Arc<dyn ObjectStore>,
            clock: Self::clock(),
            s3: Some(s3),
        }
    }

    fn clock() -> Arc<FixedClock> {
        Arc::new(FixedClock::new("2020-03-05T09:00:00Z".parse().unwrap()))
    }

    /// The bucket's content in a local directory, for readers of files: the bucket itself
    /// when local, a fresh copy of it otherwise.
    pub async fn local_dir(&self) -> PathBuf {
        if self.s3.is_none() {
            return self.dir.path().to_owned();
        }
        let copy = self.dir.path().join("copy");
        if copy.exists() {
            std::fs::remove_dir_all(&copy).unwrap();
        }
        mirror(self.store.as_ref(), "", &copy).await;
        copy
    }

    pub async fn upload(&self, key: &str, bytes: Vec<u8>) {
        self.store
            .put(key, bytes, PutMode::Overwrite)
            .await
            .unwrap();
    }

    /// How a `force-returns` process reaches the bucket: its `--bucket` and its environment.
    pub fn for_processes(&self) -> (String, Vec<(&'static str, String)>) {
        match &self.s3 {
            Some(s3) => {
                let endpoint = s3_endpoint();
                let env = s3_env(&endpoint, s3);
                (env[0].1.clone(), env)
            }
            None => (self.dir.path().display().to_string(), Vec::new()),
        }
    }

    /// Whether the bucket is on the S3 test server.
    pub fn is_s3(&self) -> bool {
        self.s3.is_some()
    }

    /// Writes an object the way a force's client would, past the store's own key checks: S3
    /// takes any key (`..`, `//`, a trailing `/`); a local bucket any file name.
    pub async fn upload_raw(&self, key: &str, bytes: Vec<u8>) {
        if let Some(s3) = &self.s3 {
            s3.client()
                .put_object()
                .bucket(&s3.s3_location().bucket)
                .key(key)
                .body(bytes.into())
                .send()
                .await
                .unwrap();
        } else {
            let path = self.dir.path().join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
    }

    pub fn service(&self, options: RunOptions) -> Service {
        Service::new(project(), self.store.clone(), self.clock.clone(), options)
    }

    /// A service over this bucket's folder through a store that counts its requests.
    pub fn counted_service(&self) -> (Arc<Counted>, Service) {
        let store = Counted::new(self.dir.path());
        let service = Service::new(
            project(),
            Arc::clone(&store) as Arc<dyn ObjectStore>,
            self.clock.clone(),
            RunOptions::default(),
        );
        (store, service)
    }

    pub async fn run(&self) -> RunOutcome {
        let outcome = self
            .service(RunOptions::default())
            .run_once()
            .await
            .unwrap();
        assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
        outcome
    }

    pub async fn get_json(&self, key: &str) -> serde_json::Value {
        let (bytes, _) = self.store.get(key).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        self.store
            .list(prefix)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect()
    }
}

/// The shared state of `store`, to read it as operators would.
pub fn state_of(store: &Arc<dyn ObjectStore>) -> State {
    State::new(
        Arc::clone(store),
        Arc::new(SystemClock),
        StateOptions {
            holder: "test-reader".into(),
            claim_ttl: std::time::Duration::from_mins(1),
            lock_ttl: std::time::Duration::from_mins(1),
            compact_after: usize::MAX,
        },
    )
}

/// Every finished upload's ledger record, by marker.
pub async fn done_records(store: &Arc<dyn ObjectStore>) -> BTreeMap<String, DoneRecord> {
    state_of(store).done_records().await.unwrap()
}

async fn json_of(store: &dyn ObjectStore, key: &str) -> Value {
    serde_json::from_slice(&store.get(key).await.unwrap().0).unwrap()
}

/// A dataset's manifest or receipts as one JSON document: the lists of every part (`current`
/// and `superseded`, or `receipts`) put together in the order of the parts' years; `{}` when
/// there is no part.
pub async fn parted_json(store: &dyn ObjectStore, parted: Parted, dataset: &str) -> Value {
    let mut parts = Vec::new();
    for m in store.list(&parted.folder(dataset)).await.unwrap() {
        parts.push(json_of(store, &m.key).await);
    }
    merge_parts(parts)
}

/// [`parted_json`] of a local bucket's folder.
pub fn parted_json_in(bucket: &Path, parted: Parted, dataset: &str) -> Value {
    let folder = bucket.join(parted.folder(dataset));
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(&folder) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    paths.sort();
    merge_parts(
        paths
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect(),
    )
}

fn merge_parts(parts: Vec<Value>) -> Value {
    let mut whole = serde_json::json!({});
    for part in parts {
        for (name, value) in part.as_object().unwrap() {
            match (whole.get_mut(name), value) {
                (Some(Value::Array(all)), Value::Array(more)) => all.extend(more.iter().cloned()),
                _ => whole[name] = value.clone(),
            }
        }
    }
    whole
}

/// Every fact of a finished bucket that "each upload exactly once" implies, checked from the
/// bucket itself: one ledger record per upload and nothing left claimed or locked; one receipt
/// and one report per upload; one current snapshot per force and period, the manifest holding
/// every accepted submission once, each snapshot with the rows the manifest says. Returns the
/// number of snapshot rows.
pub async fn check_processed_exactly_once(store: &Arc<dyn ObjectStore>) -> u64 {
    let project = project();
    let incoming = store.list(layout::INCOMING).await.unwrap();
    let done = done_records(store).await;
    let expected: BTreeSet<String> = incoming
        .iter()
        .map(|m| layout::names_of(&m.key, &m.etag).1)
        .collect();
    assert_eq!(
        done.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "one ledger record per upload"
    );
    let left: Vec<String> = store
        .list("_state/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .filter(|k| {
            ![
                "_state/done/",
                "_state/done-index/",
                "_state/receipts/",
                "_state/series/",
            ]
            .iter()
            .any(|p| k.starts_with(p))
        })
        .collect();
    assert!(left.is_empty(), "claims or locks left behind: {left:?}");

    // Receipts and reports: exactly one of each per upload whose key has a place.
    let mut receipts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut reports = BTreeSet::new();
    let mut accepted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for record in done.values() {
        let Ok(location) = parse_upload_key(&record.key, &project) else {
            continue;
        };
        receipts
            .entry(location.dataset.clone())
            .or_default()
            .push(record.submission_id.clone());
        reports.insert(format!(
            "{}.json",
            feedback_base(
                &location.force_id,
                &location.dataset,
                location.period,
                &record.submission_id
            )
        ));
        if record.decision.as_str() != "rejected" {
            accepted
                .entry((location.force_id.clone(), location.period.to_string()))
                .or_default()
                .insert(record.submission_id.clone());
        }
    }
    for (dataset, mut expected) in receipts {
        let held = parted_json(store.as_ref(), Parted::Receipts, &dataset).await;
        let mut ids: Vec<String> = held["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["submission_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        expected.sort();
        assert_eq!(ids, expected, "one receipt per upload of {dataset}");
    }
    let written: BTreeSet<String> = store
        .list("feedback/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        // feedback/<force>/<dataset>/<period>/<submission>.json: not summaries, not reports
        // on keys with no place (feedback/<force>/_unrouted/<submission>.json).
        .filter(|k| {
            k.split('/').count() == 5 && Path::new(k).extension().is_some_and(|e| e == "json")
        })
        .collect();
    assert_eq!(written, reports, "one report per upload");

    let manifest = parted_json(store.as_ref(), Parted::Manifest, "stop_search").await;
    let current = manifest["current"].as_array().unwrap();
    let superseded = manifest["superseded"].as_array().unwrap();
    let current_cells: BTreeSet<(String, String)> = current
        .iter()
        .map(|e| {
            (
                e["force_id"].as_str().unwrap().to_owned(),
                e["period"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        current_cells.len(),
        current.len(),
        "one current submission per force and period"
    );
    assert_eq!(
        current_cells,
        accepted.keys().cloned().collect(),
        "every accepted force and period is current"
    );
    let mut in_manifest = BTreeMap::new();
    for e in current.iter().chain(superseded) {
        let sid = e["submission_id"].as_str().unwrap().to_owned();
        let previous = in_manifest.insert(sid.clone(), e.clone());
        assert!(previous.is_none(), "{sid} is in the manifest twice");
    }
    let accepted_ids: BTreeSet<String> = accepted.values().flatten().cloned().collect();
    assert_eq!(
        in_manifest.keys().cloned().collect::<BTreeSet<_>>(),
        accepted_ids,
        "the manifest holds every accepted submission once"
    );

    // Each snapshot once, holding exactly the rows the manifest says.
    let snapshots: BTreeSet<String> = store
        .list("snapshots/stop_search/period=")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    let named: BTreeSet<String> = in_manifest
        .values()
        .map(|e| e["snapshot_key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(snapshots, named, "no snapshot outside the manifest");
    let dir = tempfile::tempdir().unwrap();
    let mut total = 0;
    for e in in_manifest.values() {
        let key = e["snapshot_key"].as_str().unwrap();
        let path = dir.path().join("s.parquet");
        store.download(key, &path, None).await.unwrap();
        let rows = SerializedFileReader::new(std::fs::File::open(&path).unwrap())
            .unwrap()
            .metadata()
            .file_metadata()
            .num_rows();
        assert_eq!(
            u64::try_from(rows).unwrap(),
            e["rows"].as_u64().unwrap(),
            "{key}"
        );
        total += e["rows"].as_u64().unwrap();
    }
    total
}

/// Wall time that moves with tokio's clock: under `tokio::time::pause` it moves only as the
/// test's timers let it, so a claim's expiry is reached without waiting for it.
pub struct TokioClock {
    base: chrono::DateTime<chrono::Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting(at: &str) -> Arc<TokioClock> {
        Arc::new(TokioClock {
            base: at.parse().unwrap(),
            start: tokio::time::Instant::now(),
        })
    }
}

impl Clock for TokioClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.base + chrono::Duration::from_std(self.start.elapsed()).unwrap()
    }
}

/// A local bucket that counts its requests: every request, and the reads (`get`) of each key.
#[derive(Debug)]
pub struct Counted {
    store: LocalStore,
    reads: std::sync::Mutex<BTreeMap<String, usize>>,
    requests: AtomicUsize,
}

impl Counted {
    /// Counts the requests to the local bucket in `dir`.
    pub fn new(dir: &Path) -> Arc<Counted> {
        Arc::new(Counted {
            store: LocalStore::new(dir).unwrap(),
            reads: std::sync::Mutex::default(),
            requests: AtomicUsize::new(0),
        })
    }

    /// Reads so far, by key.
    pub fn reads(&self) -> BTreeMap<String, usize> {
        self.reads.lock().unwrap().clone()
    }

    /// Reads of `key` so far.
    pub fn reads_of(&self, key: &str) -> usize {
        self.reads.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    /// Requests of every kind so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl ObjectStore for Counted {
    fn location(&self, key: &str) -> String {
        self.store.location(key)
    }
    async fn list(&self, prefix: &str) -> force_returns::store::Result<Vec<ObjectMeta>> {
        self.count();
        self.store.list(prefix).await
    }
    async fn get(&self, key: &str) -> force_returns::store::Result<(Vec<u8>, ObjectMeta)> {
        self.count();
        *self
            .reads
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default() += 1;
        self.store.get(key).await
    }
    async fn download(
        &self,
        key: &str,
        dest: &Path,
        feed: Option<Feed>,
    ) -> force_returns::store::Result<Downloaded> {
        self.count();
        self.store.download(key, dest, feed).await
    }
    async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        mode: PutMode,
    ) -> force_returns::store::Result<ObjectMeta> {
        self.count();
        self.store.put(key, bytes, mode).await
    }
    async fn put_file(
        &self,
        key: &str,
        src: &Path,
        mode: PutMode,
    ) -> force_returns::store::Result<ObjectMeta> {
        self.count();
        self.store.put_file(key, src, mode).await
    }
    async fn copy(&self, from: &str, to: &str) -> force_returns::store::Result<ObjectMeta> {
        self.count();
        self.store.copy(from, to).await
    }
    async fn delete(&self, key: &str) -> force_returns::store::Result<()> {
        self.count();
        self.store.delete(key).await
    }
    async fn delete_version(&self, key: &str, etag: &str) -> force_returns::store::Result<()> {
        self.count();
        self.store.delete_version(key, etag).await
    }
}

/// Every Parquet file of a snapshot folder read with pyarrow: the rows of each as JSON objects,
/// and the column names of the first.
pub fn read_folder(folder: &Path) -> (Vec<Value>, Vec<String>) {
    let script = r#"
import glob, json, os, sys
import pyarrow.parquet as pq
tables = [pq.ParquetFile(p).read() for p in sorted(glob.glob(os.path.join(sys.argv[1], "*.parquet")))]
json.dump({"rows": [r for t in tables for r in t.to_pylist()],
           "columns": tables[0].schema.names if tables else []}, sys.stdout, default=str)
"#;
    let out = std::process::Command::new(python())
        .args(["-c", script])
        .arg(folder)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names = v["columns"].as_array().unwrap();
    (
        v["rows"].as_array().unwrap().clone(),
        names
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect(),
    )
}
