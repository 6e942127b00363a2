//! A dataset with a quarterly cadence, declared in a temporary project folder: an upload
//! under a quarter folder is processed and its status row is for the quarter; an upload
//! under a month folder gets `period_wrong_cadence`, never a guessed period.

use std::path::Path;
use std::sync::Arc;

use force_returns::analyze::Status;
use force_returns::clock::Clock;
use force_returns::config::Project;
use force_returns::model::Decision;
use force_returns::period::Cadence;
use force_returns::pipeline::{RunOptions, Service};
use force_returns_dev::demo::{DemoConfig, uploads};

use crate::common::{TestBucket, copy_dir, manifest_dir};

/// The stop-search profile and schema, returned quarterly.
fn quarterly_project(root: &Path) -> Project {
    copy_dir(&manifest_dir().join("schemas"), &root.join("schemas"));
    let profile =
        std::fs::read_to_string(manifest_dir().join("pipelines/stop_search.toml")).unwrap();
    assert!(profile.contains("cadence = \"month\""));
    let profile = profile.replace("cadence = \"month\"", "cadence = \"quarter\"");
    std::fs::create_dir_all(root.join("pipelines")).unwrap();
    std::fs::write(root.join("pipelines/stop_search.toml"), profile).unwrap();
    Project::load(root).unwrap()
}

#[tokio::test]
async fn a_quarterly_dataset_takes_quarter_folders_and_refuses_month_folders() {
    let folder = tempfile::tempdir().unwrap();
    let project = Arc::new(quarterly_project(folder.path()));
    let pipeline = project.pipeline("stop_search").unwrap();
    assert_eq!(pipeline.period.cadence, Cadence::Quarter);

    // One force's March 2024 extract: every record falls in January to March 2024.
    let config = DemoConfig {
        end: "2024-03".parse().unwrap(),
        months: 1,
        scale: 0.05,
        defects: false,
        incidents: false,
        ..DemoConfig::default()
    };
    let march = uploads(&project.code_lists, &config)
        .find(|u| u.key.starts_with("incoming/durham/stop_search/2024-03/"))
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&march.bytes)
            .lines()
            .next()
            .unwrap()
            .contains("Period")
    );

    let bucket = TestBucket::new();
    bucket.clock.set("2024-04-10T09:00:00Z".parse().unwrap());
    let quarter_key = march.key.replace("/2024-03/", "/2024-Q1/");
    for key in [&quarter_key, &march.key] {
        bucket.upload(key, march.bytes.clone()).await;
        // Uploaded the day before the run, as the status reads arrival times.
        std::fs::File::options()
            .write(true)
            .open(bucket.dir.path().join(key))
            .and_then(|f| {
                f.set_modified(
                    "2024-04-09T09:00:00Z"
                        .parse::<chrono::DateTime<chrono::Utc>>()
                        .unwrap()
                        .into(),
                )
            })
            .unwrap();
    }
    let service = Service::new(
        Arc::clone(&project),
        bucket.store.clone(),
        bucket.clock.clone(),
        RunOptions::default(),
    );
    let outcome = service.run_once().await.unwrap();
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    let by_key = |key: &str| {
        outcome
            .processed
            .iter()
            .find(|s| s.received.upload.source_key == key)
            .unwrap_or_else(|| panic!("{key} not processed"))
    };

    let quarter = by_key(&quarter_key);
    assert_ne!(quarter.decision, Decision::Rejected, "{:?}", quarter.codes);
    assert_eq!(quarter.received.period(), Some("2024-Q1".parse().unwrap()));
    assert!(quarter.rows_accepted > 0);
    assert!(
        bucket
            .keys("snapshots/stop_search/period=2024-Q1/force=durham/")
            .await
            .len()
            == 1
    );

    let month = by_key(&march.key);
    assert_eq!(month.decision, Decision::Rejected);
    assert_eq!(month.received.period(), None);
    assert_eq!(
        month.codes.keys().collect::<Vec<_>>(),
        ["period_wrong_cadence"]
    );
    let report = bucket
        .get_json(&format!(
            "feedback/durham/_unrouted/{}.json",
            month.received.upload.submission_id
        ))
        .await;
    let text = report.to_string();
    assert!(
        text.contains("`2024-03` is a month period, but this dataset is returned by a calendar quarter written YYYY-Qn"),
        "{text}"
    );

    // The status grid is of quarters: the first quarter, on time for Durham and still due
    // for the others (28 days after 31 March).
    let (dataset, periods, rows) = service
        .status_tables(bucket.clock.now())
        .await
        .unwrap()
        .into_iter()
        .find(|(dataset, ..)| dataset == "stop_search")
        .unwrap();
    assert_eq!(dataset, "stop_search");
    assert_eq!(
        periods.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["2024-Q1"]
    );
    assert_eq!(rows.len(), 43);
    for row in &rows {
        assert_eq!(row.period.to_string(), "2024-Q1");
        assert_eq!(
            row.deadline,
            "2024-04-29T00:00:00Z"
                .parse::<chrono::DateTime<chrono::Utc>>()
                .unwrap()
        );
        let expected = if row.force_id == "durham" {
            [Status::Accepted, Status::AcceptedWithWarnings]
        } else {
            [Status::Due, Status::Due]
        };
        assert!(expected.contains(&row.status), "{row:?}");
    }
}
