//! Crashes: the real `force-returns run --once` is killed (SIGKILL) part way through a bucket of
//! five uploads (accepted, accepted with warnings, rejected, a key with no place, and a
//! resubmission that supersedes the first), then a restart runs to the end and the bucket must
//! hold exactly what an uninterrupted run leaves there.
//!
//! - On a local bucket the process is killed as soon as the Nth upload logs each step (the
//!   `step` events `pipeline` logs at debug level), and at random times (seeded; the seed is
//!   printed, and `FORCE_RETURNS_CRASH_SEED` replays it).
//! - On the S3 test server, through the fault proxy, every write the process sends (`PUT`,
//!   `POST`, `DELETE`; a copy is a `PUT`) is held; the process is killed while its k-th write is
//!   held, for a k at each kind of write (claim, outputs, commit lock, manifest, receipts,
//!   done-marker, claim delete...), and the held write is then reset (it never lands) or
//!   released (it lands after its writer died).
//!
//! The restart is the library's `Service` with a clock the test sets an hour ahead, so the dead
//! process's claim and locks have expired without waiting for them. Then: every upload done
//! exactly once with its decision, one receipt and one report each, one current snapshot per
//! force and period, the manifest naming the resubmission current and the first upload
//! superseded, every snapshot readable with the rows the manifest says, every object whole and
//! the same set of objects as an uninterrupted run, no temporary file left in a local bucket
//! (the restart opens it again, as a new process would) and no unfinished multipart upload on
//! S3, and nothing left in the work folder. Each run prints one line: where it was killed, what
//! it had left, and what the restart did.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use force_returns::clock::FixedClock;
use force_returns::layout::{self, Parted, names_of};
use force_returns::pipeline::{RunOptions, Service};
use force_returns::store::{LocalStore, ObjectStore, PutMode, S3Store};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::common::{
    check_processed_exactly_once, done_records, manifest_dir, new_s3_bucket, parted_json,
    s3_endpoint, s3_env,
};
use crate::fault_proxy::{Fault, FaultProxy, Rule};

/// The steps `pipeline` logs for an upload, in the order it takes them. An upload whose key has
/// no place is `judged` instead of `downloaded`, `archived` and `checked`; only accepted uploads
/// log `snapshot written` and `manifest committed`; `series updated` and `summary written` are
/// written at once, in either order; `claim renewed` comes between any two.
const STEPS: [&str; 16] = [
    "claimed",
    "downloaded",
    "archived",
    "checked",
    "judged",
    "snapshot written",
    "quality tables written",
    "feedback written",
    "analysis written",
    "manifest committed",
    "receipt recorded",
    "series updated",
    "summary written",
    "marked done",
    "claim cleared",
    "claim renewed",
];

/// The claim time to live the processes killed at a step or a random time run with (the least
/// allowed): renewed every second, so that `claim renewed` is a step to kill at. Those killed at
/// a held write keep the default (a minute), so that no renewal comes between two writes and
/// the k-th write is the same in every run.
const SHORT_CLAIM_TTL: &str = "3";
const DEFAULT_CLAIM_TTL: &str = "60";

/// Random-time kills on the local bucket, after one kill at each step.
const RANDOM_RUNS: usize = 7;

const HEADER: &str = "Type,Date,Part of a policing operation,Policing operation,Latitude,Longitude,Gender,Age range,Self-defined ethnicity,Officer-defined ethnicity,Legislation,Object of search,Outcome,Outcome linked to object of search,Removal of more than just outer clothing\n";

/// A clean January 2020 return of `rows` searches, every day of the month covered, by day
/// light; `salt` makes two returns differ.
fn january(rows: usize, salt: usize) -> Vec<u8> {
    let mut s = String::from(HEADER);
    for i in 0..rows {
        let _ = writeln!(
            s,
            "Person search,2020-01-{:02}T{:02}:{:02}:00+00:00,False,,51.{:04},0.{:04},Male,18-24,White - English/Welsh/Scottish/Northern Irish/British,White,Misuse of Drugs Act 1971 (section 23),Controlled drugs,A no further action disposal,False,False",
            i % 31 + 1,
            10 + i % 10,
            (i + salt) % 60,
            1000 + i * 13 + salt,
            500 + i * 7,
        );
    }
    s.into_bytes()
}

