//! Every bucket key, built and parsed in one place. Pure: no IO, no clock.
//!
//! ```text
//! incoming/<force>/<dataset>/<period>/<file>                    forces' uploads (read, never written)
//! archive/<dataset>/<force>/<period>/<submission>/<file>       the bytes processed (+ .sha256)
//! snapshots/<dataset>/period=<p>/force=<f>/<submission>.parquet
//! snapshots/<dataset>/_manifest/<year>.json                    which submission is current, by
//!                                                              the year its periods begin
//! snapshots/<dataset>_metrics/period=<p>/force=<f>/<submission>.parquet
//! quality/{findings,submissions,anomalies}/dataset=<d>/<submission>.parquet
//! quality/status/dataset=<d>/status.parquet
//! feedback/<force>/<dataset>/<period>/<submission>.{json,html,csv}
//! feedback/<force>/_unrouted/<submission>.{json,html,csv}      an upload whose key has no place
//! feedback/<force>/summary-<period>.{json,html}
//! _state/claims/<marker>.<n>.json                              claims (leases) on uploads
//! _state/done/<marker>.json                                    done-markers, until folded into
//! _state/done-index/<n>.json                                   the ledger's index generations
//! _state/locks/<name>.<n>.json                                 locks (leases) on shared state
//! _state/receipts/<dataset>/<year>.json                        what arrived, for the status
//! _state/series/<dataset>/force=<force>.json                   a force's observations by period
//! _state/series/<dataset>/latest.json                          each force's latest period's
//!                                                              (both a cache of the metrics files)
//! ```
//!
//! Rules:
//! - an upload key is read, never trusted: [`Submission::new`] places it in the layout or
//!   says in plain words why it has no place ([`OddKey`]); nothing is guessed;
//! - every key built for an upload uses only the parts that parsed and the hashes of its key
//!   and etag (`<marker>`, `<submission>`), never the raw key, so any key S3 allows gives
//!   keys every store accepts: a key with `..`, `//`, a backslash or a trailing `/` is judged,
//!   never used as a path;
//! - `<marker>` and `<submission>` are prefixes of one SHA-256 of the key and the etag, so a
//!   retry names the same objects and a replaced upload (another etag) is a new submission.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::model::{Identity, Place, Received, Upload};
use crate::period::{BadPeriod, Cadence, Period};
use crate::store::hex;

/// Where forces upload.
pub const INCOMING: &str = "incoming/";
/// Claims on uploads: `<marker>.<n>.json`.
pub const CLAIMS: &str = "_state/claims/";
/// Done-markers: `<marker>.json`.
pub const DONE: &str = "_state/done/";
/// The ledger's index generations: `<n>.json`.
pub const DONE_INDEX: &str = "_state/done-index/";
/// The dataset label (folder and quality-table partition) of an upload whose key has no place.
pub const UNROUTED: &str = "_unrouted";
/// The longest file name an upload key may end with, in bytes (a file system's limit).
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// The canonical force ids and dataset ids an upload key is read against, with the other
/// spellings of each force (names, ONS codes) used only to name the nearest id, and the
/// cadence each dataset's period folder is read in.
#[derive(Debug, Clone, Default)]
pub struct Names {
    forces: BTreeSet<String>,
    spellings: HashMap<String, String>,
    datasets: BTreeSet<String>,
    cadences: HashMap<String, Cadence>,
}

impl Names {
    /// Names from each force's id and its other spellings, and the dataset ids with their
    /// cadences.
    pub fn new<'a>(
        forces: impl IntoIterator<Item = (&'a str, Vec<&'a str>)>,
        datasets: impl IntoIterator<Item = (&'a str, Cadence)>,
    ) -> Names {
        let mut names = Names::default();
        for (id, spellings) in forces {
            names.forces.insert(id.to_owned());
            for s in spellings.into_iter().chain([id]) {
                names
                    .spellings
                    .entry(normalise(s, '-'))
                    .or_insert_with(|| id.to_owned());
            }
        }
        for (id, cadence) in datasets {
            names.datasets.insert(id.to_owned());
            names.cadences.insert(id.to_owned(), cadence);
        }
        names
    }

    /// Whether `id` is a canonical force id.
    pub fn is_force(&self, id: &str) -> bool {
        self.forces.contains(id)
    }

    /// Whether `id` is a dataset id.
    pub fn is_dataset(&self, id: &str) -> bool {
        self.datasets.contains(id)
    }

    /// The cadence of dataset `id`'s periods.
    pub fn cadence(&self, id: &str) -> Option<Cadence> {
        self.cadences.get(id).copied()
    }

    /// The force a folder that is not a force id most likely means: the same id in another
    /// case or with other separators, a force's name or ONS code, or one of those a letter or
    /// two away. `None` when nothing is close or two forces are equally close.
    pub fn nearest_force(&self, folder: &str) -> Option<&str> {
        let wanted = normalise(folder, '-');
        if let Some(id) = self.spellings.get(&wanted) {
            return Some(id);
        }
        nearest(
            &wanted,
            self.spellings
                .iter()
                .map(|(s, id)| (s.as_str(), id.as_str())),
        )
    }

