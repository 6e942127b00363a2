//! A return is declared, not programmed: a small quarterly record-level return — a schema, a
//! profile and one code list, written here into a temporary project folder and named nowhere
//! in `src/` — goes end to end through the real binary: `check-config`, `validate`, two
//! `run --once` over a local bucket, its Parquet snapshot and metrics read back by pyarrow, its
//! declared observations, the status grid with a missing quarter, a volume anomaly, and the
//! feedback in HTML, JSON and CSV.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::common::{force_returns, manifest_dir, output_text as text, read_folder};

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "Custody detention",
  "description": "One detention in police custody.",
  "x-dataset": "custody_detentions",
  "x-version": "1",
  "type": "object",
  "required": ["detained_at", "reason", "hours_held"],
  "properties": {
    "detained_at": {
      "title": "Detained at",
      "description": "When the detention was authorised.",
      "type": "string",
      "anyOf": [{"format": "date-time"}, {"format": "date"}],
      "x-in-period": true,
      "x-aliases": ["Detained at"],
      "x-pii": "none",
      "x-snapshot": {"type": "timestamp"}
    },
    "reason": {
      "title": "Reason",
      "description": "Why the person was detained.",
      "type": ["string", "null"],
      "x-codelist": "detention_reason",
      "x-aliases": ["Reason"],
      "x-pii": "none",
      "x-snapshot": {"type": "code", "attributes": ["group"]}
    },
    "hours_held": {
      "title": "Hours held",
      "description": "Hours from authorisation to release.",
      "type": ["number", "null"],
      "minimum": 0,
      "x-aliases": ["Hours held"],
      "x-pii": "none",
      "x-snapshot": {"type": "float64"}
    }
  }
}"#;

const CODE_LIST: &str = r#"{
  "id": "detention_reason",
  "title": "Reason for detention",
  "source": "a test code list",
  "attributes": ["group"],
  "codes": [
    {"code": "Arrest warrant", "label": "Arrest warrant", "aliases": [], "legacy": [], "attributes": {"group": "Warrant"}},
    {"code": "Breach of bail", "label": "Breach of bail", "aliases": [], "legacy": [], "attributes": {"group": "Bail"}},
    {"code": "Suspected offence", "label": "Suspected offence", "aliases": [], "legacy": [], "attributes": {"group": "Offence"}},
    {"code": "Not recorded", "label": "Not recorded", "aliases": [], "legacy": [], "attributes": {"group": "Not recorded"}}
  ]
}"#;

const PROFILE: &str = r#"
dataset = "custody_detentions"
title = "Custody detentions"
schema = "custody_detentions/v1"
schedule = "0 0 * * * *"

[period]
cadence = "quarter"
deadline_days = 30
expected_forces = ["kent", "durham"]
first = "2023-Q1"

[anomalies]
min_history_months = 4
baseline_months = 8
dimensions = ["reason_group"]

[observe]
records = "detentions"

[[observe.shares]]
name = "reason_not_recorded_share"
title = "share of detentions with no reason recorded"
clause = "the reason is not recorded or blank"
advice = "Check that custody officers record the reason for every detention."
dimension = "reason_group"
categories = ["Not recorded"]
or_blank = "reason"

[[observe.categories]]
dimension = "reason_group"
category = "Bail"
count = "bail_detentions"

[[observe.headlines]]
label = "Detentions"
metric = "detentions"
"#;

const REASONS: [&str; 4] = [
    "Arrest warrant",
    "Breach of bail",
    "Suspected offence",
    "Not recorded",
];

