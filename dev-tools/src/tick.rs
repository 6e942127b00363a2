//! The tick benchmark: what a run costs over a bucket that already holds many finished uploads
//! and a few new ones (`force-returns-dev tick-bench`, `tests/bench/tick.sh`).
//!
//! The finished uploads' state is made as the service leaves it, without processing each:
//! tiny `incoming/` objects, a done-marker per upload written through the ledger, the
//! dataset's receipts and manifest (one part a year) with an entry per upload, and the series
//! an analysis reads (each force's observations of the last four years of its submissions, and
//! every force's latest), holding the observations of a 200-row return. No metrics files are
//! made: an analysis reads one only for a submission its series lack. The new uploads are real
//! returns.
//! Then it times the ledger read the old way (every done-marker listed), the compaction that
//! folds them, the ledger read the new way, a run removing finished uploads past the retention
//! from `incoming/`, and whole runs over what a bucket in service holds: the ledger of every
//! finished upload and, in `incoming/`, only the newest month's.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use force_returns::clock::{Clock, FixedClock, SystemClock};
use force_returns::config::Project;
use force_returns::finding::NoSink;
use force_returns::layout::{self, INCOMING, Parted, incoming_key, latest_series_key, series_key};
use force_returns::model::Decision;
use force_returns::model::series::Series;
use force_returns::model::{Identity, Manifest, ManifestEntry, Place, Receipt, Receipts, Upload};
use force_returns::observe::{Observations, ObservationsBuilder};
use force_returns::period::Period;
use force_returns::pipeline::{HISTORY_YEARS, RunOptions, Service, check_settings, check_upload};
use force_returns::scheduler::PipelineRunner;
use force_returns::shutdown::ShutdownController;
use force_returns::state::{DoneRecord, State, StateOptions};
use force_returns::store::{self, Downloaded, Feed, ObjectMeta, ObjectStore, PutMode};
use force_returns::telemetry::Metrics;
use force_returns::validate::UploadScope;
use tokio::task::JoinSet;

/// The bucket, counting the requests made through it, and the reads of what an analysis
/// reads its history and peers from: series and metrics files.
#[derive(Debug)]
struct Counting {
    store: Arc<dyn ObjectStore>,
    requests: AtomicUsize,
    series_reads: AtomicUsize,
    metrics_reads: AtomicUsize,
}

/// Requests, series read and metrics files read, so far.
type Counts = (usize, usize, usize);

impl Counting {
    fn counts(&self) -> Counts {
        (
            self.requests.load(Ordering::Relaxed),
            self.series_reads.load(Ordering::Relaxed),
            self.metrics_reads.load(Ordering::Relaxed),
        )
    }