    /// The dataset a folder that is not a dataset id most likely means.
    pub fn nearest_dataset(&self, folder: &str) -> Option<&str> {
        let wanted = normalise(folder, '_');
        if let Some(id) = self.datasets.get(&wanted) {
            return Some(id);
        }
        nearest(
            &wanted,
            self.datasets.iter().map(|d| (d.as_str(), d.as_str())),
        )
    }
}

/// Lower case, with every run of other characters than letters and digits (spaces, hyphens,
/// `&`...) written as one `separator`.
fn normalise(text: &str, separator: char) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.trim().chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with(separator) {
            out.push(separator);
        }
    }
    while out.ends_with(separator) {
        out.pop();
    }
    out
}

/// The id of the candidate spellings that `wanted` begins (four characters at least), or is
/// one edit away from (two for words of five characters or more); `None` when none is, or
/// spellings of two ids are.
fn nearest<'a>(
    wanted: &str,
    candidates: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) -> Option<&'a str> {
    let wanted_chars = wanted.chars().count();
    if wanted_chars >= 4 {
        let prefixed: BTreeSet<&str> = candidates
            .clone()
            .filter(|(c, _)| c.starts_with(wanted))
            .map(|(_, id)| id)
            .collect();
        if let [one] = prefixed.into_iter().collect::<Vec<_>>().as_slice() {
            return Some(one);
        }
    }
    let allowed = if wanted_chars >= 5 { 2 } else { 1 };
    let mut best: Option<(usize, BTreeSet<&str>)> = None;
    for (c, id) in candidates {
        let d = edit_distance(wanted, c);
        if d > allowed {
            continue;
        }
        match &mut best {
            Some((b, _)) if d > *b => {}
            Some((b, ids)) if d == *b => {
                ids.insert(id);
            }
            _ => best = Some((d, BTreeSet::from([id]))),
        }
    }
    match best
        .map(|(_, ids)| ids.into_iter().collect::<Vec<_>>())
        .as_deref()
    {
        Some([one]) => Some(one),
        _ => None,
    }
}

/// Levenshtein distance, in characters (also how the metric catalogue finds the nearest ids).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Where an upload sits: `incoming/<force>/<dataset>/<period>/<file>`, every part valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Canonical force id (the folder: what the force's credentials allow it to write).
    pub force_id: String,
    /// Dataset id.
    pub dataset: String,
    /// Period.
    pub period: Period,
    /// File name.
    pub file_name: String,
}

/// One reason a key has no place in the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The key is not under `incoming/`.
    NotIncoming,
    /// The key ends with `/`: an empty "folder" object, as an S3 console's "Create folder"
    /// makes.
    FolderMarker,
    /// A folder name is empty (`//`).
    EmptyFolder,
    /// A folder or file is named `.` or `..`.
    DotName,
    /// The key holds a backslash.
    Backslash,
    /// The key holds a control character (a line break, a tab, NUL...).
    ControlCharacter,
    /// The file name is longer than [`MAX_FILE_NAME_BYTES`].
    FileNameTooLong {
        /// Its length in bytes.
        bytes: usize,
    },
    /// The key does not have three folders and a file below `incoming/`.
    Depth {
        /// The folders and file found below `incoming/`.
        parts: usize,
    },
    /// The force folder is not a force id.
    UnknownForce {
        /// The folder.
        folder: String,
        /// The force it most likely means.
        nearest: Option<String>,
    },
    /// The dataset folder is not a dataset id.
    UnknownDataset {
        /// The folder.
        folder: String,
        /// The dataset it most likely means.
        nearest: Option<String>,
        /// Every dataset id.
        known: Vec<String>,
    },
    /// The period folder is not a period.
    BadPeriod {
        /// Why, in words.
        message: String,
    },
    /// The period folder is a period of another cadence than the dataset's (`2024-Q1` for a
    /// monthly dataset).
    WrongCadence {
        /// Why, in words, naming the form expected.
        message: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotIncoming => write!(f, "it is not under incoming/"),
            Problem::FolderMarker => write!(
                f,
                "it ends with `/`: it is an empty folder marker (as a \"Create folder\" button makes), not a file"
            ),
            Problem::EmptyFolder => write!(f, "it has an empty folder name (`//`)"),
            Problem::DotName => write!(f, "it has a folder or file named `.` or `..`"),
            Problem::Backslash => write!(f, "it holds a backslash (`\\`); use `/` between folders"),
            Problem::ControlCharacter => {
                write!(f, "it holds a control character (a line break, a tab...)")
            }
            Problem::FileNameTooLong { bytes } => write!(
                f,
                "its file name is {bytes} bytes long, above the limit of {MAX_FILE_NAME_BYTES}"
            ),
            Problem::Depth { parts } => write!(
                f,
                "it has {parts} part(s) below incoming/ instead of 4 (force, dataset and period folders, then the file)"
            ),
            Problem::UnknownForce { folder, nearest } => {
                write!(
                    f,
                    "the force folder `{}` is not a force id (see schemas/reference/forces.json)",
                    printable(folder)
                )?;
                match nearest {
                    Some(n) => write!(f, "; did you mean `{n}`?"),
                    None => Ok(()),
                }
            }
            Problem::UnknownDataset {
                folder,
                nearest,
                known,
            } => {
                write!(
                    f,
                    "the dataset folder `{}` is not a dataset (one of {})",
                    printable(folder),
                    known.join(", ")
                )?;
                match nearest {
                    Some(n) => write!(f, "; did you mean `{n}`?"),
                    None => Ok(()),
                }
            }
            Problem::BadPeriod { message } | Problem::WrongCadence { message } => {
                write!(f, "{message}")
            }
        }
    }
}

