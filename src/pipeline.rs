//! One run of the service: discover → claim → decode → validate → write → report.
//!
//! [`check_upload`] is the whole check of one file with no store: decode, validate, decide,
//! streaming accepted batches to a callback. `force-returns validate` and the pipeline both use
//! it, so a force checking a file before uploading sees exactly what the service will decide.
//!
//! [`Service::run_once`] processes every new upload under `incoming/`:
//!
//! 1. **discover**: list `incoming/` and `_state/done/`; an upload is new when no done-marker
//!    exists for its key and etag (a replaced object is new again);
//! 2. **claim**: take the lease `_state/claims/<marker>` ([`crate::lease`]: create-only writes
//!    of generation objects; a claim past the claim TTL is taken over by the next generation,
//!    its worker having died), then look for the done-marker again: another worker may have
//!    finished the upload since discovery;
//! 3. **download and check** together: the store writes the upload to a local file, hashing
//!    it, and feeds each chunk to the check, which runs off the async runtime and writes the
//!    snapshot, the findings CSV and the findings table to local temporary files;
//! 4. **archive**: once downloaded, the bytes processed go to `archive/...` with their SHA-256;
//!    archive and check both finish before anything is written or decided;
//! 5. **write** snapshot, quality tables and feedback, then commit the manifest (accepted
//!    uploads only) under the manifest lock, then the done-marker, then clear the claim.
//!
//! Every output key derives from the upload's key and etag, so a retry after a crash at
//! any step rewrites the same objects and the manifest ignores a submission it already holds.
//!
//! The scheduled worker (`scheduler`) drives the same steps upload by upload through
//! [`Service::try_claim`], [`Service::process_claim`] and [`Service::release`], so it can run
//! several at once and give claims back at shutdown.

mod analysis;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::BooleanArray;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{Instrument, info, info_span, warn};

use crate::clock::Clock;
use crate::config::{Limits, Pipeline, Project};
use crate::feedback::{CsvFindingSink, Outputs, Report, render_html, render_json};
use crate::finding::{Code, CodeSummary, Finding, FindingLog, FindingSink, NoSink, Severity};
use crate::ingest::{Batch, CsvDecoder, DEFAULT_BATCH_ROWS, DecodeStats, HeaderMap, Start};
use crate::lease::{self, Lease, Taken};
use crate::period::Period;
use crate::snapshot::{
    Lineage, Manifest, ManifestEntry, QualityFindingSink, SnapshotWriter, SubmissionRecord, Tee,
    submissions_parquet,
};
use crate::store::{FeedReader, ObjectMeta, ObjectStore, PutMode, StoreError, hex};
use crate::validate::{Checker, ColumnStats, Decision, UploadScope, Verdict};

pub use analysis::{anomalies_key, metrics_key, receipts_key, status_key, summary_key};

/// A failure of the run itself (not of the data: bad data is findings).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Object storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Local temporary files failed.
    #[error("failed to use a temporary file: {0}")]
    Io(#[from] std::io::Error),
    /// Writing Parquet failed.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    /// The schema could not be compiled.
    #[error("schema problem: {0}")]
    Schema(String),
    /// The manifest in the bucket is not readable.
    #[error("the manifest {key} is not valid JSON: {message}")]
    Manifest {
        /// Its key.
        key: String,
        /// The parse error.
        message: String,
    },
    /// Another worker held a lock for longer than its time to live allows.
    #[error("{lock} is still held by {holder}")]
    Locked {
        /// The lock's location.
        lock: String,
        /// Its holder.
        holder: String,
    },
    /// A background task panicked or was cancelled.
    #[error("a processing task failed: {0}")]
    Task(String),
    /// An analysis table could not be written or read.
    #[error(transparent)]
    Table(#[from] crate::analyze::tables::TableError),
}

/// Where an upload sits: `incoming/<force>/<dataset>/<YYYY-MM>/<file>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadLocation {
    /// Canonical force id (the folder name).
    pub force_id: String,
    /// Dataset id.
    pub dataset: String,
    /// Period.
    pub period: Period,
    /// File name.
    pub file_name: String,
}

/// Reads an upload key. The force folder must be a force's canonical id: it is what the
/// force's credentials allow it to write.
pub fn parse_upload_key(key: &str, project: &Project) -> Result<UploadLocation, String> {
    let parts: Vec<&str> = key.split('/').collect();
    let [_incoming, force, dataset, period, file] = parts.as_slice() else {
        return Err(format!(
            "`{key}` is not at incoming/<force>/<dataset>/<YYYY-MM>/<file> ({} folder levels instead of 5)",
            parts.len()
        ));
    };
    let known_force = project
        .catalog
        .forces()
        .is_some_and(|f| f.codes.iter().any(|c| c.code == *force));
    if !known_force {
        return Err(format!(
            "`{force}` is not a force id (see schemas/reference/forces.json)"
        ));
    }
    if project.pipeline(dataset).is_none() {
        let known: Vec<&String> = project.pipelines.keys().collect();
        return Err(format!(
            "`{dataset}` is not a dataset; expected one of {known:?}"
        ));
    }
    let period: Period = period.parse().map_err(|e| format!("{e}"))?;
    Ok(UploadLocation {
        force_id: (*force).to_owned(),
        dataset: (*dataset).to_owned(),
        period,
        file_name: (*file).to_owned(),
    })
}