fn fixture(case: &str) -> Vec<u8> {
    std::fs::read(manifest_dir().join(format!("tests/fixtures/defects/{case}/input.csv"))).unwrap()
}

/// One upload of the bucket and the decision it must get.
struct Upload {
    key: &'static str,
    bytes: Vec<u8>,
    decision: &'static str,
}

/// The kent upload the resubmission supersedes, and the resubmission (later, and later by key
/// too, so it is current even when a store gives both the same second).
const FIRST: &str = "incoming/kent/stop_search/2020-01/first.csv";
const SECOND: &str = "incoming/kent/stop_search/2020-01/second.csv";

/// Rows of the resubmission: a few, or, for the run killed at a renewal, a start from which it
/// grows until its processing outlasts a third of the short claim time to live.
const SECOND_ROWS: usize = 45;
const SECOND_ROWS_SLOW: usize = 60_000;

/// The bucket every run starts from, in the order uploaded (and processed).
fn uploads(second_rows: usize) -> Vec<Upload> {
    vec![
        Upload {
            key: FIRST,
            bytes: january(40, 0),
            decision: "accepted",
        },
        Upload {
            key: "incoming/durham/stop_search/2020-01/return.csv",
            bytes: fixture("latitude_outside_england_and_wales"),
            decision: "accepted_with_warnings",
        },
        Upload {
            key: "incoming/essex/stop_search/2020-01/return.csv",
            bytes: fixture("blank_type"),
            decision: "rejected",
        },
        Upload {
            key: "incoming/Durham/stop_search/2020-01/misplaced.csv",
            bytes: january(5, 3),
            decision: "rejected",
        },
        Upload {
            key: SECOND,
            bytes: january(second_rows, 7),
            decision: "accepted",
        },
    ]
}