/// An upload whose key has no place in the layout: why, and the force that should hear of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OddKey {
    /// Every reason, in the order of the key.
    pub problems: Vec<Problem>,
    /// The force whose feedback folder gets the report: the force folder when it is a force
    /// id, or the nearest id to it (`Durham`, `south yorkshire`). Never used to process.
    pub force: Option<String>,
    /// The key the upload should have had, when every problem has an unambiguous fix.
    pub suggestion: Option<String>,
}

impl OddKey {
    /// The whole judgement in plain words, naming the key.
    pub fn message(&self, key: &str) -> String {
        let reasons: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        let mut text = format!(
            "`{}` does not fit incoming/<force id>/<dataset>/<period>/<file>: {}",
            printable(key),
            reasons.join("; ")
        );
        if !text.ends_with('?') {
            text.push('.');
        }
        text.push_str(" The file was not read");
        if let Some(s) = &self.suggestion {
            text.push_str(": upload it again as `");
            text.push_str(s);
            text.push('`');
        }
        text.push('.');
        text
    }
}

/// Text for a message: control characters shown as `\u{..}`, and at most 300 characters.
fn printable(text: &str) -> String {
    const MAX: usize = 300;
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// What a key says about an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A place in the layout: the upload is processed there.
    Routed(Location),
    /// No place: the upload is judged from its key alone and reported.
    Odd(OddKey),
}

/// Reads an upload key against `names`.
pub fn route(key: &str, names: &Names) -> Route {
    let odd = |problems: Vec<Problem>, force: Option<String>| {
        Route::Odd(OddKey {
            problems,
            force,
            suggestion: None,
        })
    };
    let Some(rest) = key.strip_prefix(INCOMING) else {
        return odd(vec![Problem::NotIncoming], None);
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let mut problems = Vec::new();
    if key.ends_with('/') {
        problems.push(Problem::FolderMarker);
    } else if parts.iter().any(|p| p.is_empty()) {
        problems.push(Problem::EmptyFolder);
    }
    if parts.iter().any(|p| *p == "." || *p == "..") {
        problems.push(Problem::DotName);
    }
    if key.contains('\\') {
        problems.push(Problem::Backslash);
    }
    if key.chars().any(char::is_control) {
        problems.push(Problem::ControlCharacter);
    }
    let file = parts.last().copied().unwrap_or_default();
    if file.len() > MAX_FILE_NAME_BYTES {
        problems.push(Problem::FileNameTooLong { bytes: file.len() });
    }
    // The force folder names who should hear of the upload, whatever else is wrong with it.
    let force_folder = parts.first().copied().unwrap_or_default();
    let (force, force_fix) = if names.is_force(force_folder) {
        (Some(force_folder.to_owned()), Some(force_folder.to_owned()))
    } else {
        let nearest = names.nearest_force(force_folder).map(str::to_owned);
        if !force_folder.is_empty() {
            problems.push(Problem::UnknownForce {
                folder: force_folder.to_owned(),
                nearest: nearest.clone(),
            });
        }
        (nearest.clone(), nearest)
    };
    if parts.len() != 4 && !key.ends_with('/') {
        problems.push(Problem::Depth { parts: parts.len() });
    }
    let mut suggestion = None;
    if let [_, dataset, period, file] = parts.as_slice() {
        let dataset_fix = if names.is_dataset(dataset) {
            Some((*dataset).to_owned())
        } else if dataset.is_empty() {
            None
        } else {
            let nearest = names.nearest_dataset(dataset).map(str::to_owned);
            problems.push(Problem::UnknownDataset {
                folder: (*dataset).to_owned(),
                nearest: nearest.clone(),
                known: names.datasets.iter().cloned().collect(),
            });
            nearest
        };
        // The period is read in the cadence of the dataset the folder names (or most likely
        // means); with no dataset to go by, as a period of any cadence.
        let period_parsed = match dataset_fix.as_deref().and_then(|d| names.cadence(d)) {
            Some(cadence) => cadence.parse(period),
            None => period.parse::<Period>(),
        };
        match (&period_parsed, period.is_empty()) {
            (Err(e @ BadPeriod::WrongCadence { .. }), false) => {
                problems.push(Problem::WrongCadence {
                    message: format!("the period folder: {e}"),
                });
            }
            (Err(e), false) => problems.push(Problem::BadPeriod {
                message: format!("the period folder: {e}"),
            }),
            _ => {}
        }
        if problems.is_empty()
            && let (Some(force_id), Some(dataset), Ok(period)) =
                (&force, &dataset_fix, &period_parsed)
        {
            return Route::Routed(Location {
                force_id: force_id.clone(),
                dataset: dataset.clone(),
                period: *period,
                file_name: (*file).to_owned(),
            });
        }
        // Only a wrong force or dataset folder has a fix worth naming.
        let fixable = problems.iter().all(|p| {
            matches!(
                p,
                Problem::UnknownForce {
                    nearest: Some(_),
                    ..
                } | Problem::UnknownDataset {
                    nearest: Some(_),
                    ..
                }
            )
        });
        if fixable
            && let (Some(force_id), Some(dataset), Ok(period)) =
                (&force_fix, &dataset_fix, &period_parsed)
        {
            suggestion = Some(format!("{INCOMING}{force_id}/{dataset}/{period}/{file}"));
        }
    }
    Route::Odd(OddKey {
        problems,
        force,
        suggestion,
    })
}

/// The dataset folder of an incoming key, if it has one (it need not be a dataset).
pub fn dataset_folder(key: &str) -> Option<&str> {
    key.strip_prefix(INCOMING)?.split('/').nth(1)
}

/// One upload as the service names it: the object (key and etag), the names derived from it,
/// and where its key places it. The one identity every output, claim and record is keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The upload's key.
    pub key: String,
    /// The store's tag for the content listed.
    pub etag: String,
    /// The submission id: a hash of key and etag (24 hex digits).
    pub id: String,
    /// The name of its claim and done-marker: a longer hash of key and etag (32 hex digits).
    pub marker: String,
    /// Where its key places it.
    pub route: Route,
    /// The SHA-256 of the bytes processed, once downloaded.
    pub sha256: Option<String>,
}