    /// What was counted since `before`, in words.
    fn since(&self, before: Counts) -> String {
        let now = self.counts();
        format!(
            "{} requests, {} series and {} metrics files read",
            now.0 - before.0,
            now.1 - before.1,
            now.2 - before.2
        )
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl ObjectStore for Counting {
    fn location(&self, key: &str) -> String {
        self.store.location(key)
    }
    async fn list(&self, prefix: &str) -> store::Result<Vec<ObjectMeta>> {
        self.count();
        self.store.list(prefix).await
    }
    async fn get(&self, key: &str) -> store::Result<(Vec<u8>, ObjectMeta)> {
        self.count();
        if key.starts_with("_state/series/") {
            self.series_reads.fetch_add(1, Ordering::Relaxed);
        } else if key.starts_with("snapshots/stop_search_metrics/") {
            self.metrics_reads.fetch_add(1, Ordering::Relaxed);
        }
        self.store.get(key).await
    }
    async fn download(
        &self,
        key: &str,
        dest: &Path,
        feed: Option<Feed>,
    ) -> store::Result<Downloaded> {
        self.count();
        self.store.download(key, dest, feed).await
    }
    async fn download_version(
        &self,
        key: &str,
        etag: &str,
        dest: &Path,
        feed: Option<Feed>,
    ) -> store::Result<Downloaded> {
        self.count();
        self.store.download_version(key, etag, dest, feed).await
    }
    async fn put(&self, key: &str, bytes: Vec<u8>, mode: PutMode) -> store::Result<ObjectMeta> {
        self.count();
        self.store.put(key, bytes, mode).await
    }
    async fn put_file(&self, key: &str, src: &Path, mode: PutMode) -> store::Result<ObjectMeta> {
        self.count();
        self.store.put_file(key, src, mode).await
    }
    async fn put_sealed_file(
        &self,
        key: &str,
        src: &Path,
        mode: PutMode,
    ) -> store::Result<ObjectMeta> {
        self.count();
        self.store.put_sealed_file(key, src, mode).await
    }
    async fn copy(&self, from: &str, to: &str) -> store::Result<ObjectMeta> {
        self.count();
        self.store.copy(from, to).await
    }
    async fn delete(&self, key: &str) -> store::Result<()> {
        self.count();
        self.store.delete(key).await
    }
    async fn delete_version(&self, key: &str, etag: &str) -> store::Result<()> {
        self.count();
        self.store.delete_version(key, etag).await
    }
}

/// Writes run this many at once while the state is made.
const CONCURRENT_WRITES: usize = 32;

/// One measurement.
struct Timed {
    what: String,
    seconds: f64,
    note: String,
}

async fn time<T, F: Future<Output = anyhow::Result<T>>>(f: F) -> anyhow::Result<(T, f64)> {
    let started = Instant::now();
    let out = f.await?;
    Ok((out, started.elapsed().as_secs_f64()))
}

fn state(store: &Arc<dyn ObjectStore>, compact_after: usize) -> State {
    State::new(
        Arc::clone(store),
        Arc::new(SystemClock),
        StateOptions {
            holder: "tick-bench".into(),
            claim_ttl: Duration::from_mins(1),
            lock_ttl: Duration::from_mins(1),
            compact_after,
        },
    )
}

/// A small clean return of `force` for `period`.
fn new_return(period: Period, rows: usize) -> Vec<u8> {
    let mut s = String::from(
        "Type,Date,Part of a policing operation,Policing operation,Latitude,Longitude,Gender,Age range,Self-defined ethnicity,Officer-defined ethnicity,Legislation,Object of search,Outcome,Outcome linked to object of search,Removal of more than just outer clothing\n",
    );
    for i in 0..rows {
        let _ = writeln!(
            s,
            "Person search,{period}-{:02}T{:02}:{:02}:00+00:00,False,,51.5,-0.1,Male,18-24,White - English/Welsh/Scottish/Northern Irish/British,White,Misuse of Drugs Act 1971 (section 23),Controlled drugs,A no further action disposal,False,False",
            i % 28 + 1,
            i % 24,
            i % 60
        );
    }
    s.into_bytes()
}

/// The observations of a 200-row return for `period` ([`new_return`]), as the service keeps
/// them in the series.
fn observed(project: &Project, period: Period) -> anyhow::Result<Observations> {
    let pipeline = project
        .pipeline("stop_search")
        .ok_or_else(|| anyhow::anyhow!("no stop_search pipeline in the project"))?;
    let mut builder = ObservationsBuilder::new(&pipeline.schema, &pipeline.observe, "", period, "");
    let bytes = new_return(period, 200);
    check_upload(
        bytes.as_slice(),
        Some(bytes.len() as u64),
        &check_settings(pipeline),
        pipeline.limits,
        UploadScope {
            force: None,
            period: Some(period),
            now: None,
        },
        &mut NoSink,
        &mut |batch, valid| {
            builder.add(&batch, &valid);
            Ok(())
        },
    )?;
    Ok(builder.finish())
}

/// Writes the series the service would have left for the finished uploads `records` (force,
/// period, submission id): each force's periods within what an analysis reads, and every
/// force's latest.
async fn write_series(
    project: &Project,
    store: &dyn ObjectStore,
    records: &[(String, Period, String)],
) -> anyhow::Result<()> {
    // As the service keeps them: the years an analysis reads, of months.
    let window = HISTORY_YEARS * 12;
    let mut newest: std::collections::BTreeMap<&str, Period> = std::collections::BTreeMap::new();
    for (force, period, _) in records {
        let p = newest.entry(force.as_str()).or_insert(*period);
        *p = (*p).max(*period);
    }
    let mut by_force: std::collections::BTreeMap<&str, Series> = std::collections::BTreeMap::new();
    let mut latest = Series::empty("stop_search");
    let mut counted: std::collections::HashMap<Period, Observations> =
        std::collections::HashMap::new();
    for (force, period, id) in records {
        let oldest = (0..window).fold(newest[force.as_str()], |p, _| p.prev());
        if *period < oldest {
            continue;
        }
        if !counted.contains_key(period) {
            counted.insert(*period, observed(project, *period)?);
        }
        let mut o = counted[period].clone();
        o.force_id.clone_from(force);
        o.submission_id.clone_from(id);
        latest.put_latest(o.clone());
        by_force
            .entry(force.as_str())
            .or_insert_with(|| Series::empty("stop_search"))
            .put(o);
    }
    for (force, series) in &by_force {
        store
            .put(
                &series_key("stop_search", force),
                serde_json::to_vec(series)?,
                PutMode::Create,
            )
            .await?;
    }
    store
        .put(
            &latest_series_key("stop_search"),
            serde_json::to_vec(&latest)?,
            PutMode::Create,
        )
        .await?;
    Ok(())
}

/// Uploads `count` real returns for `period`, a force each in turn, named `<name>-<i>.csv`.
async fn upload_returns(
    store: &dyn ObjectStore,
    forces: &[String],
    period: Period,
    count: usize,
    name: &str,
) -> anyhow::Result<()> {
    for (i, force) in forces.iter().cycle().take(count).enumerate() {
        store
            .put(
                &incoming_key(force, "stop_search", period, &format!("{name}-{i}.csv")),
                new_return(period, 200),
                PutMode::Create,
            )
            .await?;
    }
    Ok(())
}

/// Makes the state of `done` finished uploads in `store` (which must hold no uploads), then
/// `new` new ones, and times ticks over them. Returns the report, in Markdown.
pub async fn run(
    project: Arc<Project>,
    store: Arc<dyn ObjectStore>,
    done: usize,
    new: usize,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        store.list(INCOMING).await?.is_empty(),
        "the bucket already holds uploads: give tick-bench an empty one"
    );
    // Requests are counted as the store's calls (a multipart upload or a retried request is
    // one); the runs below report theirs.
    let counting = Arc::new(Counting {
        store,
        requests: AtomicUsize::new(0),
        series_reads: AtomicUsize::new(0),
        metrics_reads: AtomicUsize::new(0),
    });
    let store: Arc<dyn ObjectStore> = Arc::clone(&counting) as Arc<dyn ObjectStore>;
    let forces: Vec<String> = project
        .code_lists
        .forces()
        .map(|f| f.codes.iter().map(|c| c.code.clone()).collect())
        .unwrap_or_default();
    anyhow::ensure!(!forces.is_empty(), "no forces in the project");
    let mut results = Vec::new();

    // The finished uploads: one a force and month, months back from a year ago.
    let now = SystemClock.now();
    let newest = Period::of(now.date_naive()).prev();
    let mut period = newest;
    let mut keys = Vec::with_capacity(done);
    'months: loop {
        period = period.prev();
        for force in &forces {
            if keys.len() == done {
                break 'months;
            }
            keys.push((
                force.clone(),
                period,
                incoming_key(force, "stop_search", period, "return.csv"),
            ));
        }
    }
    let started = Instant::now();
    let mut writes = JoinSet::new();
    let mut records = Vec::with_capacity(done);
    let ledger = Arc::new(state(&store, usize::MAX));
    for (i, (force, period, key)) in keys.iter().enumerate() {
        if writes.len() >= CONCURRENT_WRITES
            && let Some(r) = writes.join_next().await
        {
            records.push(r??);
        }
        let (store, ledger) = (Arc::clone(&store), Arc::clone(&ledger));
        let (force, period, key) = (force.clone(), *period, key.clone());
        writes.spawn(async move {
            let meta = store
                .put(&key, vec![b'x'; 16 + i % 7], PutMode::Create)
                .await?;
            let (id, marker) = layout::names_of(&key, &meta.etag);
            let record = DoneRecord {
                key: key.clone(),
                etag: meta.etag.clone(),
                submission_id: id.clone(),
                decision: Decision::Accepted,
                processed_at: meta
                    .last_modified
                    .to_rfc3339_opts(SecondsFormat::Micros, true),
                dataset: Some("stop_search".into()),
                receipt: None,
            };
            ledger.mark_done(&marker, &record).await?;
            anyhow::Ok((force, period, key, id, meta.last_modified))
        });
    }
    while let Some(r) = writes.join_next().await {
        records.push(r??);
    }
    records.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let mut receipts = Receipts::new("stop_search");
    receipts.receipts.reserve(done);
    let mut manifest = Manifest::new("stop_search");
    for (force, period, key, id, uploaded) in &records {
        let identity = Identity {
            upload: Upload {
                source_key: key.clone(),
                etag: String::new(),
                sha256: String::new(),
                submission_id: id.clone(),
                uploaded_at: *uploaded,
            },
            place: Place {
                force_id: force.clone(),
                dataset: "stop_search".into(),
                period: *period,
            },
        };
        receipts.receipts.push(Receipt {
            identity: identity.clone(),
            decision: Decision::Accepted,
            rows: 100,
        });
        manifest.current.push(ManifestEntry {
            identity,
            snapshot_key: format!(
                "snapshots/stop_search/period={period}/force={force}/{id}.parquet"
            ),
            rows: 100,
            schema_id: "stop_search/v1".into(),
            accepted_at: uploaded.to_rfc3339_opts(SecondsFormat::Micros, true),
            superseded_by: None,
        });
    }
    // One part a year of periods, as the service keeps them.
    for (year, part) in receipts.split() {
        store
            .put(
                &Parted::Receipts.part_key("stop_search", year),
                serde_json::to_vec_pretty(&part)?,
                PutMode::Create,
            )
            .await?;
    }
    for (year, part) in manifest.split() {
        store
            .put(
                &Parted::Manifest.part_key("stop_search", year),
                serde_json::to_vec_pretty(&part)?,
                PutMode::Create,
            )
            .await?;
    }
    let finished: Vec<(String, Period, String)> = records
        .iter()
        .map(|(force, period, _, id, _)| (force.clone(), *period, id.clone()))
        .collect();
    write_series(&project, store.as_ref(), &finished).await?;
    results.push(Timed {
        what: format!("make the state of {done} finished uploads"),
        seconds: started.elapsed().as_secs_f64(),
        note: "setup, not a tick".into(),
    });

