//! The analysis step through whole runs: gaps and anomalies reach the force's report, the
//! quality tables and the monthly summary; the status table of expected returns; the real
//! extracts' status, anomalies and rates.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use force_returns::analyze::Status;
use force_returns::analyze::tables::{read_anomalies, read_metrics};
use force_returns::clock::Clock;
use force_returns::config::Project;
use force_returns::finding::{Code, Severity};
use force_returns::layout::{anomalies_key, metrics_key, status_key, summary_key};
use force_returns::model::Decision;
use force_returns::pipeline::{RunOptions, Service};
use force_returns_dev::demo::{DemoConfig, uploads};

use crate::common::{TestBucket, project, shared_fixtures};

/// Uploads an object dated `at`, as a force's upload at that time would be.
async fn upload_at(bucket: &TestBucket, key: &str, bytes: Vec<u8>, at: DateTime<Utc>) {
    bucket.upload(key, bytes).await;
    std::fs::File::options()
        .write(true)
        .open(bucket.dir.path().join(key))
        .and_then(|f| f.set_modified(at.into()))
        .unwrap();
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// Durham's year with the demo's half-month extract in June 2024, through the service.
#[tokio::test]
async fn a_half_month_extract_reaches_the_report_the_tables_and_the_summary() {
    let bucket = TestBucket::new();
    let project = project();
    let config = DemoConfig {
        months: 12,
        incidents: true,
        defects: false,
        ..DemoConfig::default()
    };
    for u in uploads(&project.code_lists, &config).filter(|u| u.key.contains("/durham/")) {
        upload_at(&bucket, &u.key, u.bytes, u.uploaded_at).await;
    }
    // After every upload of March 2025, before its deadline.
    bucket.clock.set(at("2025-04-25T09:00:00Z"));
    let outcome = bucket.run().await;
    assert_eq!(outcome.processed.len(), 12);
    let june = outcome
        .processed
        .iter()
        .find(|s| s.received.period() == Some("2024-06".parse().unwrap()))
        .unwrap();
    assert_eq!(
        june.decision,
        Decision::AcceptedWithWarnings,
        "{:?}",
        june.codes
    );
    assert_eq!(
        june.codes.keys().collect::<Vec<_>>(),
        ["gap_days_without_records"]
    );
    for s in outcome
        .processed
        .iter()
        .filter(|s| s.received.upload.submission_id != june.received.upload.submission_id)
    {
        assert!(
            s.codes.is_empty(),
            "{}: {:?}",
            s.received.upload.source_key,
            s.codes
        );
        assert_eq!(s.decision, Decision::Accepted);
    }

    // The force's report: the finding, in words, with its method.
    let report = bucket
        .get_json(june.outputs.report_json.as_ref().unwrap())
        .await;
    let gap = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "gap_days_without_records")
        .unwrap();
    assert_eq!(gap["severity"], "warning");
    let example = &gap["examples"][0];
    let message = example["message"].as_str().unwrap();
    assert!(
        message.starts_with("No records on 16th to 30th of June 2024 (15 days)"),
        "{message}"
    );
    assert!(
        example["rule"].as_str().unwrap().contains("Poisson"),
        "{example}"
    );
    let html = bucket
        .store
        .get(june.outputs.report_html.as_ref().unwrap())
        .await
        .unwrap()
        .0;
    assert!(
        String::from_utf8(html)
            .unwrap()
            .contains("gap_days_without_records")
    );
    let csv = bucket
        .store
        .get(june.outputs.findings_csv.as_ref().unwrap())
        .await
        .unwrap()
        .0;
    assert!(
        String::from_utf8(csv)
            .unwrap()
            .contains(",gap_days_without_records,")
    );

    // The anomalies table, and the metrics snapshot of every accepted month.
    let (bytes, _) = bucket
        .store
        .get(&anomalies_key(
            "stop_search",
            &june.received.upload.submission_id,
        ))
        .await
        .unwrap();
    let anomalies = read_anomalies(bytes).unwrap();
    assert_eq!(anomalies.len(), 1);
    assert_eq!(anomalies[0].observed as u64, 15);
    assert_eq!(anomalies[0].history_months, 2);
    for s in &outcome.processed {
        let key = metrics_key(
            "stop_search",
            s.received.period().unwrap(),
            "durham",
            &s.received.upload.submission_id,
        );
        let rows = read_metrics(bucket.store.get(&key).await.unwrap().0).unwrap();
        let searches = rows
            .iter()
            .find(|r| r.metric == "searches" && r.dimension.is_empty())
            .unwrap();
        assert_eq!(searches.value as u64, s.rows_accepted, "{key}");
    }

    // The summary of the force's month, and the status table of every expected return.
    let summary = bucket
        .get_json(&summary_key("durham", "2024-06".parse().unwrap(), "json"))
        .await;
    let part = &summary["datasets"][0];
    assert_eq!(part["status"]["status"], "accepted_with_warnings");
    assert_eq!(part["anomalies"][0]["code"], "gap_days_without_records");
    assert_eq!(part["recent"].as_array().unwrap().len(), 3, "April to June");
    assert!(bucket.store.get(&status_key("stop_search")).await.is_ok());
    let service = bucket.service(RunOptions::default());
    let (_, periods, rows) = service
        .status_tables(bucket.clock.now())
        .await
        .unwrap()
        .into_iter()
        .find(|(dataset, ..)| dataset == "stop_search")
        .unwrap();
    assert_eq!(periods.len(), 12);
    assert_eq!(rows.len(), 12 * 43);
    for row in &rows {
        let expected = match (row.force_id.as_str(), row.period.to_string().as_str()) {
            ("durham", "2024-06") => Status::AcceptedWithWarnings,
            ("durham", _) => Status::Accepted,
            (_, "2025-03") => Status::Due,
            _ => Status::Overdue,
        };
        assert_eq!(row.status, expected, "{row:?}");
    }
}