impl Submission {
    /// The submission of the object `key` with `etag`.
    pub fn new(key: &str, etag: &str, names: &Names) -> Submission {
        let (id, marker) = names_of(key, etag);
        Submission {
            key: key.to_owned(),
            etag: etag.to_owned(),
            id,
            marker,
            route: route(key, names),
            sha256: None,
        }
    }

    /// Its place in the layout, when it has one.
    pub fn location(&self) -> Option<&Location> {
        match &self.route {
            Route::Routed(l) => Some(l),
            Route::Odd(_) => None,
        }
    }

    /// Why its key has no place, when it has none.
    pub fn odd(&self) -> Option<&OddKey> {
        match &self.route {
            Route::Routed(_) => None,
            Route::Odd(o) => Some(o),
        }
    }

    /// Its dataset, or [`UNROUTED`].
    pub fn dataset_label(&self) -> &str {
        self.location().map_or(UNROUTED, |l| l.dataset.as_str())
    }

    /// The object received, which arrived at `uploaded_at`.
    pub fn upload(&self, uploaded_at: DateTime<Utc>) -> Upload {
        Upload {
            source_key: self.key.clone(),
            etag: self.etag.clone(),
            sha256: self.sha256.clone().unwrap_or_default(),
            submission_id: self.id.clone(),
            uploaded_at,
        }
    }

    /// Whose return of which period it is, when its key has a place.
    pub fn place(&self) -> Option<Place> {
        self.location().map(|l| Place {
            force_id: l.force_id.clone(),
            dataset: l.dataset.clone(),
            period: l.period,
        })
    }

    /// Its identity, when its key has a place.
    pub fn identity(&self, uploaded_at: DateTime<Utc>) -> Option<Identity> {
        Some(Identity {
            upload: self.upload(uploaded_at),
            place: self.place()?,
        })
    }

    /// The upload as its report speaks of it.
    pub fn received(&self, uploaded_at: DateTime<Utc>) -> Received {
        Received {
            upload: self.upload(uploaded_at),
            place: self.place(),
            force_folder: match &self.route {
                Route::Routed(_) => None,
                Route::Odd(o) => o.force.clone(),
            },
        }
    }

    /// The force it is reported to: its own, or for an odd key the force its folder names.
    pub fn force(&self) -> Option<&str> {
        match &self.route {
            Route::Routed(l) => Some(&l.force_id),
            Route::Odd(o) => o.force.as_deref(),
        }
    }