/// The result of checking one file.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    /// Decision and counts.
    pub verdict: Verdict,
    /// Findings by code, with capped examples.
    pub findings: Vec<CodeSummary>,
    /// Decoder counts.
    pub decode: DecodeStats,
    /// The header mapping, when the header could be read.
    pub header: Option<HeaderMap>,
}

/// Checks one file against a pipeline with no store. `size` is the file's size when known
/// (checked against the limit before reading). Every finding goes to `sink`; the rows of each
/// batch that are free of errors go to `on_valid`.
pub fn check_upload<R: Read + Send>(
    input: R,
    size: Option<u64>,
    pipeline: &Pipeline,
    limits: Limits,
    scope: UploadScope,
    sink: &mut dyn FindingSink,
    on_valid: &mut dyn FnMut(Batch, BooleanArray) -> Result<(), PipelineError>,
) -> Result<CheckOutcome, PipelineError> {
    let mut log = FindingLog::new(
        pipeline.decision.examples_per_code,
        pipeline.severity_overrides.clone(),
        sink,
    )
    .listing_per_code(pipeline.decision.findings_per_code);
    // Pushed once the rows are read (a file-level error stops the decoder after the header),
    // so that a return for a month to come also hears about its rows.
    let not_begun = crate::validate::period_not_begun(&scope);
    let stopped =
        |mut log: FindingLog<'_>, decode: DecodeStats| -> Result<CheckOutcome, PipelineError> {
            if let Some(f) = &not_begun {
                log.push(f.clone());
            }
            Ok(CheckOutcome {
                verdict: Verdict {
                    decision: Decision::Rejected,
                    rows_checked: 0,
                    error_rows: decode.rejected_rows,
                    columns: Vec::new(),
                },
                findings: log.finish()?,
                decode,
                header: None,
            })
        };
    if let Some(size) = size
        && size > limits.max_file_bytes
    {
        log.push(Finding::new(
            Code::FileTooLarge,
            format!(
                "the file is {size} bytes, above the limit of {} bytes; it was not read",
                limits.max_file_bytes
            ),
            "max_file_bytes",
        ));
        return stopped(
            log,
            DecodeStats {
                bytes: 0,
                ..DecodeStats::default()
            },
        );
    }
    let mut decoder = match CsvDecoder::start(
        input,
        &pipeline.schema,
        limits,
        DEFAULT_BATCH_ROWS,
        &mut log,
    )? {
        Start::Rows(d) => d,
        Start::Stopped(stats) => return stopped(log, stats),
    };
    let header = decoder.header().clone();
    let mut checker =
        Checker::new(pipeline, scope, header.clone()).map_err(PipelineError::Schema)?;
    // Decoding runs on its own thread, a couple of batches ahead of checking and writing, so
    // the two halves of the work use both cores. Findings keep their order: each batch
    // carries the decode findings of its own rows.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Decoded>(1);
    let decode = std::thread::scope(|scope| -> Result<DecodeStats, PipelineError> {
        let producer = scope.spawn(move || {
            loop {
                let mut found = Vec::new();
                let message = match decoder.next_batch(&mut found) {
                    Ok(Some(batch)) => Decoded::Batch(batch, found),
                    Ok(None) => Decoded::End(found, decoder.stats()),
                    Err(e) => Decoded::Failed(e),
                };
                let last = !matches!(message, Decoded::Batch(..));
                if tx.send(message).is_err() || last {
                    break;
                }
            }
        });
        let mut consume = || -> Result<DecodeStats, PipelineError> {
            let mut result = Err(PipelineError::Task("the decoder stopped early".into()));
            for message in &rx {
                match message {
                    Decoded::Batch(mut batch, found) => {
                        for f in found {
                            log.push(f);
                        }
                        let valid = checker.check_batch(&mut batch, &mut log)?;
                        on_valid(batch, valid)?;
                    }
                    Decoded::End(found, stats) => {
                        for f in found {
                            log.push(f);
                        }
                        result = Ok(stats);
                    }
                    Decoded::Failed(e) => result = Err(e.into()),
                }
            }
            result
        };
        let result = consume();
        // Dropping the receiver stops a decoder still blocked on a full channel.
        drop(rx);
        producer
            .join()
            .map_err(|_| PipelineError::Task("the decoder thread panicked".into()))?;
        result
    })?;
    if decode.records == 0 {
        log.push(Finding::new(
            Code::NoRows,
            "the file has a header but no records: it is taken as a zero report (no events this period)",
            "rows present",
        ));
    }
    if let Some(f) = not_begun {
        log.push(f);
    }
    let verdict = checker.finish(decode.rejected_rows, &mut log)?;
    Ok(CheckOutcome {
        verdict,
        findings: order_findings(log.finish()?),
        decode,
        header: Some(header),
    })
}

