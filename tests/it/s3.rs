//! What only S3 shows: the demo processed from an S3 bucket into the same outputs as from a local
//! one; worker processes racing over one bucket; a worker killed mid-run; a presigned upload
//! with plain `curl`. Every test makes its own bucket on the S3 test server (moto).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use force_returns::clock::FixedClock;
use force_returns::layout::{CLAIMS, claim_base, names_of};
use force_returns::pipeline::{RunOptions, Service};
use force_returns::state::lease;
use force_returns::store::{ObjectStore, PutMode};
use force_returns_dev::demo::{DemoConfig, demo_limits, uploads};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::common::{
    TestBucket, check_processed_exactly_once, done_records, missing, new_s3_bucket, project,
    read_bucket, s3_endpoint, s3_env,
};

const OUTPUT_PREFIXES: [&str; 4] = ["snapshots/", "feedback/", "quality/", "archive/"];

async fn json(store: &dyn ObjectStore, key: &str) -> Value {
    serde_json::from_slice(&store.get(key).await.unwrap().0).unwrap()
}

/// A report or manifest entry without what the store decides: the upload time (two buckets
/// filled one after the other differ) and the etag (an MD5 on S3, a write token locally).
const ARRIVAL_KEYS: [&str; 3] = ["uploaded_at", "received_at", "etag"];

fn without_upload_time(mut v: Value) -> Value {
    match &mut v {
        Value::Object(o) => {
            for k in ARRIVAL_KEYS {
                o.remove(k);
            }
            for x in o.values_mut() {
                *x = without_upload_time(x.take());
            }
        }
        Value::Array(a) => {
            for x in a.iter_mut() {
                *x = without_upload_time(x.take());
            }
        }
        _ => {}
    }
    v
}

/// Every arrival time in a report, to blank out of its HTML rendering.
fn upload_times(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                match (ARRIVAL_KEYS.contains(&k.as_str()), x.as_str()) {
                    (true, Some(t)) => out.push(t.to_owned()),
                    _ => upload_times(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| upload_times(x, out)),
        _ => {}
    }
}

/// Each upload's submission id on one backend, with the token that stands for it in both.
fn id_tokens(o: &force_returns::pipeline::RunOutcome) -> Vec<(String, String)> {
    o.processed
        .iter()
        .map(|s| {
            (
                s.received.upload.submission_id.clone(),
                format!("<id of {}>", s.received.upload.source_key),
            )
        })
        .collect()
}

fn canon(text: &str, ids: &[(String, String)]) -> String {
    ids.iter().fold(text.to_owned(), |t, (id, token)| {
        t.replace(id.as_str(), token)
    })
}

/// An object's content with submission ids replaced by tokens: text as it is, a Parquet file
/// as its key-value metadata and rows printed (its bytes hold ids compressed).
fn content(key: &str, bytes: Vec<u8>, ids: &[(String, String)]) -> Vec<u8> {
    if extension(key) == Some("parquet") {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
        let mut text = String::new();
        for kv in reader
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .into_iter()
            .flatten()
        {
            let _ = writeln!(text, "{} = {:?}", kv.key, kv.value);
        }
        // Printed without time zones (arrow prints named zones only with chrono-tz): every
        // snapshot time is UTC, so the instant printed is the same.
        let batches: Vec<RecordBatch> = reader
            .build()
            .unwrap()
            .map(|batch| {
                let batch = batch.unwrap();
                let schema = batch.schema();
                let columns = schema.fields().iter().zip(batch.columns()).map(|(f, c)| {
                    let c = match f.data_type() {
                        DataType::Timestamp(unit, Some(_)) => {
                            cast(c, &DataType::Timestamp(*unit, None)).unwrap()
                        }
                        _ => Arc::clone(c),
                    };
                    (f.name().clone(), c)
                });
                RecordBatch::try_from_iter(columns.collect::<Vec<_>>()).unwrap()
            })
            .collect();
        let _ = write!(text, "{}", pretty_format_batches(&batches).unwrap());
        return canon(&text, ids).into_bytes();
    }
    match String::from_utf8(bytes) {
        Ok(text) => canon(&text, ids).into_bytes(),
        Err(e) => e.into_bytes(),
    }
}