    /// Its file name: the key's last part.
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or_default()
    }

    /// The archive copy of the bytes processed (routed uploads only: an odd key is not read).
    pub fn archive_key(&self) -> Option<String> {
        self.location().map(|l| {
            format!(
                "archive/{}/{}/{}/{}/{}",
                l.dataset, l.force_id, l.period, self.id, l.file_name
            )
        })
    }

    /// Its snapshot (routed uploads only).
    pub fn snapshot_key(&self) -> Option<String> {
        self.location().map(|l| {
            format!(
                "snapshots/{}/period={}/force={}/{}.parquet",
                l.dataset, l.period, l.force_id, self.id
            )
        })
    }

    /// Its derived metrics file (routed uploads only).
    pub fn metrics_key(&self) -> Option<String> {
        self.location()
            .map(|l| metrics_key(&l.dataset, l.period, &l.force_id, &self.id))
    }

    /// The key of its report without the extension (`.json`, `.html`, `.csv`), when there is
    /// a force to send it to.
    pub fn feedback_base(&self) -> Option<String> {
        match &self.route {
            Route::Routed(l) => Some(feedback_base(&l.force_id, &l.dataset, l.period, &self.id)),
            Route::Odd(o) => o
                .force
                .as_ref()
                .map(|f| format!("feedback/{f}/{UNROUTED}/{}", self.id)),
        }
    }

    /// Its row of `quality/<table>` (`findings`, `submissions`).
    pub fn quality_key(&self, table: &str) -> String {
        quality_key(table, self.dataset_label(), &self.id)
    }

    /// The lease name of its claim.
    pub fn claim_base(&self) -> String {
        claim_base(&self.marker)
    }

    /// Its done-marker.
    pub fn done_key(&self) -> String {
        done_key(&self.marker)
    }
}

/// The submission id and the marker of an object: prefixes of one SHA-256 of key and etag.
pub fn names_of(key: &str, etag: &str) -> (String, String) {
    let digest = Sha256::digest(format!("{key}\n{etag}").as_bytes());
    (hex(&digest[..12]), hex(&digest[..16]))
}

/// Where a force uploads a file for a dataset and period.
pub fn incoming_key(force: &str, dataset: &str, period: Period, file: &str) -> String {
    format!("{INCOMING}{force}/{dataset}/{period}/{file}")
}

/// A dataset's state that is kept in parts, one for each calendar year of the periods it
/// holds (the year of a period's first day: a financial year's is the year it begins), so that
/// recording an upload rewrites its year's part only. Before parts, each was one object (its
/// `legacy` key), which is still read, and folded into the parts by the next commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parted {
    /// Which submission is current per force and period: `snapshots/<dataset>/_manifest/<year>.json`.
    Manifest,
    /// What arrived, for the status: `_state/receipts/<dataset>/<year>.json`.
    Receipts,
}

impl Parted {
    /// The folder of a dataset's parts.
    pub fn folder(self, dataset: &str) -> String {
        match self {
            Parted::Manifest => format!("snapshots/{dataset}/_manifest/"),
            Parted::Receipts => format!("_state/receipts/{dataset}/"),
        }
    }

    /// The part of a dataset holding the periods that begin in `year`.
    pub fn part_key(self, dataset: &str, year: i32) -> String {
        format!("{}{year:04}.json", self.folder(dataset))
    }

    /// The one object the state was before it was kept in parts.
    pub fn legacy_key(self, dataset: &str) -> String {
        match self {
            Parted::Manifest => format!("snapshots/{dataset}/_manifest.json"),
            Parted::Receipts => format!("_state/receipts/{dataset}.json"),
        }
    }

    /// A prefix that lists both the parts and the legacy object, and little else (a dataset
    /// whose id starts with this one's: keys are read back with [`Parted::read_key`]).
    pub fn prefix(self, dataset: &str) -> String {
        let legacy = self.legacy_key(dataset);
        legacy.strip_suffix(".json").unwrap_or(&legacy).to_owned()
    }

    /// What a listed key is: `Some(Some(year))` for a part in the one spelling
    /// [`Parted::part_key`] writes, `Some(None)` for the legacy object, `None` otherwise.
    pub fn read_key(self, dataset: &str, key: &str) -> Option<Option<i32>> {
        if key == self.legacy_key(dataset) {
            return Some(None);
        }
        let digits = key
            .strip_prefix(&self.folder(dataset))?
            .strip_suffix(".json")?;
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(Some)
    }
}

/// The derived metrics file of a submission.
pub fn metrics_key(dataset: &str, period: Period, force: &str, submission: &str) -> String {
    format!("snapshots/{dataset}_metrics/period={period}/force={force}/{submission}.parquet")
}

/// A force's series: the observations of its current submissions over the periods an analysis
/// looks back on.
pub fn series_key(dataset: &str, force: &str) -> String {
    format!("_state/series/{dataset}/force={force}.json")
}

/// A dataset's latest series: each force's observations of its latest period.
pub fn latest_series_key(dataset: &str) -> String {
    format!("_state/series/{dataset}/latest.json")
}

/// A submission's row of a quality table partitioned by dataset.
pub fn quality_key(table: &str, dataset: &str, submission: &str) -> String {
    format!("quality/{table}/dataset={dataset}/{submission}.parquet")
}

