//! Shared helpers: a fresh bucket per test, the project, the independent readers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use force_returns::clock::FixedClock;
use force_returns::config::Project;
use force_returns::pipeline::{RunOptions, RunOutcome, Service};
use force_returns::store::{LocalStore, ObjectStore, PutMode};

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn project() -> Arc<Project> {
    Arc::new(Project::load(&manifest_dir()).expect("the project's own configuration loads"))
}

fn required() -> bool {
    std::env::var_os("FORCE_RETURNS_TEST_REQUIRE_ALL").is_some()
}

/// A piece the test needs is missing: fail in CI, skip (loudly) by hand.
pub fn missing(what: &str) -> Option<PathBuf> {
    assert!(
        !required(),
        "{what} is missing and FORCE_RETURNS_TEST_REQUIRE_ALL is set"
    );
    eprintln!("SKIPPED: {what} is missing (run tests/run to install it)");
    None
}

/// `../shared/fixtures` beside the checkout.
pub fn shared_fixtures() -> Option<PathBuf> {
    let dir = manifest_dir().join("../shared/fixtures");
    if dir.is_dir() {
        Some(dir)
    } else {
        missing("../shared/fixtures")
    }
}

/// The Python with pyarrow and duckdb.
pub fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FORCE_RETURNS_TEST_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = manifest_dir().join(".venv/bin/python");
    if venv.exists() {
        Some(venv)
    } else {
        missing("python with pyarrow and duckdb")
    }
}

/// Reads a bucket with `pyarrow` and `DuckDB` (`tests/py/read_bucket.py`).
pub fn read_bucket(bucket: &Path, dataset: &str) -> Option<serde_json::Value> {
    let python = python()?;
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
    Some(serde_json::from_slice(&out.stdout).expect("read_bucket.py prints JSON"))
}

pub struct TestBucket {
    pub dir: tempfile::TempDir,
    pub store: Arc<LocalStore>,
    pub clock: Arc<FixedClock>,
}

impl TestBucket {
    pub fn new() -> TestBucket {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::new(dir.path()).unwrap());
        let clock = Arc::new(FixedClock::new("2020-03-05T09:00:00Z".parse().unwrap()));
        TestBucket { dir, store, clock }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub async fn upload(&self, key: &str, bytes: Vec<u8>) {
        self.store
            .put(key, bytes, PutMode::Overwrite)
            .await
            .unwrap();
    }

    pub fn service(&self, options: RunOptions) -> Service {
        Service::new(project(), self.store.clone(), self.clock.clone(), options)
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
