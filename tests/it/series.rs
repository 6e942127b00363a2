//! The series an analysis reads (`_state/series/`): kept up to date by each upload, used only
//! for the submission the manifest holds current, and never needed: a stale or missing one
//! falls back to the metrics files, and the next upload puts right what the series lacked.

use force_returns::layout::{latest_series_key, metrics_key, series_key};
use force_returns::model::series::Series;
use force_returns::state::Years;
use force_returns::store::PutMode;

use crate::common::{TestBucket, check_processed_exactly_once, state_of, stop_search_file};

/// A clean return of `rows` records dated in `period` (`YYYY-MM`).
fn month(period: &str, rows: usize) -> Vec<u8> {
    stop_search_file(period, rows, "W1")
}

async fn upload(bucket: &TestBucket, force: &str, period: &str, name: &str) {
    bucket
        .upload(
            &format!("incoming/{force}/stop_search/{period}/{name}"),
            month(period, 20),
        )
        .await;
}

async fn series(bucket: &TestBucket, key: &str) -> Series {
    let (bytes, _) = bucket.store.get(key).await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Force, period and submission of each entry.
fn entries(series: &Series) -> Vec<(String, String, String)> {
    series
        .observations
        .iter()
        .map(|o| {
            (
                o.force_id.clone(),
                o.period.map(|p| p.to_string()).unwrap_or_default(),
                o.submission_id.clone(),
            )
        })
        .collect()
}

/// The manifest's current entries of `force` (period, submission).
async fn current(bucket: &TestBucket, force: &str) -> Vec<(String, String, String)> {
    let manifest = state_of(&bucket.store)
        .manifest("stop_search", Years::All)
        .await
        .unwrap()
        .unwrap();
    let mut out: Vec<_> = manifest
        .current
        .into_iter()
        .filter(|e| e.force_id() == force)
        .map(|e| {
            (
                e.force_id().to_owned(),
                e.period().to_string(),
                e.submission_id().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn metrics_of(force: &str, period: &str, submission: &str) -> String {
    metrics_key("stop_search", period.parse().unwrap(), force, submission)
}

#[tokio::test]
async fn after_two_uploads_the_series_holds_both_periods_and_the_latest_the_second() {
    let bucket = TestBucket::new();
    upload(&bucket, "kent", "2019-12", "a.csv").await;
    bucket.run().await;
    upload(&bucket, "kent", "2020-01", "b.csv").await;
    upload(&bucket, "essex", "2019-12", "c.csv").await;
    bucket.run().await;

    let kent = series(&bucket, &series_key("stop_search", "kent")).await;
    assert_eq!(entries(&kent), current(&bucket, "kent").await);
    assert_eq!(kent.observations.len(), 2);
    assert!(kent.observations.iter().all(|o| o.rows == 20));
    let latest = series(&bucket, &latest_series_key("stop_search")).await;
    let mut expected = current(&bucket, "essex").await;
    expected.extend(current(&bucket, "kent").await.into_iter().skip(1));
    assert_eq!(entries(&latest), expected, "each force's latest period");
    check_processed_exactly_once(&bucket.store).await;
}

#[tokio::test]
async fn an_analysis_reads_two_series_and_no_metrics_file() {
    let bucket = TestBucket::new();
    for period in ["2019-09", "2019-10", "2019-11", "2019-12"] {
        for force in ["kent", "essex", "durham"] {
            upload(&bucket, force, period, "r.csv").await;
        }
    }
    bucket.run().await;
    for force in ["kent", "essex", "durham"] {
        upload(&bucket, force, "2020-01", "r.csv").await;
    }
    let (store, service) = bucket.counted_service();
    let outcome = service.run_once().await.unwrap();
    assert_eq!(outcome.processed.len(), 3, "{:?}", outcome.failed);
    let reads = store.reads();
    let metrics_read: Vec<_> = reads
        .iter()
        .filter(|(k, _)| k.starts_with("snapshots/stop_search_metrics/"))
        .filter(|(k, _)| !k.contains("period=2020-01"))
        .collect();
    assert!(
        metrics_read.is_empty(),
        "history and peers come from the series: {metrics_read:?}"
    );
    for force in ["kent", "essex", "durham"] {
        assert_eq!(store.reads_of(&series_key("stop_search", force)), 1);
    }
    assert_eq!(store.reads_of(&latest_series_key("stop_search")), 3);
    // So an upload's history of four months and its two peers cost two reads, of the few dozen
    // requests of everything else an upload does (its outputs, state, summary; the run's
    // listings and status table).
    let analysis_reads: usize = reads
        .iter()
        .filter(|(k, _)| k.starts_with("_state/series/"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        analysis_reads,
        2 * 3,
        "{} requests in all for 3 uploads",
        store.requests()
    );
}

#[tokio::test]
async fn a_series_entry_of_another_submission_is_not_used_and_is_put_right() {
    let bucket = TestBucket::new();
    upload(&bucket, "kent", "2019-12", "r.csv").await;
    bucket.run().await;
    let key = series_key("stop_search", "kent");
    let [(_, _, submission)] = <[_; 1]>::try_from(current(&bucket, "kent").await).unwrap();
    // As a series left by a writer that lost a race to a resubmission: the period's entry
    // names another submission, with other counts.
    let mut stale = series(&bucket, &key).await;
    stale.observations[0].submission_id = "0123456789abcdef0123456789abcdef".into();
    stale.observations[0].rows = 999;
    bucket
        .store
        .put(
            &key,
            serde_json::to_vec(&stale).unwrap(),
            PutMode::Overwrite,
        )
        .await
        .unwrap();

    upload(&bucket, "kent", "2020-01", "r.csv").await;
    let (store, service) = bucket.counted_service();
    assert_eq!(service.run_once().await.unwrap().processed.len(), 1);
    assert_eq!(
        store.reads_of(&metrics_of("kent", "2019-12", &submission)),
        1,
        "the current submission's metrics file is read instead"
    );
    let kent = series(&bucket, &key).await;
    assert_eq!(entries(&kent), current(&bucket, "kent").await);
    assert!(kent.observations.iter().all(|o| o.rows == 20), "{kent:?}");
}

#[tokio::test]
async fn without_series_the_analysis_reads_the_metrics_files_and_the_series_are_made() {
    let bucket = TestBucket::new();
    for period in ["2019-10", "2019-11", "2019-12"] {
        upload(&bucket, "kent", period, "r.csv").await;
    }
    upload(&bucket, "essex", "2019-12", "r.csv").await;
    bucket.run().await;
    // As in a bucket processed before the series were kept.
    for key in bucket.keys("_state/series/").await {
        bucket.store.delete(&key).await.unwrap();
    }
    let before = current(&bucket, "kent").await;

    upload(&bucket, "kent", "2020-01", "r.csv").await;
    let (store, service) = bucket.counted_service();
    let outcome = service.run_once().await.unwrap();
    assert_eq!(outcome.processed.len(), 1, "{:?}", outcome.failed);
    for (force, period, submission) in before.iter().chain(current(&bucket, "essex").await.iter()) {
        assert_eq!(
            store.reads_of(&metrics_of(force, period, submission)),
            1,
            "{force} {period}"
        );
    }
    // The history read from the files is in the series now, with the new month.
    let kent = series(&bucket, &series_key("stop_search", "kent")).await;
    assert_eq!(entries(&kent), current(&bucket, "kent").await);
    assert_eq!(kent.observations.len(), 4);
    let latest = series(&bucket, &latest_series_key("stop_search")).await;
    assert_eq!(
        entries(&latest)
            .into_iter()
            .map(|(f, p, _)| (f, p))
            .collect::<Vec<_>>(),
        [("essex", "2019-12"), ("kent", "2020-01")].map(|(f, p)| (f.to_owned(), p.to_owned()))
    );

    // The next upload reads no metrics file.
    upload(&bucket, "kent", "2020-02", "r.csv").await;
    let (store, service) = bucket.counted_service();
    assert_eq!(service.run_once().await.unwrap().processed.len(), 1);
    assert!(
        store
            .reads()
            .keys()
            .all(|k| !k.starts_with("snapshots/stop_search_metrics/")
                || k.contains("period=2020-02")),
        "{:?}",
        store.reads()
    );
}

#[tokio::test]
async fn a_series_of_a_later_format_is_neither_used_nor_overwritten() {
    let bucket = TestBucket::new();
    upload(&bucket, "kent", "2019-12", "r.csv").await;
    bucket.run().await;
    let key = series_key("stop_search", "kent");
    let mut later = series(&bucket, &key).await;
    later.series_version += 1;
    let body = serde_json::to_vec(&later).unwrap();
    bucket
        .store
        .put(&key, body.clone(), PutMode::Overwrite)
        .await
        .unwrap();
    let [(_, _, submission)] = <[_; 1]>::try_from(current(&bucket, "kent").await).unwrap();

    upload(&bucket, "kent", "2020-01", "r.csv").await;
    let (store, service) = bucket.counted_service();
    assert_eq!(service.run_once().await.unwrap().processed.len(), 1);
    assert_eq!(
        store.reads_of(&metrics_of("kent", "2019-12", &submission)),
        1
    );
    assert_eq!(bucket.store.get(&key).await.unwrap().0, body);
}
