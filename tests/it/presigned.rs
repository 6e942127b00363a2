//! Presigned upload URLs against a server that checks signatures (`s3s-fs`; moto does not):
//! the URL from `force-returns upload-url` takes exactly one file, at exactly its key, and
//! only with the command it prints (`curl --fail -H 'if-none-match: *' -T FILE URL`).
//!
//! `tests/run` installs `s3s-fs` (crates.io) and names it in `FORCE_RETURNS_TEST_S3S_FS`; each
//! test starts its own on a free loopback port, with the test credentials.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use force_returns::store::ObjectStore;

use crate::common::{missing, new_s3_bucket, s3_env};

/// The `s3s-fs` binary `tests/run` installs.
fn s3s_fs() -> PathBuf {
    match std::env::var_os("FORCE_RETURNS_TEST_S3S_FS") {
        Some(path) if Path::new(&path).is_file() => PathBuf::from(path),
        _ => missing("s3s-fs, the signature-checking S3 server (FORCE_RETURNS_TEST_S3S_FS)"),
    }
}

/// An `s3s-fs` serving a temporary directory on a loopback port, stopped when dropped.
struct SignatureChecking {
    child: Child,
    endpoint: String,
    _root: tempfile::TempDir,
}

impl SignatureChecking {
    fn start(binary: &Path) -> SignatureChecking {
        let root = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "test", "--secret-key", "test"])
            .arg(root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs starts");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "s3s-fs did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        SignatureChecking {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            _root: root,
        }
    }
}

impl Drop for SignatureChecking {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl --fail <args> -T <file> <url>`: its exit success and what it printed.
fn curl(args: &[&str], file: &Path, url: &str) -> (bool, String) {
    let Ok(out) = Command::new("curl")
        .args(["--silent", "--show-error", "--fail-with-body"])
        .args(args)
        .arg("-T")
        .arg(file)
        .arg(url)
        .output()
    else {
        missing("curl");
    };
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_url_takes_one_file_at_its_key_and_only_with_the_printed_command() {
    let binary = s3s_fs();
    let server = SignatureChecking::start(&binary);
    let store = new_s3_bucket(&server.endpoint).await;
    let out = Command::new(env!("CARGO_BIN_EXE_force-returns"))
        .args(["upload-url", "--force", "Kent", "--dataset", "stop_search"])
        .args(["--period", "2020-01", "--file", "january.csv"])
        .env_remove("FORCE_RETURNS_CLAIM_TTL_SECONDS")
        .envs(s3_env(&server.endpoint, &store))
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let told = String::from_utf8(out.stderr).unwrap();
    assert!(
        told.contains("curl --fail -H 'if-none-match: *' -T <your file> '<the URL below>'"),
        "{told}"
    );
    let key = "incoming/kent/stop_search/2020-01/january.csv";

    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first.csv"), dir.path().join("second.csv"));
    std::fs::write(&first, b"the file the force meant\n").unwrap();
    std::fs::write(&second, b"a second file for the same URL\n").unwrap();
    let condition = ["-H", "if-none-match: *"];

    // Without the signed condition the signature does not match.
    let (ok, text) = curl(&[], &first, &url);
    assert!(!ok && text.contains("SignatureDoesNotMatch"), "{text}");
    assert!(store.list("incoming/").await.unwrap().is_empty());

    // The printed command uploads the file.
    let (ok, text) = curl(&condition, &first, &url);
    assert!(ok, "{text}");

    // A second upload to the same URL is refused, with the condition or without it.
    let (ok, text) = curl(&condition, &second, &url);
    assert!(!ok && text.contains("PreconditionFailed"), "{text}");
    let (ok, text) = curl(&[], &second, &url);
    assert!(!ok && text.contains("SignatureDoesNotMatch"), "{text}");
    // So is a condition other than the one signed.
    let (ok, text) = curl(&["-H", "if-none-match: \"x\""], &second, &url);
    assert!(!ok && text.contains("SignatureDoesNotMatch"), "{text}");

    // The URL reaches no other key.
    let elsewhere = url.replacen("/january.csv?", "/february.csv?", 1);
    assert_ne!(elsewhere, url);
    let (ok, text) = curl(&condition, &second, &elsewhere);
    assert!(!ok && text.contains("SignatureDoesNotMatch"), "{text}");

    let (bytes, _) = store.get(key).await.unwrap();
    assert_eq!(bytes, b"the file the force meant\n", "the first file stays");
    let keys: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys, [key], "nothing else was written");
}
