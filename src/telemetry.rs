//! The worker's metrics: a small registry of counters, gauges and summaries, rendered in the
//! Prometheus text exposition format (version 0.0.4) for `/metrics`.
//!
//! The scheduler records what happens through the domain methods ([`Metrics::upload_processed`],
//! [`Metrics::run_finished`], ...); the `api` module only reads [`Metrics::render`]. Names follow
//! `force_returns_<noun>_<unit>_total` for counters; README.md says what each one means.
//! Summaries carry `_sum` and `_count` only (no quantiles): rates and means come from those.
//!
//! Every label set of a pipeline's dataset is present from the start (at 0), so a counter's
//! first increment shows as a rise rather than as a new series. The S3 client's counters
//! ([`Metrics`] is an [`S3Observer`]) are labelled by operation and appear with their first
//! event: there are too many operations and reasons to list them all at 0.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::finding::Severity;
use crate::model::Decision;
use crate::pipeline::SubmissionSummary;
use crate::store::{RetryReason, S3Observer};

use crate::layout::UNROUTED;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Summary,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Summary => "summary",
        }
    }
}

/// One metric: a name, its label names and a value per label set. A summary keeps its sum in
/// `values` and its count in `counts`.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, f64>>,
    counts: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl Family {
    fn new(
        name: &'static str,
        kind: Kind,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Family {
        Family {
            name,
            help,
            kind,
            labels,
            values: Mutex::new(BTreeMap::new()),
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    fn key(&self, labels: &[&str]) -> Vec<String> {
        debug_assert_eq!(labels.len(), self.labels.len(), "labels of {}", self.name);
        labels.iter().map(|l| (*l).to_owned()).collect()
    }

    fn add(&self, labels: &[&str], delta: f64) {
        *lock(&self.values).entry(self.key(labels)).or_default() += delta;
    }

    fn set(&self, labels: &[&str], value: f64) {
        lock(&self.values).insert(self.key(labels), value);
    }

    fn observe(&self, labels: &[&str], value: f64) {
        self.add(labels, value);
        *lock(&self.counts).entry(self.key(labels)).or_default() += 1;
    }

    /// Makes a label set present at 0 without changing it if it is already there.
    fn touch(&self, labels: &[&str]) {
        lock(&self.values).entry(self.key(labels)).or_default();
        if self.kind == Kind::Summary {
            lock(&self.counts).entry(self.key(labels)).or_default();
        }
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind.as_str());
        let values = lock(&self.values);
        let counts = lock(&self.counts);
        for (key, value) in values.iter() {
            let labels = render_labels(self.labels, key);
            if self.kind == Kind::Summary {
                let count = counts.get(key).copied().unwrap_or_default();
                let _ = writeln!(out, "{}_sum{labels} {value}", self.name);
                let _ = writeln!(out, "{}_count{labels} {count}", self.name);
            } else {
                let _ = writeln!(out, "{}{labels} {value}", self.name);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn render_labels(names: &[&str], values: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", pairs.join(","))
}

/// Escapes a label value as the exposition format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// How a scheduled run of a pipeline ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunResult {
    /// Every upload found was processed (or held by another worker).
    Ok,
    /// The listing failed, or some uploads failed and will be retried.
    Failed,
    /// Shutdown stopped the run before it had taken every upload.
    Interrupted,
}

impl RunResult {
    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Ok => "ok",
            RunResult::Failed => "failed",
            RunResult::Interrupted => "interrupted",
        }
    }
}

/// The worker's metrics.
#[derive(Debug)]
pub struct Metrics {
    build_info: Family,
    uploads_processed: Family,
    uploads_failed: Family,
    uploads_skipped: Family,
    rows_read: Family,
    rows_accepted: Family,
    findings: Family,
    processing_seconds: Family,
    runs: Family,
    last_success: Family,
    backlog: Family,
    in_flight: Family,
    s3_retries: Family,
    s3_failures: Family,
}

impl Metrics {
    /// A registry with every series of `datasets` present at 0.
    pub fn new<'a>(datasets: impl IntoIterator<Item = &'a str>) -> Metrics {
        let m = Metrics {
            build_info: Family::new(
                "force_returns_build_info",
                Kind::Gauge,
                &["version"],
                "Always 1; the version label says which build is running.",
            ),
            uploads_processed: Family::new(
                "force_returns_uploads_processed_total",
                Kind::Counter,
                &["dataset", "decision"],
                "Uploads processed to a decision, by dataset and decision.",
            ),
            uploads_failed: Family::new(
                "force_returns_uploads_failed_total",
                Kind::Counter,
                &["dataset"],
                "Uploads not processed because of a failure outside the data (store, disk); each is retried on the next run.",
            ),
            uploads_skipped: Family::new(
                "force_returns_uploads_skipped_total",
                Kind::Counter,
                &["dataset"],
                "Uploads left to another worker that held a live claim or had already finished them.",
            ),
            rows_read: Family::new(
                "force_returns_rows_read_total",
                Kind::Counter,
                &["dataset"],
                "Records read from processed uploads.",
            ),
            rows_accepted: Family::new(
                "force_returns_rows_accepted_total",
                Kind::Counter,
                &["dataset"],
                "Rows written to snapshots.",
            ),
            findings: Family::new(
                "force_returns_findings_total",
                Kind::Counter,
                &["dataset", "severity", "code"],
                "Findings reported to forces, by severity and code (docs/findings.md).",
            ),
            processing_seconds: Family::new(
                "force_returns_upload_processing_seconds",
                Kind::Summary,
                &["dataset"],
                "Wall-clock seconds from claim to done-marker per processed upload.",
            ),
            runs: Family::new(
                "force_returns_runs_total",
                Kind::Counter,
                &["dataset", "outcome"],
                "Scheduled runs of each pipeline, by outcome (ok, failed, interrupted).",
            ),
            last_success: Family::new(
                "force_returns_last_successful_run_timestamp_seconds",
                Kind::Gauge,
                &["dataset"],
                "Unix time at which the pipeline's last successful run ended.",
            ),
            backlog: Family::new(
                "force_returns_backlog_uploads",
                Kind::Gauge,
                &["dataset"],
                "Uploads waiting: found new by the dataset's latest run and not yet finished by it.",
            ),
            in_flight: Family::new(
                "force_returns_uploads_in_flight",
                Kind::Gauge,
                &[],
                "Uploads being processed right now.",
            ),
            s3_retries: Family::new(
                "force_returns_s3_retries_total",
                Kind::Counter,
                &["operation", "reason"],
                "S3 requests sent again after a failed attempt, by operation and reason (throttled, server_error, timeout, connection, body, other).",
            ),
            s3_failures: Family::new(
                "force_returns_s3_requests_failed_total",
                Kind::Counter,
                &["operation"],
                "S3 requests the bucket failed after every retry (no answer, 5xx, throttling, refused credentials).",
            ),
        };
        m.build_info.set(&[env!("CARGO_PKG_VERSION")], 1.0);
        m.in_flight.touch(&[]);
        for dataset in datasets.into_iter().chain([UNROUTED]) {
            for decision in [
                Decision::Accepted,
                Decision::AcceptedWithWarnings,
                Decision::Rejected,
            ] {
                m.uploads_processed.touch(&[dataset, decision.as_str()]);
            }
            for family in [
                &m.uploads_failed,
                &m.uploads_skipped,
                &m.rows_read,
                &m.rows_accepted,
                &m.processing_seconds,
                &m.backlog,
            ] {
                family.touch(&[dataset]);
            }
            if dataset != UNROUTED {
                for outcome in [RunResult::Ok, RunResult::Failed, RunResult::Interrupted] {
                    m.runs.touch(&[dataset, outcome.as_str()]);
                }
            }
        }
        m
    }

    /// An upload reached a decision in `seconds`.
    pub fn upload_processed(&self, summary: &SubmissionSummary, seconds: f64) {
        let dataset = summary
            .received
            .place
            .as_ref()
            .map_or(UNROUTED, |p| p.dataset.as_str());
        self.uploads_processed
            .add(&[dataset, summary.decision.as_str()], 1.0);
        self.rows_read.add(&[dataset], summary.rows_read as f64);
        self.rows_accepted
            .add(&[dataset], summary.rows_accepted as f64);
        for (code, count) in &summary.codes {
            let severity = summary
                .severities
                .get(code)
                .map_or("unknown", |s| Severity::as_str(*s));
            self.findings
                .add(&[dataset, severity, code.as_str()], *count as f64);
        }
        self.processing_seconds.observe(&[dataset], seconds);
    }

    /// An upload failed for a reason outside the data.
    pub fn upload_failed(&self, dataset: &str) {
        self.uploads_failed.add(&[dataset], 1.0);
    }

    /// An upload was left to another worker.
    pub fn upload_skipped(&self, dataset: &str) {
        self.uploads_skipped.add(&[dataset], 1.0);
    }

    /// A pipeline's run ended at `at`.
    pub fn run_finished(&self, dataset: &str, result: RunResult, at: DateTime<Utc>) {
        self.runs.add(&[dataset, result.as_str()], 1.0);
        if result == RunResult::Ok {
            self.last_success
                .set(&[dataset], at.timestamp_millis() as f64 / 1000.0);
        }
    }

    /// Sets the uploads waiting in `dataset`.
    pub fn set_backlog(&self, dataset: &str, uploads: usize) {
        self.backlog.set(&[dataset], uploads as f64);
    }

    /// One upload of `dataset` left the backlog.
    pub fn backlog_done(&self, dataset: &str) {
        let mut values = lock(&self.backlog.values);
        let value = values.entry(vec![dataset.to_owned()]).or_default();
        *value = (*value - 1.0).max(0.0);
    }

    /// Counts an upload in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.add(&[], 1.0);
        InFlight(self)
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for family in [
            &self.build_info,
            &self.uploads_processed,
            &self.uploads_failed,
            &self.uploads_skipped,
            &self.rows_read,
            &self.rows_accepted,
            &self.findings,
            &self.processing_seconds,
            &self.runs,
            &self.last_success,
            &self.backlog,
            &self.in_flight,
            &self.s3_retries,
            &self.s3_failures,
        ] {
            family.render(&mut out);
        }
        out
    }
}

impl S3Observer for Metrics {
    fn retried(&self, operation: &str, reason: RetryReason) {
        self.s3_retries.add(&[operation, reason.as_str()], 1.0);
    }

    fn finished(&self, operation: &str, answered: bool) {
        if !answered {
            self.s3_failures.add(&[operation], 1.0);
        }
    }
}

/// Holds one upload in the in-flight gauge (see [`Metrics::in_flight`]).
#[derive(Debug)]
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.add(&[], -1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::Outputs;
    use crate::model::{Place, Received, Upload};

    fn summary(decision: Decision, codes: &[(&str, Severity, u64)]) -> SubmissionSummary {
        SubmissionSummary {
            received: Received {
                upload: Upload {
                    source_key: "incoming/kent/stop_search/2020-01/a.csv".into(),
                    etag: "\"e\"".into(),
                    sha256: String::new(),
                    submission_id: "abc".into(),
                    uploaded_at: "2020-02-01T00:00:00Z".parse().unwrap(),
                },
                place: Some(Place {
                    force_id: "kent".into(),
                    dataset: "stop_search".into(),
                    period: "2020-01".parse().unwrap(),
                }),
                force_folder: None,
            },
            decision,
            rows_read: 10,
            rows_accepted: 9,
            codes: codes
                .iter()
                .map(|(c, _, n)| ((*c).to_owned(), *n))
                .collect(),
            severities: codes
                .iter()
                .map(|(c, s, _)| ((*c).to_owned(), *s))
                .collect(),
            outputs: Outputs::default(),
            superseded: None,
        }
    }

    /// The value of one exposition line, found by its name and labels as written.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn series_start_at_zero_and_count_uploads_rows_and_findings() {
        let m = Metrics::new(["stop_search"]);
        let before = m.render();
        assert_eq!(
            value(
                &before,
                r#"force_returns_uploads_processed_total{dataset="stop_search",decision="accepted"}"#
            ),
            Some(0.0)
        );
        assert_eq!(
            value(
                &before,
                r#"force_returns_runs_total{dataset="stop_search",outcome="ok"}"#
            ),
            Some(0.0)
        );
        m.upload_processed(
            &summary(
                Decision::AcceptedWithWarnings,
                &[("blank_rate", Severity::Warning, 2)],
            ),
            1.5,
        );
        m.upload_processed(&summary(Decision::Accepted, &[]), 0.5);
        let text = m.render();
        for (series, expected) in [
            (
                r#"force_returns_uploads_processed_total{dataset="stop_search",decision="accepted"}"#,
                1.0,
            ),
            (
                r#"force_returns_uploads_processed_total{dataset="stop_search",decision="accepted_with_warnings"}"#,
                1.0,
            ),
            (
                r#"force_returns_rows_read_total{dataset="stop_search"}"#,
                20.0,
            ),
            (
                r#"force_returns_rows_accepted_total{dataset="stop_search"}"#,
                18.0,
            ),
            (
                r#"force_returns_findings_total{dataset="stop_search",severity="warning",code="blank_rate"}"#,
                2.0,
            ),
            (
                r#"force_returns_upload_processing_seconds_sum{dataset="stop_search"}"#,
                2.0,
            ),
            (
                r#"force_returns_upload_processing_seconds_count{dataset="stop_search"}"#,
                2.0,
            ),
        ] {
            assert_eq!(value(&text, series), Some(expected), "{series} in\n{text}");
        }
        assert!(text.contains("# TYPE force_returns_upload_processing_seconds summary\n"));
        assert!(text.contains("# TYPE force_returns_uploads_processed_total counter\n"));
    }

    #[test]
    fn runs_backlog_and_in_flight_gauges() {
        let m = Metrics::new(["stop_search"]);
        let at: DateTime<Utc> = "2020-03-05T09:00:00.250Z".parse().unwrap();
        m.run_finished("stop_search", RunResult::Failed, at);
        let text = m.render();
        assert!(
            !text.contains("force_returns_last_successful_run_timestamp_seconds{"),
            "{text}"
        );
        m.run_finished("stop_search", RunResult::Ok, at);
        m.set_backlog("stop_search", 2);
        m.backlog_done("stop_search");
        let guard = m.in_flight();
        let text = m.render();
        assert_eq!(
            value(
                &text,
                r#"force_returns_last_successful_run_timestamp_seconds{dataset="stop_search"}"#
            ),
            Some(1_583_398_800.25)
        );
        assert_eq!(
            value(
                &text,
                r#"force_returns_backlog_uploads{dataset="stop_search"}"#
            ),
            Some(1.0)
        );
        assert_eq!(value(&text, "force_returns_uploads_in_flight"), Some(1.0));
        drop(guard);
        m.backlog_done("stop_search");
        m.backlog_done("stop_search");
        let text = m.render();
        assert_eq!(value(&text, "force_returns_uploads_in_flight"), Some(0.0));
        assert_eq!(
            value(
                &text,
                r#"force_returns_backlog_uploads{dataset="stop_search"}"#
            ),
            Some(0.0),
            "the backlog never goes below zero"
        );
    }

    #[test]
    fn s3_retries_are_counted_by_operation_and_reason_and_failures_by_operation() {
        let m = Metrics::new(["stop_search"]);
        assert!(
            !m.render().contains("force_returns_s3_retries_total{"),
            "no series before the first retry"
        );
        m.retried("GetObject", RetryReason::Body);
        m.retried("GetObject", RetryReason::Body);
        m.retried("PutObject", RetryReason::Throttled);
        m.finished("GetObject", true);
        m.finished("ListObjectsV2", false);
        let text = m.render();
        for (series, expected) in [
            (
                r#"force_returns_s3_retries_total{operation="GetObject",reason="body"}"#,
                2.0,
            ),
            (
                r#"force_returns_s3_retries_total{operation="PutObject",reason="throttled"}"#,
                1.0,
            ),
            (
                r#"force_returns_s3_requests_failed_total{operation="ListObjectsV2"}"#,
                1.0,
            ),
        ] {
            assert_eq!(value(&text, series), Some(expected), "{series} in\n{text}");
        }
        assert_eq!(
            value(
                &text,
                r#"force_returns_s3_requests_failed_total{operation="GetObject"}"#
            ),
            None,
            "an answered request is no failure"
        );
        assert!(text.contains("# TYPE force_returns_s3_retries_total counter\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
        let m = Metrics::new(["odd\"name"]);
        assert!(
            m.render()
                .contains(r#"force_returns_rows_read_total{dataset="odd\"name"} 0"#)
        );
    }
}
