//! One run of the service: discover → claim → decode → validate → write → report.
//!
//! [`check_upload`] is the whole check of one file with no store: decode, validate, decide,
//! streaming accepted batches to a callback. `force-returns validate` and the pipeline both use
//! it, so a force checking a file before uploading sees exactly what the service will decide.
//!
//! [`Service::run_once`] processes every new upload under `incoming/`:
//!
//! 1. **discover**: list `incoming/` and ask the ledger ([`crate::state`]) which uploads are
//!    finished; an upload is new when no done-marker exists for its key and etag (a replaced
//!    object is new again). Discovery also deletes claims left beside finished uploads and
//!    compacts the ledger when enough done-markers wait;
//! 2. **claim**: take the upload's claim (a lease; one past its time to live is taken over),
//!    then ask the ledger again: another worker may have finished the upload since discovery.
//!    The claim is renewed for as long as the upload is processed;
//! 3. **read the key** ([`crate::layout`]): a key with no place in the layout (an unknown
//!    force, dataset or period, extra folders, `..`, a folder marker...) is judged from the key
//!    alone: its report goes to the force the key names or nearly names, and to the quality
//!    tables, and it is marked done like any other, so it is judged once and never fails a run;
//! 4. **download and check** together: the store writes the upload to a local file in this
//!    process's work folder, hashing it, and feeds each chunk to the check, which runs off the
//!    async runtime and writes the snapshot, the findings CSV and the findings table to local
//!    files. The download is of the version listed (S3 `If-Match`): an upload replaced since
//!    listing is left for the next run, which sees its new etag;
//! 5. **archive**: once downloaded, the bytes processed go to `archive/...` with their SHA-256;
//!    archive and check both finish before anything is written or decided;
//! 6. **write** snapshot, quality tables and feedback, then commit the manifest entry
//!    (accepted uploads only) and the receipt under the dataset's commit lock, write the
//!    force's summary, then the done-marker, then clear the claim.
//!
//! Every output key derives from the upload's key and etag, so a retry after a crash at any
//! step rewrites the same objects, and manifest and receipts ignore a submission they hold.
//! Each step logs one event with a `step` field (at debug level), so a log shows where the
//! processing of an upload stopped.
//!
//! The scheduled worker (`scheduler`) drives the same steps upload by upload through
//! [`Service::try_claim`], [`Service::process_claim`] and [`Service::release`], so it can run
//! several at once and give claims back at shutdown.

mod analysis;

pub use analysis::HISTORY_YEARS;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::BooleanArray;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::clock::Clock;
use crate::config::{Pipeline, Project};
use crate::feedback::{CsvFindingSink, Outputs, REPORT_VERSION, Report, render_html, render_json};
use crate::finding::{Code, CodeSummary, Finding, FindingLog, FindingSink, NoSink, Severity};
use crate::ingest::{
    Batch, CsvDecoder, DEFAULT_BATCH_ROWS, DecodeStats, HeaderMap, Start, workbook,
};
use crate::layout::{self, INCOMING, Location, Names, Problem, Route, Submission};
use crate::model::observe::Figures;
use crate::model::{Decision, Limits, ManifestEntry, Receipt, Received};
use crate::snapshot::{
    Lineage, QualityFindingSink, SnapshotWriter, SubmissionRecord, Tee, submissions_parquet,
};
use crate::state::{Claim, DoneRecord, State, StateError, StateOptions};
use crate::store::{FeedReader, ObjectMeta, ObjectStore, PutMode, StoreError};
use crate::validate::{CheckSettings, Checker, ColumnStats, UploadScope, Verdict};
use crate::workdir::WorkRoot;

