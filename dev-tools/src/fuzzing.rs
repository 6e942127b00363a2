//! Fuzzing harnesses: the bodies of the cargo-fuzz targets in `fuzz/`, kept here so that the
//! normal tests replay every corpus file through exactly the code the fuzzer ran
//! (`tests/it/fuzz_replay.rs`).
//!
//! Each harness takes any bytes, drives one reader of untrusted input with them and asserts
//! what must hold whatever the bytes are, not only that nothing panics:
//!
//! - [`csv_decoder`]: an upload through the decoder (encoding detection, header search,
//!   rows) with the stop-and-search schema and limits: row numbers start at 1 and only grow,
//!   every row read is either in a batch or counted as rejected, and handing the same bytes
//!   over in short reads decodes them the same way; once more with tight limits;
//! - [`validator`]: an upload through [`check_upload`] with the real stop-and-search pipeline:
//!   the decision agrees with the findings, and every row left out is counted as an error row;
//! - [`keys`]: a bucket key through [`layout::route`], [`Submission::new`] and the key parsers:
//!   a key that is placed is the key its parts build, a suggested key is placed, every key
//!   built for an upload is one the store accepts, and each parser accepts only what its
//!   builder writes;
//! - [`state_files`]: bytes read as each state file (done-marker, ledger index, manifest,
//!   receipts, lease generation, series): whatever parses is written back as the service writes it,
//!   and that parses again to the same value.
//!
//! The project (pipelines, schemas, code lists) is loaded once, from the repository this crate
//! lives in.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::LazyLock;

use arrow::array::Array;
use chrono::{DateTime, Utc};
use force_returns::config::{Pipeline, Project};
use force_returns::finding::{Code, CodeSummary, Finding, FindingLog, FindingSink, Severity};
use force_returns::ingest::{Batch, CsvDecoder, DEFAULT_BATCH_ROWS, DecodeStats, Start, cell};
use force_returns::layout::{
    self, Names, Route, Submission, done_index_key, done_key, generation_key, parse_done_index_key,
    parse_done_key, parse_generation_key,
};
use force_returns::model::series::Series;
use force_returns::model::{Decision, Limits, Manifest, ManifestChange, Receipts};
use force_returns::period::Period;
use force_returns::pipeline::{check_settings, check_upload, key_names, parse_upload_key};
use force_returns::state::lease::LeaseRecord;
use force_returns::state::{DoneRecord, Index};
use force_returns::store::check_key;
use force_returns::validate::{CheckSettings, UploadScope};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The repository's project, loaded once.
static PROJECT: LazyLock<Project> = LazyLock::new(|| {
    Project::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .expect("the project's own configuration loads")
});

/// The names upload keys are read against, built once.
static NAMES: LazyLock<Names> = LazyLock::new(|| key_names(&PROJECT));

/// The stop-and-search pipeline of `pipelines/stop_search.toml`.
fn stop_search() -> &'static Pipeline {
    PROJECT
        .pipeline("stop_search")
        .expect("the project has a stop_search pipeline")
}

/// What checking a stop-and-search upload takes, built once.
static STOP_SEARCH_CHECKS: LazyLock<CheckSettings> =
    LazyLock::new(|| check_settings(stop_search()));

/// Limits far below the pipeline's, so that small inputs reach every limit.
const TIGHT: Limits = Limits {
    max_file_bytes: 1 << 20,
    max_rows: 40,
    max_cell_bytes: 48,
    max_columns: 24,
};

/// Collects every finding passed on by a [`FindingLog`].
#[derive(Default)]
struct Collect(Vec<Finding>);

impl FindingSink for Collect {
    fn accept(&mut self, finding: &Finding) -> std::io::Result<()> {
        self.0.push(finding.clone());
        Ok(())
    }
}

/// Hands the bytes over at most `piece` at a time, as a network stream may.
struct Pieces<'a> {
    data: &'a [u8],
    piece: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.piece.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Everything one decoding of an upload gave, comparable between decodings.