/// What the decoder thread sends.
enum Decoded {
    Batch(Batch, Vec<Finding>),
    End(Vec<Finding>, DecodeStats),
    Failed(std::io::Error),
}

/// Findings worst first, then in code order.
fn order_findings(mut findings: Vec<CodeSummary>) -> Vec<CodeSummary> {
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.code.cmp(&b.code)));
    findings
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Limits used instead of each pipeline's own (the demo lowers them).
    pub limits_override: Option<Limits>,
    /// How long a claim holds before another worker may take the upload over.
    pub claim_ttl: Duration,
    /// How long the manifest lock holds before another worker may take it over.
    pub lock_ttl: Duration,
    /// This worker's name, written into claims.
    pub worker_id: String,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            limits_override: None,
            claim_ttl: Duration::from_mins(15),
            lock_ttl: Duration::from_mins(1),
            worker_id: format!("{}-{}", hostname(), std::process::id()),
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into())
}

/// What happened to one upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmissionSummary {
    /// Upload key.
    pub source_key: String,
    /// Submission id.
    pub submission_id: String,
    /// Force id, when the location was valid.
    pub force_id: Option<String>,
    /// Dataset, when the location was valid.
    pub dataset: Option<String>,
    /// Period, when the location was valid.
    pub period: Option<String>,
    /// The decision.
    pub decision: Decision,
    /// Records read.
    pub rows_read: u64,
    /// Rows in the snapshot.
    pub rows_accepted: u64,
    /// Distinct finding codes with counts.
    pub codes: BTreeMap<String, u64>,
    /// The severity each of those codes had (after the pipeline's overrides).
    #[serde(default)]
    pub severities: BTreeMap<String, Severity>,
    /// What was written.
    pub outputs: Outputs,
    /// The submission this one superseded, if any.
    pub superseded: Option<String>,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct RunOutcome {
    /// Uploads processed by this run.
    pub processed: Vec<SubmissionSummary>,
    /// Uploads another worker held a live claim on.
    pub skipped: usize,
    /// Uploads that failed for a reason outside the data (store down...); retried next run.
    pub failed: Vec<(String, String)>,
}

/// Progress of a run, for a caller that shows it.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Uploads finished so far.
    pub done: usize,
    /// Uploads found new at the start of the run.
    pub total: usize,
}

/// An upload this worker holds the claim on (from [`Service::try_claim`]).
#[derive(Debug, Clone)]
pub struct Claimed {
    object: ObjectMeta,
    marker: String,
    lease: Lease,
}

/// The span an upload is processed in; dataset, force, period and submission are filled in as
/// they become known.
pub fn upload_span(object: &ObjectMeta) -> tracing::Span {
    info_span!(
        "upload",
        key = %object.key,
        dataset = tracing::field::Empty,
        force = tracing::field::Empty,
        period = tracing::field::Empty,
        submission = tracing::field::Empty,
    )
}

/// The service: a project's pipelines over one bucket.
pub struct Service {
    project: Arc<Project>,
    store: Arc<dyn ObjectStore>,
    clock: Arc<dyn Clock>,
    options: RunOptions,
    analysis: analysis::State,
}

#[derive(Debug, Serialize, Deserialize)]
struct DoneMarker {
    key: String,
    etag: String,
    submission_id: String,
    decision: Decision,
    processed_at: String,
}

/// The name of an upload's claim and done-marker: a hash of its key and etag.
pub fn marker_name(key: &str, etag: &str) -> String {
    let digest = Sha256::digest(format!("{key}\n{etag}").as_bytes());
    hex(&digest[..16])
}