fn extension(key: &str) -> Option<&str> {
    std::path::Path::new(key)
        .extension()
        .and_then(|e| e.to_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_gives_the_same_outputs_from_s3_as_from_a_local_bucket() {
    let s3 = TestBucket::s3().await;
    let local = TestBucket::new();
    let project = project();
    let config = DemoConfig {
        seed: 11,
        end: "2020-03".parse().unwrap(),
        months: 3,
        scale: 0.02,
        defects: true,
        incidents: false,
    };
    let demo: Vec<_> = uploads(&project.code_lists, &config).collect();
    for upload in &demo {
        local.upload(&upload.key, upload.bytes.clone()).await;
        s3.upload(&upload.key, upload.bytes.clone()).await;
    }
    let options = || RunOptions {
        limits_override: Some(demo_limits()),
        ..RunOptions::default()
    };
    let started = Instant::now();
    let on_local = local.service(options()).run_once().await.unwrap();
    let local_time = started.elapsed();
    let started = Instant::now();
    let on_s3 = s3.service(options()).run_once().await.unwrap();
    eprintln!(
        "{} demo uploads: local run {:.1}s, S3 run {:.1}s",
        demo.len(),
        local_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(on_s3.failed.is_empty(), "{:?}", on_s3.failed);
    assert_eq!(on_s3.processed.len(), demo.len());
    assert_eq!(on_local.processed.len(), demo.len());
    // Submission ids come from each store's etags, which differ between backends: each id is
    // read as a token naming its upload, in keys and in contents.
    let (ids_local, ids_s3) = (id_tokens(&on_local), id_tokens(&on_s3));
    let decisions = |o: &force_returns::pipeline::RunOutcome| {
        o.processed
            .iter()
            .map(|s| (s.received.upload.source_key.clone(), s.decision))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(decisions(&on_s3), decisions(&on_local));
    let outputs = |keys: Vec<String>, ids: &[(String, String)]| -> BTreeMap<String, String> {
        keys.into_iter()
            .filter(|k| OUTPUT_PREFIXES.iter().any(|p| k.starts_with(p)))
            .map(|k| (canon(&k, ids), k))
            .collect()
    };
    let keys_local = outputs(local.keys("").await, &ids_local);
    let keys_s3 = outputs(s3.keys("").await, &ids_s3);
    assert_eq!(
        keys_s3.keys().collect::<Vec<_>>(),
        keys_local.keys().collect::<Vec<_>>(),
        "the same objects"
    );
    assert!(keys_local.keys().any(|k| k.starts_with("snapshots/")));
    let mut compared = BTreeMap::<&str, usize>::new();
    for (key, real_local) in &keys_local {
        let real_s3 = &keys_s3[key];
        let a = content(
            key,
            local.store.get(real_local).await.unwrap().0,
            &ids_local,
        );
        let b = content(key, s3.store.get(real_s3).await.unwrap().0, &ids_s3);
        let kind = if key.contains("/_manifest/") {
            let (a, b): (Value, Value) = (
                serde_json::from_slice(&a).unwrap(),
                serde_json::from_slice(&b).unwrap(),
            );
            for list in ["current", "superseded"] {
                let strip = |v: &Value| -> Vec<Value> {
                    v[list]
                        .as_array()
                        .unwrap()
                        .iter()
                        .cloned()
                        .map(without_upload_time)
                        .collect()
                };
                assert_eq!(strip(&a), strip(&b), "{key}: {list}");
            }
            "manifest"
        } else if key.starts_with("feedback/") && extension(key) == Some("json") {
            let (a, b): (Value, Value) = (
                serde_json::from_slice(&a).unwrap(),
                serde_json::from_slice(&b).unwrap(),
            );
            assert_eq!(without_upload_time(a), without_upload_time(b), "{key}");
            "feedback json"
        } else if extension(key) == Some("html") {
            let report = |real: &str| format!("{}.json", real.trim_end_matches(".html"));
            let (mut a_at, mut b_at) = (Vec::new(), Vec::new());
            upload_times(
                &json(local.store.as_ref(), &report(real_local)).await,
                &mut a_at,
            );
            upload_times(&json(s3.store.as_ref(), &report(real_s3)).await, &mut b_at);
            let blank = |html: Vec<u8>, times: &[String]| {
                times.iter().fold(String::from_utf8(html).unwrap(), |h, t| {
                    h.replace(t.as_str(), "")
                })
            };
            assert!(
                blank(a, &a_at) == blank(b, &b_at),
                "{key} differs apart from the upload times"
            );
            "feedback html"
        } else if key.starts_with("quality/status/") || key.contains("/summary-") {
            // The status of each expected return and the force's monthly summary say when each
            // upload arrived, and the two buckets were filled one after the other.
            "arrival-dependent (keys only)"
        } else if key.starts_with("quality/submissions/") {
            // One row that records the upload time; read back below.
            "submissions table"
        } else if extension(key) == Some("parquet") {
            assert!(a == b, "{key} differs");
            "parquet, row for row"
        } else {
            assert!(a == b, "{key} differs");
            "byte for byte"
        };
        *compared.entry(kind).or_default() += 1;
    }
    eprintln!("compared {compared:?}");

    let local_facts = read_bucket(&local.local_dir().await, "stop_search");
    let s3_facts = read_bucket(&s3.local_dir().await, "stop_search");
    let (a, b) = (local_facts, s3_facts);
    let snapshots = |facts: &Value, ids: &[(String, String)]| -> BTreeSet<String> {
        facts["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| canon(&s.to_string(), ids))
            .collect()
    };
    assert_eq!(
        snapshots(&a, &ids_local),
        snapshots(&b, &ids_s3),
        "snapshots read back"
    );
    assert_eq!(a["current_rows"], b["current_rows"], "current rows");
    assert!(!a["current_rows"].as_array().unwrap().is_empty());
    // The quality tables are read file by file in key order, and keys hold submission
    // ids: compare their values as multisets.
    for table in ["submissions", "findings"] {
        let (qa, qb) = (&a["quality"][table], &b["quality"][table]);
        assert_eq!(qa["rows"], qb["rows"], "{table} rows");
        assert_eq!(qa["columns"], qb["columns"], "{table} columns");
        for list in ["values", "messages"] {
            let sorted = |v: &Value| {
                let mut all: Vec<String> = v[list]
                    .as_array()
                    .map(|a| a.iter().map(Value::to_string).collect())
                    .unwrap_or_default();
                all.sort();
                all
            };
            assert_eq!(sorted(qa), sorted(qb), "{table} {list}");
        }
    }
}

/// Output of one `force-returns` process, kept in files so no pipe fills up.
struct Worker {
    child: Child,
    dir: tempfile::TempDir,
}

impl Worker {
    fn start(env: &[(&'static str, String)], extra: &[(&str, &str)], args: &[&str]) -> Worker {
        let dir = tempfile::tempdir().unwrap();
        let out = std::fs::File::create(dir.path().join("stdout")).unwrap();
        let err = std::fs::File::create(dir.path().join("stderr")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_force-returns"))
            .args(["--log-format", "json"])
            .args(args)
            .env_remove("FORCE_RETURNS_CLAIM_TTL_SECONDS")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("the binary starts");
        Worker { child, dir }
    }

    fn run(env: &[(&'static str, String)], extra: &[(&str, &str)]) -> Worker {
        let mut w = Worker::start(env, extra, &["run", "--once"]);
        w.wait();
        w
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap()
    }

    /// The uploads `run --once` says it processed: one line each, `<decision> <key> <report>`.
    fn processed(&self) -> Vec<String> {
        self.stdout()
            .lines()
            .filter(|l| !l.starts_with("processed "))
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_worker_processes_process_every_upload_exactly_once() {
    const WORKERS: usize = 4;
    let endpoint = s3_endpoint();
    let store = new_s3_bucket(&endpoint).await;
    let project = project();
    let config = DemoConfig {
        seed: 5,
        end: "2021-06".parse().unwrap(),
        months: 5,
        scale: 0.005,
        defects: true,
        incidents: false,
    };
    let mut n = 0;
    for upload in uploads(&project.code_lists, &config) {
        store
            .put(&upload.key, upload.bytes, PutMode::Overwrite)
            .await
            .unwrap();
        n += 1;
    }
    assert!(n >= 200, "{n} uploads");
    let env = s3_env(&endpoint, &store);
    let started = Instant::now();
    let mut workers: Vec<Worker> = (0..WORKERS)
        .map(|_| Worker::start(&env, &[], &["run", "--once"]))
        .collect();
    for w in &mut workers {
        let status = w.wait();
        assert!(status.success(), "{status}: {}", w.stderr());
    }
    let elapsed = started.elapsed();

    let mut times: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_worker = Vec::new();
    for w in &workers {
        let keys = w.processed();
        per_worker.push(keys.len());
        for k in keys {
            *times.entry(k).or_default() += 1;
        }
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "processed more than once: {twice:?}");
    assert_eq!(times.len(), n, "every upload processed: {per_worker:?}");
    let store: Arc<dyn ObjectStore> = store;
    let rows = check_processed_exactly_once(&store).await;
    eprintln!(
        "race: {n} uploads, {WORKERS} worker processes, {:.1}s; processed per worker {per_worker:?}; {rows} snapshot rows",
        elapsed.as_secs_f64()
    );
    let again = Worker::run(&env, &[]);
    assert!(again.processed().is_empty(), "{}", again.stdout());
}

/// A valid month of stop-and-search records for one force, `rows` long.
fn large_return(rows: usize) -> Vec<u8> {
    let mut s = String::from(
        "Type,Date,Part of a policing operation,Policing operation,Latitude,Longitude,Gender,Age range,Self-defined ethnicity,Officer-defined ethnicity,Legislation,Object of search,Outcome,Outcome linked to object of search,Removal of more than just outer clothing\n",
    );
    for i in 0..rows {
        let _ = writeln!(
            s,
            "Person search,2020-01-{:02}T{:02}:{:02}:{:02}+00:00,False,,53.{:04},-1.{:04},Male,18-24,White - English/Welsh/Scottish/Northern Irish/British,White,Misuse of Drugs Act 1971 (section 23),Controlled drugs,A no further action disposal,False,False",
            i % 31 + 1,
            i / 3600 % 24,
            i / 60 % 60,
            i % 60,
            i % 10_000,
            i / 10_000 % 10_000,
        );
    }
    s.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_upload_leaves_it_to_the_next_run_which_completes_it_once() {
    const ROWS: usize = 300_000;
    let endpoint = s3_endpoint();
    let store = new_s3_bucket(&endpoint).await;
    let key = "incoming/west-yorkshire/stop_search/2020-01/big.csv";
    let bytes = large_return(ROWS);
    let size = bytes.len();
    store.put(key, bytes, PutMode::Overwrite).await.unwrap();
    let meta = store.list(key).await.unwrap().remove(0);
    let marker = names_of(key, &meta.etag).1;
    let env = s3_env(&endpoint, &store);

    // The first worker, with the default claim time to live, is killed while it works: after
    // it has archived the upload (the step before checking it) and before it is done.
    let mut first = Worker::start(&env, &[], &["run", "--once"]);
    let deadline = Instant::now() + Duration::from_mins(2);
    loop {
        let claimed = !store
            .list(&format!("{}.", claim_base(&marker)))
            .await
            .unwrap()
            .is_empty();
        let archived = !store.list("archive/").await.unwrap().is_empty();
        if claimed && archived {
            break;
        }
        assert!(
            first.child.try_wait().unwrap().is_none(),
            "the worker ended before it could be killed: {}",
            first.stderr()
        );
        assert!(Instant::now() < deadline, "no claim appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.child.kill().unwrap(); // SIGKILL
    let status = first.wait();
    assert!(!status.success());
    let store: Arc<dyn ObjectStore> = store;
    assert!(
        done_records(&store).await.is_empty(),
        "killed before it was done"
    );
    assert!(first.processed().is_empty());
    let claims = lease::records(store.as_ref(), CLAIMS).await.unwrap();
    assert_eq!(claims.len(), 1, "the dead worker's claim stays: {claims:?}");
    let taken: chrono::DateTime<chrono::Utc> = claims[0].1.taken_at.parse().unwrap();
    let expires: chrono::DateTime<chrono::Utc> = claims[0].1.expires_at.parse().unwrap();
    assert_eq!(
        expires - taken,
        chrono::Duration::minutes(1),
        "a short claim, renewed while its worker lives"
    );

    // The next runs read the time from a clock the test sets, instead of waiting for it.
    let clock = Arc::new(FixedClock::new(taken + chrono::Duration::seconds(30)));
    let service = Service::new(
        project(),
        Arc::clone(&store),
        clock.clone(),
        RunOptions::default(),
    );
    // A run while the claim is live leaves the upload alone.
    let early = service.run_once().await.unwrap();
    assert!(early.processed.is_empty(), "{:?}", early.processed);
    assert_eq!((early.skipped, early.failed.len()), (1, 0));

    // Once the claim has expired the next run takes it over and completes the upload.
    clock.set(expires + chrono::Duration::seconds(1));
    let started = Instant::now();
    let listed = service.discover().await.unwrap();
    assert_eq!(listed.len(), 1);
    let claimed = service.try_claim(&listed[0]).await.unwrap().unwrap();
    assert!(
        claimed.took_over(),
        "the dead worker's claim was taken over"
    );
    let second = service.process_claim(&claimed).await.unwrap().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(second.received.upload.source_key, key);
    let rows = check_processed_exactly_once(&store).await;
    assert_eq!(rows, ROWS as u64);
    eprintln!(
        "crash: {ROWS} rows ({:.1} MB) completed by the next run in {:.1}s",
        size as f64 / 1e6,
        elapsed.as_secs_f64()
    );
    let third = Worker::run(&env, &[]);
    assert!(third.processed().is_empty(), "{}", third.stdout());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presigned_url_from_upload_url_takes_a_plain_curl_upload() {
    let endpoint = s3_endpoint();
    let store = new_s3_bucket(&endpoint).await;
    let env = s3_env(&endpoint, &store);
    let mut w = Worker::start(
        &env,
        &[],
        &[
            "upload-url",
            "--force",
            "South Yorkshire Police",
            "--dataset",
            "stop_search",
            "--period",
            "2020-01",
            "--file",
            "january.csv",
        ],
    );
    assert!(w.wait().success(), "{}", w.stderr());
    let url = w.stdout().trim().to_owned();
    let expected = format!(
        "{endpoint}/{}/incoming/south-yorkshire/stop_search/2020-01/january.csv?",
        store.s3_location().bucket
    );
    assert!(url.starts_with(&expected), "{url}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("january.csv");
    let bytes = large_return(25);
    std::fs::write(&file, &bytes).unwrap();
    let Ok(curl) = Command::new("curl")
        .args([
            "--fail",
            "--silent",
            "--show-error",
            "-H",
            "if-none-match: *",
            "-T",
        ])
        .arg(&file)
        .arg(&url)
        .output()
    else {
        missing("curl");
    };
    assert!(
        curl.status.success(),
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );
    let key = "incoming/south-yorkshire/stop_search/2020-01/january.csv";
    let (stored, _) = store.get(key).await.unwrap();
    assert!(stored == bytes, "the object holds the file");
    assert_eq!(
        store
            .list("")
            .await
            .unwrap()
            .iter()
            .map(|m| m.key.as_str())
            .collect::<Vec<_>>(),
        [key],
        "nothing else was written"
    );

    let processed = Worker::run(&env, &[]);
    assert_eq!(processed.processed(), [key], "{}", processed.stderr());

    // What the command refuses, with exit status 2 and a reason.
    for (args, reason) in [
        (
            [
                "--force", "Gotham", "--period", "2020-01", "--file", "a.csv",
            ],
            "not a force",
        ),
        (
            ["--force", "kent", "--period", "2020-13", "--file", "a.csv"],
            "2020-13",
        ),
        (
            [
                "--force", "kent", "--period", "2020-01", "--file", "../a.csv",
            ],
            "not a plain file name",
        ),
        (
            ["--force", "kent", "--period", "2020-01", "--file", ".a.csv"],
            "not a plain file name",
        ),
    ] {
        let mut all = vec!["upload-url", "--dataset", "stop_search"];
        all.extend(args);
        let mut w = Worker::start(&env, &[], &all);
        assert_eq!(w.wait().code(), Some(2), "{args:?}");
        assert!(w.stderr().contains(reason), "{args:?}: {}", w.stderr());
    }
    let mut w = Worker::start(
        &env,
        &[("FORCE_RETURNS_BUCKET", "data/bucket")],
        &[
            "upload-url",
            "--force",
            "kent",
            "--dataset",
            "stop_search",
            "--period",
            "2020-01",
            "--file",
            "a.csv",
        ],
    );
    assert_eq!(w.wait().code(), Some(2));
    assert!(
        w.stderr().contains("presigned URLs need S3"),
        "{}",
        w.stderr()
    );
}