#[derive(Debug, PartialEq)]
struct Decoded {
    /// The findings of the header and of every row, in order.
    findings: Vec<Finding>,
    /// The header cells, when rows were read.
    headers: Option<Vec<String>>,
    /// Per row read: its row number, its hash and its cells (in the order of the properties).
    rows: Vec<(u64, u128, Vec<Option<String>>)>,
    /// The decoder's counts: records, rejected rows, bytes.
    stats: (u64, u64, u64),
}

fn counts(stats: DecodeStats) -> (u64, u64, u64) {
    (stats.records, stats.rejected_rows, stats.bytes)
}

fn decode(input: impl Read, limits: Limits, batch_rows: usize) -> Decoded {
    let pipeline = stop_search();
    let mut sink = Collect::default();
    let mut log = FindingLog::new(0, pipeline.severity_overrides.clone(), &mut sink);
    let start = CsvDecoder::start(input, &pipeline.schema, limits, batch_rows, &mut log)
        .expect("reading from memory does not fail");
    let mut decoder = match start {
        Start::Rows(decoder) => decoder,
        Start::Stopped(stats) => {
            assert!(
                log.has_file_error(),
                "a decoder stopped at the header says why with a file-level error"
            );
            drop(log);
            return Decoded {
                findings: sink.0,
                headers: None,
                rows: Vec::new(),
                stats: counts(stats),
            };
        }
    };
    let header = decoder.header().clone();
    assert_eq!(header.headers.len(), header.column_property.len());
    assert!(header.headers.len() <= limits.max_columns);
    let mut rows = Vec::new();
    let mut found = Vec::new();
    while let Some(batch) = decoder
        .next_batch(&mut found)
        .expect("reading from memory does not fail")
    {
        check_batch(&batch, limits, batch_rows);
        for (i, (&row, &hash)) in batch.rows.iter().zip(&batch.row_hashes).enumerate() {
            let cells = batch
                .columns
                .iter()
                .map(|c| cell(c, i).map(str::to_owned))
                .collect();
            rows.push((row, hash, cells));
        }
    }
    assert!(
        decoder.next_batch(&mut found).expect("no IO").is_none(),
        "a finished decoder stays finished"
    );
    for f in found {
        log.push(f);
    }
    drop(log);
    Decoded {
        findings: sink.0,
        headers: Some(header.headers),
        rows,
        stats: counts(decoder.stats()),
    }
}

/// What every batch holds, whatever the input.
fn check_batch(batch: &Batch, limits: Limits, batch_rows: usize) {
    assert!(!batch.is_empty(), "a batch has rows");
    assert!(
        batch.len() <= batch_rows,
        "a batch holds at most batch_rows rows"
    );
    assert_eq!(batch.properties.len(), batch.columns.len());
    assert_eq!(batch.row_hashes.len(), batch.len());
    for column in &batch.columns {
        assert_eq!(column.len(), batch.len(), "every column has every row");
        for i in 0..column.len() {
            if let Some(text) = cell(column, i) {
                assert!(
                    !text.is_empty(),
                    "an empty cell is null, never an empty string"
                );
                assert!(
                    text.len() <= limits.max_cell_bytes,
                    "no cell is kept over the cell limit"
                );
            }
        }
    }
}

/// What holds of one decoding: rows numbered from 1 up, each row read either kept or counted
/// as rejected, findings on rows that exist.
fn check_decoded(decoded: &Decoded, limits: Limits) {
    let mut last = 0;
    for (row, _, _) in &decoded.rows {
        assert!(
            *row > last,
            "row numbers start at 1 and only grow: {row} after {last}"
        );
        last = *row;
    }
    for f in &decoded.findings {
        if let Some(row) = f.row {
            assert!(row >= 1, "a finding's row is a spreadsheet row (from 1)");
        }
    }
    let (records, rejected, _) = decoded.stats;
    assert!(rejected <= records);
    if decoded.headers.is_some() {
        assert_eq!(
            decoded.rows.len() as u64 + rejected,
            records.min(limits.max_rows),
            "every record read is either in a batch or rejected"
        );
        for (_, _, cells) in &decoded.rows {
            assert!(cells.len() <= limits.max_columns);
        }
    } else {
        assert!(decoded.rows.is_empty());
    }
}