/// A pipeline may make an anomaly code an error: then it rejects, and nothing is stored.
#[tokio::test]
async fn an_anomaly_raised_to_error_by_the_pipeline_rejects_the_upload() {
    let bucket = TestBucket::new();
    let mut project: Project = (*project()).clone();
    if let Some(p) = project.pipelines.get_mut("stop_search") {
        p.severity_overrides
            .insert(Code::GapDaysWithoutRecords, Severity::Error);
    }
    let config = DemoConfig {
        months: 12,
        incidents: true,
        defects: false,
        ..DemoConfig::default()
    };
    let june = uploads(&project.code_lists, &config)
        .find(|u| u.key.contains("/durham/stop_search/2024-06/"))
        .unwrap();
    // Processed when it arrives: the service refuses a month that has not begun.
    bucket.clock.set(june.uploaded_at);
    upload_at(&bucket, &june.key, june.bytes, june.uploaded_at).await;
    let service = Service::new(
        Arc::new(project),
        bucket.store.clone(),
        bucket.clock.clone(),
        RunOptions::default(),
    );
    let outcome = service.run_once().await.unwrap();
    let s = &outcome.processed[0];
    assert_eq!(s.decision, Decision::Rejected);
    assert!(s.outputs.snapshot.is_none());
    assert!(bucket.keys("snapshots/").await.is_empty());
    // The anomaly is still on record for analysts.
    let anomalies = read_anomalies(
        bucket
            .store
            .get(&anomalies_key(
                "stop_search",
                &s.received.upload.submission_id,
            ))
            .await
            .unwrap()
            .0,
    )
    .unwrap();
    assert_eq!(anomalies[0].severity, Severity::Error);
}

/// Person searches (not vehicle-only) by self-defined group in a real extract, counted from
/// the raw text, independently of the service.
fn person_searches_by_group(csv: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in csv.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        if cells[0] == "Vehicle search" {
            continue;
        }
        let group = match cells[8].split(" - ").next().unwrap_or("") {
            "White" => "White",
            "Black/African/Caribbean/Black British" => "Black",
            "Asian/Asian British" => "Asian",
            "Mixed/Multiple ethnic groups" => "Mixed",
            "Other ethnic group" if cells[8].ends_with("Not stated") => "Not stated",
            "Other ethnic group" => "Other",
            _ => "(blank)",
        };
        *out.entry(group.to_owned()).or_insert(0.0) += 1.0;
    }
    out
}