/// A failure of the run itself (not of the data: bad data is findings).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Object storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The shared state failed (a lock held too long, a claim lost, a state file unreadable).
    #[error(transparent)]
    State(#[from] StateError),
    /// Local temporary files failed.
    #[error("failed to use a temporary file: {0}")]
    Io(#[from] std::io::Error),
    /// Writing Parquet failed.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    /// The schema could not be compiled.
    #[error("schema problem: {0}")]
    Schema(String),
    /// A background task panicked or was cancelled.
    #[error("a processing task failed: {0}")]
    Task(String),
    /// An analysis table could not be written or read.
    #[error(transparent)]
    Table(#[from] crate::analyze::tables::TableError),
}

/// The names an upload key is read against: the project's force ids (with their other
/// spellings, to name the nearest id) and dataset ids.
pub fn key_names(project: &Project) -> Names {
    let forces = project.code_lists.forces().map_or_else(Vec::new, |list| {
        list.codes
            .iter()
            .map(|c| {
                let spellings = std::iter::once(c.label.as_str())
                    .chain(c.aliases.iter().map(String::as_str))
                    .collect();
                (c.code.as_str(), spellings)
            })
            .collect()
    });
    Names::new(
        forces,
        project
            .pipelines
            .iter()
            .map(|(id, p)| (id.as_str(), p.period.cadence)),
    )
}

/// Reads an upload key against the project: its place in the layout, or why it has none.
pub fn parse_upload_key(key: &str, project: &Project) -> Result<Location, String> {
    match layout::route(key, &key_names(project)) {
        Route::Routed(location) => Ok(location),
        Route::Odd(odd) => Err(odd.message(key)),
    }
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

/// What checking an upload takes from `pipeline`.
pub fn check_settings(pipeline: &Pipeline) -> CheckSettings {
    CheckSettings {
        schema: Arc::clone(&pipeline.schema),
        rules: Arc::clone(&pipeline.rules),
        reading: pipeline.reading.clone(),
        blank_rates: pipeline.blank_rates.clone(),
        max_error_row_share: pipeline.decision.max_error_row_share,
        examples_per_code: pipeline.decision.examples_per_code,
        findings_per_code: pipeline.decision.findings_per_code,
        severity_overrides: pipeline.severity_overrides.clone(),
        table: pipeline.table.clone(),
    }
}

/// Checks one file as `settings` say with no store. `size` is the file's size when known
/// (checked against the limit before reading). Every finding goes to `sink`; the rows of each
/// batch that are free of errors go to `on_valid`.
pub fn check_upload<R: Read + Send>(
    input: R,
    size: Option<u64>,
    settings: &CheckSettings,
    limits: Limits,
    scope: UploadScope,
    sink: &mut dyn FindingSink,
    on_valid: &mut dyn FnMut(Batch, BooleanArray) -> Result<(), PipelineError>,
) -> Result<CheckOutcome, PipelineError> {
    let mut log = FindingLog::new(
        settings.examples_per_code,
        settings.severity_overrides.clone(),
        sink,
    )
    .listing_per_code(settings.findings_per_code);
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
                    figures: Figures::new(),
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
    // A workbook is read as the CSV text of its sheet; anything else as sent.
    let mut input = input;
    let mut head = Vec::with_capacity(8);
    (&mut input).take(8).read_to_end(&mut head)?;
    let mut cells = None;
    let mut sheet_failure = None;
    let source: Box<dyn Read + Send + '_> = if workbook::is_workbook(&head) {
        let mut bytes = head;
        (&mut input)
            .take(limits.max_file_bytes.saturating_add(1))
            .read_to_end(&mut bytes)?;
        let read = bytes.len() as u64;
        if read > limits.max_file_bytes {
            log.push(Finding::new(
                Code::FileTooLarge,
                format!(
                    "the workbook is more than {} bytes, the limit; it was not read",
                    limits.max_file_bytes
                ),
                "max_file_bytes",
            ));
            return stopped(log, DecodeStats::default());
        }
        match workbook::open(bytes) {
            Ok(opened) => {
                log.push(opened.note);
                cells = Some(opened.cells);
                sheet_failure = Some(opened.text.failure());
                Box::new(opened.text)
            }
            Err(finding) => {
                log.push(*finding);
                return stopped(
                    log,
                    DecodeStats {
                        bytes: read,
                        ..DecodeStats::default()
                    },
                );
            }
        }
    } else {
        Box::new(std::io::Cursor::new(head).chain(input))
    };
    let mut decoder = match CsvDecoder::start(
        source,
        &settings.schema,
        limits,
        DEFAULT_BATCH_ROWS,
        &mut log,
    )? {
        Start::Rows(d) => d,
        Start::Stopped(stats) => return stopped(log, stats),
    };
    let header = decoder.header().clone();
    if let Some(mut cells) = cells {
        cells.set_headers(&header.headers);
        log.name_cells(cells);
    }
    let mut checker =
        Checker::new(settings, scope, header.clone()).map_err(PipelineError::Schema)?;
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
    let stopped_part_way = sheet_failure.and_then(|f| f.lock().ok().and_then(|mut m| m.take()));
    if let Some(message) = stopped_part_way {
        log.push(Finding::new(
            Code::WorkbookUnreadable,
            format!(
                "the sheet could not be read after its first {} rows: {message}",
                decode.records
            ),
            "workbook",
        ));
    }
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
    /// How long a claim holds unless renewed; it is renewed every third of that while the
    /// upload is processed, so a killed worker's uploads are taken over soon after it dies.
    pub claim_ttl: Duration,
    /// How long a lock on shared state (a dataset's manifest and receipts, the ledger) holds
    /// before another worker may take it over.
    pub lock_ttl: Duration,
    /// This worker's name, written into claims.
    pub worker_id: String,
    /// The local folder under which uploads are downloaded and checked; what a process that
    /// died left there is removed when the next one starts.
    pub work_root: PathBuf,
    /// Done-markers waiting before a run folds them into the ledger's index.
    pub compact_after: usize,
    /// How long a finished upload stays in `incoming/` after it was uploaded; then a run
    /// removes it (its exact bytes are in `archive/`, the ledger remembers it), so listing
    /// `incoming/` costs what recent uploads cost, not every upload ever made. At least
    /// [`MIN_INCOMING_RETENTION`], the longest an upload link lives, so a link can never
    /// put a second file where its first one was.
    pub incoming_retention: Duration,
}

/// The shortest [`RunOptions::incoming_retention`]: 7 days, the longest an upload link lives.
pub const MIN_INCOMING_RETENTION: Duration = Duration::from_hours(7 * 24);

/// Finished uploads one run removes from `incoming/` at most; the rest go in the next runs.
const INBOX_REMOVALS_PER_RUN: usize = 256;

/// The default claim time to live.
pub const DEFAULT_CLAIM_TTL: Duration = Duration::from_mins(1);

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            limits_override: None,
            claim_ttl: DEFAULT_CLAIM_TTL,
            lock_ttl: Duration::from_mins(1),
            worker_id: format!("{}-{}", hostname(), std::process::id()),
            work_root: std::env::temp_dir().join("force-returns-work"),
            compact_after: 256,
            incoming_retention: MIN_INCOMING_RETENTION,
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into())
}