/// The CSV decoder on one upload's bytes.
pub fn csv_decoder(data: &[u8]) {
    let limits = stop_search().limits;
    let whole = decode(data, limits, DEFAULT_BATCH_ROWS);
    check_decoded(&whole, limits);
    // The same bytes in short reads, of a size the input chooses: decoding does not depend on
    // how the bytes arrive.
    let piece = 1 + usize::from(data.first().copied().unwrap_or(0) % 61);
    let pieces = decode(Pieces { data, piece }, limits, DEFAULT_BATCH_ROWS);
    assert_eq!(
        whole, pieces,
        "short reads of {piece} bytes decode differently"
    );
    // Tight limits and small batches reach the limits and the batch edges.
    let tight = decode(data, TIGHT, 3);
    check_decoded(&tight, TIGHT);
}

/// The month the validator's uploads are for, and when they are checked.
fn validator_scope() -> UploadScope {
    UploadScope {
        force: Some("durham".to_owned()),
        period: Some(Period::new(2020, 1).expect("a month")),
        now: Some(
            "2020-02-15T12:00:00Z"
                .parse::<DateTime<Utc>>()
                .expect("a time"),
        ),
    }
}

/// The whole check of one upload (decode, validate, decide), as the service runs it on a
/// file of Durham's for January 2020.
pub fn validator(data: &[u8]) {
    let pipeline = stop_search();
    let mut sink = Collect::default();
    let mut batches = 0u64;
    let mut checked = 0u64;
    let mut left_out = 0u64;
    let mut last_row = 0;
    let outcome = check_upload(
        data,
        Some(data.len() as u64),
        &STOP_SEARCH_CHECKS,
        pipeline.limits,
        validator_scope(),
        &mut sink,
        &mut |batch, valid| {
            assert_eq!(valid.len(), batch.len(), "one verdict per row");
            assert_eq!(valid.null_count(), 0);
            for &row in &batch.rows {
                assert!(row > last_row, "rows reach the checks in order");
                last_row = row;
            }
            batches += 1;
            checked += batch.len() as u64;
            left_out += (0..valid.len()).filter(|&i| !valid.value(i)).count() as u64;
            Ok(())
        },
    )
    .expect("checking a file from memory does not fail");
    let verdict = &outcome.verdict;
    assert_eq!(
        verdict.rows_checked, checked,
        "every row checked reached the caller"
    );
    if outcome.header.is_none() {
        assert_eq!(batches, 0);
        assert_eq!(
            verdict.decision,
            Decision::Rejected,
            "an unread file is rejected"
        );
    }
    assert!(
        verdict.error_rows >= left_out + outcome.decode.rejected_rows,
        "every row left out is an error row: {} < {left_out} + {}",
        verdict.error_rows,
        outcome.decode.rejected_rows
    );
    assert!(verdict.error_rows <= checked + outcome.decode.rejected_rows);
    let worst = outcome.findings.iter().map(|s| s.severity).max();
    match verdict.decision {
        Decision::Rejected => assert_eq!(
            worst,
            Some(Severity::Error),
            "a rejection names an error: {:?}",
            codes(&outcome.findings)
        ),
        Decision::AcceptedWithWarnings => assert_eq!(
            worst,
            Some(Severity::Warning),
            "accepted with warnings: a warning and no error, found {:?}",
            codes(&outcome.findings)
        ),
        Decision::Accepted => assert!(
            worst.is_none_or(|s| s == Severity::Info),
            "accepted: no warning or error, found {:?}",
            codes(&outcome.findings)
        ),
    }
    if verdict.decision != Decision::Rejected {
        // The stop-and-search pipeline allows no error row (`max_error_row_share = 0`).
        assert_eq!(left_out, 0, "an accepted file left no row out");
        assert_eq!(verdict.error_rows, 0);
    }
    // The log passed every finding on (none of these inputs reaches the listing limit of a
    // code), each one counted in its summary.
    let mut counted: BTreeMap<Code, u64> = BTreeMap::new();
    for f in &sink.0 {
        if let Some(row) = f.row {
            assert!(row >= 1, "a finding's row is a spreadsheet row (from 1)");
        }
        *counted.entry(f.code).or_default() += 1;
    }
    for summary in &outcome.findings {
        if summary.count <= pipeline.decision.findings_per_code {
            assert_eq!(
                counted.get(&summary.code).copied().unwrap_or(0),
                summary.count,
                "every `{}` finding went to the sink",
                summary.code
            );
        }
    }
}

