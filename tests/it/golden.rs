//! Golden test: two histories run through the real service, and everything it wrote, read back
//! and compared with the recording in `tests/golden/<history>/`, so that a refactor can show it
//! changes no answer.
//!
//! Each history is uploaded into a local bucket with fixed upload times, processed by one
//! `Service::run_once` with a `FixedClock`, and read back by `tests/py/golden_dump.py`
//! (pyarrow for the Parquet files): every upload's summary, snapshots, metrics, quality tables,
//! manifest, reports, summaries and archive. The only normalisation is the submission id (it
//! hashes the local store's etag), written as a label naming its upload. What is recorded in
//! full and what as digests is in `tests/golden/README.md`.
//!
//! A failure lists, file by file, the lines and fields that differ. The run is kept in
//! `target/golden-actual/<history>/` whether the test passes or not: its bucket, its recording
//! and the full text of what the recording keeps as digests.
//! `FORCE_RETURNS_BLESS=1 cargo test --test it golden` records the run as the new expectation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use force_returns::clock::FixedClock;
use force_returns::period::Period;
use force_returns::pipeline::{RunOptions, Service};
use force_returns::store::{LocalStore, ObjectStore, PutMode};
use force_returns_dev::demo::{DemoConfig, PLANTED, demo_limits, uploads_where};

use crate::common::{manifest_dir, project, python, shared_fixtures};

/// The forces whose whole demo history is uploaded: the forces of the planted incidents, and
/// North Wales, so that ten other forces have a recent return in (nearly) every month and the
/// comparison with peers runs. The other 32 forces upload only their months with a planted
/// file defect and are otherwise missing (overdue) in the status table. A run takes 35 to 70 ms
/// of CPU an upload in a debug build, so the history is kept to 340 uploads.
const DEMO_FORCES: [&str; 11] = [
    "avon-and-somerset",
    "cheshire",
    "devon-and-cornwall",
    "durham",
    "greater-manchester",
    "hertfordshire",
    "kent",
    "lancashire",
    "north-wales",
    "south-wales",
    "west-mercia",
];

/// The demo's history: 30 months, October 2022 to March 2025. Every planted incident but
/// Cheshire's (in the first month of the 36 the incidents are designed for) falls in it with at
/// least six months of history before it, and its last six months have the two years of
/// history that seasonal adjustment needs. At 0.4 of the national volume, Kent's missing
/// `Mixed` is still expected often enough to be flagged (at 0.25 it is not).
fn demo_config() -> DemoConfig {
    DemoConfig {
        months: 30,
        scale: 0.4,
        incidents: true,
        defects: true,
        ..DemoConfig::default()
    }
}

/// The demo history: every month of `DEMO_FORCES` and every planted defect, each uploaded at
/// the time the demo gives it; processed after the last upload of March 2025, before its
/// deadline.
#[tokio::test]
async fn the_demo_history_gives_the_recorded_outputs() {
    // The census in ../shared/fixtures gives the rates of the metrics: without it they are
    // left out, and the outputs are not the recorded ones.
    let python = python();
    shared_fixtures();
    let project = project();
    let config = demo_config();
    let defect_months: BTreeSet<(&str, Period)> = PLANTED
        .iter()
        .map(|d| (d.force, d.period(&config)))
        .collect();
    let files = uploads_where(&project.code_lists, &config, |force, period| {
        DEMO_FORCES.contains(&force) || defect_months.contains(&(force, period))
    })
    .map(|upload| (upload.key, upload.bytes, upload.uploaded_at));
    let now = at("2025-04-25T09:00:00Z");
    let options = RunOptions {
        limits_override: Some(demo_limits()),
        ..options()
    };
    check_history("demo", &python, files, now, options).await;
}