/// What happened to one upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmissionSummary {
    /// The upload and its place, as its report gives them.
    #[serde(flatten)]
    pub received: Received,
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
    /// Uploads another worker held a live claim on, had finished, or that were replaced
    /// since they were listed (the new version is processed by the next run).
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
#[derive(Debug)]
pub struct Claimed {
    object: ObjectMeta,
    submission: Submission,
    claim: Claim,
}

impl Claimed {
    /// The upload.
    pub fn submission(&self) -> &Submission {
        &self.submission
    }

    /// Whether its claim was taken over from a worker whose claim had expired.
    pub fn took_over(&self) -> bool {
        self.claim.took_over()
    }
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

/// Logs that a step of processing an upload is done: one event per step, its `step` field
/// naming it, so that a log shows where the processing of an upload stopped.
fn step(name: &'static str) {
    debug!(step = name, "{name}");
}

/// The service: a project's pipelines over one bucket.
pub struct Service {
    project: Arc<Project>,
    store: Arc<dyn ObjectStore>,
    clock: Arc<dyn Clock>,
    options: RunOptions,
    names: Names,
    state: State,
    work: tokio::sync::OnceCell<WorkRoot>,
    analysis: analysis::Cache,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// What the outputs of an upload came to.
struct Written {
    decision: Decision,
    report: Report,
    outputs: Outputs,
}

impl Service {
    /// A service over `store`.
    pub fn new(
        project: Arc<Project>,
        store: Arc<dyn ObjectStore>,
        clock: Arc<dyn Clock>,
        options: RunOptions,
    ) -> Self {
        let state = State::new(
            Arc::clone(&store),
            Arc::clone(&clock),
            StateOptions {
                holder: options.worker_id.clone(),
                claim_ttl: options.claim_ttl,
                lock_ttl: options.lock_ttl,
                compact_after: options.compact_after,
            },
        );
        Service {
            names: key_names(&project),
            project,
            store,
            clock,
            options,
            state,
            work: tokio::sync::OnceCell::new(),
            analysis: analysis::Cache::default(),
        }
    }