fn codes(findings: &[CodeSummary]) -> Vec<(Code, Severity)> {
    findings.iter().map(|s| (s.code, s.severity)).collect()
}

/// A bucket key (the bytes as UTF-8, invalid sequences replaced) through the layout.
pub fn keys(data: &[u8]) {
    let key = String::from_utf8_lossy(data);
    let key = key.as_ref();
    let names = &*NAMES;
    // A generation number the input chooses, for the builders' round trips.
    let n = data
        .iter()
        .take(8)
        .fold(0u64, |n, &b| n.rotate_left(8) ^ u64::from(b));
    let submission = Submission::new(key, "\"0123456789abcdef\"", names);
    assert_eq!(submission.id.len(), 24);
    assert_eq!(submission.marker.len(), 32);
    assert!(submission.marker.starts_with(&submission.id));
    match &submission.route {
        Route::Routed(location) => {
            assert_eq!(
                layout::incoming_key(
                    &location.force_id,
                    &location.dataset,
                    location.period,
                    &location.file_name
                ),
                key,
                "a placed key is the key its parts build"
            );
            assert!(names.is_force(&location.force_id));
            assert!(names.is_dataset(&location.dataset));
            assert_eq!(submission.file_name(), location.file_name);
            assert_eq!(layout::dataset_folder(key), Some(location.dataset.as_str()));
            assert_eq!(parse_upload_key(key, &PROJECT).as_ref(), Ok(location));
            for built in [
                submission.archive_key(),
                submission.snapshot_key(),
                submission.metrics_key(),
                submission.feedback_base(),
            ] {
                let built = built.expect("a placed upload has every output key");
                check_key(&built).expect("a key built for an upload is one the store takes");
            }
        }
        Route::Odd(odd) => {
            assert!(!odd.problems.is_empty(), "an odd key says what is wrong");
            let message = odd.message(key);
            assert!(message.len() <= 64 * 1024 + 300 * 4, "messages stay short");
            assert!(parse_upload_key(key, &PROJECT).is_err());
            assert!(submission.archive_key().is_none());
            assert!(submission.snapshot_key().is_none());
            if let Some(force) = &odd.force {
                assert!(
                    names.is_force(force),
                    "an odd key is reported to a real force"
                );
                let base = submission.feedback_base().expect("a force to report to");
                check_key(&base).expect("the report of an odd key has a key the store takes");
            }
            if let Some(suggestion) = &odd.suggestion {
                let Route::Routed(fixed) = layout::route(suggestion, names) else {
                    panic!("the key suggested for {key:?}, {suggestion:?}, has no place either");
                };
                assert_eq!(Some(fixed.force_id.as_str()), odd.force.as_deref());
                assert_eq!(fixed.file_name, submission.file_name());
            }
        }
    }
    for built in [
        submission.quality_key("findings"),
        submission.claim_base(),
        submission.done_key(),
        generation_key(&submission.claim_base(), n),
    ] {
        check_key(&built).expect("a state key built for an upload is one the store takes");
    }
    // The builders' keys parse back to what built them.
    assert_eq!(
        parse_done_key(&submission.done_key()),
        Some(submission.marker.as_str())
    );
    assert_eq!(parse_done_index_key(&done_index_key(n)), Some(n));
    let claim = submission.claim_base();
    assert_eq!(
        parse_generation_key(&generation_key(&claim, n)),
        Some((claim.as_str(), n))
    );
    // And a key the parsers accept is the one its builder writes: the ledger and the leases
    // list keys, parse them and then read the key built from what they parsed.
    if let Some(marker) = parse_done_key(key) {
        assert_eq!(
            done_key(marker),
            key,
            "a done-marker key in one spelling only"
        );
    }
    if let Some(generation) = parse_done_index_key(key) {
        assert_eq!(
            done_index_key(generation),
            key,
            "an index generation key in one spelling only"
        );
    }
    if let Some((base, generation)) = parse_generation_key(key) {
        assert_eq!(
            generation_key(base, generation),
            key,
            "a lease generation key in one spelling only"
        );
    }
}