/// The twelve real data.police.uk extracts (4 forces, December 2019 to February 2020), each
/// uploaded on the 10th of the following month (Durham's December late, on 3 February);
/// processed on 15 March 2020, after the deadlines of December and January.
#[tokio::test]
async fn the_real_extracts_give_the_recorded_outputs() {
    let (python, fixtures) = (python(), shared_fixtures());
    let dir = fixtures.join("police-uk/stop-and-search");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 12, "the real extracts in {}", dir.display());
    let forces: BTreeSet<String> = names.iter().map(|n| force_of(n).to_owned()).collect();
    let mut files = Vec::new();
    for name in &names {
        let period: Period = name[..7].parse().unwrap();
        let force = force_of(name);
        let when = if force == "durham" && period.to_string() == "2019-12" {
            at("2020-02-03T10:00:00Z")
        } else {
            // 09:00 on the 10th, an hour apart by force.
            let hour = forces.iter().position(|f| f == force).unwrap();
            period
                .next()
                .first_day()
                .and_hms_opt(9, 0, 0)
                .unwrap()
                .and_utc()
                + Duration::days(9)
                + Duration::hours(i64::try_from(hour).unwrap())
        };
        let key = format!("incoming/{force}/stop_search/{period}/{name}");
        files.push((key, std::fs::read(dir.join(name)).unwrap(), when));
    }
    check_history(
        "real-extracts",
        &python,
        files,
        at("2020-03-15T09:00:00Z"),
        options(),
    )
    .await;
}

/// `2019-12-south-yorkshire-stop-and-search.csv` → `south-yorkshire`.
fn force_of(name: &str) -> &str {
    name[8..].trim_end_matches("-stop-and-search.csv")
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn options() -> RunOptions {
    RunOptions {
        worker_id: "golden".into(),
        ..RunOptions::default()
    }
}

/// Uploads `files` (key, bytes, upload time) into a fresh local bucket, processes them in one
/// run at `now`, reads everything back and compares it with `tests/golden/<name>/`.
async fn check_history(
    name: &str,
    python: &Path,
    files: impl IntoIterator<Item = (String, Vec<u8>, DateTime<Utc>)>,
    now: DateTime<Utc>,
    options: RunOptions,
) {
    let out = actual_dir(name);
    if out.exists() {
        std::fs::remove_dir_all(&out).unwrap();
    }
    // The bucket is kept beside the canonical text, for a developer to look into.
    let bucket = out.join("bucket");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(&bucket).unwrap());
    let mut uploaded = 0;
    for (key, bytes, when) in files {
        uploaded += 1;
        assert!(
            when < now,
            "{key} is uploaded at {when}, after the run at {now}"
        );
        store.put(&key, bytes, PutMode::Overwrite).await.unwrap();
        // The local store dates an object by its file's modification time: the upload time
        // decides the processing order, lateness and the status table.
        std::fs::File::options()
            .write(true)
            .open(bucket.join(&key))
            .and_then(|f| f.set_modified(when.into()))
            .unwrap();
    }
    let service = Service::new(project(), store, Arc::new(FixedClock::new(now)), options);
    let outcome = service.run_once().await.unwrap();
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    assert_eq!(
        outcome.processed.len(),
        uploaded,
        "every upload is processed"
    );

    std::fs::create_dir_all(out.join("run")).unwrap();
    let mut summaries = String::new();
    for s in &outcome.processed {
        summaries.push_str(&serde_json::to_string(s).unwrap());
        summaries.push('\n');
    }
    std::fs::write(out.join("run/summaries.jsonl"), summaries).unwrap();
    let dump = std::process::Command::new(python)
        .arg(manifest_dir().join("tests/py/golden_dump.py"))
        .arg(&bucket)
        .arg(&out)
        .output()
        .expect("python runs");
    assert!(
        dump.status.success(),
        "golden_dump.py failed: {}",
        String::from_utf8_lossy(&dump.stderr)
    );

    let actual = read_tree(&out.join("recording"));
    let recorded_dir = manifest_dir().join("tests/golden").join(name);
    if std::env::var_os("FORCE_RETURNS_BLESS").is_some() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "FORCE_RETURNS_BLESS records whatever the run gives: it is for developers, not CI"
        );
        if recorded_dir.exists() {
            std::fs::remove_dir_all(&recorded_dir).unwrap();
        }
        for (file, text) in &actual {
            let path = recorded_dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        eprintln!(
            "recorded {} files in {}",
            actual.len(),
            recorded_dir.display()
        );
        return;
    }
    let expected = read_tree(&recorded_dir);
    let report = compare(&expected, &actual);
    assert!(
        report.is_empty(),
        "the {name} history's outputs differ from tests/golden/{name}/\n\n{report}\n\
         The whole run is in {out} (recording/, and full/ for what the recording keeps as \
         digests: run this test on the recorded commit and diff -r the two). If every difference \
         is intended, record them: FORCE_RETURNS_BLESS=1 cargo test --test it golden",
        out = out.display()
    );
}