async fn fill(store: &dyn ObjectStore, second_rows: usize) {
    for u in uploads(second_rows) {
        store.put(u.key, u.bytes, PutMode::Overwrite).await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The process.

/// When the test kills the process.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// Never (the test may still kill it through [`Running::kill`]).
    Never,
    /// As soon as the `n`th event (from 1) of a step is logged.
    Step(&'static str, usize),
    /// After this long.
    After(Duration),
}

/// A `force-returns run --once` process, its JSON log read line by line; killed if dropped
/// while it runs (a test that fails leaves no process behind).
struct Running {
    child: Arc<Mutex<Child>>,
    reader: Option<std::thread::JoinHandle<Log>>,
    started: Instant,
}

/// What a process logged: its step events (step, upload key), in order, the number of them
/// logged before the test decided to kill it, and its other lines.
#[derive(Default)]
struct Log {
    steps: Vec<(String, String)>,
    kill_decided_after: Option<usize>,
    other: Vec<String>,
}

/// What a process did.
struct Ran {
    log: Log,
    status: ExitStatus,
    elapsed: Duration,
}

impl Ran {
    /// Whether SIGKILL ended it (rather than its own end).
    fn killed(&self) -> bool {
        self.status.signal() == Some(9)
    }

    /// Where the process stopped: its last step and upload, as the log shows it.
    fn reached(&self) -> String {
        match self.log.steps.last() {
            Some((step, key)) => format!(
                "last step `{step}` of {} ({} steps)",
                short(key),
                self.log.steps.len()
            ),
            None => "no step logged".to_owned(),
        }
    }
}

/// An upload key without `incoming/` and the dataset, for messages.
fn short(key: &str) -> String {
    key.trim_start_matches("incoming/")
        .replace("/stop_search/2020-01/", ":")
}

impl Running {
    /// Starts `run --once` on `bucket` (a directory, or `s3://...` with `env`), with its work
    /// folder in `work`; with [`KillAt::After`], returns once it is killed.
    fn start(
        bucket: &str,
        env: &[(&'static str, String)],
        work: &Path,
        claim_ttl: &str,
        kill: KillAt,
    ) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_force-returns"))
            .arg("--project")
            .arg(manifest_dir())
            .args(["--log-format", "json", "run", "--once", "--bucket", bucket])
            .args(["--claim-ttl-seconds", claim_ttl, "--work-dir"])
            .arg(work)
            .env_remove("FORCE_RETURNS_CLAIM_TTL_SECONDS")
            .env_remove("FORCE_RETURNS_WORK_DIR")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("FORCE_RETURNS_LOG", "info,force_returns=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().unwrap();
        let child = Arc::new(Mutex::new(child));
        let killer = Arc::clone(&child);
        let reader = std::thread::spawn(move || {
            let mut log = Log::default();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let event: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                let Some(step) = event["fields"]["step"].as_str() else {
                    log.other.push(line);
                    continue;
                };
                let key = event["span"]["key"].as_str().unwrap_or_default();
                log.steps.push((step.to_owned(), key.to_owned()));
                if let KillAt::Step(at, n) = kill
                    && log.kill_decided_after.is_none()
                    && step == at
                    && log.steps.iter().filter(|(s, _)| s == at).count() == n
                {
                    log.kill_decided_after = Some(log.steps.len());
                    let _ = killer.lock().unwrap().kill();
                }
            }
            log
        });
        let running = Running {
            child,
            reader: Some(reader),
            started: Instant::now(),
        };
        if let KillAt::After(after) = kill {
            let deadline = running.started + after;
            while Instant::now() < deadline && running.alive() {
                std::thread::sleep(Duration::from_millis(2));
            }
            running.kill();
        }
        running
    }

    fn alive(&self) -> bool {
        self.child.lock().unwrap().try_wait().unwrap().is_none()
    }

    /// SIGKILL, unless it has already ended.
    fn kill(&self) {
        let mut child = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
    }

    /// Waits for the end; every line it logged has been read when this returns.
    fn finish(mut self) -> Ran {
        let log = self.reader.take().unwrap().join().unwrap();
        let status = self.child.lock().unwrap().wait().unwrap();
        Ran {
            log,
            status,
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// The checks.

/// What an uninterrupted run leaves: every object's key (ids and markers written as the upload
/// they stand for) and the snapshot rows.
struct Reference {
    keys: BTreeSet<String>,
    rows: u64,
}

/// Every object key in `store`, each submission id and marker written as its upload's key.
async fn canonical_keys(store: &Arc<dyn ObjectStore>) -> BTreeSet<String> {
    let records = done_records(store).await;
    let mut names: Vec<(String, String)> = Vec::new();
    for r in records.values() {
        let (id, marker) = names_of(&r.key, &r.etag);
        names.push((marker, format!("<marker of {}>", r.key)));
        names.push((id, format!("<id of {}>", r.key)));
    }
    store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| {
            names
                .iter()
                .fold(m.key, |k, (name, token)| k.replace(name.as_str(), token))
        })
        .collect()
}

/// Every object can be read whole as what its name says it is: JSON parses, Parquet reads to
/// its last row, a page ends, a checksum names its file. Returns how many were read.
async fn assert_every_object_whole(store: &Arc<dyn ObjectStore>) -> usize {
    let objects = store.list("").await.unwrap();
    for meta in &objects {
        let key = meta.key.as_str();
        if key.starts_with(layout::INCOMING) {
            continue;
        }
        let (bytes, _) = store.get(key).await.unwrap();
        let ext = Path::new(key)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("");
        match ext {
            "json" => {
                serde_json::from_slice::<Value>(&bytes)
                    .unwrap_or_else(|e| panic!("{key} is not whole JSON: {e}"));
            }
            "parquet" => {
                let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
                    .unwrap_or_else(|e| panic!("{key} is not whole Parquet: {e}"));
                let rows = reader.metadata().file_metadata().num_rows();
                let read: usize = reader
                    .build()
                    .unwrap()
                    .map(|b| b.unwrap_or_else(|e| panic!("{key}: {e}")).num_rows())
                    .sum();
                assert_eq!(
                    i64::try_from(read).unwrap(),
                    rows,
                    "{key} reads to its last row"
                );
            }
            "html" => {
                let text = String::from_utf8(bytes).unwrap();
                assert!(text.trim_end().ends_with("</html>"), "{key} is cut short");
            }
            "csv" => {
                let text = String::from_utf8(bytes).unwrap();
                assert!(text.ends_with('\n'), "{key} is cut short");
            }
            "sha256" => {
                let text = String::from_utf8(bytes).unwrap();
                let (hash, name) = text.trim_end().split_once("  ").unwrap();
                assert_eq!(hash.len(), 64, "{key}");
                assert!(key.ends_with(&format!("{name}.sha256")), "{key}: {text}");
            }
            _ if key.starts_with("archive/") => {
                let file = key.rsplit('/').next().unwrap();
                let source = objects
                    .iter()
                    .find(|m| {
                        m.key.starts_with(layout::INCOMING) && m.key.ends_with(&format!("/{file}"))
                    })
                    .map(|m| m.size);
                assert!(
                    source.is_some_and(|size| size == bytes.len() as u64),
                    "{key} is not a whole copy of an upload"
                );
            }
            _ => panic!("an object no run writes: {key}"),
        }
    }
    objects.len()
}

/// Files under `dir`, at any depth.
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
    out
}

/// Restarts over the bucket a killed process left, with the time an hour on, runs to the end,
/// and checks the bucket against the reference. Returns what the restart found to do.
async fn restart_and_check(
    store: &Arc<dyn ObjectStore>,
    work: &Path,
    reference: &Reference,
) -> String {
    let clock = Arc::new(FixedClock::new(
        chrono::Utc::now() + chrono::Duration::hours(1),
    ));
    let service = Service::new(
        crate::common::project(),
        Arc::clone(store),
        clock,
        RunOptions {
            work_root: work.to_owned(),
            ..RunOptions::default()
        },
    );
    let outcome = service.run_once().await.unwrap();
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    let again = service.run_once().await.unwrap();
    assert!(
        again.processed.is_empty() && again.skipped == 0 && again.failed.is_empty(),
        "a second restart finds nothing to do: {:?}",
        again.processed
    );
    drop(service);
    let left = files(work);
    assert!(left.is_empty(), "left in the work folder: {left:?}");

    let rows = check_processed_exactly_once(store).await;
    assert_eq!(rows, reference.rows, "snapshot rows");
    let decisions: BTreeMap<String, String> = done_records(store)
        .await
        .into_values()
        .map(|r| (r.key, r.decision.as_str().to_owned()))
        .collect();
    let expected: BTreeMap<String, String> = uploads(SECOND_ROWS)
        .into_iter()
        .map(|u| (u.key.to_owned(), u.decision.to_owned()))
        .collect();
    assert_eq!(decisions, expected, "each upload's decision");

    let manifest: Value = parted_json(store.as_ref(), Parted::Manifest, "stop_search").await;
    let sources = |list: &str| -> BTreeSet<String> {
        manifest[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["source_key"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        sources("current"),
        BTreeSet::from([
            SECOND.to_owned(),
            "incoming/durham/stop_search/2020-01/return.csv".to_owned()
        ])
    );
    assert_eq!(sources("superseded"), BTreeSet::from([FIRST.to_owned()]));
    let second_id = &manifest["current"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source_key"] == SECOND)
        .unwrap()["submission_id"];
    assert_eq!(&manifest["superseded"][0]["superseded_by"], second_id);

    let keys = canonical_keys(store).await;
    let missing: Vec<_> = reference.keys.difference(&keys).collect();
    let extra: Vec<_> = keys.difference(&reference.keys).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "not the objects an uninterrupted run leaves: missing {missing:?}, extra {extra:?}"
    );
    let objects = assert_every_object_whole(store).await;
    format!(
        "the restart processed {}; {objects} objects whole, {rows} snapshot rows",
        outcome.processed.len()
    )
}

/// What a killed process left: uploads done, claims, locks and outputs.
async fn left_behind(store: &Arc<dyn ObjectStore>) -> String {
    let count =
        |keys: &[String], prefix: &str| keys.iter().filter(|k| k.starts_with(prefix)).count();
    let keys: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    format!(
        "left {} done, {} claim(s), {} lock(s), {} output objects",
        count(&keys, layout::DONE),
        count(&keys, layout::CLAIMS),
        count(&keys, "_state/locks/"),
        keys.iter()
            .filter(|k| !k.starts_with("_state/") && !k.starts_with(layout::INCOMING))
            .count()
    )
}

// ---------------------------------------------------------------------------------------------
// A local bucket: killed at each step, and at random times.

/// A local bucket of [`uploads`] and a work folder.
struct LocalRun {
    bucket: tempfile::TempDir,
    work: tempfile::TempDir,
    store: Arc<dyn ObjectStore>,
}

impl LocalRun {
    /// Runs `run --once` over a fresh bucket, killed as `kill` says.
    async fn start(second_rows: usize, kill: KillAt) -> (LocalRun, Ran) {
        let bucket = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(bucket.path()).unwrap());
        fill(store.as_ref(), second_rows).await;
        let (dir, folder) = (bucket.path().display().to_string(), work.path().to_owned());
        let ran = tokio::task::spawn_blocking(move || {
            Running::start(&dir, &[], &folder, SHORT_CLAIM_TTL, kill).finish()
        })
        .await
        .unwrap();
        (
            LocalRun {
                bucket,
                work,
                store,
            },
            ran,
        )
    }

    /// An uninterrupted run, checked: what every killed run must come to.
    async fn reference(second_rows: usize) -> (Reference, Ran) {
        let (run, ran) = LocalRun::start(second_rows, KillAt::Never).await;
        assert!(
            ran.status.success(),
            "the uninterrupted run: {}\n{}",
            ran.status,
            ran.log.other.join("\n")
        );
        let reference = Reference {
            keys: canonical_keys(&run.store).await,
            rows: check_processed_exactly_once(&run.store).await,
        };
        let checked = run.restart_and_check(&reference).await;
        eprintln!(
            "crash local: uninterrupted run {:.2}s, {} steps; {checked}",
            ran.elapsed.as_secs_f64(),
            ran.log.steps.len()
        );
        (reference, ran)
    }

    /// What the process left, then the restart (over the bucket opened again, as a new process
    /// opens it) and the checks: one line.
    async fn restart_and_check(&self, reference: &Reference) -> String {
        let found = left_behind(&self.store).await;
        let before = self.temporary_files().len();
        let reopened: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(self.bucket.path()).unwrap());
        let checked = restart_and_check(&reopened, self.work.path(), reference).await;
        let after = self.temporary_files();
        assert!(after.is_empty(), "temporary files left: {after:?}");
        format!("{found}, {before} temporary file(s); {checked}")
    }

    /// Temporary files in the bucket's hidden folder (out of every listing), but for the lock
    /// files of the stores open in this process.
    fn temporary_files(&self) -> Vec<PathBuf> {
        files(&self.bucket.path().join(".force-returns-tmp"))
            .into_iter()
            .filter(|p| p.extension().is_none_or(|e| e != "lock"))
            .collect()
    }
}

/// Kills a run as the `n`th `step` is logged, restarts and checks; one line.
async fn killed_at_step(step: &'static str, n: usize, second_rows: usize, reference: &Reference) {
    let (run, ran) = LocalRun::start(second_rows, KillAt::Step(step, n)).await;
    let at = ran.log.kill_decided_after.expect("the step was logged");
    assert!(
        ran.killed(),
        "killed at `{step}` #{n}: it finished first ({})",
        ran.status
    );
    let checked = run.restart_and_check(reference).await;
    eprintln!(
        "crash local: step `{step}` #{n} ({}): killed after {:.2}s, {} more step(s) logged before it died; {checked}",
        short(&ran.log.steps[at - 1].1),
        ran.elapsed.as_secs_f64(),
        ran.log.steps.len() - at,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_at_every_step_and_at_random_times_is_finished_by_a_restart_exactly_once() {
    let started = Instant::now();
    let (reference, uninterrupted) = LocalRun::reference(SECOND_ROWS).await;
    let mut runs = 0;
    for (i, step) in STEPS.iter().enumerate() {
        if *step == "claim renewed" {
            continue;
        }
        let times = uninterrupted
            .log
            .steps
            .iter()
            .filter(|(s, _)| s == step)
            .count();
        assert!(times > 0, "the uninterrupted run logged no `{step}`");
        // Spread over the uploads that log the step.
        killed_at_step(step, 1 + i % times, SECOND_ROWS, &reference).await;
        runs += 1;
    }
    // A renewal needs an upload that takes longer than a third of the claim's time to live:
    // the upload grows until its uninterrupted run renews its claim, however fast the machine,
    // then doubles again so that the killed run renews too before it ends.
    let mut rows = SECOND_ROWS_SLOW;
    loop {
        let (_, renewing) = LocalRun::reference(rows).await;
        if renewing.log.steps.iter().any(|(s, _)| s == "claim renewed") {
            break;
        }
        rows *= 2;
        assert!(
            rows <= 64 * SECOND_ROWS_SLOW,
            "no upload up to {rows} rows had its claim renewed"
        );
    }
    let (slow, _) = LocalRun::reference(2 * rows).await;
    killed_at_step("claim renewed", 1, 2 * rows, &slow).await;
    runs += 1;

    let seed = std::env::var("FORCE_RETURNS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        });
    eprintln!(
        "crash local: random kills with seed {seed} (FORCE_RETURNS_CRASH_SEED={seed} replays them)"
    );
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut random = 0;
    for _ in 0..RANDOM_RUNS * 3 {
        if random == RANDOM_RUNS {
            break;
        }
        // Within the time an uninterrupted run takes; a run that finishes first is checked
        // too, but not counted.
        let after = uninterrupted.elapsed.mul_f64(rng.f64());
        let (run, ran) = LocalRun::start(SECOND_ROWS, KillAt::After(after)).await;
        let checked = run.restart_and_check(&reference).await;
        eprintln!(
            "crash local: at {:.3}s: {}, {}; {checked}",
            after.as_secs_f64(),
            if ran.killed() {
                "killed"
            } else {
                "finished first"
            },
            ran.reached(),
        );
        random += usize::from(ran.killed());
    }
    assert_eq!(random, RANDOM_RUNS, "random kills that landed");
    runs += random;
    eprintln!(
        "crash local: {runs} killed runs, each restarted and checked, in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// S3: killed while each kind of write is held.

/// What a kind of write is, from its method and target: the state objects (claims, the commit
/// lock, manifest, receipts, series, done-markers) and each kind of output.
fn write_kind(method: &str, target: &str) -> String {
    let key = target.split('?').next().unwrap_or_default();
    let named = |prefix: &str| key.starts_with(prefix);
    let kind = if named(layout::CLAIMS) {
        if method == "DELETE" {
            "claim delete"
        } else {
            "claim"
        }
    } else if named("_state/locks/") {
        if method == "DELETE" {
            "lock release"
        } else {
            "lock"
        }
    } else if named(layout::DONE) {
        "done-marker"
    } else if named("_state/receipts/") {
        "receipts"
    } else if named("_state/series/") {
        "series"
    } else if key.contains("/_manifest/") {
        "manifest"
    } else if named("snapshots/stop_search_metrics/") {
        "metrics snapshot"
    } else if named("snapshots/") {
        "snapshot"
    } else if named("archive/") {
        if key.ends_with(".sha256") {
            "archive checksum"
        } else {
            "archive"
        }
    } else if named("quality/") {
        return format!("quality {}", key.split('/').nth(1).unwrap_or_default());
    } else if named("feedback/") {
        let ext = key.rsplit('.').next().unwrap_or_default();
        let what = if key.contains("/summary-") {
            "summary"
        } else if key.contains("/_unrouted/") {
            "unrouted report"
        } else {
            "report"
        };
        return format!("{what} {ext}");
    } else {
        "other"
    };
    kind.to_owned()
}

/// State writes are killed at with the held write reset and released both; output writes with
/// one of the two, in turn.
const STATE_KINDS: [&str; 8] = [
    "claim",
    "lock",
    "manifest",
    "receipts",
    "series",
    "lock release",
    "done-marker",
    "claim delete",
];

/// What happens to the held write once its process is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// It never reaches the bucket.
    Reset,
    /// It lands after its writer died.
    Release,
}

/// One run: the write to kill at (the `nth` write with this method and target; the order of
/// uploads, and so of writes, may differ from bucket to bucket, as S3 times uploads to the
/// second and orders uploads of the same second by key), its kind, and what then happens to it.
struct Planned {
    method: String,
    target: String,
    nth: usize,
    kind: String,
    then: Then,
}

/// The runs: for each kind of write, one of its occurrences (spread over the uploads), with
/// the held write reset, released, or both.
fn plan(writes: &[(String, String)]) -> Vec<Planned> {
    let mut kinds: Vec<(String, Vec<usize>)> = Vec::new();
    for (at, (method, target)) in writes.iter().enumerate() {
        let kind = write_kind(method, target);
        match kinds.iter_mut().find(|(name, _)| *name == kind) {
            Some((_, all)) => all.push(at),
            None => kinds.push((kind, vec![at])),
        }
    }
    let mut plan = Vec::new();
    for (i, (kind, all)) in kinds.into_iter().enumerate() {
        let at = all[i % all.len()];
        let (method, target) = &writes[at];
        let nth = writes[..=at].iter().filter(|w| *w == &writes[at]).count();
        let thens = if STATE_KINDS.contains(&kind.as_str()) {
            vec![Then::Reset, Then::Release]
        } else if i % 2 == 0 {
            vec![Then::Reset]
        } else {
            vec![Then::Release]
        };
        for then in thens {
            plan.push(Planned {
                method: method.clone(),
                target: target.clone(),
                nth,
                kind: kind.clone(),
                then,
            });
        }
    }
    plan
}

/// A bucket on the S3 test server filled with [`uploads`], the fault proxy in front of it, and
/// a work folder.
struct S3Run {
    direct: Arc<S3Store>,
    store: Arc<dyn ObjectStore>,
    proxy: FaultProxy,
    work: tempfile::TempDir,
}

impl S3Run {
    async fn new(endpoint: &str) -> S3Run {
        let direct = new_s3_bucket(endpoint).await;
        fill(direct.as_ref(), SECOND_ROWS).await;
        S3Run {
            store: Arc::clone(&direct) as Arc<dyn ObjectStore>,
            direct,
            proxy: FaultProxy::start(endpoint),
            work: tempfile::tempdir().unwrap(),
        }
    }

    /// Starts `run --once` on the bucket, through the proxy.
    fn start(&self) -> Running {
        let env = s3_env(self.proxy.endpoint(), &self.direct);
        Running::start(
            &env[0].1,
            &env,
            self.work.path(),
            DEFAULT_CLAIM_TTL,
            KillAt::Never,
        )
    }

    /// Multipart uploads begun and neither completed nor aborted.
    async fn unfinished_multipart_uploads(&self) -> usize {
        self.direct
            .client()
            .list_multipart_uploads()
            .bucket(&self.direct.s3_location().bucket)
            .send()
            .await
            .unwrap()
            .uploads()
            .len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_while_each_kind_of_s3_write_is_held_is_finished_by_a_restart_exactly_once() {
    let endpoint = s3_endpoint();
    let started = Instant::now();
    // The reference: an uninterrupted run through the proxy, whose writes are listed.
    let reference_run = S3Run::new(&endpoint).await;
    let running = reference_run.start();
    let ran = tokio::task::spawn_blocking(move || running.finish())
        .await
        .unwrap();
    assert!(
        ran.status.success(),
        "the uninterrupted run: {}\n{}",
        ran.status,
        ran.log.other.join("\n")
    );
    let writes: Vec<(String, String)> = reference_run
        .proxy
        .seen()
        .into_iter()
        .filter(|(method, _)| ["PUT", "POST", "DELETE"].contains(&method.as_str()))
        .collect();
    let reference = Reference {
        keys: canonical_keys(&reference_run.store).await,
        rows: check_processed_exactly_once(&reference_run.store).await,
    };
    let checked =
        restart_and_check(&reference_run.store, reference_run.work.path(), &reference).await;
    eprintln!(
        "crash s3: uninterrupted run {:.2}s, {} writes; {checked}",
        ran.elapsed.as_secs_f64(),
        writes.len()
    );

    let plan = plan(&writes);
    for planned in &plan {
        let run = S3Run::new(&endpoint).await;
        for method in ["PUT", "POST", "DELETE"] {
            run.proxy
                .add(Rule::new(method, "", Fault::Hold).times(usize::MAX));
        }
        let running = run.start();
        let (mut writes, mut matched) = (0, 0);
        let held = loop {
            let next = run.proxy.next_held(Duration::from_mins(1)).await;
            writes += 1;
            if next.method == planned.method && next.target == planned.target {
                matched += 1;
                if matched == planned.nth {
                    break next;
                }
            }
            next.release();
        };
        running.kill();
        let ran = tokio::task::spawn_blocking(move || running.finish())
            .await
            .unwrap();
        assert!(ran.killed(), "{}", ran.status);
        match planned.then {
            Then::Reset => held.reset(),
            Then::Release => held.release_and_wait().await,
        }
        run.proxy.clear();
        let found = left_behind(&run.store).await;
        let checked = restart_and_check(&run.store, run.work.path(), &reference).await;
        let multipart = run.unfinished_multipart_uploads().await;
        assert_eq!(multipart, 0, "unfinished multipart uploads");
        eprintln!(
            "crash s3: write {writes} ({}: {} {}) held, killed, {:?}; {}; {found}; {checked}",
            planned.kind,
            planned.method,
            planned.target.split('?').next().unwrap_or_default(),
            planned.then,
            ran.reached(),
        );
    }
    eprintln!(
        "crash s3: {} killed runs, each restarted and checked, in {:.1}s",
        plan.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(plan.len() >= 20, "{} runs", plan.len());
}