/// The anomalies table file of a submission.
pub fn anomalies_key(dataset: &str, submission: &str) -> String {
    quality_key("anomalies", dataset, submission)
}

/// The status table of a dataset.
pub fn status_key(dataset: &str) -> String {
    format!("quality/status/dataset={dataset}/status.parquet")
}

/// A routed submission's report, without the extension.
pub fn feedback_base(force: &str, dataset: &str, period: Period, submission: &str) -> String {
    format!("feedback/{force}/{dataset}/{period}/{submission}")
}

/// A force's monthly summary.
pub fn summary_key(force: &str, period: Period, extension: &str) -> String {
    format!("feedback/{force}/summary-{period}.{extension}")
}

/// The lease name of the claim on the upload with `marker`.
pub fn claim_base(marker: &str) -> String {
    format!("{CLAIMS}{marker}")
}

/// The lease name of a lock on shared state (`commit-<dataset>`, `ledger`).
pub fn lock_base(name: &str) -> String {
    format!("_state/locks/{name}")
}

/// The done-marker of the upload with `marker`.
pub fn done_key(marker: &str) -> String {
    format!("{DONE}{marker}.json")
}

/// The marker a done-marker's key names.
pub fn parse_done_key(key: &str) -> Option<&str> {
    key.strip_prefix(DONE)?.strip_suffix(".json")
}

/// Generation `n` of the ledger's index (zero-padded, so that keys sort as numbers).
pub fn done_index_key(generation: u64) -> String {
    format!("{DONE_INDEX}{generation:020}.json")
}