    // The ledger as every tick read it before: every done-marker listed.
    for round in 1..=2 {
        let (read, seconds) = time(async { Ok(state(&store, usize::MAX).done().await?) }).await?;
        results.push(Timed {
            what: format!("ledger read, every done-marker listed (before), round {round}"),
            seconds,
            note: format!("{} uploads known", read.markers.len()),
        });
    }
    let (listed, seconds) = time(async { Ok(store.list(INCOMING).await?) }).await?;
    results.push(Timed {
        what: "list incoming/ alone".into(),
        seconds,
        note: format!("{} keys", listed.len()),
    });
    let (folded, seconds) = time(async { Ok(state(&store, 1).compact().await?) }).await?;
    results.push(Timed {
        what: "compaction: fold every done-marker into the index".into(),
        seconds,
        note: format!(
            "{} folded (once, then every 256 uploads)",
            folded.unwrap_or(0)
        ),
    });
    let reader = state(&store, usize::MAX);
    for when in ["first read (a new process)", "next read (index cached)"] {
        let (read, seconds) = time(async { Ok(reader.done().await?) }).await?;
        results.push(Timed {
            what: format!("ledger read, index (after): {when}"),
            seconds,
            note: format!("{} uploads known", read.markers.len()),
        });
    }

    // Runs remove finished uploads from incoming/ once they are older than the retention (at
    // most 256 a run): time one such run, seen from a clock past the retention, then remove
    // the rest directly, keeping the newest month of uploads, as a bucket in service holds.
    let later = Arc::new(FixedClock::new(
        now + chrono::Duration::from_std(RunOptions::default().incoming_retention)?
            + chrono::Duration::days(1),
    ));
    let sweeper = Service::new(
        Arc::clone(&project),
        Arc::clone(&store),
        later,
        RunOptions::default(),
    );
    let before = store.list(INCOMING).await?.len();
    let ((), seconds) = time(async {
        sweeper.discover().await?;
        Ok(())
    })
    .await?;
    let after = store.list(INCOMING).await?.len();
    results.push(Timed {
        what: "discover past the retention: finished uploads removed from incoming/".into(),
        seconds,
        note: format!("{} removed of {before}", before - after),
    });
    let newest_finished = format!("/{}/", newest.prev());
    let mut deletes = JoinSet::new();
    for m in store
        .list(INCOMING)
        .await?
        .into_iter()
        .filter(|m| !m.key.contains(&newest_finished))
    {
        if deletes.len() >= CONCURRENT_WRITES
            && let Some(r) = deletes.join_next().await
        {
            r??;
        }
        let store = Arc::clone(&store);
        deletes.spawn(async move { store.delete_version(&m.key, &m.etag).await });
    }
    while let Some(r) = deletes.join_next().await {
        r??;
    }
    let (listed, seconds) = time(async { Ok(store.list(INCOMING).await?) }).await?;
    results.push(Timed {
        what: "list incoming/ alone, once older uploads have been removed".into(),
        seconds,
        note: format!("{} keys: the newest month's finished uploads", listed.len()),
    });