    /// The shared state of the bucket.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// This process's work folder, made (and the work root cleared of what dead processes
    /// left) on first use. Call it at start so that clearing does not wait for an upload.
    pub async fn work(&self) -> Result<&WorkRoot, PipelineError> {
        let root = self.options.work_root.clone();
        self.work
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || WorkRoot::open(&root))
                    .await
                    .map_err(|e| PipelineError::Task(e.to_string()))?
                    .map_err(PipelineError::Io)
            })
            .await
    }

    /// Uploads not yet processed, oldest first. Also deletes claims left beside finished
    /// uploads and compacts the ledger when enough done-markers wait (failures there are
    /// logged: the next run tries again).
    pub async fn discover(&self) -> Result<Vec<ObjectMeta>, PipelineError> {
        let done = self.state.done().await?;
        let retained_since = self.clock.now()
            - chrono::Duration::from_std(self.options.incoming_retention)
                .unwrap_or(chrono::TimeDelta::MAX);
        let (mut pending, finished): (Vec<ObjectMeta>, Vec<ObjectMeta>) = self
            .store
            .list(INCOMING)
            .await?
            .into_iter()
            .partition(|m| !done.markers.contains(&layout::names_of(&m.key, &m.etag).1));
        pending.sort_by(|a, b| (a.last_modified, &a.key).cmp(&(b.last_modified, &b.key)));
        self.clear_inbox(finished, retained_since).await;
        if let Err(e) = self.state.sweep_claims(&done.markers).await {
            warn!(error = %e, "failed to delete claims left beside finished uploads");
        }
        if done.unfolded >= self.options.compact_after
            && let Err(e) = self.state.compact().await
        {
            warn!(error = %e, "failed to compact the ledger; the next run tries again");
        }
        Ok(pending)
    }

    /// Removes finished uploads made before `retained_since` from `incoming/`, each only while
    /// it is the version that was processed (a newer upload under its key stays), and only
    /// uploads whose key has its place in the layout, so whose bytes are in `archive/`. An
    /// odd key's upload is never read, so it stays where it was put.
    async fn clear_inbox(&self, finished: Vec<ObjectMeta>, retained_since: DateTime<Utc>) {
        let mut removed = 0;
        for m in finished
            .iter()
            .filter(|m| m.last_modified < retained_since)
            .filter(|m| {
                Submission::new(&m.key, &m.etag, &self.names)
                    .location()
                    .is_some()
            })
            .take(INBOX_REMOVALS_PER_RUN)
        {
            match self.store.delete_version(&m.key, &m.etag).await {
                Ok(()) => removed += 1,
                Err(StoreError::Changed { .. }) => {
                    debug!(key = %m.key, "a newer upload took a finished one's key; it stays");
                }
                Err(e) => {
                    warn!(key = %m.key, error = %e, "failed to remove a finished upload from incoming/; the next run tries again");
                }
            }
        }
        if removed > 0 {
            info!(
                removed,
                "finished uploads past the retention removed from incoming/ (their bytes are in archive/)"
            );
        }
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
        self.work().await?;
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

    async fn process(
        &self,
        object: &ObjectMeta,
    ) -> Result<Option<SubmissionSummary>, PipelineError> {
        match self.try_claim(object).await? {
            Some(claimed) => self.process_claim(&claimed).await,
            None => Ok(None),
        }
    }

    /// Claims an upload for this worker. `None` when another worker holds a live claim on it
    /// or has already finished it (between this worker's listing and its claim).
    pub async fn try_claim(&self, object: &ObjectMeta) -> Result<Option<Claimed>, PipelineError> {
        let submission = Submission::new(&object.key, &object.etag, &self.names);
        let Some(claim) = self
            .state
            .claim(&submission.claim_base(), &object.key)
            .await?
        else {
            return Ok(None);
        };
        if claim.took_over() {
            warn!(claim = %submission.claim_base(), "took over an expired claim");
        }
        step("claimed");
        // Discovery read the ledger before this claim: the upload may have been finished, and
        // its claim cleared, since.
        match self.state.is_done(&submission.marker).await {
            Ok(false) => Ok(Some(Claimed {
                object: object.clone(),
                submission,
                claim,
            })),
            Ok(true) => {
                self.state.release(&claim).await?;
                info!("another worker has finished this upload; skipped");
                Ok(None)
            }
            Err(e) => {
                let _ = self.state.release(&claim).await;
                Err(e.into())
            }
        }
    }

    /// Processes a claimed upload: archive, check, outputs, manifest and receipt, done-marker,
    /// and the claim cleared, renewing the claim all along. `None` when the upload was
    /// replaced since it was listed: the next run processes the new one. Unless processed, the
    /// claim is released, so the next run retries at once rather than after it expires.
    pub async fn process_claim(
        &self,
        claimed: &Claimed,
    ) -> Result<Option<SubmissionSummary>, PipelineError> {
        let result = tokio::select! {
            biased;
            result = self.process_claimed(claimed) => result,
            lost = self.state.keep_alive(&claimed.claim) => Err(lost.into()),
        };
        if !matches!(result, Ok(Some(_))) {
            let _ = self.release(claimed).await;
        }
        result
    }

    /// Gives a claim back without finishing the upload (shutdown, failure), so any worker may
    /// take it at once.
    pub async fn release(&self, claimed: &Claimed) -> Result<(), PipelineError> {
        self.state.release(&claimed.claim).await?;
        Ok(())
    }

    async fn process_claimed(
        &self,
        claimed: &Claimed,
    ) -> Result<Option<SubmissionSummary>, PipelineError> {
        let object = &claimed.object;
        let mut sub = claimed.submission.clone();
        let span = tracing::Span::current();
        span.record("submission", sub.id.as_str());
        if let Some(l) = sub.location() {
            span.record("dataset", l.dataset.as_str());
            span.record("force", l.force_id.as_str());
            span.record("period", l.period.to_string().as_str());
        }
        let pipeline = sub
            .location()
            .and_then(|l| self.project.pipeline(&l.dataset))
            .cloned();
        let now = self.clock.now();
        let processed_at = rfc3339(now);
        let work = self.work().await?.job()?;
        let Some(mut checked) = self
            .receive(&mut sub, object, pipeline.as_ref(), now, work.path())
            .await?
        else {
            info!(
                "the upload was replaced since it was listed; the next run processes the new one"
            );
            return Ok(None);
        };
        let written = self
            .write_outputs(&sub, object, pipeline.as_ref(), &checked, &processed_at)
            .await?;
        drop(work);
        self.state.ensure_held(&claimed.claim).await?;
        let receipt = sub.identity(object.last_modified).map(|identity| Receipt {
            identity,
            decision: written.decision,
            rows: written.report.rows_read,
        });
        let superseded = self
            .commit(&sub, object, &written, receipt.as_ref(), &processed_at)
            .await?;
        // The series are brought up to date while the summary is written: neither reads the
        // other.
        let series_read = checked.series.take();
        let series = async {
            if let (Some(p), Some(read)) = (pipeline.as_ref(), series_read) {
                let current = checked
                    .analysed
                    .as_ref()
                    .filter(|_| written.outputs.snapshot.is_some())
                    .filter(|_| written.decision != Decision::Rejected)
                    .map(|a| &a.observations);
                // Boxed: held beside the summary, it would make every caller's future large.
                Box::pin(self.update_series(p, read, current)).await;
            }
        };
        let summary = async {
            if let Some(l) = sub.location() {
                self.write_summary(&l.dataset, &l.force_id, l.period)
                    .await?;
                step("summary written");
                let notices = checked
                    .analysed
                    .as_ref()
                    .filter(|_| written.decision != Decision::Rejected)
                    .map_or(&[][..], |a| &a.notices[..]);
                self.add_notices(&l.dataset, notices).await?;
                let elsewhere = checked
                    .analysed
                    .as_ref()
                    .filter(|_| written.decision != Decision::Rejected)
                    .map_or(&[][..], |a| &a.elsewhere[..]);
                self.replace_reconciliation(elsewhere).await?;
            }
            Ok::<_, PipelineError>(())
        };
        let ((), summary) = tokio::join!(series, summary);
        summary?;
        let record = DoneRecord {
            key: sub.key.clone(),
            etag: sub.etag.clone(),
            submission_id: sub.id.clone(),
            decision: written.decision,
            processed_at,
            dataset: sub.location().map(|l| l.dataset.clone()),
            receipt,
        };
        if !self.state.mark_done(&sub.marker, &record).await? {
            // Only when this worker outlived its claim and another took the upload over: the
            // outputs are the same keys, and manifest and receipts hold the submission once.
            warn!("another worker also processed this upload (a claim outlived its time to live)");
        }
        step("marked done");
        self.state.finish(&claimed.claim).await?;
        step("claim cleared");
        info!(
            decision = written.decision.as_str(),
            rows = written.report.rows_accepted,
            "upload processed"
        );
        Ok(Some(summary_of(written, superseded)))
    }

    /// Downloads, archives and checks a routed upload, or judges an odd key from the key
    /// alone. `None` when the upload was replaced since it was listed.
    async fn receive(
        &self,
        sub: &mut Submission,
        object: &ObjectMeta,
        pipeline: Option<&Pipeline>,
        now: DateTime<Utc>,
        dir: &Path,
    ) -> Result<Option<Checked>, PipelineError> {
        let limits = self
            .options
            .limits_override
            .or_else(|| pipeline.map(|p| p.limits))
            .unwrap_or_default();
        let mut lineage = lineage_of(sub, pipeline, &rfc3339(now));
        let (Some(location), Some(archive_key)) = (sub.location().cloned(), sub.archive_key())
        else {
            let message = sub.odd().map(|o| o.message(&sub.key)).unwrap_or_default();
            // A period folder of another cadence, with nothing else wrong, has its own code.
            let code = match sub.odd() {
                Some(o)
                    if o.problems
                        .iter()
                        .all(|p| matches!(p, Problem::WrongCadence { .. })) =>
                {
                    Code::PeriodWrongCadence
                }
                _ => Code::UploadLocationInvalid,
            };
            warn!(reason = %message, "an upload's key has no place in the layout: judged from the key alone");
            let dir = dir.to_owned();
            let checked = tokio::task::spawn_blocking(move || {
                check_to_files(
                    &dir,
                    Upload::absent(now),
                    None,
                    limits,
                    Some((code, message)),
                    &lineage,
                    None,
                )
            })
            .await
            .map_err(|e| PipelineError::Task(e.to_string()))??;
            step("judged");
            return Ok(Some(checked));
        };
        // The force's history and its peers' months are read while the upload downloads and is
        // checked; the check waits for them only at its end, to analyse the counts.
        let (history_read, history) = std::sync::mpsc::channel();
        let read_history = async {
            // Owned here, so that a failed read drops it and the check stops waiting.
            let history_read = history_read;
            let read = match pipeline {
                // Boxed: held beside the download and the check, it would make every caller's
                // future large.
                Some(p) => Box::pin(self.analysis_job(p, &location)).await?,
                None => None,
            };
            let (job, series) = read.unzip();
            let _ = history_read.send(job);
            Ok::<_, PipelineError>(series)
        };
        let too_large = object.size > limits.max_file_bytes;
        let local = dir.join("upload");
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
        let archive = self.archive(object, sub.file_name(), &archive_key, &local, feed, hashed);
        let check = {
            let work_dir = dir.to_owned();
            let pipeline = pipeline.cloned();
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
                    None,
                    &lineage,
                    Some(history),
                )
            })
        };
        let (archived, checked, history_read) = tokio::join!(archive, check, read_history);
        // A replaced upload: what the check read (if anything) is not the upload listed.
        let Some(sha256) = archived? else {
            return Ok(None);
        };
        let series = history_read?;
        let mut checked = checked.map_err(|e| PipelineError::Task(e.to_string()))??;
        checked.series = series.flatten();
        step("checked");
        lineage.sha256.clone_from(&sha256);
        sub.sha256 = Some(sha256);
        Ok(Some(checked))
    }

    /// Downloads the version of the upload listed into `local` (sending chunks to `feed`
    /// and, once all in, the SHA-256 to `hashed`), then archives it; an upload too large to
    /// read (no feed) is copied to the archive instead. Returns the SHA-256, or `None` when
    /// the upload was replaced since it was listed.
    async fn archive(
        &self,
        object: &ObjectMeta,
        file_name: &str,
        archive_key: &str,
        local: &Path,
        feed: Option<crate::store::Feed>,
        // Owned here, so that a failed download drops it and the snapshot writer stops
        // waiting for the hash.
        hashed: std::sync::mpsc::Sender<String>,
    ) -> Result<Option<String>, PipelineError> {
        let Some(feed) = feed else {
            let _ = hashed.send(String::new());
            self.store.copy(&object.key, archive_key).await?;
            // Not read, so not tied to the etag by a download: compared after the copy.
            let still = self
                .store
                .list(&object.key)
                .await?
                .iter()
                .any(|m| m.key == object.key && m.etag == object.etag);
            step("archived");
            return Ok(still.then(String::new));
        };
        let got = match self
            .store
            .download_version(&object.key, &object.etag, local, Some(feed))
            .await
        {
            Ok(got) => got,
            Err(StoreError::Changed { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        step("downloaded");
        let _ = hashed.send(got.sha256.clone());
        // The download is this worker's own file and is only read from here on.
        let checksum_key = format!("{archive_key}.sha256");
        tokio::try_join!(
            self.store
                .put_sealed_file(archive_key, local, PutMode::Overwrite),
            self.store.put(
                &checksum_key,
                format!("{}  {file_name}\n", got.sha256).into_bytes(),
                PutMode::Overwrite,
            ),
        )?;
        step("archived");
        Ok(Some(got.sha256))
    }

    /// Writes the snapshot (accepted uploads), the quality tables, the report and the
    /// analysis tables of a checked upload.
    async fn write_outputs(
        &self,
        sub: &Submission,
        object: &ObjectMeta,
        pipeline: Option<&Pipeline>,
        checked: &Checked,
        processed_at: &str,
    ) -> Result<Written, PipelineError> {
        let decision = checked.outcome.verdict.decision;
        let accepted = decision != Decision::Rejected;
        let feedback_base = sub.feedback_base();
        let snapshot_key = if accepted { sub.snapshot_key() } else { None };
        let mut outputs = Outputs {
            archive: sub.archive_key(),
            snapshot: snapshot_key.clone(),
            ..Outputs::default()
        };
        if let Some(base) = &feedback_base {
            outputs.report_json = Some(format!("{base}.json"));
            outputs.report_html = Some(format!("{base}.html"));
            outputs.findings_csv = Some(format!("{base}.csv"));
        }
        let report = self.report(sub, object, pipeline, checked, processed_at, &outputs);
        let schema_id = pipeline.map(|p| p.schema.id.clone()).unwrap_or_default();
        let record = SubmissionRecord {
            submission_id: sub.id.clone(),
            dataset: sub.dataset_label().to_owned(),
            force_id: sub.force().map(str::to_owned),
            period: sub.location().map(|l| l.period.to_string()),
            source_key: sub.key.clone(),
            sha256: sub.sha256.clone().unwrap_or_default(),
            bytes: object.size,
            uploaded_at: rfc3339(object.last_modified),
            processed_at: processed_at.to_owned(),
            schema_id,
            decision: decision.as_str().to_owned(),
            rows_read: report.rows_read,
            rows_accepted: report.rows_accepted,
            error_rows: report.error_rows,
            errors: report.count(Severity::Error),
            warnings: report.count(Severity::Warning),
            infos: report.count(Severity::Info),
            snapshot_key: outputs.snapshot.clone(),
        };
        let submissions = submissions_parquet(&record)?;
        // The outputs do not depend on one another: they are written at once, each logging
        // its step when it lands. All are written before the commit names any of them.
        let snapshot = async {
            if let Some(key) = &snapshot_key {
                self.store
                    .put_sealed_file(key, &checked.snapshot_path, PutMode::Overwrite)
                    .await?;
                step("snapshot written");
            }
            Ok::<_, PipelineError>(())
        };
        // The files the check wrote are finished: the store may link rather than copy them.
        let (findings_key, submissions_key) =
            (sub.quality_key("findings"), sub.quality_key("submissions"));
        let quality = async {
            tokio::try_join!(
                self.store.put_sealed_file(
                    &findings_key,
                    &checked.quality_path,
                    PutMode::Overwrite,
                ),
                self.store
                    .put(&submissions_key, submissions, PutMode::Overwrite,),
            )?;
            step("quality tables written");
            Ok::<_, PipelineError>(())
        };
        let feedback = async {
            if let Some(base) = &feedback_base {
                self.write_feedback(base, &checked.csv_path, &report)
                    .await?;
            }
            Ok::<_, PipelineError>(())
        };
        let analysis = async {
            if let (Some(l), Some(p), Some(a)) = (sub.location(), pipeline, &checked.analysed) {
                self.write_analysis(p, l, &sub.id, a, accepted).await?;
                step("analysis written");
            }
            Ok::<_, PipelineError>(())
        };
        // Boxed: the four writes together would make every caller's future large.
        Box::pin(async { tokio::try_join!(snapshot, quality, feedback, analysis) }).await?;
        Ok(Written {
            decision,
            report,
            outputs,
        })
    }

    /// Writes the report back to the force at `base`: JSON, HTML and the CSV of every finding
    /// the check wrote to `csv`.
    async fn write_feedback(
        &self,
        base: &str,
        csv: &Path,
        report: &Report,
    ) -> Result<(), PipelineError> {
        let (csv_key, json_key, html_key) = (
            format!("{base}.csv"),
            format!("{base}.json"),
            format!("{base}.html"),
        );
        tokio::try_join!(
            self.store
                .put_sealed_file(&csv_key, csv, PutMode::Overwrite),
            self.store
                .put(&json_key, render_json(report), PutMode::Overwrite),
            self.store.put(
                &html_key,
                render_html(report).into_bytes(),
                PutMode::Overwrite,
            ),
        )?;
        step("feedback written");
        Ok(())
    }

    /// The report back to the force.
    fn report(
        &self,
        sub: &Submission,
        object: &ObjectMeta,
        pipeline: Option<&Pipeline>,
        checked: &Checked,
        processed_at: &str,
        outputs: &Outputs,
    ) -> Report {
        let decision = checked.outcome.verdict.decision;
        let force_id = sub.force().map(str::to_owned);
        let force_name = force_id.as_ref().and_then(|f| {
            self.project
                .code_lists
                .forces()
                .and_then(|l| l.codes.iter().find(|c| &c.code == f))
                .map(|c| c.label.clone())
        });
        Report {
            report_version: REPORT_VERSION,
            received: sub.received(object.last_modified),
            dataset_title: pipeline
                .map_or_else(|| "Unrecognised upload".to_owned(), |p| p.title.clone()),
            force_name,
            file_name: sub.file_name().to_owned(),
            bytes: object.size,
            processed_at: processed_at.to_owned(),
            schema_id: pipeline.map(|p| p.schema.id.clone()).unwrap_or_default(),
            decision,
            rows_read: checked.outcome.decode.records,
            rows_accepted: if decision == Decision::Rejected {
                0
            } else {
                checked.rows_written
            },
            error_rows: checked.outcome.verdict.error_rows,
            findings: checked.outcome.findings.clone(),
            columns: checked.outcome.verdict.columns.clone(),
            outputs: outputs.clone(),
        }
    }

    /// Records the upload in its dataset's state: the manifest entry of an accepted upload and
    /// the receipt of every routed one, under the dataset's commit lock. Returns the
    /// submission the upload superseded, if any.
    async fn commit(
        &self,
        sub: &Submission,
        object: &ObjectMeta,
        written: &Written,
        receipt: Option<&Receipt>,
        processed_at: &str,
    ) -> Result<Option<String>, PipelineError> {
        let Some(identity) = sub.identity(object.last_modified) else {
            return Ok(None);
        };
        let dataset = identity.place.dataset.clone();
        let entry = match &written.outputs.snapshot {
            Some(key) if written.decision != Decision::Rejected => Some(ManifestEntry {
                identity,
                snapshot_key: key.clone(),
                rows: written.report.rows_accepted,
                schema_id: written.report.schema_id.clone(),
                accepted_at: processed_at.to_owned(),
                superseded_by: None,
            }),
            _ => None,
        };
        let committed = self
            .state
            .commit(&dataset, entry.as_ref(), receipt.cloned().as_slice())
            .await?;
        Ok(committed.superseded)
    }
}

/// What happened to one upload, from its submission and outputs.
fn summary_of(written: Written, superseded: Option<String>) -> SubmissionSummary {
    let Written {
        decision,
        report,
        outputs,
    } = written;
    SubmissionSummary {
        received: report.received.clone(),
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
    }
}

/// The lineage a submission's snapshot carries (its SHA-256 is added once downloaded).
fn lineage_of(sub: &Submission, pipeline: Option<&Pipeline>, processed_at: &str) -> Lineage {
    Lineage {
        dataset: sub.dataset_label().to_owned(),
        force_id: sub.force().unwrap_or_default().to_owned(),
        period: sub
            .location()
            .map(|l| l.period.to_string())
            .unwrap_or_default(),
        submission_id: sub.id.clone(),
        source_key: sub.key.clone(),
        sha256: sub.sha256.clone().unwrap_or_default(),
        schema_id: pipeline.map(|p| p.schema.id.clone()).unwrap_or_default(),
        schema_version: pipeline
            .and_then(|p| p.schema.version.clone())
            .unwrap_or_default(),
        catalogue_version: pipeline
            .and_then(|p| p.table.as_ref())
            .map(|t| t.catalogue.version.to_string()),
        ingested_at: processed_at.to_owned(),
    }
}

struct Checked {
    outcome: CheckOutcome,
    analysed: Option<analysis::Analysed>,
    /// The series the analysis read, to update after the commit.
    series: Option<analysis::SeriesRead>,
    rows_written: u64,
    snapshot_path: PathBuf,
    csv_path: PathBuf,
    quality_path: PathBuf,
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

impl Upload {
    /// No upload to read: its key is judged alone.
    fn absent(processed_at: DateTime<Utc>) -> Upload {
        Upload {
            input: None,
            size: 0,
            sha256: std::sync::mpsc::channel().1,
            processed_at,
        }
    }
}

/// Runs the check of an upload as it downloads, writing snapshot, findings CSV and findings
/// table into `dir`.
fn check_to_files(
    dir: &Path,
    upload: Upload,
    pipeline: Option<&Pipeline>,
    limits: Limits,
    location_error: Option<(Code, String)>,
    lineage: &Lineage,
    history: Option<std::sync::mpsc::Receiver<Option<analysis::Job>>>,
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
                period: pipeline.period.cadence.parse(&lineage.period).ok(),
                now: Some(upload.processed_at),
            };
            let settings = check_settings(pipeline);
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
            let mut observing = analysis::builder(
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
                        &settings,
                        limits,
                        scope,
                        &mut tee,
                        &mut |batch, valid| {
                            if let Some(c) = &mut observing {
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
            let job = match history {
                Some(read) => read.recv().map_err(|_| {
                    PipelineError::Task("the history to analyse against was not read".into())
                })?,
                None => None,
            };
            analysed = analysis::finish(pipeline, job.as_ref(), observing, &mut outcome, &mut tee)?;
            (outcome, rows)
        }
        (_, error) => {
            let mut tee = Tee(&mut csv, &mut quality);
            let mut log = FindingLog::new(20, BTreeMap::new(), &mut tee);
            let (code, message) = error.unwrap_or_else(|| {
                (
                    Code::UploadLocationInvalid,
                    "the upload's dataset has no pipeline".into(),
                )
            });
            log.push(Finding::new(code, message, "upload location"));
            let outcome = CheckOutcome {
                verdict: Verdict {
                    decision: Decision::Rejected,
                    rows_checked: 0,
                    error_rows: 0,
                    columns: Vec::<ColumnStats>::new(),
                    figures: Figures::new(),
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
        series: None,
        rows_written,
        snapshot_path,
        csv_path,
        quality_path,
    })
}

/// Checks a local file for `force-returns validate`: no store, no outputs.
pub fn validate_local(
    path: &Path,
    settings: &CheckSettings,
    limits: Limits,
    scope: UploadScope,
) -> Result<CheckOutcome, PipelineError> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut sink = NoSink;
    check_upload(
        BufReader::new(file),
        Some(size),
        settings,
        limits,
        scope,
        &mut sink,
        &mut |_, _| Ok(()),
    )
}