/// The submission id: a hash of the upload key and the store's etag for its content.
pub fn submission_id(key: &str, etag: &str) -> String {
    let digest = Sha256::digest(format!("{key}\n{etag}").as_bytes());
    hex(&digest[..12])
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl Service {
    /// A service over `store`.
    pub fn new(
        project: Arc<Project>,
        store: Arc<dyn ObjectStore>,
        clock: Arc<dyn Clock>,
        options: RunOptions,
    ) -> Self {
        Service {
            project,
            store,
            clock,
            options,
            analysis: analysis::State::default(),
        }
    }

    /// Uploads not yet processed, oldest first.
    pub async fn discover(&self) -> Result<Vec<ObjectMeta>, PipelineError> {
        let done: HashSet<String> = self
            .store
            .list("_state/done/")
            .await?
            .into_iter()
            .filter_map(|m| {
                m.key
                    .strip_prefix("_state/done/")
                    .and_then(|k| k.strip_suffix(".json"))
                    .map(str::to_owned)
            })
            .collect();
        let mut pending: Vec<ObjectMeta> = self
            .store
            .list("incoming/")
            .await?
            .into_iter()
            .filter(|m| !done.contains(&marker_name(&m.key, &m.etag)))
            .collect();
        pending.sort_by(|a, b| (a.last_modified, &a.key).cmp(&(b.last_modified, &b.key)));
        Ok(pending)
    }

    /// Processes every new upload once.
    pub async fn run_once(&self) -> Result<RunOutcome, PipelineError> {
        self.run_once_with(&mut |_| {}).await
    }

    /// Processes every new upload once, reporting progress after each.
    pub async fn run_once_with(
        &self,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<RunOutcome, PipelineError> {
        let pending = self.discover().await?;
        let total = pending.len();
        info!(pending = total, "run started");
        let mut outcome = RunOutcome::default();
        for (i, object) in pending.iter().enumerate() {
            match self.process(object).instrument(upload_span(object)).await {
                Ok(Some(summary)) => outcome.processed.push(summary),
                Ok(None) => outcome.skipped += 1,
                Err(e) => {
                    tracing::error!(key = %object.key, error = %e, "upload not processed; it will be retried");
                    outcome.failed.push((object.key.clone(), e.to_string()));
                }
            }
            progress(Progress { done: i + 1, total });
        }
        outcome.failed.extend(self.finish_run().await);
        info!(
            processed = outcome.processed.len(),
            skipped = outcome.skipped,
            failed = outcome.failed.len(),
            "run finished"
        );
        Ok(outcome)
    }

    /// The lease name of an upload's claim.
    fn claim_base(marker: &str) -> String {
        format!("_state/claims/{marker}")
    }

    /// Claims an upload; `None` when another worker holds a live claim or has finished it.
    async fn claim(
        &self,
        object: &ObjectMeta,
        marker: &str,
    ) -> Result<Option<Lease>, PipelineError> {
        let ttl = chrono::Duration::from_std(self.options.claim_ttl)
            .unwrap_or(chrono::Duration::minutes(15));
        let taken = lease::take(
            self.store.as_ref(),
            &Self::claim_base(marker),
            &object.key,
            &self.options.worker_id,
            self.clock.now(),
            ttl,
        )
        .await?;
        let claim = match taken {
            Taken::Held(claim) => claim,
            Taken::Busy { holder } => {
                info!(
                    holder = holder.as_deref().unwrap_or("unknown"),
                    "another worker holds the claim; skipped"
                );
                return Ok(None);
            }
        };
        if claim.generation > 0 {
            warn!(claim = %claim.key, "took over an expired claim");
        }
        // Discovery listed the done-markers before this claim: the upload may have been
        // finished, and its claim cleared, since.
        match self.store.get(&format!("_state/done/{marker}.json")).await {
            Ok(_) => {
                claim.release(self.store.as_ref()).await?;
                info!("another worker has finished this upload; skipped");
                Ok(None)
            }
            Err(StoreError::NotFound { .. }) => Ok(Some(claim)),
            Err(e) => {
                let _ = claim.release(self.store.as_ref()).await;
                Err(e.into())
            }
        }
    }

    async fn process(
        &self,
        object: &ObjectMeta,
    ) -> Result<Option<SubmissionSummary>, PipelineError> {
        match self.try_claim(object).await? {
            Some(claimed) => self.process_claim(&claimed).await.map(Some),
            None => Ok(None),
        }
    }

    /// Claims an upload for this worker. `None` when another worker holds a live claim on it
    /// or has already finished it (between this worker's listing and its claim).
    pub async fn try_claim(&self, object: &ObjectMeta) -> Result<Option<Claimed>, PipelineError> {
        let marker = marker_name(&object.key, &object.etag);
        let Some(claim) = self.claim(object, &marker).await? else {
            return Ok(None);
        };
        Ok(Some(Claimed {
            object: object.clone(),
            marker,
            lease: claim,
        }))
    }

    /// Processes a claimed upload: archive, check, outputs, manifest, done-marker, and the
    /// claim released. On failure the claim is released too, so the next run retries at once
    /// rather than after the claim expires.
    pub async fn process_claim(
        &self,
        claimed: &Claimed,
    ) -> Result<SubmissionSummary, PipelineError> {
        let result = self.process_claimed(&claimed.object, &claimed.marker).await;
        if result.is_err() {
            let _ = self.release(claimed).await;
        }
        result
    }

    /// Gives a claim back without finishing the upload (shutdown, failure), so any worker may
    /// take it at once.
    pub async fn release(&self, claimed: &Claimed) -> Result<(), PipelineError> {
        claimed.lease.release(self.store.as_ref()).await?;
        Ok(())
    }

    async fn process_claimed(
        &self,
        object: &ObjectMeta,
        marker: &str,
    ) -> Result<SubmissionSummary, PipelineError> {
        let work = tempfile::tempdir()?;
        let local = work.path().join("upload");
        let location = parse_upload_key(&object.key, &self.project);
        if let Ok(l) = &location {
            let span = tracing::Span::current();
            span.record("dataset", l.dataset.as_str());
            span.record("force", l.force_id.as_str());
            span.record("period", l.period.to_string().as_str());
        }
        let pipeline = location
            .as_ref()
            .ok()
            .and_then(|l| self.project.pipeline(&l.dataset))
            .cloned();
        let limits = self
            .options
            .limits_override
            .or_else(|| pipeline.as_ref().map(|p| p.limits))
            .unwrap_or_default();
        let file_name = object.key.rsplit('/').next().unwrap_or("upload").to_owned();
        let too_large = object.size > limits.max_file_bytes;
        // The id comes from the key and the etag the listing gave, so that checking can start
        // before the upload is fully read: the same object always gets the same id, and a
        // download that finds different content fails instead of being filed under it.
        let sid = submission_id(&object.key, &object.etag);
        tracing::Span::current().record("submission", sid.as_str());
        let now = self.clock.now();
        let processed_at = rfc3339(now);

        let archive_key = match &location {
            Ok(l) => format!(
                "archive/{}/{}/{}/{sid}/{file_name}",
                l.dataset, l.force_id, l.period
            ),
            Err(_) => format!("archive/_unrouted/{sid}/{file_name}"),
        };

        let (dataset, force_id, period) = match &location {
            Ok(l) => (l.dataset.clone(), Some(l.force_id.clone()), Some(l.period)),
            Err(_) => ("_unrouted".to_owned(), self.force_folder(&object.key), None),
        };
        let feedback_base = match (&location, &force_id) {
            (Ok(l), Some(f)) => Some(format!("feedback/{f}/{}/{}/{sid}", l.dataset, l.period)),
            (Err(_), Some(f)) => Some(format!("feedback/{f}/_unrouted/{sid}")),
            _ => None,
        };
        let snapshot_key = match &location {
            Ok(l) => Some(format!(
                "snapshots/{}/period={}/force={}/{sid}.parquet",
                l.dataset, l.period, l.force_id
            )),
            Err(_) => None,
        };
        let mut lineage = Lineage {
            dataset: dataset.clone(),
            force_id: force_id.clone().unwrap_or_default(),
            period: period.map(|p| p.to_string()).unwrap_or_default(),
            submission_id: sid.clone(),
            source_key: object.key.clone(),
            sha256: String::new(),
            schema_id: pipeline
                .as_ref()
                .map(|p| p.schema.id.clone())
                .unwrap_or_default(),
            schema_version: pipeline
                .as_ref()
                .and_then(|p| p.schema.version.clone())
                .unwrap_or_default(),
            ingested_at: processed_at.clone(),
        };

        let job = match (&location, &pipeline) {
            (Ok(l), Some(p)) => self.analysis_job(p, l).await?,
            _ => None,
        };
        // The upload is checked as it downloads: the store writes it to a local file, hashes
        // it and passes each chunk on to the checks. Once it is all in, the file is archived
        // (with its SHA-256); the snapshot is finished with that hash in its lineage. Archive
        // and check both finish before any output is written, so the upload is kept before
        // anything is decided.
        let (feed, input) = if too_large {
            (None, None)
        } else {
            let (feed, input) = crate::store::feed(4);
            (Some(feed), Some(input))
        };
        let (hashed, sha256_for_snapshot) = std::sync::mpsc::channel::<String>();
        let archive = async {
            // Owned here, so that a failed download drops it and the snapshot writer stops
            // waiting for the hash.
            let hashed = hashed;
            if too_large {
                let _ = hashed.send(String::new());
                self.store.copy(&object.key, &archive_key).await?;
                return Ok::<String, PipelineError>(String::new());
            }
            let got = self.store.download(&object.key, &local, feed).await?;
            if got.meta.etag != object.etag {
                return Err(StoreError::Changed {
                    location: self.store.location(&object.key),
                }
                .into());
            }
            let _ = hashed.send(got.sha256.clone());
            // The download is this worker's own file and is only read from here on.
            self.store
                .put_sealed_file(&archive_key, &local, PutMode::Overwrite)
                .await?;
            self.store
                .put(
                    &format!("{archive_key}.sha256"),
                    format!("{}  {file_name}\n", got.sha256).into_bytes(),
                    PutMode::Overwrite,
                )
                .await?;
            Ok(got.sha256)
        };
        let check = {
            let work_dir = work.path().to_owned();
            let location_error = location.as_ref().err().cloned();
            let pipeline = pipeline.clone();
            let lineage = lineage.clone();
            let size = object.size;
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                check_to_files(
                    &work_dir,
                    Upload {
                        input,
                        size,
                        sha256: sha256_for_snapshot,
                        processed_at: now,
                    },
                    pipeline.as_ref(),
                    limits,
                    location_error,
                    &lineage,
                    job.as_ref(),
                )
            })
        };
        let (archived, checked) = tokio::join!(archive, check);
        let sha256 = archived?;
        lineage.sha256.clone_from(&sha256);
        let checked = checked.map_err(|e| PipelineError::Task(e.to_string()))??;

        let decision = checked.outcome.verdict.decision;
        let accepted = decision != Decision::Rejected;
        let mut outputs = Outputs {
            archive: Some(archive_key),
            ..Outputs::default()
        };
        if accepted && let Some(key) = &snapshot_key {
            self.store
                .put_sealed_file(key, &checked.snapshot_path, PutMode::Overwrite)
                .await?;
            outputs.snapshot = Some(key.clone());
        }
        if let Some(base) = &feedback_base {
            outputs.report_json = Some(format!("{base}.json"));
            outputs.report_html = Some(format!("{base}.html"));
            outputs.findings_csv = Some(format!("{base}.csv"));
        }
        let force_name = force_id.as_ref().and_then(|f| {
            self.project
                .catalog
                .forces()
                .and_then(|l| l.codes.iter().find(|c| &c.code == f))
                .map(|c| c.label.clone())
        });
        let report = Report {
            report_version: 1,
            dataset: dataset.clone(),
            dataset_title: pipeline
                .as_ref()
                .map_or_else(|| "Unrecognised upload".to_owned(), |p| p.title.clone()),
            force_id: force_id.clone(),
            force_name,
            period: period.map(|p| p.to_string()),
            submission_id: sid.clone(),
            source_key: object.key.clone(),
            file_name,
            sha256: sha256.clone(),
            bytes: object.size,
            uploaded_at: Some(rfc3339(object.last_modified)),
            processed_at: processed_at.clone(),
            schema_id: lineage.schema_id.clone(),
            decision,
            rows_read: checked.outcome.decode.records,
            rows_accepted: if accepted { checked.rows_written } else { 0 },
            error_rows: checked.outcome.verdict.error_rows,
            findings: checked.outcome.findings.clone(),
            columns: checked.outcome.verdict.columns.clone(),
            outputs: outputs.clone(),
        };
        let record = SubmissionRecord {
            submission_id: sid.clone(),
            dataset: dataset.clone(),
            force_id: force_id.clone(),
            period: period.map(|p| p.to_string()),
            source_key: object.key.clone(),
            sha256: sha256.clone(),
            bytes: object.size,
            uploaded_at: rfc3339(object.last_modified),
            processed_at: processed_at.clone(),
            schema_id: lineage.schema_id.clone(),
            decision: decision.as_str().to_owned(),
            rows_read: report.rows_read,
            rows_accepted: report.rows_accepted,
            error_rows: report.error_rows,
            errors: report.count(Severity::Error),
            warnings: report.count(Severity::Warning),
            infos: report.count(Severity::Info),
            snapshot_key: outputs.snapshot.clone(),
        };
        // The files the check wrote are finished: the store may link rather than copy them.
        self.store
            .put_sealed_file(
                &format!("quality/findings/dataset={dataset}/{sid}.parquet"),
                &checked.quality_path,
                PutMode::Overwrite,
            )
            .await?;
        self.store
            .put(
                &format!("quality/submissions/dataset={dataset}/{sid}.parquet"),
                submissions_parquet(&record)?,
                PutMode::Overwrite,
            )
            .await?;
        if let Some(base) = &feedback_base {
            self.store
                .put_sealed_file(
                    &format!("{base}.csv"),
                    &checked.csv_path,
                    PutMode::Overwrite,
                )
                .await?;
            self.store
                .put(
                    &format!("{base}.json"),
                    render_json(&report),
                    PutMode::Overwrite,
                )
                .await?;
            self.store
                .put(
                    &format!("{base}.html"),
                    render_html(&report).into_bytes(),
                    PutMode::Overwrite,
                )
                .await?;
        }
        if let (Ok(l), Some(p), Some(a)) = (&location, &pipeline, &checked.analysed) {
            self.write_analysis(p, l, &sid, a, accepted).await?;
        }
        let mut superseded = None;
        if accepted && let (Ok(l), Some(key)) = (&location, &snapshot_key) {
            let entry = ManifestEntry {
                force_id: l.force_id.clone(),
                period: l.period.to_string(),
                submission_id: sid.clone(),
                snapshot_key: key.clone(),
                source_key: object.key.clone(),
                sha256: sha256.clone(),
                rows: report.rows_accepted,
                schema_id: lineage.schema_id.clone(),
                uploaded_at: rfc3339(object.last_modified),
                accepted_at: processed_at.clone(),
                superseded_by: None,
            };
            superseded = self.commit_manifest(&l.dataset, entry).await?;
        }
        if let (Ok(l), Some(_)) = (&location, &pipeline) {
            let receipt = crate::analyze::Receipt {
                force_id: l.force_id.clone(),
                period: l.period,
                submission_id: sid.clone(),
                source_key: object.key.clone(),
                decision,
                uploaded_at: object.last_modified,
                rows: report.rows_read,
            };
            self.record_receipt(&l.dataset, receipt).await?;
            self.write_summary(&l.force_id, l.period).await?;
        }
        let done = DoneMarker {
            key: object.key.clone(),
            etag: object.etag.clone(),
            submission_id: sid.clone(),
            decision,
            processed_at,
        };
        match self
            .store
            .put(
                &format!("_state/done/{marker}.json"),
                serde_json::to_vec_pretty(&done).unwrap_or_default(),
                PutMode::Create,
            )
            .await
        {
            Ok(_) => {}
            // Only when this worker outlived its claim and another took the upload over: the
            // outputs are the same keys, and the manifest holds the submission once.
            Err(StoreError::AlreadyExists { .. }) => {
                warn!(
                    "another worker also processed this upload (a claim outlived its time to live)"
                );
            }
            Err(e) => return Err(e.into()),
        }
        lease::clear(self.store.as_ref(), &Self::claim_base(marker)).await?;
        info!(
            decision = decision.as_str(),
            rows = report.rows_accepted,
            "upload processed"
        );
        Ok(SubmissionSummary {
            source_key: object.key.clone(),
            submission_id: sid,
            force_id,
            dataset: location.as_ref().ok().map(|l| l.dataset.clone()),
            period: period.map(|p| p.to_string()),
            decision,
            rows_read: report.rows_read,
            rows_accepted: report.rows_accepted,
            codes: report
                .findings
                .iter()
                .map(|s| (s.code.as_str().to_owned(), s.count))
                .collect(),
            severities: report
                .findings
                .iter()
                .map(|s| (s.code.as_str().to_owned(), s.severity))
                .collect(),
            outputs,
            superseded,
        })
    }

    fn force_folder(&self, key: &str) -> Option<String> {
        let folder = key.split('/').nth(1)?;
        let forces = self.project.catalog.forces()?;
        forces
            .codes
            .iter()
            .any(|c| c.code == folder)
            .then(|| folder.to_owned())
    }

    /// Records an accepted submission in the dataset manifest: under the manifest lock, read,
    /// apply, and write back with a compare-and-swap (`If-Match`) that refuses the write should
    /// the lock have expired and another worker have written meanwhile.
    async fn commit_manifest(
        &self,
        dataset: &str,
        entry: ManifestEntry,
    ) -> Result<Option<String>, PipelineError> {
        let lock = self.lock_manifest(dataset).await?;
        let result = self.update_manifest(dataset, entry).await;
        if let Err(e) = lock.release(self.store.as_ref()).await {
            warn!(lock = %lock.key, error = %e, "failed to release the manifest lock; it will expire");
        }
        result
    }

    /// Takes `_state/locks/manifest-<dataset>`, waiting while another worker holds it (a lock
    /// left by a dead worker expires after the lock TTL).
    async fn lock_manifest(&self, dataset: &str) -> Result<Lease, PipelineError> {
        let base = format!("_state/locks/manifest-{dataset}");
        let ttl = chrono::Duration::from_std(self.options.lock_ttl)
            .unwrap_or(chrono::Duration::minutes(1));
        let give_up = tokio::time::Instant::now() + self.options.lock_ttl * 3;
        let mut wait = Duration::from_millis(10);
        loop {
            let taken = lease::take(
                self.store.as_ref(),
                &base,
                &Manifest::key(dataset),
                &self.options.worker_id,
                self.clock.now(),
                ttl,
            )
            .await?;
            match taken {
                Taken::Held(lock) => return Ok(lock),
                Taken::Busy { .. } if tokio::time::Instant::now() < give_up => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(500));
                }
                Taken::Busy { holder } => {
                    return Err(PipelineError::Locked {
                        lock: self.store.location(&base),
                        holder: holder.unwrap_or_else(|| "unknown".into()),
                    });
                }
            }
        }
    }

    async fn update_manifest(
        &self,
        dataset: &str,
        entry: ManifestEntry,
    ) -> Result<Option<String>, PipelineError> {
        let key = Manifest::key(dataset);
        for attempt in 0..5u32 {
            let (mut manifest, mode) = match self.store.get(&key).await {
                Ok((bytes, meta)) => {
                    let m: Manifest =
                        serde_json::from_slice(&bytes).map_err(|e| PipelineError::Manifest {
                            key: key.clone(),
                            message: e.to_string(),
                        })?;
                    (m, PutMode::Update(meta.etag))
                }
                Err(StoreError::NotFound { .. }) => (
                    Manifest {
                        dataset: dataset.to_owned(),
                        ..Manifest::default()
                    },
                    PutMode::Create,
                ),
                Err(e) => return Err(e.into()),
            };
            let change = manifest.apply(entry.clone(), &rfc3339(self.clock.now()));
            let superseded = match &change {
                crate::snapshot::ManifestChange::AlreadyRecorded => return Ok(None),
                crate::snapshot::ManifestChange::Current { superseded } => superseded.clone(),
                crate::snapshot::ManifestChange::AlreadySuperseded { .. } => None,
            };
            let body = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
            match self.store.put(&key, body, mode).await {
                Ok(_) => return Ok(superseded),
                Err(StoreError::Changed { .. } | StoreError::AlreadyExists { .. }) => {
                    warn!(manifest = %key, "the manifest changed under the lock; reading it again");
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt + 1))).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(PipelineError::Store(StoreError::Changed {
            location: self.store.location(&key),
        }))
    }
}