/// `target/golden-actual/<name>`.
fn actual_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("golden-actual")
        .join(name)
}

/// Every file under `dir` by its relative path (`/`-separated), with its text.
fn read_tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let name = path.strip_prefix(root).unwrap().to_string_lossy();
                let text = std::fs::read_to_string(&path).unwrap();
                out.insert(name.replace('\\', "/"), text);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Lines of one file shown at most.
const SHOWN_LINES: usize = 12;

/// What differs between the recording and the run, file by file; empty when nothing does.
fn compare(expected: &BTreeMap<String, String>, actual: &BTreeMap<String, String>) -> String {
    let mut report = String::new();
    if expected.is_empty() {
        return "there is no recording: record one with FORCE_RETURNS_BLESS=1".into();
    }
    for file in expected.keys().filter(|f| !actual.contains_key(*f)) {
        writeln!(report, "{file}: recorded, not written by this run").unwrap();
    }
    for file in actual.keys().filter(|f| !expected.contains_key(*f)) {
        writeln!(report, "{file}: written by this run, not recorded").unwrap();
    }
    for (file, want) in expected {
        let Some(got) = actual.get(file) else {
            continue;
        };
        if want != got {
            report.push_str(&describe(file, want, got));
        }
    }
    report
}

/// One differing line: a recorded line changed into a written one, or a line only one has
/// (indexes into the recorded and written lines).
enum Note {
    Changed(usize, usize),
    Missing(usize),
    New(usize),
}

/// The differing lines of one file: each changed line with the fields that differ, lines
/// only recorded or only written, each with the object (`== <key>` section) it belongs to.
fn describe(file: &str, want: &str, got: &str) -> String {
    let want: Vec<&str> = want.lines().collect();
    let got: Vec<&str> = got.lines().collect();
    let mut notes = Vec::new();
    let (mut i, mut j) = (0, 0);
    let changes = diff(&want, &got);
    let mut k = 0;
    while k < changes.len() {
        if changes[k] == Change::Same {
            i += 1;
            j += 1;
            k += 1;
            continue;
        }
        // A hunk: lines removed, then lines added; the first of each are paired as changed.
        let removed = changes[k..]
            .iter()
            .take_while(|c| **c == Change::Removed)
            .count();
        let added = changes[k + removed..]
            .iter()
            .take_while(|c| **c == Change::Added)
            .count();
        for n in 0..removed.max(added) {
            notes.push(match (n < removed, n < added) {
                (true, true) => Note::Changed(i + n, j + n),
                (true, false) => Note::Missing(i + n),
                _ => Note::New(j + n),
            });
        }
        i += removed;
        j += added;
        k += removed + added;
    }
    let mut out = format!("{file}: {} lines differ\n", notes.len());
    for note in notes.iter().take(SHOWN_LINES) {
        let (lines, at) = match *note {
            Note::Changed(_, j) | Note::New(j) => (&got, j),
            Note::Missing(i) => (&want, i),
        };
        let (about, text) = match *note {
            Note::Changed(i, j) => fields(want[i], got[j], columns_before(&got, j)),
            Note::Missing(i) => (None, format!("recorded, now missing: {}", clip(want[i]))),
            Note::New(j) => (None, format!("new: {}", clip(got[j]))),
        };
        let place = match (section_before(lines, at), about) {
            (Some(section), Some(about)) if about != section => format!(" ({section}, {about})"),
            (Some(section), _) => format!(" ({section})"),
            (None, Some(about)) => format!(" ({about})"),
            (None, None) => String::new(),
        };
        writeln!(out, "  line {}{place}: {text}", at + 1).unwrap();
    }
    if notes.len() > SHOWN_LINES {
        writeln!(out, "  ... and {} more", notes.len() - SHOWN_LINES).unwrap();
    }
    out
}