/// A small deterministic generator (a 64-bit linear congruential one), so the records are the
/// same on every run without the service's own code making them.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// One force's quarter: `rows` detentions on days spread over the quarter; returns the CSV
/// and how many have the reason "Not recorded" or blank.
fn quarter_csv(year: i32, quarter: u32, rows: u64, rng: &mut Lcg) -> (String, u64) {
    let first = chrono::NaiveDate::from_ymd_opt(year, quarter * 3 - 2, 1).unwrap();
    let next = if quarter == 4 {
        chrono::NaiveDate::from_ymd_opt(year + 1, 1, 1).unwrap()
    } else {
        chrono::NaiveDate::from_ymd_opt(year, quarter * 3 + 1, 1).unwrap()
    };
    let days = u64::try_from((next - first).num_days()).unwrap();
    let mut text = String::from("Detained at,Reason,Hours held\n");
    let mut not_recorded = 0;
    for i in 0..rows {
        // Every day has a record before the rest are spread at random, so no gap is planted.
        let day = if i < days { i } else { rng.next(days) };
        let date = first + chrono::Days::new(day);
        let reason = match rng.next(100) {
            0..=44 => REASONS[2],
            45..=69 => REASONS[0],
            70..=91 => REASONS[1],
            92..=96 => REASONS[3],
            _ => "",
        };
        if reason.is_empty() || reason == REASONS[3] {
            not_recorded += 1;
        }
        let _ = writeln!(
            text,
            "{date}T{:02}:{:02}:00+00:00,{reason},{}",
            1 + rng.next(22),
            rng.next(60),
            1 + rng.next(30)
        );
    }
    (text, not_recorded)
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The metrics rows of one snapshot folder: `metric|dimension|category` → (value, numerator).
fn metrics(folder: &Path) -> BTreeMap<String, (f64, Option<f64>)> {
    read_folder(folder)
        .0
        .iter()
        .map(|r| {
            (
                format!(
                    "{}|{}|{}",
                    r["metric"].as_str().unwrap(),
                    r["dimension"].as_str().unwrap_or(""),
                    r["category"].as_str().unwrap_or("")
                ),
                (r["value"].as_f64().unwrap(), r["numerator"].as_f64()),
            )
        })
        .collect()
}

#[test]
#[expect(
    clippy::float_cmp,
    reason = "the metrics compared are counts of records, whole numbers exact in f64"
)]
fn a_quarterly_return_declared_in_a_folder_runs_end_to_end_through_the_binary() {
    let root = tempfile::tempdir().unwrap();
    let project = root.path().join("project");
    write(&project.join("schemas/custody_detentions/v1.json"), SCHEMA);
    write(
        &project.join("schemas/reference/detention_reason.json"),
        CODE_LIST,
    );
    std::fs::copy(
        manifest_dir().join("schemas/reference/forces.json"),
        project.join("schemas/reference/forces.json"),
    )
    .unwrap();
    write(&project.join("pipelines/custody_detentions.toml"), PROFILE);
    let project_arg = project.to_str().unwrap();

    let o = force_returns(&["check-config", "--project", project_arg]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("custody_detentions"), "{}", text(&o));

    // Two forces, 2023-Q1 to 2024-Q4. Kent never sends 2024-Q2, and its 2024-Q4 holds a
    // quarter of its usual detentions.
    let mut rng = Lcg(20_261_203);
    let bucket = root.path().join("bucket");
    let mut last = None;
    for year in [2023, 2024] {
        for quarter in 1..=4 {
            for (force, usual) in [("kent", 400u64), ("durham", 250)] {
                let rows = usual - 20 + rng.next(41);
                let (period, rows) = match (force, year, quarter) {
                    ("kent", 2024, 2) => continue,
                    ("kent", 2024, 4) => (format!("{year}-Q{quarter}"), rows / 4),
                    _ => (format!("{year}-Q{quarter}"), rows),
                };
                let (csv, not_recorded) = quarter_csv(year, quarter, rows, &mut rng);
                let file = format!("{period}-{force}-custody.csv");
                if period == "2024-Q4" && force == "kent" {
                    last = Some((csv, rows, not_recorded, file));
                    continue;
                }
                write(
                    &bucket.join(format!(
                        "incoming/{force}/custody_detentions/{period}/{file}"
                    )),
                    &csv,
                );
            }
        }
    }
    let (csv, rows, not_recorded, file) = last.unwrap();

    // A force checks its file first: it is well formed (the anomaly needs the history).
    let local = root.path().join(&file);
    write(&local, &csv);
    let validate = |period: &str| {
        force_returns(&[
            "validate",
            local.to_str().unwrap(),
            "--project",
            project_arg,
            "--dataset",
            "custody_detentions",
            "--force",
            "kent",
            "--period",
            period,
            "--format",
            "json",
        ])
    };
    let o = validate("2024-Q4");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["decision"], "accepted", "{v}");
    assert_eq!(v["rows_read"], rows, "{v}");
    // A month folder is not a period of a quarterly return.
    let o = validate("2024-12");
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("quarter"), "{}", text(&o));

    let bucket_arg = bucket.to_str().unwrap();
    let run = || {
        let o = force_returns(&[
            "run",
            "--once",
            "--project",
            project_arg,
            "--bucket",
            bucket_arg,
            "--log-format",
            "json",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    };
    run();
    write(
        &bucket.join(format!("incoming/kent/custody_detentions/2024-Q4/{file}")),
        &csv,
    );
    run();

    // The snapshot, read by pyarrow: every record, with the code list's attribute beside it.
    let (stored, columns) =
        read_folder(&bucket.join("snapshots/custody_detentions/period=2024-Q4/force=kent"));
    assert_eq!(stored.len() as u64, rows);
    let group = |reason: &str| match reason {
        "Arrest warrant" => "Warrant",
        "Breach of bail" => "Bail",
        "Suspected offence" => "Offence",
        _ => "Not recorded",
    };
    for r in &stored {
        if let Some(reason) = r["reason"].as_str() {
            assert_eq!(r["reason_group"], group(reason), "{r}");
        }
    }
    for c in ["detained_at", "reason", "reason_group", "hours_held"] {
        assert!(
            columns.iter().any(|x| x == c),
            "{c} missing from {columns:?}"
        );
    }

    // The declared observations, in the metrics snapshot under the names the profile gives.
    let m = metrics(&bucket.join("snapshots/custody_detentions_metrics/period=2024-Q4/force=kent"));
    assert_eq!(m["detentions||"].0, rows as f64, "{m:?}");
    assert_eq!(
        m["reason_not_recorded_share||"].1,
        Some(not_recorded as f64),
        "{m:?}"
    );
    let bail = m.get("detentions|reason_group|Bail").map_or(0.0, |v| v.0);
    assert_eq!(m["bail_detentions||"].0, bail, "{m:?}");
    let days: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("detentions|day_of_month|"))
        .map(|(_, v)| v.0)
        .sum();
    assert_eq!(
        days, rows as f64,
        "every record counted on a day of the quarter"
    );
    assert_eq!(
        m.keys()
            .filter(|k| k.starts_with("detentions|day_of_month|"))
            .count(),
        92,
        "October to December has 92 days"
    );

    // The status grid, now: Kent's missing quarter is overdue; the others arrived (late, as
    // they were sent today for quarters long past).
    let o = force_returns(&[
        "status",
        "--project",
        project_arg,
        "--bucket",
        bucket_arg,
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let status: Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows_of = |force: &str, period: &str| -> Vec<Value> {
        status
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|d| d["rows"].as_array().unwrap().iter().cloned())
            .filter(|r| r["force_id"] == force && r["period"] == period)
            .collect()
    };
    let missing = rows_of("kent", "2024-Q2");
    assert_eq!(missing.len(), 1, "{status}");
    assert_eq!(missing[0]["status"], "overdue", "{status}");
    assert_eq!(rows_of("kent", "2024-Q1").len(), 1);
    assert_eq!(rows_of("kent", "2024-Q1")[0]["status"], "late", "{status}");
    assert_eq!(
        rows_of("durham", "2024-Q2")[0]["status"],
        "late",
        "{status}"
    );

    // The anomaly, in the feedback's three formats.
    let folder = bucket.join("feedback/kent/custody_detentions/2024-Q4");
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(&folder).unwrap() {
        let path = entry.unwrap().path();
        let ext = path.extension().unwrap().to_str().unwrap().to_owned();
        found.insert(ext, std::fs::read_to_string(&path).unwrap());
    }
    assert_eq!(
        found.keys().map(String::as_str).collect::<Vec<_>>(),
        ["csv", "html", "json"],
        "{folder:?}"
    );
    let report: Value = serde_json::from_str(&found["json"]).unwrap();
    assert_eq!(report["decision"], "accepted_with_warnings", "{report}");
    let volume = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "anomaly_volume")
        .unwrap_or_else(|| panic!("no volume anomaly: {report}"));
    let message = volume["examples"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{rows} detentions")) && message.contains("quarters"),
        "{message}"
    );
    assert!(found["csv"].contains("anomaly_volume"));
    assert!(found["html"].contains("anomaly_volume"));
}