    // The new uploads, then whole runs as `run --once` makes them.
    upload_returns(store.as_ref(), &forces, newest, new, "new").await?;
    let service = Service::new(
        Arc::clone(&project),
        Arc::clone(&store),
        Arc::new(SystemClock),
        RunOptions::default(),
    );
    let (pending, seconds) = time(async { Ok(service.discover().await?) }).await?;
    results.push(Timed {
        what: format!("discover: list incoming/ and read the ledger, {new} new"),
        seconds,
        note: format!("{} pending", pending.len()),
    });
    let before = counting.counts();
    let (outcome, seconds) = Box::pin(time(async { Ok(service.run_once().await?) })).await?;
    let counted = counting.since(before);
    anyhow::ensure!(
        outcome.failed.is_empty(),
        "the run failed: {:?}",
        outcome.failed
    );
    results.push(Timed {
        what: format!("run: {new} new uploads processed"),
        seconds,
        note: format!(
            "{} processed, {counted}; with the status table over every expected month",
            outcome.processed.len()
        ),
    });
    let before = counting.counts();
    let (idle, seconds) = Box::pin(time(async { Ok(service.run_once().await?) })).await?;
    let counted = counting.since(before);
    results.push(Timed {
        what: "run: nothing new".into(),
        seconds,
        note: format!("{} processed, {counted}", idle.processed.len()),
    });