/// The `## columns [...]` line a table row falls under, if any.
fn columns_before<'a>(lines: &[&'a str], at: usize) -> Option<&'a str> {
    lines[..at]
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("## columns "))
}

/// The object whose text holds line `at`: the key of the `== <key>` line above it, unless a
/// `#` heading comes first.
fn section_before<'a>(lines: &[&'a str], at: usize) -> Option<&'a str> {
    lines[..at]
        .iter()
        .rev()
        .find(|l| l.starts_with("== ") || l.starts_with('#'))
        .and_then(|l| l.strip_prefix("== "))
        .and_then(|l| l.split(' ').next())
}

fn clip(line: &str) -> String {
    const MAX: usize = 300;
    if line.chars().count() <= MAX {
        line.to_owned()
    } else {
        format!("{}...", line.chars().take(MAX).collect::<String>())
    }
}

/// How a changed line differs: the JSON fields (named by `columns` for a table row) or the
/// space-separated words that differ, each as recorded → now; and the file or upload the line
/// is about, when it names one.
fn fields(want: &str, got: &str, columns: Option<&str>) -> (Option<String>, String) {
    use serde_json::Value;
    let mut parts = Vec::new();
    let mut about = None;
    // A line of a canonical JSON document is an element of an array or a member of an object,
    // followed by a comma unless it is the last.
    let json = |line: &str| {
        let line = line.trim().trim_end_matches(',');
        serde_json::from_str::<Value>(line)
            .or_else(|_| serde_json::from_str::<Value>(&format!("{{{line}}}")))
    };
    match (json(want), json(got)) {
        (Ok(Value::Object(a)), Ok(Value::Object(b))) => {
            about = b.get("key").and_then(Value::as_str).map(str::to_owned);
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys.into_iter().filter(|k| a.get(*k) != b.get(*k)) {
                parts.push(format!(
                    "{key}: {} → {}",
                    shown(a.get(key)),
                    shown(b.get(key))
                ));
            }
        }
        (Ok(Value::Array(a)), Ok(Value::Array(b))) => {
            let names: Vec<String> = columns
                .and_then(|c| serde_json::from_str(c).ok())
                .unwrap_or_default();
            for index in (0..a.len().max(b.len())).filter(|n| a.get(*n) != b.get(*n)) {
                let name = names
                    .get(index)
                    .map_or_else(|| format!("[{index}]"), Clone::clone);
                parts.push(format!(
                    "{name}: {} → {}",
                    shown(a.get(index)),
                    shown(b.get(index))
                ));
            }
        }
        _ => {
            let (a, b): (Vec<&str>, Vec<&str>) = (
                want.trim_start().split(' ').collect(),
                got.trim_start().split(' ').collect(),
            );
            // Words of a listing line (`key rows=1 rows_sha=...`), after the key they share.
            if a.len() == b.len() && a.len() > 1 && a[0] == b[0] && !want.starts_with('#') {
                let skip = usize::from(a[0] == "==");
                about = Some(a[skip].trim_end_matches(':').to_owned());
                for (x, y) in a.iter().zip(&b).skip(skip + 1).filter(|(x, y)| x != y) {
                    parts.push(format!("{x} → {y}"));
                }
            } else {
                parts.push(format!("{} → {}", clip(want), clip(got)));
            }
        }
    }
    let parts: Vec<String> = parts.iter().map(|p| clip(p)).collect();
    (about, parts.join("; "))
}

