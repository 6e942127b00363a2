//! Shared helpers: a fresh bucket per test (local or on the S3 test server), the project, the
//! independent readers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use force_returns::clock::FixedClock;
use force_returns::config::Project;
use force_returns::pipeline::{RunOptions, RunOutcome, Service};
use force_returns::store::{LocalStore, ObjectStore, PutMode, S3Location, S3Options, S3Store};

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

/// The S3 test server (moto) `tests/run` starts, as `http://127.0.0.1:<port>`.
pub fn s3_endpoint() -> Option<String> {
    match std::env::var("FORCE_RETURNS_TEST_S3_ENDPOINT") {
        Ok(e) if !e.trim().is_empty() => Some(e),
        _ => missing("the S3 test server (FORCE_RETURNS_TEST_S3_ENDPOINT)")
            .map(|p| p.display().to_string()),
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
                if let Some(bucket) = crate::common::TestBucket::s3().await {
                    super::$name(bucket).await;
                }
            }
        }
    };
}
pub(crate) use on_both_backends;

pub struct TestBucket {
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn ObjectStore>,
    pub clock: Arc<FixedClock>,
    local: bool,
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
            local: true,
        }
    }

    /// A bucket on the S3 test server, or `None` when it is missing (a failure in CI).
    pub async fn s3() -> Option<TestBucket> {
        let endpoint = s3_endpoint()?;
        Some(TestBucket {
            dir: tempfile::tempdir().unwrap(),
            store: new_s3_bucket(&endpoint).await,
            clock: Self::clock(),
            local: false,
        })
    }

    fn clock() -> Arc<FixedClock> {
        Arc::new(FixedClock::new("2020-03-05T09:00:00Z".parse().unwrap()))
    }

    /// The bucket's content in a local directory, for readers of files: the bucket itself
    /// when local, a fresh copy of it otherwise.
    pub async fn local_dir(&self) -> PathBuf {
        if self.local {
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