struct Checked {
    outcome: CheckOutcome,
    analysed: Option<analysis::Analysed>,
    rows_written: u64,
    snapshot_path: std::path::PathBuf,
    csv_path: std::path::PathBuf,
    quality_path: std::path::PathBuf,
}

/// The upload as the checks see it.
struct Upload {
    /// Its bytes as they download; `None` when it is too large to read.
    input: Option<FeedReader>,
    /// Its size as listed.
    size: u64,
    /// Its SHA-256, sent once it is fully downloaded (for the snapshot's lineage).
    sha256: std::sync::mpsc::Receiver<String>,
    /// When it is processed (the service's clock).
    processed_at: DateTime<Utc>,
}

/// Runs the check of an upload as it downloads, writing snapshot, findings CSV and findings
/// table into `dir`.
fn check_to_files(
    dir: &Path,
    upload: Upload,
    pipeline: Option<&Pipeline>,
    limits: Limits,
    location_error: Option<String>,
    lineage: &Lineage,
    job: Option<&analysis::Job>,
) -> Result<Checked, PipelineError> {
    let snapshot_path = dir.join("snapshot.parquet");
    let csv_path = dir.join("findings.csv");
    let quality_path = dir.join("findings.parquet");
    let masked: HashSet<String> = pipeline
        .map(|p| {
            p.schema
                .properties
                .iter()
                .filter(|q| q.pii.masked())
                .flat_map(|q| std::iter::once(q.name.clone()).chain(q.aliases.iter().cloned()))
                .collect()
        })
        .unwrap_or_default();
    let mut csv = CsvFindingSink::new(std::io::BufWriter::new(std::fs::File::create(&csv_path)?))?;
    let mut quality = QualityFindingSink::new(
        std::fs::File::create(&quality_path)?,
        lineage.submission_id.clone(),
        masked,
    )?;
    let mut analysed = None;
    let (outcome, rows_written) = match (pipeline, location_error) {
        (Some(pipeline), None) => {
            let scope = UploadScope {
                force: Some(lineage.force_id.clone()),
                period: lineage.period.parse().ok(),
                now: Some(upload.processed_at),
            };
            let mut writer = SnapshotWriter::new(
                Arc::clone(&pipeline.schema),
                lineage.clone(),
                std::fs::File::create(&snapshot_path)?,
            )?;
            let Upload {
                input,
                size,
                sha256,
                ..
            } = upload;
            let mut tee = Tee(&mut csv, &mut quality);
            let mut counts = analysis::builder(
                pipeline,
                &lineage.force_id,
                &lineage.period,
                &lineage.submission_id,
            );
            // The snapshot is typed, encoded and compressed on its own thread, a batch behind
            // the checks; the analysis counts are taken here, on the checking thread.
            let (tx, rx) = std::sync::mpsc::sync_channel::<(Batch, BooleanArray)>(1);
            let (mut outcome, rows) =
                std::thread::scope(|threads| -> Result<(CheckOutcome, u64), PipelineError> {
                    let written = threads.spawn(move || -> Result<u64, PipelineError> {
                        for (batch, valid) in rx {
                            writer.write(&batch, &valid)?;
                        }
                        let sha256 = sha256.recv().map_err(|_| {
                            PipelineError::Task("the upload was not downloaded in full".into())
                        })?;
                        Ok(writer.finish(&sha256)?.0)
                    });
                    let outcome = check_upload(
                        BufReader::new(input.map_or_else(
                            || Box::new(std::io::empty()) as Box<dyn Read + Send>,
                            |f| Box::new(f),
                        )),
                        Some(size),
                        pipeline,
                        limits,
                        scope,
                        &mut tee,
                        &mut |batch, valid| {
                            if let Some(c) = &mut counts {
                                c.add(&batch, &valid);
                            }
                            tx.send((batch, valid)).map_err(|_| {
                                PipelineError::Task("the snapshot writer stopped".into())
                            })
                        },
                    );
                    drop(tx);
                    let rows = written
                        .join()
                        .map_err(|_| PipelineError::Task("the snapshot writer panicked".into()))?;
                    // A writer failure (say, a full disk) explains a check that stopped early.
                    let rows = rows?;
                    Ok((outcome?, rows))
                })?;
            analysed = analysis::finish(pipeline, job, counts, &mut outcome, &mut tee)?;
            (outcome, rows)
        }
        (_, error) => {
            let mut tee = Tee(&mut csv, &mut quality);
            let mut log = FindingLog::new(20, BTreeMap::new(), &mut tee);
            log.push(Finding::new(
                Code::UploadLocationInvalid,
                error.unwrap_or_else(|| "the upload's dataset has no pipeline".into()),
                "upload location",
            ));
            let outcome = CheckOutcome {
                verdict: Verdict {
                    decision: Decision::Rejected,
                    rows_checked: 0,
                    error_rows: 0,
                    columns: Vec::<ColumnStats>::new(),
                },
                findings: log.finish()?,
                decode: DecodeStats::default(),
                header: None,
            };
            (outcome, 0)
        }
    };
    csv.into_inner()?;
    quality.finish()?;
    Ok(Checked {
        outcome,
        analysed,
        rows_written,
        snapshot_path,
        csv_path,
        quality_path,
    })
}

/// Checks a local file for `force-returns validate`: no store, no outputs.
pub fn validate_local(
    path: &Path,
    pipeline: &Pipeline,
    scope: UploadScope,
) -> Result<CheckOutcome, PipelineError> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut sink = NoSink;
    check_upload(
        BufReader::new(file),
        Some(size),
        pipeline,
        pipeline.limits,
        scope,
        &mut sink,
        &mut |_, _| Ok(()),
    )
}