/// The generation a key of the ledger's index names, in the one spelling
/// [`done_index_key`] writes: the ledger reads the key it builds from the number it parsed,
/// so another spelling of a number (`7.json`, `+7.json`) would name an object never read.
pub fn parse_done_index_key(key: &str) -> Option<u64> {
    let digits = key.strip_prefix(DONE_INDEX)?.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Generation `n` of the lease `base`.
pub fn generation_key(base: &str, generation: u64) -> String {
    format!("{base}.{generation}.json")
}

/// The lease and generation a key of `<base>.<n>.json` names, with `n` written as
/// [`generation_key`] writes it (no sign, no leading zero): a lease reads and deletes the key
/// it builds from the number it parsed, so another spelling (`.01.json`) would name an object
/// never read, and hold the lease busy for good.
pub fn parse_generation_key(key: &str) -> Option<(&str, u64)> {
    let stem = key.strip_suffix(".json")?;
    let (base, n) = stem.rsplit_once('.')?;
    let canonical = n.bytes().all(|b| b.is_ascii_digit()) && (n == "0" || !n.starts_with('0'));
    if !canonical {
        return None;
    }
    Some((base, n.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::check_key;

    fn names() -> Names {
        Names::new(
            [
                ("durham", vec!["Durham", "E23000008"]),
                ("kent", vec!["Kent"]),
                (
                    "south-yorkshire",
                    vec!["South Yorkshire", "South Yorkshire Police"],
                ),
                ("north-yorkshire", vec!["North Yorkshire"]),
                ("essex", vec!["Essex"]),
                (
                    "devon-and-cornwall",
                    vec!["Devon & Cornwall", "Devon and Cornwall"],
                ),
                ("sussex", vec!["Sussex"]),
            ],
            [
                ("stop_search", Cadence::Month),
                ("use_of_force", Cadence::Month),
                (
                    "workforce",
                    Cadence::Snapshot(crate::period::SnapshotDates::WORKFORCE),
                ),
            ],
        )
    }

    fn odd(key: &str) -> OddKey {
        match route(key, &names()) {
            Route::Odd(o) => o,
            Route::Routed(l) => panic!("{key} was placed at {l:?}"),
        }
    }

    #[test]
    fn a_period_folder_is_read_in_its_dataset_cadence_and_never_guessed() {
        let Route::Routed(l) = route("incoming/kent/workforce/2024-09-30/w.csv", &names()) else {
            panic!("not placed");
        };
        assert_eq!(l.period.to_string(), "2024-09-30");
        assert_eq!(l.period.next().to_string(), "2025-03-31");
        for (key, message) in [
            (
                "incoming/kent/stop_search/2024-Q1/a.csv",
                "the period folder: `2024-Q1` is a quarter period, but this dataset is returned by a month written YYYY-MM",
            ),
            (
                "incoming/kent/workforce/2024-03/a.csv",
                "the period folder: `2024-03` is a month period, but this dataset is returned by a snapshot date written YYYY-MM-DD, on 31 March and 30 September (`2024-03-31`)",
            ),
        ] {
            let o = odd(key);
            assert_eq!(
                o.problems,
                [Problem::WrongCadence {
                    message: message.into()
                }],
                "{key}"
            );
            assert_eq!(o.suggestion, None, "{key}");
        }
        assert!(matches!(
            odd("incoming/kent/workforce/2024-03-30/a.csv").problems[..],
            [Problem::BadPeriod { .. }]
        ));
    }

    #[test]
    fn a_key_in_the_layout_is_placed() {
        let Route::Routed(l) = route(
            "incoming/south-yorkshire/stop_search/2020-01/Jan return (final).csv",
            &names(),
        ) else {
            panic!("not placed");
        };
        assert_eq!(
            (
                l.force_id.as_str(),
                l.dataset.as_str(),
                l.period.to_string()
            ),
            ("south-yorkshire", "stop_search", "2020-01".to_owned())
        );
        assert_eq!(l.file_name, "Jan return (final).csv");
        let s = Submission::new(
            "incoming/kent/stop_search/2020-01/février.csv",
            "\"e1\"",
            &names(),
        );
        assert_eq!(s.force(), Some("kent"));
        assert_eq!(
            s.archive_key().unwrap(),
            format!("archive/stop_search/kent/2020-01/{}/février.csv", s.id)
        );
        assert_eq!(
            s.feedback_base().unwrap(),
            format!("feedback/kent/stop_search/2020-01/{}", s.id)
        );
        assert_eq!(s.id.len(), 24);
        assert_eq!(s.marker.len(), 32);
        assert!(s.marker.starts_with(&s.id));
    }

    #[test]
    fn a_force_folder_in_another_spelling_is_odd_and_names_the_nearest_id() {
        for (folder, nearest) in [
            ("Durham", Some("durham")),
            ("DURHAM", Some("durham")),
            ("south yorkshire", Some("south-yorkshire")),
            ("South_Yorkshire_Police", Some("south-yorkshire")),
            ("E23000008", Some("durham")),
            ("durhm", Some("durham")),
            ("south-yorks", Some("south-yorkshire")),
            ("devon-cornwall", Some("devon-and-cornwall")),
            ("Devon & Cornwall", Some("devon-and-cornwall")),
            ("yorkshire", None),
            ("gotham", None),
        ] {
            let o = odd(&format!("incoming/{folder}/stop_search/2020-01/a.csv"));
            assert_eq!(o.force.as_deref(), nearest, "{folder}");
            assert_eq!(
                o.problems,
                [Problem::UnknownForce {
                    folder: folder.to_owned(),
                    nearest: nearest.map(str::to_owned)
                }],
                "{folder}"
            );
            assert_eq!(
                o.suggestion,
                nearest.map(|n| format!("incoming/{n}/stop_search/2020-01/a.csv")),
                "{folder}"
            );
        }
        let message = odd("incoming/Durham/stop_search/2020-01/a.csv")
            .message("incoming/Durham/stop_search/2020-01/a.csv");
        assert_eq!(
            message,
            "`incoming/Durham/stop_search/2020-01/a.csv` does not fit incoming/<force id>/<dataset>/<period>/<file>: the force folder `Durham` is not a force id (see schemas/reference/forces.json); did you mean `durham`? The file was not read: upload it again as `incoming/durham/stop_search/2020-01/a.csv`."
        );
    }

    #[test]
    fn keys_s3_allows_but_the_layout_does_not_are_odd_with_every_reason() {
        let long = "x".repeat(300);
        for (key, problems, force) in [
            (
                "incoming/kent/stop_search/2020-01/".to_owned(),
                vec![Problem::FolderMarker],
                Some("kent"),
            ),
            (
                "incoming/kent/".to_owned(),
                vec![Problem::FolderMarker],
                Some("kent"),
            ),
            (
                "incoming/kent//2020-01/a.csv".to_owned(),
                vec![Problem::EmptyFolder],
                Some("kent"),
            ),
            (
                "incoming/kent/stop_search/2020-01/../a.csv".to_owned(),
                vec![Problem::DotName, Problem::Depth { parts: 5 }],
                Some("kent"),
            ),
            (
                "incoming/kent/stop_search/2020-01/a\\b.csv".to_owned(),
                vec![Problem::Backslash],
                Some("kent"),
            ),
            (
                "incoming/kent/stop_search/2020-01/a\nb.csv".to_owned(),
                vec![Problem::ControlCharacter],
                Some("kent"),
            ),
            (
                format!("incoming/kent/stop_search/2020-01/{long}.csv"),
                vec![Problem::FileNameTooLong { bytes: 304 }],
                Some("kent"),
            ),
            (
                "incoming/kent/stop_search/2020-01/extra/a.csv".to_owned(),
                vec![Problem::Depth { parts: 5 }],
                Some("kent"),
            ),
            (
                "incoming/kent/a.csv".to_owned(),
                vec![Problem::Depth { parts: 2 }],
                Some("kent"),
            ),
            (
                "incoming/a.csv".to_owned(),
                vec![
                    Problem::UnknownForce {
                        folder: "a.csv".into(),
                        nearest: None,
                    },
                    Problem::Depth { parts: 1 },
                ],
                None,
            ),
            (
                "incoming/kent/stop_search/2020-13/a.csv".to_owned(),
                vec![Problem::BadPeriod {
                    message: "the period folder: `2020-13` is not a month written YYYY-MM".into(),
                }],
                Some("kent"),
            ),
            (
                "incoming/kent/stop-search/2020-01/a.csv".to_owned(),
                vec![Problem::UnknownDataset {
                    folder: "stop-search".into(),
                    nearest: Some("stop_search".into()),
                    known: vec![
                        "stop_search".into(),
                        "use_of_force".into(),
                        "workforce".into(),
                    ],
                }],
                Some("kent"),
            ),
            (
                "incoming/kent/stöp search/2020-01/a.csv".to_owned(),
                vec![Problem::UnknownDataset {
                    folder: "stöp search".into(),
                    nearest: Some("stop_search".into()),
                    known: vec![
                        "stop_search".into(),
                        "use_of_force".into(),
                        "workforce".into(),
                    ],
                }],
                Some("kent"),
            ),
        ] {
            let o = odd(&key);
            assert_eq!(o.problems, problems, "{key}");
            assert_eq!(o.force.as_deref(), force, "{key}");
            let s = Submission::new(&key, "etag", &names());
            assert_eq!(s.dataset_label(), UNROUTED);
            assert_eq!(s.archive_key(), None, "an odd key is not read");
            // Whatever the key, the keys built for it are keys every store accepts.
            for built in [
                s.quality_key("findings"),
                s.quality_key("submissions"),
                s.claim_base(),
                s.done_key(),
            ]
            .into_iter()
            .chain(s.feedback_base().map(|b| format!("{b}.json")))
            {
                check_key(&built).unwrap_or_else(|e| panic!("{key}: {e}"));
            }
        }
        assert_eq!(
            odd("incoming/kent/stop-search/2020-01/a.csv")
                .suggestion
                .as_deref(),
            Some("incoming/kent/stop_search/2020-01/a.csv")
        );
        assert_eq!(odd("incoming/kent/stop_search/2020-01/").suggestion, None);
    }

    #[test]
    fn a_message_shows_control_characters_and_stays_short() {
        let key = format!(
            "incoming/kent/stop_search/2020-01/a\r\n{}.csv",
            "y".repeat(400)
        );
        let message = odd(&key).message(&key);
        assert!(message.contains("a\\u{d}\\u{a}yyy"), "{message}");
        assert!(!message.contains('\n'));
        assert!(message.len() < 1000, "{}", message.len());
    }

    /// Found by the `keys` fuzz target: the parsers took other spellings of a number, and
    /// the ledger and the leases then read a key built from it that does not exist.
    #[test]
    fn ledger_and_lease_keys_parse_in_the_one_spelling_their_builders_write() {
        for other in [
            "_state/done-index/7.json",
            "_state/done-index/00000000007.json",
            "_state/done-index/+0000000000000000007.json",
            "_state/done-index/99999999999999999999.json",
        ] {
            assert_eq!(parse_done_index_key(other), None, "{other}");
        }
        for other in ["locks/x.01.json", "locks/x.+1.json", "locks/x..json"] {
            assert_eq!(parse_generation_key(other), None, "{other}");
        }
        assert_eq!(parse_generation_key("locks/x.0.json"), Some(("locks/x", 0)));
        assert_eq!(
            parse_generation_key("locks/x.10.json"),
            Some(("locks/x", 10))
        );
        assert_eq!(
            parse_done_index_key(&done_index_key(u64::MAX)),
            Some(u64::MAX)
        );
    }

    #[test]
    fn ledger_and_lease_keys_read_back() {
        assert_eq!(
            done_index_key(42),
            "_state/done-index/00000000000000000042.json"
        );
        assert_eq!(parse_done_index_key(&done_index_key(42)), Some(42));
        assert!(done_index_key(9) < done_index_key(10));
        assert_eq!(parse_done_key(&done_key("abc")), Some("abc"));
        for parted in [Parted::Manifest, Parted::Receipts] {
            let part = parted.part_key("stop_search", 2020);
            let legacy = parted.legacy_key("stop_search");
            assert!(part.starts_with(&parted.prefix("stop_search")));
            assert!(legacy.starts_with(&parted.prefix("stop_search")));
            assert_eq!(parted.read_key("stop_search", &part), Some(Some(2020)));
            assert_eq!(parted.read_key("stop_search", &legacy), Some(None));
            assert_eq!(parted.read_key("stop", &part), None);
            let odd = part.replace("2020", "20");
            assert_eq!(parted.read_key("stop_search", &odd), None);
        }
        let base = claim_base("abc");
        assert_eq!(
            parse_generation_key(&generation_key(&base, 7)),
            Some((base.as_str(), 7))
        );
        assert_eq!(parse_generation_key("_state/claims/abc.x.json"), None);
        assert_eq!(
            dataset_folder("incoming/kent/stop_search/2020-01/a.csv"),
            Some("stop_search")
        );
        assert_eq!(dataset_folder("incoming/kent"), None);
    }
}