/// Parses `data` as a `T`; when it parses, writes it back with `write` (as the service
/// writes that file) and checks the result parses to the same value, and writes the same.
fn round_trip<T>(data: &[u8], write: fn(&T) -> serde_json::Result<Vec<u8>>) -> Option<T>
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let value: T = serde_json::from_slice(data).ok()?;
    let written = write(&value).expect("a parsed state file can be written");
    let again: T = serde_json::from_slice(&written).unwrap_or_else(|e| {
        panic!(
            "{} written back does not parse: {e}: {}",
            std::any::type_name::<T>(),
            String::from_utf8_lossy(&written)
        )
    });
    assert_eq!(again, value, "a state file written back reads the same");
    assert_eq!(write(&again).expect("written once"), written);
    Some(value)
}

fn pretty<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec_pretty(value)
}

fn compact<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(value)
}

/// Bytes read as every state file the service reads from the bucket.
pub fn state_files(data: &[u8]) {
    // `_state/done/<marker>.json` (written pretty) and `_state/done-index/<n>.json` (compact).
    round_trip::<DoneRecord>(data, pretty);
    round_trip::<Index>(data, compact);
    // `_state/claims/...` and `_state/locks/...`: lease generations (compact).
    round_trip::<LeaseRecord>(data, compact);
    // `snapshots/<dataset>/_manifest/<year>.json`: applying an entry it holds changes nothing.
    if let Some(mut manifest) = round_trip::<Manifest>(data, pretty)
        && let Some(entry) = manifest.current.first().cloned()
    {
        let before = manifest.clone();
        assert_eq!(
            manifest.apply(entry, "2020-01-01T00:00:00Z"),
            ManifestChange::AlreadyRecorded
        );
        assert_eq!(manifest, before);
    }
    // `_state/series/<dataset>/...` (compact): an entry it holds changes nothing when put again,
    // nor when put as its force's latest if it is; keeping a window twice drops nothing more.
    if let Some(mut series) = round_trip::<Series>(data, compact) {
        let before = series.clone();
        if let Some(first) = series.observations.first().cloned() {
            assert!(!series.put(first), "an entry held is not put again");
            assert_eq!(series, before);
        }
        series.keep_last(48);
        let kept = series.clone();
        assert!(!series.keep_last(48), "a window kept is kept");
        assert_eq!(series, kept);
    }
    // `_state/receipts/<dataset>/<year>.json`: a receipt it holds is not added twice.
    if let Some(mut receipts) = round_trip::<Receipts>(data, pretty)
        && let Some(receipt) = receipts.receipts.first().cloned()
    {
        let before = receipts.clone();
        assert!(!receipts.add(receipt), "a receipt held is not added again");
        assert_eq!(receipts, before);
    }
}