    // The worker's tick: the same, with its default of two uploads in flight at once.
    upload_returns(store.as_ref(), &forces, newest, new, "next").await?;
    let runner = PipelineRunner::new(
        Arc::new(Service::new(
            Arc::clone(&project),
            Arc::clone(&store),
            Arc::new(SystemClock),
            RunOptions::default(),
        )),
        &project,
        Arc::new(SystemClock),
        Arc::new(Metrics::new(["stop_search"])),
        2,
    );
    let (_controller, shutdown) = ShutdownController::new();
    let before = counting.counts();
    let (report, seconds) =
        time(async { Ok(runner.run_dataset("stop_search", &shutdown).await?) }).await?;
    let counted = counting.since(before);
    anyhow::ensure!(
        report.failed.is_empty(),
        "the worker's run failed: {:?}",
        report.failed
    );
    results.push(Timed {
        what: format!("worker tick, two in flight: {new} new uploads processed"),
        seconds,
        note: format!("{} processed, {counted}", report.processed.len()),
    });

    let mut report = format!(
        "| step ({done} finished uploads, {}) | seconds | |\n| --- | --- | --- |\n",
        store.location("")
    );
    for r in results {
        let _ = writeln!(report, "| {} | {:.3} | {} |", r.what, r.seconds, r.note);
    }
    let _ = writeln!(
        report,
        "\nmeasured {}",
        Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    Ok(report)
}