/// The twelve real extracts (Dec 2019 – Feb 2020) with the clock on 15 March 2020: the status
/// table, the one gap found, and rates and disparity equal to figures computed by hand from
/// the files and the Census 2011 table.
#[tokio::test]
async fn real_extracts_give_the_expected_status_anomalies_and_rates() {
    let fixtures = shared_fixtures();
    let bucket = TestBucket::new();
    let dir = fixtures.join("police-uk/stop-and-search");
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let period: force_returns::period::Period = name[..7].parse().unwrap();
        let force = name[8..]
            .trim_end_matches("-stop-and-search.csv")
            .to_owned();
        // Each force uploads on the 10th of the following month; Durham's December is sent
        // on 3 February, after its 28 January deadline.
        let when = if force == "durham" && period.to_string() == "2019-12" {
            at("2020-02-03T10:00:00Z")
        } else {
            period
                .next()
                .first_day()
                .and_hms_opt(9, 0, 0)
                .unwrap()
                .and_utc()
                + chrono::Duration::days(9)
        };
        let key = format!("incoming/{force}/stop_search/{period}/{name}");
        let bytes = std::fs::read(&path).unwrap();
        files.insert(
            (force, period.to_string()),
            String::from_utf8(bytes.clone()).unwrap(),
        );
        upload_at(&bucket, &key, bytes, when).await;
    }
    assert_eq!(files.len(), 12);
    // Mid-March 2020: December's and January's deadlines have passed, February's has not.
    bucket.clock.set(at("2020-03-15T09:00:00Z"));
    let outcome = bucket.run().await;
    assert_eq!(outcome.processed.len(), 12);

    // Status: the four forces' returns as decided (Durham's December late); the other 39
    // territorial forces overdue for December and January, due for February.
    let service = bucket.service(RunOptions::default());
    let (_, periods, rows) = service
        .status_tables(bucket.clock.now())
        .await
        .unwrap()
        .into_iter()
        .find(|(dataset, ..)| dataset == "stop_search")
        .unwrap();
    assert_eq!(
        periods.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["2019-12", "2020-01", "2020-02"]
    );
    assert_eq!(rows.len(), 43 * 3);
    let decisions: BTreeMap<(String, String), Decision> = outcome
        .processed
        .iter()
        .map(|s| {
            (
                (
                    s.received.force().unwrap().to_owned(),
                    s.received.period().unwrap().to_string(),
                ),
                s.decision,
            )
        })
        .collect();
    for row in &rows {
        let cell = (row.force_id.clone(), row.period.to_string());
        let expected = match (decisions.get(&cell), cell.1.as_str()) {
            (Some(_), _) if cell == ("durham".into(), "2019-12".into()) => Status::Late,
            (Some(Decision::Accepted), _) => Status::Accepted,
            (Some(_), _) => Status::AcceptedWithWarnings,
            (None, "2020-02") => Status::Due,
            (None, _) => Status::Overdue,
        };
        assert_eq!(row.status, expected, "{row:?}");
    }

    // Anomalies: with at most two months of history and four forces, only the within-month
    // gap check can speak, and it speaks once.
    let mut found = Vec::new();
    for s in &outcome.processed {
        let bytes = bucket
            .store
            .get(&anomalies_key(
                "stop_search",
                &s.received.upload.submission_id,
            ))
            .await
            .unwrap()
            .0;
        found.extend(read_anomalies(bytes).unwrap());
    }
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].code, Code::GapDaysWithoutRecords);
    assert_eq!(found[0].force_id, "south-yorkshire");
    assert!(
        found[0]
            .message
            .starts_with("No records on 1st and 2nd of January 2020 (2 days)"),
        "{}",
        found[0].message
    );

    // Rates and disparity, from the metrics snapshot, against the files and the census.
    let census = std::fs::read_to_string(
        fixtures.join("reference/census2011-ethnic-group-by-police-force-area.csv"),
    )
    .unwrap();
    let population = |area: &str, column: usize| -> f64 {
        census
            .lines()
            .find(|l| l.starts_with(&format!("{area},")))
            .unwrap()
            .split(',')
            .nth(column)
            .unwrap()
            .parse()
            .unwrap()
    };
    for (force, area) in [
        ("merseyside", "Merseyside"),
        ("south-yorkshire", "South Yorkshire"),
    ] {
        let s = outcome
            .processed
            .iter()
            .find(|s| {
                s.received.force() == Some(force)
                    && s.received.period() == Some("2020-01".parse().unwrap())
            })
            .unwrap();
        let rows = read_metrics(
            bucket
                .store
                .get(&metrics_key(
                    "stop_search",
                    "2020-01".parse().unwrap(),
                    force,
                    &s.received.upload.submission_id,
                ))
                .await
                .unwrap()
                .0,
        )
        .unwrap();
        let value = |metric: &str, dimension: &str, category: &str| {
            rows.iter()
                .find(|r| r.metric == metric && r.dimension == dimension && r.category == category)
                .unwrap_or_else(|| panic!("{force}: no {metric}/{category}"))
                .value
        };
        let searched = person_searches_by_group(&files[&(force.to_owned(), "2020-01".to_owned())]);
        let persons: f64 = searched.values().sum();
        // Census columns: 1 all, 2 White, 7 Mixed, 12 Asian, 18 Black, 22 Other.
        let white = searched["White"] / population(area, 2) * 1000.0;
        let black = searched["Black"] / population(area, 18) * 1000.0;
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
        let group = "self_defined_ethnicity_group";
        assert!(close(
            value("rate_per_1000", "", ""),
            persons / population(area, 1) * 1000.0
        ));
        assert!(close(value("rate_per_1000", group, "White"), white));
        assert!(close(value("rate_per_1000", group, "Black"), black));
        assert!(close(
            value("disparity_ratio", group, "Black"),
            black / white
        ));
        assert!(close(
            value("rate_per_1000", group, "Asian"),
            searched["Asian"] / population(area, 12) * 1000.0
        ));
    }
}

