//! The defect corpus (`tests/fixtures/defects/<case>/`): every malformed file yields exactly its
//! expected finding codes and decision through the real pipeline, nothing panics, and every
//! upload is archived byte for byte, on a local bucket and on the S3 test server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::common::{TestBucket, manifest_dir, on_both_backends};

#[derive(serde::Deserialize)]
struct Case {
    description: String,
    force: String,
    period: String,
    decision: String,
    codes: Vec<String>,
    #[serde(default)]
    rows: BTreeMap<String, Vec<u64>>,
    #[serde(default)]
    generate: Option<String>,
}

const HEADER: &str = "Type,Date,Part of a policing operation,Policing operation,Latitude,Longitude,Gender,Age range,Self-defined ethnicity,Officer-defined ethnicity,Legislation,Object of search,Outcome,Outcome linked to object of search,Removal of more than just outer clothing";

fn clean_row(day: u32, operation: &str) -> String {
    format!(
        "Person search,2020-01-{day:02}T10:15:00+00:00,False,{operation},54.7,-1.6,Male,18-24,White - English/Welsh/Scottish/Northern Irish/British,White,Misuse of Drugs Act 1971 (section 23),Controlled drugs,A no further action disposal,True,False"
    )
}

fn generated(kind: &str) -> Vec<u8> {
    match kind {
        "big_cell" => {
            let big = format!("\"{}\"", "x".repeat(10 * 1024 * 1024));
            let rows = [clean_row(2, ""), clean_row(3, &big), clean_row(4, "")];
            format!("{HEADER}\n{}\n", rows.join("\n")).into_bytes()
        }
        "wide_header" => {
            format!("{}c\n{}\n", "c,".repeat(2_000_000), clean_row(2, "")).into_bytes()
        }
        other => panic!("unknown generator `{other}`"),
    }
}

fn input_of(dir: &Path, case: &Case) -> (String, Vec<u8>) {
    if let Some(kind) = &case.generate {
        return ("generated.csv".into(), generated(kind));
    }
    for name in ["input.csv", "input.bin"] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            return (name.replace(".bin", ".csv"), bytes);
        }
    }
    panic!("{}: no input.csv, input.bin or generate", dir.display());
}

on_both_backends!(every_defective_file_yields_its_expected_findings_and_is_archived);
async fn every_defective_file_yields_its_expected_findings_and_is_archived(bucket: TestBucket) {
    let root = manifest_dir().join("tests/fixtures/defects");
    let mut cases = BTreeMap::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.join("case.toml").exists() {
            continue;
        }
        let case: Case = toml::from_str(&std::fs::read_to_string(dir.join("case.toml")).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let (file, bytes) = input_of(&dir, &case);
        let key = format!(
            "incoming/{}/stop_search/{}/{name}-{file}",
            case.force, case.period
        );
        cases.insert(key, (name, case, bytes));
    }
    assert!(cases.len() >= 30, "the corpus has {} cases", cases.len());

    for (key, (_, _, bytes)) in &cases {
        bucket.upload(key, bytes.clone()).await;
    }
    let outcome = bucket.run().await;
    assert_eq!(outcome.processed.len(), cases.len());

    let mut failures = Vec::new();
    for s in &outcome.processed {
        let (name, case, bytes) = &cases[&s.received.upload.source_key];
        let found: BTreeSet<&str> = s.codes.keys().map(String::as_str).collect();
        let expected: BTreeSet<&str> = case.codes.iter().map(String::as_str).collect();
        if found != expected || s.decision.as_str() != case.decision {
            failures.push(format!(
                "{name} ({}): expected {expected:?} {}, found {found:?} {}",
                case.description,
                case.decision,
                s.decision.as_str()
            ));
        }
        // Row numbers, where the case gives them, from the force's JSON report.
        if !case.rows.is_empty()
            && let Some(report_key) = &s.outputs.report_json
        {
            let report = bucket.get_json(report_key).await;
            for (code, rows) in &case.rows {
                let got: BTreeSet<u64> = report["findings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|f| f["code"] == code.as_str())
                    .flat_map(|f| {
                        f["examples"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .filter_map(|e| e["row"].as_u64())
                    })
                    .collect();
                let want: BTreeSet<u64> = rows.iter().copied().collect();
                if got != want {
                    failures.push(format!(
                        "{name}: {code} rows expected {want:?}, found {got:?}"
                    ));
                }
            }
        }
        // The archive holds the upload byte for byte, with its SHA-256 beside it. An upload
        // whose key has no place in the layout is not read, so not archived: it stays in
        // `incoming/`, under the key it was sent to.
        let Some(archive) = s.outputs.archive.as_ref() else {
            assert!(
                found.contains("upload_location_invalid") || found.contains("period_wrong_cadence"),
                "{name}: only an upload whose key has no place is not archived"
            );
            let (kept, _) = bucket
                .store
                .get(&s.received.upload.source_key)
                .await
                .unwrap();
            assert!(kept == *bytes, "{name}: the upload stays as it was sent");
            continue;
        };
        let (archived, _) = bucket.store.get(archive).await.unwrap();
        assert!(
            archived == *bytes,
            "{name}: the archived copy differs from the upload"
        );
        let (sum, _) = bucket
            .store
            .get(&format!("{archive}.sha256"))
            .await
            .unwrap();
        let want = format!("{:x}", Sha256::digest(bytes));
        assert!(
            String::from_utf8(sum).unwrap().starts_with(&want),
            "{name}: wrong sha256 sidecar"
        );
    }
    assert!(
        failures.is_empty(),
        "{} case(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

on_both_backends!(dates_excel_rewrote_are_stored_as_the_instants_they_mean);
async fn dates_excel_rewrote_are_stored_as_the_instants_they_mean(bucket: TestBucket) {
    use arrow::array::{Array, TimestampMicrosecondArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let root = manifest_dir().join("tests/fixtures/defects");
    let clean = std::fs::read_to_string(root.join("clean_baseline/input.csv")).unwrap();
    // The clean dates (all in January, GMT) as instants; Excel's 'dd/mm/yyyy hh:mm' drops
    // the seconds, its serial numbers keep them.
    let instants: Vec<i64> = clean
        .lines()
        .skip(1)
        .map(|l| {
            let iso = l.split(',').nth(1).unwrap();
            chrono::DateTime::parse_from_rfc3339(iso)
                .unwrap()
                .timestamp_micros()
        })
        .collect();
    for (case, drop_seconds) in [
        ("excel_dates_dmy_hhmm", true),
        ("excel_dates_serial", false),
    ] {
        let bytes = std::fs::read(root.join(case).join("input.csv")).unwrap();
        let key = format!("incoming/durham/stop_search/2020-01/{case}.csv");
        bucket.upload(&key, bytes).await;
        let outcome = bucket.run().await;
        let processed = outcome
            .processed
            .iter()
            .find(|s| s.received.upload.source_key == key)
            .unwrap();
        assert_eq!(processed.decision.as_str(), "accepted", "{case}");
        let snapshot = processed.outputs.snapshot.as_ref().expect("accepted");
        let (parquet, _) = bucket.store.get(snapshot).await.unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(parquet)).unwrap();
        let mut stored = Vec::new();
        for batch in reader.build().unwrap() {
            let batch = batch.unwrap();
            let dates = batch
                .column_by_name("date")
                .unwrap()
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .unwrap()
                .clone();
            stored.extend((0..dates.len()).map(|i| dates.value(i)));
        }
        let want: Vec<i64> = instants
            .iter()
            .map(|&t| if drop_seconds { t - t % 60_000_000 } else { t })
            .collect();
        assert_eq!(stored, want, "{case}");
    }
}
