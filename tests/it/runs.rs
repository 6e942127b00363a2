//! Whole runs, on a local bucket and on the S3 test server: the real data.police.uk extracts, idempotence,
//! resubmission, and the snapshots read back by independent readers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use force_returns::layout::{self, Parted};
use force_returns::pipeline::{RunOptions, Service};
use force_returns::state::Years;
use force_returns::store::{self, LocalStore, ObjectMeta, ObjectStore, PutMode, StoreError};

use force_returns::model::Decision;

use crate::common::{
    TestBucket, check_processed_exactly_once, done_records, on_both_backends, project, read_bucket,
    shared_fixtures, state_of, stop_search_file,
};

async fn upload_real_extracts(bucket: &TestBucket) -> usize {
    let dir = shared_fixtures().join("police-uk/stop-and-search");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // 2019-12-south-yorkshire-stop-and-search.csv
        let period = &name[..7];
        let force = name[8..].trim_end_matches("-stop-and-search.csv");
        bucket
            .upload(
                &format!("incoming/{force}/stop_search/{period}/{name}"),
                std::fs::read(&path).unwrap(),
            )
            .await;
        n += 1;
    }
    n
}

on_both_backends!(real_extracts_are_all_accepted_and_read_back_by_pyarrow_and_duckdb);
async fn real_extracts_are_all_accepted_and_read_back_by_pyarrow_and_duckdb(bucket: TestBucket) {
    let n = upload_real_extracts(&bucket).await;
    assert_eq!(n, 12);
    let outcome = bucket.run().await;
    assert_eq!(outcome.processed.len(), 12);
    let mut rows_by_snapshot = BTreeMap::new();
    for s in &outcome.processed {
        assert_ne!(
            s.decision,
            Decision::Rejected,
            "{} was rejected: {:?}",
            s.received.upload.source_key,
            s.codes
        );
        // South Yorkshire's January 2020 extract has no records on the 1st and 2nd, against
        // 34 to 183 a day for the rest of the month: the one gap the analysis reports here.
        let gap = s
            .received
            .upload
            .source_key
            .contains("2020-01-south-yorkshire");
        assert_eq!(
            s.codes.contains_key("gap_days_without_records"),
            gap,
            "{}: {:?}",
            s.received.upload.source_key,
            s.codes
        );
        let errors: Vec<_> = s
            .codes
            .keys()
            .filter(|c| {
                !["blank_rate", "duplicate_row", "gap_days_without_records"].contains(&c.as_str())
            })
            .collect();
        assert!(
            errors.is_empty(),
            "{}: unexpected findings {errors:?}",
            s.received.upload.source_key
        );
        assert_eq!(
            s.rows_accepted, s.rows_read,
            "{}: every row is kept",
            s.received.upload.source_key
        );
        rows_by_snapshot.insert(s.outputs.snapshot.clone().unwrap(), s.rows_accepted);
    }
    // South Yorkshire sends no locations: reported with the rate, as a warning.
    let sy = outcome
        .processed
        .iter()
        .find(|s| {
            s.received
                .upload
                .source_key
                .contains("2020-01-south-yorkshire")
        })
        .unwrap();
    assert_eq!(sy.decision, Decision::AcceptedWithWarnings);
    let report = bucket
        .get_json(sy.outputs.report_json.as_ref().unwrap())
        .await;
    let blank = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "blank_rate")
        .unwrap();
    let latitude = blank["examples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["column"] == "Latitude")
        .unwrap();
    assert_eq!(latitude["severity"], "warning");
    assert_eq!(latitude["value"], "1.0000", "{latitude}");
    assert!(
        latitude["message"].as_str().unwrap().contains("(100.0%)"),
        "{latitude}"
    );

    let facts = read_bucket(&bucket.local_dir().await, "stop_search");
    let snapshots = facts["snapshots"].as_array().unwrap();
    assert_eq!(snapshots.len(), 12);
    for snap in snapshots {
        let key = snap["key"].as_str().unwrap();
        assert_eq!(
            snap["rows"].as_u64(),
            rows_by_snapshot.get(key).copied(),
            "{key}"
        );
        let types = &snap["types"];
        assert_eq!(types["date"], "timestamp[us, tz=UTC]");
        assert_eq!(types["latitude"], "double");
        assert_eq!(types["outcome_linked_to_object_of_search"], "bool");
        assert_eq!(
            types["self_defined_ethnicity"],
            "dictionary<values=string, indices=int32, ordered=0>"
        );
        assert_eq!(
            types["self_defined_ethnicity_group"],
            "dictionary<values=string, indices=int32, ordered=0>"
        );
        assert_eq!(snap["compression"], "SNAPPY");
        let meta = &snap["metadata"];
        let s = outcome
            .processed
            .iter()
            .find(|s| s.outputs.snapshot.as_deref() == Some(key))
            .unwrap();
        assert_eq!(
            meta["force_returns.submission_id"],
            s.received.upload.submission_id.as_str()
        );
        assert_eq!(
            meta["force_returns.source_key"],
            s.received.upload.source_key.as_str()
        );
        assert_eq!(meta["force_returns.schema_id"], "stop_search/v1");
        assert_eq!(meta["force_returns.schema_version"], "1");
        // A record-level return is checked against no metric catalogue.
        assert!(
            meta.get("force_returns.catalogue_version").is_none(),
            "{meta}"
        );
        assert_eq!(meta["force_returns.sha256"].as_str().unwrap().len(), 64);
        assert!(
            meta["force_returns.ingested_at"]
                .as_str()
                .unwrap()
                .starts_with("2020-03-05T09:00:00")
        );
        let groups: Vec<&str> = snap["distinct_sde_groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            groups
                .iter()
                .all(|g| ["White", "Mixed", "Asian", "Black", "Other", "Not stated"].contains(g)),
            "{groups:?}"
        );
    }
    // DuckDB through the manifest sees every accepted row once.
    let total: u64 = facts["current_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[2].as_u64().unwrap())
        .sum();
    assert_eq!(total, rows_by_snapshot.values().sum::<u64>());
    assert_eq!(total, 15_652);
}

fn small_file(rows: usize, ethnicity: &str) -> Vec<u8> {
    stop_search_file("2020-01", rows, ethnicity)
}

on_both_backends!(second_run_processes_nothing_and_a_resubmission_supersedes_the_first);
async fn second_run_processes_nothing_and_a_resubmission_supersedes_the_first(bucket: TestBucket) {
    let folder = "incoming/south-yorkshire/stop_search/2020-01";
    bucket
        .upload(
            &format!("{folder}/first.csv"),
            small_file(5, "White - Irish"),
        )
        .await;
    let first = bucket.run().await;
    assert_eq!(first.processed.len(), 1);
    assert_eq!(
        first.processed[0].decision,
        Decision::Accepted,
        "{:?}",
        first.processed[0].codes
    );

    let again = bucket.run().await;
    assert!(
        again.processed.is_empty(),
        "a second run reprocessed {:?}",
        again.processed
    );

    bucket
        .upload(&format!("{folder}/second.csv"), small_file(7, "W2"))
        .await;
    let second = bucket.run().await;
    assert_eq!(second.processed.len(), 1);
    assert_eq!(
        second.processed[0].superseded.as_deref(),
        Some(first.processed[0].received.upload.submission_id.as_str())
    );

    let manifest = bucket
        .get_json(&Parted::Manifest.part_key("stop_search", 2020))
        .await;
    assert_eq!(manifest["current"].as_array().unwrap().len(), 1);
    assert_eq!(
        manifest["current"][0]["submission_id"],
        second.processed[0].received.upload.submission_id.as_str()
    );
    assert_eq!(
        manifest["superseded"][0]["submission_id"],
        first.processed[0].received.upload.submission_id.as_str()
    );
    assert_eq!(
        manifest["superseded"][0]["superseded_by"],
        second.processed[0].received.upload.submission_id.as_str()
    );
    // The first snapshot stays for audit.
    assert!(
        bucket
            .store
            .get(first.processed[0].outputs.snapshot.as_ref().unwrap())
            .await
            .is_ok()
    );
    assert!(bucket.run().await.processed.is_empty());

    let facts = read_bucket(&bucket.local_dir().await, "stop_search");
    assert_eq!(facts["snapshots"].as_array().unwrap().len(), 2);
    assert_eq!(
        facts["current_rows"],
        serde_json::json!([["south-yorkshire", "2020-01", 7]])
    );
}

on_both_backends!(a_crash_before_the_done_marker_is_redone_with_the_same_outputs);
async fn a_crash_before_the_done_marker_is_redone_with_the_same_outputs(bucket: TestBucket) {
    let key = "incoming/durham/stop_search/2020-01/x.csv";
    bucket.upload(key, small_file(4, "A1")).await;
    let first = bucket.run().await;
    let sid = first.processed[0].received.upload.submission_id.clone();
    // Simulate a crash after every output but before the ledger entry.
    for k in bucket.keys("_state/done/").await {
        bucket.store.delete(&k).await.unwrap();
    }
    let outputs = |keys: Vec<String>| {
        keys.into_iter()
            .filter(|k| !k.starts_with("_state/"))
            .collect::<Vec<_>>()
    };
    let before = outputs(bucket.keys("").await);
    let redo = bucket.run().await;
    assert_eq!(redo.processed.len(), 1);
    assert_eq!(
        redo.processed[0].received.upload.submission_id, sid,
        "ids are deterministic"
    );
    assert_eq!(
        outputs(bucket.keys("").await),
        before,
        "a retry rewrites the same keys"
    );
    assert_eq!(bucket.keys("_state/done/").await.len(), 1);
    let manifest = bucket
        .get_json(&Parted::Manifest.part_key("stop_search", 2020))
        .await;
    assert_eq!(
        manifest["current"].as_array().unwrap().len(),
        1,
        "no duplicate entry"
    );
    assert!(manifest["superseded"].as_array().unwrap().is_empty());
}

on_both_backends!(central_quality_tables_mask_personal_values_but_the_force_report_shows_them);
async fn central_quality_tables_mask_personal_values_but_the_force_report_shows_them(
    bucket: TestBucket,
) {
    let key = "incoming/kent/stop_search/2020-01/k.csv";
    bucket.upload(key, small_file(3, "Klingon")).await;
    let out = bucket.run().await;
    let s = &out.processed[0];
    assert_eq!(s.decision, Decision::Rejected);
    let report = bucket
        .get_json(s.outputs.report_json.as_ref().unwrap())
        .await;
    assert!(
        report.to_string().contains("Klingon"),
        "the force sees its own value"
    );
    let csv = bucket
        .store
        .get(s.outputs.findings_csv.as_ref().unwrap())
        .await
        .unwrap()
        .0;
    assert_eq!(
        String::from_utf8(csv).unwrap().matches("Klingon").count(),
        6,
        "3 values + 3 messages"
    );
    let facts = read_bucket(&bucket.local_dir().await, "stop_search");
    let q = &facts["quality"]["findings"];
    assert_eq!(q["rows"], 3);
    assert!(
        !q.to_string().contains("Klingon"),
        "central table leaks a personal value: {q}"
    );
    assert_eq!(q["values"], serde_json::json!(["***", "***", "***"]));
    assert_eq!(facts["quality"]["submissions"]["rows"], 1);
    assert!(
        facts["snapshots"].as_array().unwrap().is_empty(),
        "a rejected upload has no snapshot"
    );
}

/// A local bucket whose compare-and-swap is not atomic: it compares, yields, then writes, as a
/// test server may (moto 5.2.5 lets several racing `If-Match` writers win).
#[derive(Debug)]
struct RacyCompareAndSwap(LocalStore);

#[async_trait::async_trait]
impl ObjectStore for RacyCompareAndSwap {
    fn location(&self, key: &str) -> String {
        self.0.location(key)
    }
    async fn list(&self, prefix: &str) -> store::Result<Vec<ObjectMeta>> {
        self.0.list(prefix).await
    }
    async fn get(&self, key: &str) -> store::Result<(Vec<u8>, ObjectMeta)> {
        self.0.get(key).await
    }
    async fn download(
        &self,
        key: &str,
        dest: &Path,
        feed: Option<store::Feed>,
    ) -> store::Result<store::Downloaded> {
        self.0.download(key, dest, feed).await
    }
    async fn put(&self, key: &str, bytes: Vec<u8>, mode: PutMode) -> store::Result<ObjectMeta> {
        if let PutMode::Update(etag) = &mode {
            let (_, current) = self.0.get(key).await?;
            if &current.etag != etag {
                return Err(StoreError::Changed {
                    location: self.location(key),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            return self.0.put(key, bytes, PutMode::Overwrite).await;
        }
        self.0.put(key, bytes, mode).await
    }
    async fn put_file(&self, key: &str, src: &Path, mode: PutMode) -> store::Result<ObjectMeta> {
        self.0.put_file(key, src, mode).await
    }
    async fn copy(&self, from: &str, to: &str) -> store::Result<ObjectMeta> {
        self.0.copy(from, to).await
    }
    async fn delete(&self, key: &str) -> store::Result<()> {
        self.0.delete(key).await
    }

    async fn delete_version(&self, key: &str, etag: &str) -> store::Result<()> {
        self.0.delete_version(key, etag).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_runs_lose_no_manifest_entry_even_where_compare_and_swap_is_not_atomic() {
    let bucket = TestBucket::new();
    let store: Arc<dyn ObjectStore> = Arc::new(RacyCompareAndSwap(
        LocalStore::new(bucket.dir.path()).unwrap(),
    ));
    let project = project();
    let forces: Vec<String> = project.code_lists.forces().unwrap().codes[..32]
        .iter()
        .map(|c| c.code.clone())
        .collect();
    for force in &forces {
        store
            .put(
                &format!("incoming/{force}/stop_search/2020-01/r.csv"),
                small_file(3, "W1"),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
    }
    let runs: Vec<_> = (0..4)
        .map(|i| {
            let service = Service::new(
                Arc::clone(&project),
                Arc::clone(&store),
                bucket.clock.clone(),
                RunOptions {
                    worker_id: format!("worker-{i}"),
                    ..RunOptions::default()
                },
            );
            tokio::spawn(async move { service.run_once().await.unwrap() })
        })
        .collect();
    let mut processed = 0;
    for run in runs {
        let outcome = run.await.unwrap();
        assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
        processed += outcome.processed.len();
    }
    assert_eq!(processed, forces.len(), "each upload processed once");
    let manifest = bucket
        .get_json(&Parted::Manifest.part_key("stop_search", 2020))
        .await;
    let current: BTreeSet<&str> = manifest["current"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["force_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        current.len(),
        forces.len(),
        "every force is in the manifest: {current:?}"
    );
}

on_both_backends!(odd_keys_are_judged_once_reported_and_never_fail_a_run);
async fn odd_keys_are_judged_once_reported_and_never_fail_a_run(bucket: TestBucket) {
    let long = format!("incoming/kent/stop_search/2020-01/{}.csv", "x".repeat(300));
    // (key, the force its report goes to, a phrase the report must hold)
    let mut odd: Vec<(String, Option<&str>, &str)> = vec![
        (
            "incoming/Durham/stop_search/2020-01/a.csv".into(),
            Some("durham"),
            "did you mean `durham`?",
        ),
        (
            "incoming/kent/stop_search/2020-01/extra/a.csv".into(),
            Some("kent"),
            "4 (force, dataset and period folders, then the file)",
        ),
        (
            "incoming/kent/stöp search/2020-01/a b.csv".into(),
            Some("kent"),
            "did you mean `stop_search`?",
        ),
        (
            "incoming/kent/stop_search/2020-01/a\\b.csv".into(),
            Some("kent"),
            "backslash",
        ),
        (
            "incoming/gotham/stop_search/2020-01/a.csv".into(),
            None,
            "`gotham` is not a force id",
        ),
        (
            "incoming/kent/stop_search/2099-13/a.csv".into(),
            Some("kent"),
            "`2099-13` is not a month",
        ),
    ];
    if bucket.is_s3() {
        // Keys S3 takes and no local file system names.
        odd.extend([
            (
                "incoming/kent/stop_search/2020-01/".into(),
                Some("kent"),
                "folder marker",
            ),
            ("incoming/kent//2020-01/a.csv".into(), Some("kent"), "`//`"),
            (
                "incoming/kent/stop_search/2020-01/../a.csv".into(),
                Some("kent"),
                "`..`",
            ),
            (long, Some("kent"), "above the limit of 255"),
        ]);
    }
    for (key, _, _) in &odd {
        let body = if key.ends_with('/') {
            Vec::new()
        } else {
            small_file(2, "W1")
        };
        bucket.upload_raw(key, body).await;
    }
    let good = "incoming/kent/stop_search/2020-01/good.csv";
    bucket.upload(good, small_file(3, "W1")).await;

    let first = bucket.run().await;
    assert_eq!(
        first.processed.len(),
        odd.len() + 1,
        "{:?}",
        first.processed
    );
    for (key, force, phrase) in &odd {
        let s = first
            .processed
            .iter()
            .find(|s| &s.received.upload.source_key == key)
            .unwrap_or_else(|| panic!("{key} was not judged"));
        assert_eq!(s.decision, Decision::Rejected, "{key}");
        assert_eq!(
            s.codes,
            BTreeMap::from([("upload_location_invalid".to_owned(), 1)]),
            "{key}"
        );
        assert_eq!(
            s.received.dataset(),
            None,
            "{key}: never processed under a guessed dataset"
        );
        assert_eq!(s.outputs.archive, None, "{key}: not read");
        assert_eq!(s.received.force(), *force, "{key}");
        // The operators' quality tables hold every one.
        let table = layout::quality_key(
            "submissions",
            layout::UNROUTED,
            &s.received.upload.submission_id,
        );
        assert!(bucket.store.get(&table).await.is_ok(), "{key}: {table}");
        match force {
            Some(f) => {
                let report_key = s.outputs.report_json.as_deref().unwrap();
                assert_eq!(
                    report_key,
                    format!(
                        "feedback/{f}/_unrouted/{}.json",
                        s.received.upload.submission_id
                    ),
                    "{key}: where the force can read it"
                );
                let report = bucket.get_json(report_key).await;
                let message = report["findings"][0]["examples"][0]["message"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                assert!(message.contains(phrase), "{key}: {message}");
            }
            None => assert_eq!(s.outputs.report_json, None, "{key}"),
        }
    }
    let keys = bucket.keys("archive/").await;
    assert!(
        keys.iter()
            .all(|k| k.starts_with("archive/stop_search/kent/2020-01/")),
        "only the good upload is archived: {keys:?}"
    );
    let store = Arc::clone(&bucket.store);
    assert_eq!(done_records(&store).await.len(), odd.len() + 1);

    // Judged once: the next runs neither judge them again nor fail.
    let second = bucket.run().await;
    assert!(second.processed.is_empty(), "{:?}", second.processed);
    assert_eq!(second.skipped, 0);
}

on_both_backends!(a_receipt_missing_after_its_upload_finished_is_repaired_from_the_done_marker);
async fn a_receipt_missing_after_its_upload_finished_is_repaired_from_the_done_marker(
    bucket: TestBucket,
) {
    for force in ["durham", "kent", "essex"] {
        bucket
            .upload(
                &format!("incoming/{force}/stop_search/2020-01/r.csv"),
                small_file(3, "W1"),
            )
            .await;
    }
    assert_eq!(bucket.run().await.processed.len(), 3);
    // One receipt lost after its upload finished, as the compare-and-swap race lost one.
    let key = Parted::Receipts.part_key("stop_search", 2020);
    let mut receipts = bucket.get_json(&key).await;
    let lost = receipts["receipts"].as_array_mut().unwrap().remove(1);
    bucket
        .store
        .put(
            &key,
            serde_json::to_vec(&receipts).unwrap(),
            PutMode::Overwrite,
        )
        .await
        .unwrap();

    // The next run folds the done-markers into the ledger's index, checking each receipt.
    let outcome = bucket
        .service(RunOptions {
            compact_after: 1,
            ..RunOptions::default()
        })
        .run_once()
        .await
        .unwrap();
    assert!(outcome.processed.is_empty() && outcome.failed.is_empty());
    let repaired = bucket.get_json(&key).await;
    let ids: BTreeSet<&str> = repaired["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["submission_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{repaired}");
    assert!(ids.contains(lost["submission_id"].as_str().unwrap()));
    assert!(
        bucket.keys(layout::DONE).await.is_empty(),
        "the done-markers are folded"
    );
    assert_eq!(bucket.keys(layout::DONE_INDEX).await.len(), 1);
    let store = Arc::clone(&bucket.store);
    assert_eq!(done_records(&store).await.len(), 3);
    assert!(bucket.run().await.processed.is_empty(), "still done");
}

on_both_backends!(claims_left_beside_a_finished_upload_are_removed);
async fn claims_left_beside_a_finished_upload_are_removed(bucket: TestBucket) {
    let done = "incoming/kent/stop_search/2020-01/a.csv";
    bucket.upload(done, small_file(3, "W1")).await;
    assert_eq!(bucket.run().await.processed.len(), 1);
    let meta = bucket.store.list(done).await.unwrap().remove(0);
    // What a worker killed between its done-marker and clearing its claim leaves, and what a
    // worker that outlived its claim renews beside a finished upload.
    let marker = layout::names_of(done, &meta.etag).1;
    for n in [0, 3] {
        bucket
            .store
            .put(
                &layout::generation_key(&layout::claim_base(&marker), n),
                b"{}".to_vec(),
                PutMode::Create,
            )
            .await
            .unwrap();
    }
    // The live claim of an upload in flight elsewhere is left alone.
    let other = layout::generation_key(&layout::claim_base("f00d"), 0);
    bucket
        .store
        .put(&other, b"{}".to_vec(), PutMode::Create)
        .await
        .unwrap();
    assert!(bucket.run().await.processed.is_empty());
    assert_eq!(bucket.keys(layout::CLAIMS).await, [other]);
}

on_both_backends!(an_upload_replaced_after_listing_is_left_for_the_next_run_never_mixed);
async fn an_upload_replaced_after_listing_is_left_for_the_next_run_never_mixed(bucket: TestBucket) {
    let key = "incoming/kent/stop_search/2020-01/a.csv";
    bucket.upload(key, small_file(5, "W1")).await;
    let service = bucket.service(RunOptions::default());
    let listed = service.discover().await.unwrap();
    assert_eq!(listed.len(), 1);
    // The force replaces the file between this worker's listing and its reading.
    bucket.upload(key, small_file(7, "W2")).await;
    let claimed = service.try_claim(&listed[0]).await.unwrap().unwrap();
    let outcome = service.process_claim(&claimed).await.unwrap();
    assert!(
        outcome.is_none(),
        "processed as the old upload: {outcome:?}"
    );
    for prefix in [
        "archive/",
        "snapshots/",
        "feedback/",
        "quality/",
        layout::CLAIMS,
    ] {
        assert!(bucket.keys(prefix).await.is_empty(), "{prefix} written");
    }
    let store = Arc::clone(&bucket.store);
    assert!(done_records(&store).await.is_empty());

    let next = bucket.run().await;
    assert_eq!(next.processed.len(), 1);
    assert_eq!(next.processed[0].rows_read, 7, "the new upload");
}

on_both_backends!(racing_runs_that_compact_the_ledger_lose_and_repeat_nothing);
async fn racing_runs_that_compact_the_ledger_lose_and_repeat_nothing(bucket: TestBucket) {
    const RUNS: usize = 4;
    let project = project();
    let forces: Vec<String> = project.code_lists.forces().unwrap().codes[..40]
        .iter()
        .map(|c| c.code.clone())
        .collect();
    let services: Vec<Arc<Service>> = (0..RUNS)
        .map(|i| {
            Arc::new(Service::new(
                Arc::clone(&project),
                Arc::clone(&bucket.store),
                bucket.clock.clone(),
                RunOptions {
                    worker_id: format!("run-{i}"),
                    // Every run finds enough done-markers to compact: compactions race each
                    // other and the uploads in flight.
                    compact_after: 8,
                    ..RunOptions::default()
                },
            ))
        })
        .collect();
    let mut total = 0;
    for wave in 0..3 {
        for force in &forces {
            bucket
                .upload(
                    &format!("incoming/{force}/stop_search/2020-01/wave-{wave}.csv"),
                    small_file(2 + wave, "W1"),
                )
                .await;
        }
        total += forces.len();
        let runs: Vec<_> = services
            .iter()
            .map(|s| {
                let s = Arc::clone(s);
                tokio::spawn(async move { s.run_once().await.unwrap() })
            })
            .collect();
        let mut processed = 0;
        for run in runs {
            let outcome = run.await.unwrap();
            assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
            processed += outcome.processed.len();
        }
        assert_eq!(processed, forces.len(), "wave {wave}: each upload once");
    }
    assert!(
        !bucket.keys(layout::DONE_INDEX).await.is_empty(),
        "the ledger was compacted"
    );
    let store = Arc::clone(&bucket.store);
    assert_eq!(done_records(&store).await.len(), total);
    check_processed_exactly_once(&store).await;
    assert!(bucket.run().await.processed.is_empty());
}

on_both_backends!(finished_uploads_leave_incoming_after_the_retention_and_nothing_is_lost);
async fn finished_uploads_leave_incoming_after_the_retention_and_nothing_is_lost(
    bucket: TestBucket,
) {
    let routed = "incoming/south-yorkshire/stop_search/2020-01/january.csv";
    let odd = "incoming/atlantis/stop_search/2020-01/january.csv";
    let bytes = small_file(5, "White - Irish");
    bucket.upload(routed, bytes.clone()).await;
    bucket.upload(odd, bytes.clone()).await;
    let listed = bucket.store.list("incoming/").await.unwrap();
    let uploaded = listed.iter().map(|m| m.last_modified).max().unwrap();
    let retention = RunOptions::default().incoming_retention;
    let retention = chrono::Duration::from_std(retention).unwrap();

    // Within the retention a finished upload stays where the force put it.
    bucket
        .clock
        .set(uploaded + retention - chrono::Duration::hours(1));
    let first = bucket.run().await;
    assert_eq!(first.processed.len(), 2);
    bucket.run().await;
    assert_eq!(bucket.store.list("incoming/").await.unwrap().len(), 2);

    // Past it, the next run removes it: its bytes stay in the archive, byte for byte, and the
    // ledger still knows it, so nothing is processed again. The odd key's upload, never read
    // so never archived, stays.
    bucket
        .clock
        .set(uploaded + retention + chrono::Duration::hours(1));
    let later = bucket.run().await;
    assert!(later.processed.is_empty(), "{:?}", later.processed);
    let left: Vec<String> = bucket
        .store
        .list("incoming/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(left, [odd]);
    let summary = first
        .processed
        .iter()
        .find(|s| s.received.upload.source_key == routed)
        .unwrap();
    let archive = summary.outputs.archive.as_ref().unwrap();
    assert!(bucket.store.get(archive).await.unwrap().0 == bytes);
    let done = done_records(&bucket.store).await;
    assert!(done.values().any(|r| r.key == routed), "{done:?}");
    assert!(bucket.run().await.processed.is_empty());

    // The force sends the month again under the same name: a new upload, processed as a
    // resubmission of the one it replaces.
    bucket.upload(routed, small_file(6, "W2")).await;
    let again = bucket.run().await;
    assert_eq!(again.processed.len(), 1);
    assert_eq!(
        again.processed[0].superseded.as_deref(),
        Some(summary.received.upload.submission_id.as_str())
    );
}

on_both_backends!(state_written_before_parts_is_read_and_folded_into_parts_by_the_next_commit);
/// A bucket whose manifest and receipts are each one object, as the service wrote them before
/// it kept one part a year, is read as it is; the next commit moves both into parts and
/// deletes them.
async fn state_written_before_parts_is_read_and_folded_into_parts_by_the_next_commit(
    bucket: TestBucket,
) {
    let december = String::from_utf8(small_file(3, "W1"))
        .unwrap()
        .replace("2020-01-", "2019-12-");
    bucket
        .upload(
            "incoming/durham/stop_search/2019-12/r.csv",
            december.into_bytes(),
        )
        .await;
    bucket
        .upload(
            "incoming/kent/stop_search/2020-01/r.csv",
            small_file(3, "W1"),
        )
        .await;
    assert_eq!(bucket.run().await.processed.len(), 2);
    // The old layout: each of manifest and receipts one object, no parts.
    let state = state_of(&bucket.store);
    let manifest = state
        .manifest("stop_search", Years::All)
        .await
        .unwrap()
        .unwrap();
    let receipts = state.receipts("stop_search", Years::All).await.unwrap();
    assert_eq!((manifest.current.len(), receipts.receipts.len()), (2, 2));
    for (parted, body) in [
        (
            Parted::Manifest,
            serde_json::to_vec_pretty(&manifest).unwrap(),
        ),
        (
            Parted::Receipts,
            serde_json::to_vec_pretty(&receipts).unwrap(),
        ),
    ] {
        for year in [2019, 2020] {
            bucket
                .store
                .delete(&parted.part_key("stop_search", year))
                .await
                .unwrap();
        }
        bucket
            .store
            .put(&parted.legacy_key("stop_search"), body, PutMode::Create)
            .await
            .unwrap();
    }
    assert_eq!(
        state.manifest("stop_search", Years::All).await.unwrap(),
        Some(manifest),
        "read from the one object"
    );
    let kent = state
        .receipts("stop_search", Years::Range(2020..=2020))
        .await
        .unwrap();
    assert_eq!(kent.receipts.len(), 1, "only the year asked for");
    assert_eq!(kent.receipts[0].force_id(), "kent");

    bucket
        .upload(
            "incoming/essex/stop_search/2020-01/r.csv",
            small_file(3, "W1"),
        )
        .await;
    assert_eq!(bucket.run().await.processed.len(), 1);
    for parted in [Parted::Manifest, Parted::Receipts] {
        assert!(
            bucket
                .keys(&parted.legacy_key("stop_search"))
                .await
                .is_empty(),
            "{parted:?}: the one object is gone"
        );
        assert_eq!(
            bucket.keys(&parted.folder("stop_search")).await,
            [2019, 2020].map(|y| parted.part_key("stop_search", y))
        );
    }
    let manifest = state
        .manifest("stop_search", Years::All)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(manifest.current.len(), 3);
    check_processed_exactly_once(&bucket.store).await;
}

/// A current submission without a metrics file (processed before metrics were written) is
/// asked for once by a run, however many of its uploads compare with it, as one with a file is
/// (in a bucket without series, where the analysis reads the metrics files).
#[tokio::test]
async fn a_run_asks_for_a_missing_metrics_file_once() {
    let bucket = TestBucket::new();
    for force in ["durham", "kent"] {
        bucket
            .upload(
                &format!("incoming/{force}/stop_search/2020-01/r.csv"),
                small_file(3, "W1"),
            )
            .await;
    }
    assert_eq!(bucket.run().await.processed.len(), 2);
    let metrics =
        |force: &str| format!("snapshots/stop_search_metrics/period=2020-01/force={force}/");
    let missing = bucket.keys(&metrics("durham")).await;
    let present = bucket.keys(&metrics("kent")).await;
    assert_eq!((missing.len(), present.len()), (1, 1));
    bucket.store.delete(&missing[0]).await.unwrap();
    // As in a bucket processed before the series were kept: the analysis reads metrics files.
    for key in bucket.keys("_state/series/").await {
        bucket.store.delete(&key).await.unwrap();
    }

    let february = String::from_utf8(small_file(3, "W1"))
        .unwrap()
        .replace("2020-01-", "2020-02-");
    for force in ["essex", "cheshire", "dorset"] {
        bucket
            .upload(
                &format!("incoming/{force}/stop_search/2020-02/r.csv"),
                february.clone().into_bytes(),
            )
            .await;
    }
    let (store, service) = bucket.counted_service();
    let outcome = service.run_once().await.unwrap();
    assert_eq!(outcome.processed.len(), 3, "{:?}", outcome.failed);
    let reads = store.reads();
    assert_eq!(reads.get(&missing[0]), Some(&1), "{reads:?}");
    assert_eq!(reads.get(&present[0]), Some(&1), "{reads:?}");
}

/// A worker reads a manifest or receipts part again only when it has changed since the worker
/// last read or wrote it: its own commits do not make it read the part back.
#[tokio::test]
async fn a_part_is_read_again_only_once_another_writer_has_changed_it() {
    let bucket = TestBucket::new();
    bucket
        .upload(
            "incoming/kent/stop_search/2020-01/r.csv",
            small_file(3, "W1"),
        )
        .await;
    assert_eq!(bucket.run().await.processed.len(), 1);
    for force in ["durham", "essex", "dorset"] {
        bucket
            .upload(
                &format!("incoming/{force}/stop_search/2020-01/r.csv"),
                small_file(3, "W1"),
            )
            .await;
    }
    let (store, service) = bucket.counted_service();
    let outcome = service.run_once().await.unwrap();
    assert_eq!(outcome.processed.len(), 3, "{:?}", outcome.failed);
    let parts = [
        Parted::Manifest.part_key("stop_search", 2020),
        Parted::Receipts.part_key("stop_search", 2020),
    ];
    let reads = |key: &str| store.reads_of(key);
    assert_eq!(parts.each_ref().map(|k| reads(k)), [1, 1]);

    // Another writer's version (the same entries, written again) is read once more.
    for key in &parts {
        let (bytes, _) = bucket.store.get(key).await.unwrap();
        bucket
            .store
            .put(key, bytes, PutMode::Overwrite)
            .await
            .unwrap();
    }
    bucket
        .upload(
            "incoming/cheshire/stop_search/2020-01/r.csv",
            small_file(3, "W1"),
        )
        .await;
    assert_eq!(service.run_once().await.unwrap().processed.len(), 1);
    assert_eq!(parts.each_ref().map(|k| reads(k)), [2, 2]);
    check_processed_exactly_once(&bucket.store).await;
}