/// Two forces send the same file for a month: the one processed second is told at once, and the
/// one processed first is told too, on its own return's anomalies and its summary.
#[tokio::test]
async fn the_same_file_from_two_forces_is_reported_to_both_whichever_came_first() {
    let bucket = TestBucket::new();
    let file = crate::common::stop_search_file("2019-12", 40, "W1");
    bucket
        .upload("incoming/essex/stop_search/2019-12/a.csv", file.clone())
        .await;
    let first = bucket.run().await;
    assert_eq!(first.processed.len(), 1);
    let essex = first.processed[0].received.upload.submission_id.clone();
    assert!(
        first.processed[0].codes.is_empty(),
        "{:?}",
        first.processed[0].codes
    );
    bucket
        .upload("incoming/kent/stop_search/2019-12/b.csv", file.clone())
        .await;
    let second = bucket.run().await;
    assert_eq!(second.processed.len(), 1);
    assert!(
        second.processed[0]
            .codes
            .contains_key("anomaly_resent_records"),
        "{:?}",
        second.processed[0].codes
    );

    let (bytes, _) = bucket
        .store
        .get(&anomalies_key("stop_search", &essex))
        .await
        .unwrap();
    let notices: Vec<_> = read_anomalies(bytes)
        .unwrap()
        .into_iter()
        .filter(|a| a.code == Code::AnomalyResentRecords)
        .collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(
        (
            notices[0].force_id.as_str(),
            notices[0].submission_id.as_str()
        ),
        ("essex", essex.as_str())
    );
    assert_eq!(notices[0].severity, Severity::Warning);
    assert!(
        notices[0]
            .message
            .contains("kent's return for December 2019, processed after yours"),
        "{}",
        notices[0].message
    );
    let summary = bucket
        .get_json(&summary_key("essex", "2019-12".parse().unwrap(), "json"))
        .await;
    let codes: Vec<&str> = summary["datasets"][0]["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["code"].as_str())
        .collect();
    assert_eq!(codes, ["anomaly_resent_records"]);

    // Kent sends the same file again: told again, but Essex's return holds one notice.
    bucket
        .upload("incoming/kent/stop_search/2019-12/c.csv", file)
        .await;
    assert_eq!(bucket.run().await.processed.len(), 1);
    let (bytes, _) = bucket
        .store
        .get(&anomalies_key("stop_search", &essex))
        .await
        .unwrap();
    assert_eq!(read_anomalies(bytes).unwrap().len(), 1);
}