fn shown(v: Option<&serde_json::Value>) -> String {
    v.map_or_else(|| "(absent)".to_owned(), ToString::to_string)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Same,
    Removed,
    Added,
}

/// A line diff: the common head and tail, and between them a longest common subsequence when
/// that is small enough to compute, else the lines paired in order.
fn diff(old: &[&str], new: &[&str]) -> Vec<Change> {
    let head = old.iter().zip(new).take_while(|(x, y)| x == y).count();
    let tail = old[head..]
        .iter()
        .rev()
        .zip(new[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (was, now) = (&old[head..old.len() - tail], &new[head..new.len() - tail]);
    let mut out = vec![Change::Same; head];
    if was.len() * now.len() <= 4_000_000 {
        // common[i * width + j]: the longest common subsequence of was[i..] and now[j..].
        let width = now.len() + 1;
        let mut common = vec![0u32; (was.len() + 1) * width];
        for i in (0..was.len()).rev() {
            for j in (0..now.len()).rev() {
                common[i * width + j] = if was[i] == now[j] {
                    common[(i + 1) * width + j + 1] + 1
                } else {
                    common[(i + 1) * width + j].max(common[i * width + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < was.len() || j < now.len() {
            if i < was.len() && j < now.len() && was[i] == now[j] {
                out.push(Change::Same);
                i += 1;
                j += 1;
            } else if i < was.len()
                && (j == now.len() || common[(i + 1) * width + j] >= common[i * width + j + 1])
            {
                // On a tie the removed line comes first, so that a hunk lists its removed
                // lines before the added ones they pair with.
                out.push(Change::Removed);
                i += 1;
            } else {
                out.push(Change::Added);
                j += 1;
            }
        }
    } else {
        for k in 0..was.len().max(now.len()) {
            if k < was.len() && k < now.len() && was[k] == now[k] {
                out.push(Change::Same);
                continue;
            }
            if k < was.len() {
                out.push(Change::Removed);
            }
            if k < now.len() {
                out.push(Change::Added);
            }
        }
    }
    out.extend(std::iter::repeat_n(Change::Same, tail));
    out
}

/// A recording of one table row, and the same with one cell changed.
fn one_table(cell: &str) -> BTreeMap<String, String> {
    let text = format!(
        "# tables/quality.status: 1 files, 1 rows\n\
         ## columns [\"force_id\",\"status\"]\n\
         == quality/status/status.parquet rows=1\n\
         [\"kent\",\"{cell}\"]\n"
    );
    BTreeMap::from([("tables/quality.status.txt".to_owned(), text)])
}

#[test]
fn a_changed_table_row_is_reported_with_its_file_line_and_column() {
    assert_eq!(compare(&one_table("due"), &one_table("due")), "");
    let report = compare(&one_table("due"), &one_table("overdue"));
    assert_eq!(
        report,
        "tables/quality.status.txt: 1 lines differ\n  line 4 (quality/status/status.parquet): \
         status: \"due\" → \"overdue\"\n"
    );
}

#[test]
fn missing_and_new_lines_and_files_are_reported() {
    let recorded = BTreeMap::from([
        ("a.txt".to_owned(), "one\ntwo\nthree\n".to_owned()),
        ("gone.txt".to_owned(), String::new()),
    ]);
    let written = BTreeMap::from([
        ("a.txt".to_owned(), "one\nthree\nfour\n".to_owned()),
        ("new.txt".to_owned(), String::new()),
    ]);
    assert_eq!(
        compare(&recorded, &written),
        "gone.txt: recorded, not written by this run\n\
         new.txt: written by this run, not recorded\n\
         a.txt: 2 lines differ\n  line 2: recorded, now missing: two\n  line 3: new: four\n"
    );
}
