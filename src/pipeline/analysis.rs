//! The analysis step of a run: the IO around [`crate::analyze`].
//!
//! For each upload with a valid location, while it downloads and is checked, the force's history
//! (its current accepted submissions of earlier periods, from the dataset manifest's parts of
//! those years) and the other forces' latest periods are read: from the force's series and the
//! dataset's latest series (two requests, `model::series`) where they hold exactly the
//! submission the manifest holds current, and otherwise from their metrics files, sixteen at a
//! time, through a cache that lives as long as the service. While the check streams
//! accepted batches, an [`ObservationsBuilder`] observes them. After
//! the check, [`finish`] runs the detection, turns every gap and anomaly into a finding of the
//! upload's report (and its CSV and findings table), and adjusts the decision: a warning turns
//! `accepted` into `accepted_with_warnings`; an anomaly code the pipeline raised to `error`
//! rejects.
//!
//! Then the service writes, with deterministic keys:
//!
//! - `snapshots/<dataset>_metrics/period=<p>/force=<f>/<submission>.parquet`: the derived
//!   metrics of an accepted submission (current ones are listed by the dataset's manifest);
//! - `quality/anomalies/dataset=<d>/<submission>.parquet`: its gaps and anomalies;
//! - (through [`crate::state`], under the dataset's commit lock) `_state/receipts/<dataset>/<year>.json`:
//!   every processed upload's force, period, decision and arrival time, from which the status
//!   table is computed;
//! - (through [`crate::state`], after the commit, compare-and-swap) the force's series and the
//!   latest series: the accepted upload's observations, and those its analysis had to read from
//!   metrics files, so that the next analysis finds them in the series;
//! - `feedback/<force>/summary-<YYYY-MM>.{json,html}`: the force's monthly summary;
//! - `quality/status/dataset=<d>/status.parquet`: the status of every expected return, after
//!   each run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

use super::{CheckOutcome, PipelineError, Service, order_findings, rfc3339, step};
use crate::analyze::metrics::{Rates, metric_rows, observations_from_rows};
use crate::analyze::reconcile::{Held, computed_from, reconcile};
use crate::analyze::status::{self, StatusRow};
use crate::analyze::summary::{self, DatasetSummary, ForceSummary};
use crate::analyze::tables::{
    MetricsHeader, anomalies_parquet, metrics_parquet, read_anomalies, read_metrics, status_parquet,
};
use crate::analyze::{
    Anomaly, Input, Labels, MetricRow, Observations, ObservationsBuilder, detect, usual_figures,
    usual_records,
};
use crate::catalogue::MetricCatalogue;
use crate::config::Pipeline;
use crate::finding::{Code, FindingLog, FindingSink, Severity};
use crate::layout::{
    Location, anomalies_key, feedback_base, latest_series_key, metrics_key, series_key, status_key,
    summary_key,
};
use crate::model::Decision;
use crate::model::observe::ObserveSettings;
use crate::model::{ManifestEntry, Receipt, Receipts};
use crate::period::{Cadence, Period};
use crate::state::{SeriesObject, Years};
use crate::store::{PutMode, StoreError};

/// Years of a force's history read for its analysis (48 months, 16 quarters...); a force's
/// series keeps as many years of periods before its latest.
pub const HISTORY_YEARS: usize = 4;
/// Metrics files read at once for an upload's history and peers.
const CONCURRENT_READS: usize = 16;
/// Metrics kept in memory; past this the cache starts again.
const CACHE_ENTRIES: usize = 8192;

/// What the service keeps between uploads: the observations of metrics files read, by key, and the
/// keys found missing (`None`). A manifest entry is committed only after its metrics file is
/// written, so a current submission without one (processed before metrics were written, or
/// by a pipeline without the analysis) never gains one: it is asked for once.
#[derive(Default)]
pub(super) struct Cache {
    observations: Mutex<HashMap<String, Option<Arc<Observations>>>>,
}

/// What an upload's analysis read of its dataset's series, kept to bring them up to date after
/// the commit.
pub(super) struct SeriesRead {
    /// The force's series.
    own: SeriesObject,
    /// Every force's latest period.
    latest: SeriesObject,
    /// Observations of the force's history that its series lacked, read from metrics files.
    history: Vec<Arc<Observations>>,
    /// Observations of peers that the latest series lacked, read from metrics files.
    peers: Vec<Arc<Observations>>,
}

/// The history and peers an upload is analysed against, and what it is reconciled with.
pub(super) struct Job {
    history: Vec<Observations>,
    peers: Vec<Observations>,
    reconcile: Vec<Reconcile>,
}

/// One reconciliation an upload takes part in: an aggregate return of the force (this upload,
/// or one held) and the record-level submissions of one dataset inside its period (other than
/// this upload's).
pub(super) struct Reconcile {
    /// The aggregate return's dataset.
    aggregate_dataset: String,
    /// Its title.
    aggregate_title: String,
    /// Its catalogue.
    catalogue: Arc<MetricCatalogue>,
    /// The aggregate return's observations: `None` when it is this upload.
    aggregate: Option<Observations>,
    /// The record-level dataset.
    source: String,
    /// Its periods inside the aggregate return's period.
    expected: Vec<Period>,
    /// The force's current submissions of those periods, but for this upload's.
    held: Vec<Observations>,
}

/// What the analysis of an accepted upload produced.
pub(super) struct Analysed {
    /// Its observations.
    pub(super) observations: Observations,
    /// Its gaps and anomalies, with the pipeline's severities.
    pub(super) anomalies: Vec<Anomaly>,
    /// Anomalies its analysis found in other forces' returns (another force's file sent as
    /// this one): added to those returns' anomalies once this upload is committed.
    pub(super) notices: Vec<Anomaly>,
    /// Findings for the force's return of another dataset (the aggregate return this upload's
    /// records reconcile with), by that dataset: they replace its earlier reconciliation.
    pub(super) elsewhere: Vec<(String, Anomaly)>,
}

/// An observations builder for an upload with a valid location.
pub(super) fn builder(
    pipeline: &Pipeline,
    force: &str,
    period: &str,
    submission: &str,
) -> Option<ObservationsBuilder> {
    let period = pipeline.period.cadence.parse(period).ok()?;
    Some(ObservationsBuilder::new(
        &pipeline.schema,
        &pipeline.observe,
        force,
        period,
        submission,
    ))
}

/// After the check: observations, detection, findings and the final decision. Nothing is analysed
/// for a rejected upload.
pub(super) fn finish(
    pipeline: &Pipeline,
    job: Option<&Job>,
    builder: Option<ObservationsBuilder>,
    outcome: &mut CheckOutcome,
    sink: &mut dyn FindingSink,
) -> Result<Option<Analysed>, PipelineError> {
    let Some(builder) = builder else {
        return Ok(None);
    };
    if outcome.verdict.decision == Decision::Rejected {
        return Ok(None);
    }
    let mut observations = builder.finish();
    observations.figures.clone_from(&outcome.verdict.figures);
    if let Some(job) = job {
        observations.usual_rows = usual_records(
            &observations,
            &job.history,
            pipeline.anomalies.baseline_months,
        );
        observations.usual_figures = usual_figures(
            &observations,
            &job.history,
            pipeline.anomalies.figures.baseline_periods,
        );
    }
    let found = match job {
        Some(job) if pipeline.anomalies.enabled => {
            let labels = Labels::new(&pipeline.schema, &pipeline.observe);
            detect(&Input {
                settings: &pipeline.anomalies,
                current: &observations,
                history: &job.history,
                peers: &job.peers,
                labels: &labels,
                observe: &pipeline.observe,
                catalogue: pipeline.table.as_ref().map(|t| &*t.catalogue),
            })
        }
        _ => Vec::new(),
    };
    let (mut anomalies, mut notices): (Vec<Anomaly>, Vec<Anomaly>) = found
        .into_iter()
        .partition(|a| a.submission_id == observations.submission_id);
    let mut elsewhere = Vec::new();
    for r in job.map_or(&[][..], |j| &j.reconcile[..]) {
        let mut held: Vec<&Observations> = r.held.iter().collect();
        match &r.aggregate {
            // This upload is the aggregate return.
            None => anomalies.extend(reconcile(
                &r.catalogue,
                &observations,
                Held {
                    aggregate: &r.aggregate_title,
                    dataset: &r.source,
                    expected: &r.expected,
                    held: &held,
                },
            )),
            // This upload is one of the records an aggregate return held is reconciled with.
            Some(aggregate) => {
                if observations.period.is_some_and(|p| r.expected.contains(&p)) {
                    held.push(&observations);
                }
                let found = reconcile(
                    &r.catalogue,
                    aggregate,
                    Held {
                        aggregate: &r.aggregate_title,
                        dataset: &r.source,
                        expected: &r.expected,
                        held: &held,
                    },
                );
                if !found.iter().any(|a| a.code == Code::ReconciliationPending)
                    && let Some(period) = observations.period
                {
                    anomalies.extend(found.iter().map(|a| Anomaly {
                        severity: Severity::Info,
                        submission_id: observations.submission_id.clone(),
                        period,
                        message: format!("with this return's records: {}", a.message),
                        ..a.clone()
                    }));
                }
                elsewhere.extend(found.into_iter().map(|a| (r.aggregate_dataset.clone(), a)));
            }
        }
    }
    for a in &mut notices {
        if let Some(s) = pipeline.severity_overrides.get(&a.code) {
            a.severity = *s;
        }
    }
    if anomalies.is_empty() {
        return Ok(Some(Analysed {
            observations,
            anomalies,
            notices,
            elsewhere,
        }));
    }
    let mut log = FindingLog::new(
        pipeline.decision.examples_per_code,
        pipeline.severity_overrides.clone(),
        sink,
    )
    .listing_per_code(pipeline.decision.findings_per_code);
    for a in &mut anomalies {
        // The pipeline's override of a code wins; otherwise the detector's severity stands (the
        // code's default, or warning for a lasting difference from the other forces).
        if let Some(s) = pipeline.severity_overrides.get(&a.code) {
            a.severity = *s;
        }
        let header = a.column.as_deref().and_then(|c| {
            let i = pipeline
                .schema
                .properties
                .iter()
                .position(|p| p.name == c)?;
            Some(match &outcome.header {
                Some(h) => h.column_name(&pipeline.schema, i).to_owned(),
                None => c.to_owned(),
            })
        });
        log.push(a.finding(header.as_deref()));
    }
    let added = log.finish()?;
    let mut findings = std::mem::take(&mut outcome.findings);
    findings.extend(added);
    outcome.findings = order_findings(findings);
    let worst = anomalies.iter().map(|a| a.severity).max();
    outcome.verdict.decision = match (outcome.verdict.decision, worst) {
        (_, Some(Severity::Error)) => Decision::Rejected,
        (Decision::Accepted, Some(Severity::Warning)) => Decision::AcceptedWithWarnings,
        (d, _) => d,
    };
    Ok(Some(Analysed {
        observations,
        anomalies,
        notices,
        elsewhere,
    }))
}

/// The earliest period received, as a period of the dataset's `cadence`.
fn earliest(receipts: &Receipts, cadence: Cadence) -> Option<Period> {
    let first = receipts.receipts.iter().map(Receipt::period).min()?;
    Some(cadence.containing(first.first_day()))
}

/// Whether a code is one of reconciliation's, which a later reconciliation replaces.
fn is_reconciliation(code: Code) -> bool {
    matches!(
        code,
        Code::ReconciliationDiffers | Code::ReconciliationAgrees | Code::ReconciliationPending
    )
}

/// The periods of `cadence` inside `outer`, in order (the twelve months of a financial year).
fn periods_within(cadence: Cadence, outer: Period) -> Vec<Period> {
    let mut out = Vec::new();
    let mut p = cadence.containing(outer.first_day());
    while p.first_day() <= outer.last_day() && p.first_day() >= outer.first_day() {
        out.push(p);
        p = p.next();
    }
    out
}

fn periods_before(p: Period, n: usize) -> Period {
    (0..n).fold(p, |q, _| q.prev())
}

impl Service {
    /// The observations of current submissions, from their metrics files, in the order given
    /// (`None` for one without, as in a bucket processed before metrics were written). Those
    /// not in the cache are read [`CONCURRENT_READS`] at a time: each is a request of its own.
    async fn observations_of(
        &self,
        dataset: &str,
        entries: &[&ManifestEntry],
    ) -> Result<Vec<Option<Arc<Observations>>>, PipelineError> {
        let pipeline = self.project.pipeline(dataset);
        let cadence = pipeline.map(|p| p.period.cadence);
        let observe = pipeline.map(|p| &p.observe);
        let aggregate = pipeline.is_some_and(|p| p.table.is_some());
        let mut out = vec![None; entries.len()];
        let mut wanted = Vec::new();
        {
            let cache = self
                .analysis
                .observations
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (i, e) in entries.iter().enumerate() {
                let key = metrics_key(dataset, e.period(), e.force_id(), e.submission_id());
                if let Some(hit) = cache.get(&key) {
                    out[i].clone_from(hit);
                    continue;
                }
                // An entry of a period the dataset's cadence does not have is not analysed.
                if cadence.is_some_and(|c| e.period().is_of(c)) {
                    wanted.push((i, key, e.period()));
                }
            }
        }
        let mut reads = tokio::task::JoinSet::new();
        let mut wanted = wanted.into_iter();
        loop {
            while reads.len() < CONCURRENT_READS {
                let Some((i, key, period)) = wanted.next() else {
                    break;
                };
                let store = Arc::clone(&self.store);
                reads.spawn(async move {
                    let read = store.get(&key).await;
                    (i, key, period, read)
                });
            }
            let Some(done) = reads.join_next().await else {
                break;
            };
            let (i, key, period, read) = done.map_err(|e| PipelineError::Task(e.to_string()))?;
            let observed = match read {
                Ok((bytes, _)) => {
                    let e = entries[i];
                    let default = ObserveSettings::default();
                    Some(Arc::new(observations_from_rows(
                        e.force_id(),
                        period,
                        e.submission_id(),
                        observe.unwrap_or(&default),
                        aggregate,
                        &read_metrics(bytes)?,
                    )))
                }
                Err(StoreError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            };
            let mut cache = self
                .analysis
                .observations
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(key, observed.clone());
            out[i] = observed;
        }
        Ok(out)
    }

    /// Reads what an upload is analysed against: the manifest's current submissions of the
    /// force's history and its peers' latest periods, their observations from the force's
    /// series and the latest series where those hold exactly that submission, and from the
    /// metrics files otherwise. The series are kept, with what the metrics files gave, for
    /// [`Service::update_series`] after the commit.
    pub(super) async fn analysis_job(
        &self,
        pipeline: &Pipeline,
        location: &Location,
    ) -> Result<Option<(Job, Option<SeriesRead>)>, PipelineError> {
        let reconcile = self.reconciliation_reads(pipeline, location).await?;
        if !pipeline.anomalies.enabled {
            return Ok((!reconcile.is_empty()).then(|| {
                (
                    Job {
                        history: Vec::new(),
                        peers: Vec::new(),
                        reconcile,
                    },
                    None,
                )
            }));
        }
        let dataset = &pipeline.dataset;
        let period = location.period;
        let cadence = pipeline.period.cadence;
        let oldest = periods_before(period, HISTORY_YEARS * cadence.per_year());
        let peer_cutoff = period
            .first_day()
            .checked_sub_months(chrono::Months::new(pipeline.anomalies.peers.max_age_months))
            .unwrap_or(chrono::NaiveDate::MIN);
        let oldest_peer = cadence.containing(peer_cutoff);
        // Only the manifest's parts of the years the history and the peers fall in; the
        // series at once, since their keys do not depend on it.
        let years = oldest.min(oldest_peer).year()..=period.year();
        let (own_key, latest_key) = (
            series_key(dataset, &location.force_id),
            latest_series_key(dataset),
        );
        let (manifest, own, latest) = tokio::try_join!(
            self.state.manifest(dataset, Years::Range(years)),
            self.state.series(&own_key),
            self.state.series(&latest_key),
        )?;
        let mut read = SeriesRead {
            own,
            latest,
            history: Vec::new(),
            peers: Vec::new(),
        };
        let Some(manifest) = manifest else {
            return Ok(Some((
                Job {
                    history: Vec::new(),
                    peers: Vec::new(),
                    reconcile,
                },
                Some(read),
            )));
        };
        let this = period;
        let mut history = Vec::new();
        let mut latest: BTreeMap<&str, &ManifestEntry> = BTreeMap::new();
        for e in &manifest.current {
            if e.force_id() == location.force_id {
                if e.period() < this && e.period() >= oldest {
                    history.push(e);
                }
            } else if e.period() <= this && e.period() >= oldest_peer {
                let slot = latest.entry(e.force_id()).or_insert(e);
                if e.period() > slot.period() {
                    *slot = e;
                }
            }
        }
        let own = history.len();
        let entries: Vec<&ManifestEntry> =
            history.into_iter().chain(latest.into_values()).collect();
        let mut observed: Vec<Option<Arc<Observations>>> = vec![None; entries.len()];
        let mut missing = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let series = if i < own {
                read.own.series()
            } else {
                read.latest.series()
            };
            let held = e
                .period()
                .is_of(cadence)
                .then(|| series?.find(e.force_id(), e.period(), e.submission_id()))
                .flatten();
            match held {
                Some(o) => observed[i] = Some(Arc::new(o.clone())),
                None => missing.push(i),
            }
        }
        let missing_entries: Vec<&ManifestEntry> = missing.iter().map(|&i| entries[i]).collect();
        let from_files = self.observations_of(dataset, &missing_entries).await?;
        for (i, o) in missing.into_iter().zip(from_files) {
            if let Some(o) = &o {
                let repairs = if i < own {
                    &mut read.history
                } else {
                    &mut read.peers
                };
                repairs.push(Arc::clone(o));
            }
            observed[i] = o;
        }
        let (history, peers) = observed.split_at(own);
        let job = Job {
            history: history.iter().flatten().map(|c| (**c).clone()).collect(),
            peers: peers.iter().flatten().map(|c| (**c).clone()).collect(),
            reconcile,
        };
        Ok(Some((job, Some(read))))
    }

    /// What an upload is reconciled with ([`Reconcile`]): for an aggregate return, the
    /// force's submissions of each record-level dataset its catalogue computes counts from;
    /// for a record-level return, the force's aggregate return held for the period containing
    /// it, of each pipeline whose catalogue computes counts from it, and the force's other
    /// submissions inside that period.
    async fn reconciliation_reads(
        &self,
        pipeline: &Pipeline,
        location: &Location,
    ) -> Result<Vec<Reconcile>, PipelineError> {
        let force = location.force_id.as_str();
        let mut out = Vec::new();
        if let Some(table) = &pipeline.table {
            let sources: BTreeSet<&str> = table
                .catalogue
                .metrics
                .iter()
                .filter_map(|m| m.computed_from.as_ref())
                .map(|c| c.dataset.as_str())
                .collect();
            for source in sources {
                let Some(records) = self.project.pipeline(source) else {
                    continue;
                };
                let expected = periods_within(records.period.cadence, location.period);
                let held = self.held(source, force, &expected, None).await?;
                out.push(Reconcile {
                    aggregate_dataset: pipeline.dataset.clone(),
                    aggregate_title: pipeline.title.clone(),
                    catalogue: Arc::clone(&table.catalogue),
                    aggregate: None,
                    source: source.to_owned(),
                    expected,
                    held,
                });
            }
        }
        for other in self.project.pipelines.values() {
            let Some(table) = &other.table else {
                continue;
            };
            if computed_from(&table.catalogue, &pipeline.dataset)
                .next()
                .is_none()
            {
                continue;
            }
            let period = other.period.cadence.containing(location.period.first_day());
            let Some(aggregate) = self
                .held(&other.dataset, force, &[period], None)
                .await?
                .into_iter()
                .next()
            else {
                continue;
            };
            let expected = periods_within(pipeline.period.cadence, period);
            let held = self
                .held(&pipeline.dataset, force, &expected, Some(location.period))
                .await?;
            out.push(Reconcile {
                aggregate_dataset: other.dataset.clone(),
                aggregate_title: other.title.clone(),
                catalogue: Arc::clone(&table.catalogue),
                aggregate: Some(aggregate),
                source: pipeline.dataset.clone(),
                expected,
                held,
            });
        }
        Ok(out)
    }

    /// The force's current submissions of `dataset` for `periods` (but `except`): from its
    /// series where it holds them, else from their metrics files.
    async fn held(
        &self,
        dataset: &str,
        force: &str,
        periods: &[Period],
        except: Option<Period>,
    ) -> Result<Vec<Observations>, PipelineError> {
        let (Some(first), Some(last)) = (periods.first(), periods.last()) else {
            return Ok(Vec::new());
        };
        // The manifest first: most often nothing is held, and the series is not read.
        let Some(manifest) = self
            .state
            .manifest(dataset, Years::Range(first.year()..=last.year()))
            .await?
        else {
            return Ok(Vec::new());
        };
        let entries: Vec<&ManifestEntry> = manifest
            .current
            .iter()
            .filter(|e| {
                e.force_id() == force && periods.contains(&e.period()) && Some(e.period()) != except
            })
            .collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let series = self.state.series(&series_key(dataset, force)).await?;
        let mut out = Vec::new();
        let mut missing = Vec::new();
        for e in entries {
            match series
                .series()
                .and_then(|s| s.find(force, e.period(), e.submission_id()))
            {
                Some(o) => out.push(o.clone()),
                None => missing.push(e),
            }
        }
        out.extend(
            self.observations_of(dataset, &missing)
                .await?
                .into_iter()
                .flatten()
                .map(|o| (*o).clone()),
        );
        Ok(out)
    }

    /// After the commit: puts the upload's observations (`current`, when it was accepted) and
    /// those its analysis had to read from metrics files into the force's series and the
    /// latest series, and drops the force's periods older than any analysis reads. A failure
    /// is logged and costs the next analysis only the reads of the metrics files.
    pub(super) async fn update_series(
        &self,
        pipeline: &Pipeline,
        read: SeriesRead,
        current: Option<&Observations>,
    ) {
        let dataset = &pipeline.dataset;
        let window = HISTORY_YEARS * pipeline.period.cadence.per_year();
        let SeriesRead {
            own,
            latest,
            history,
            peers,
        } = read;
        let own = self.state.update_series(dataset, own, |series| {
            let mut changed = false;
            for o in history.iter().map(|o| &**o).chain(current) {
                changed |= series.put(o.clone());
            }
            series.keep_last(window) | changed
        });
        let latest = self.state.update_series(dataset, latest, |series| {
            let mut changed = false;
            for o in peers.iter().map(|o| &**o).chain(current) {
                changed |= series.put_latest(o.clone());
            }
            changed
        });
        let (own, latest) = tokio::join!(own, latest);
        for result in [own, latest] {
            if let Err(e) = result {
                warn!(error = %e, "a series was not updated; the next analysis reads the metrics files it lacks");
            }
        }
        step("series updated");
    }

    /// Writes the metrics (accepted uploads) and the anomalies table of an analysed upload;
    /// returns the metrics key when written.
    pub(super) async fn write_analysis(
        &self,
        pipeline: &Pipeline,
        location: &Location,
        submission: &str,
        analysed: &Analysed,
        accepted: bool,
    ) -> Result<Option<String>, PipelineError> {
        let dataset = &pipeline.dataset;
        let anomalies_key = anomalies_key(dataset, submission);
        let anomalies = self.store.put(
            &anomalies_key,
            anomalies_parquet(dataset, &analysed.anomalies)?,
            PutMode::Overwrite,
        );
        if !accepted {
            anomalies.await?;
            return Ok(None);
        }
        let area = pipeline
            .population
            .as_ref()
            .and_then(|p| p.areas.get(&location.force_id));
        let rates = pipeline.population.as_ref().and_then(|p| {
            Some(Rates {
                area: p.areas.get(&location.force_id)?,
                reference_group: p.reference_group.as_deref(),
            })
        });
        let rows = metric_rows(&analysed.observations, &pipeline.observe, rates);
        let header = MetricsHeader {
            dataset: dataset.clone(),
            force_id: location.force_id.clone(),
            period: location.period,
            submission_id: submission.to_owned(),
            population_source: area
                .and(pipeline.population.as_ref())
                .map(|p| p.source.clone()),
        };
        let key = metrics_key(dataset, location.period, &location.force_id, submission);
        tokio::try_join!(
            anomalies,
            self.store
                .put(&key, metrics_parquet(&header, &rows)?, PutMode::Overwrite),
        )?;
        self.analysis
            .observations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.clone(), Some(Arc::new(analysed.observations.clone())));
        Ok(Some(key))
    }

    /// The status of every expected return of every dataset at `now`: per dataset, its
    /// periods and rows.
    pub async fn status_tables(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, Vec<Period>, Vec<StatusRow>)>, PipelineError> {
        let mut out = Vec::new();
        for pipeline in self.project.pipelines.values() {
            let receipts = self.state.receipts(&pipeline.dataset, Years::All).await?;
            let first = pipeline
                .period
                .first
                .or_else(|| earliest(&receipts, pipeline.period.cadence));
            let Some(first) = first else {
                continue;
            };
            let periods = status::periods(first, now);
            let rows = status::status_table(
                &pipeline.dataset,
                &pipeline.expected_forces,
                &periods,
                &receipts,
                pipeline.period.deadline,
                now,
            );
            out.push((pipeline.dataset.clone(), periods, rows));
        }
        Ok(out)
    }

    /// Writes every dataset's status table as of the clock's now.
    pub(super) async fn write_status_tables(&self) -> Result<(), PipelineError> {
        let now = self.clock.now();
        for (dataset, periods, rows) in self.status_tables(now).await? {
            if periods.is_empty() {
                continue;
            }
            self.store
                .put(
                    &status_key(&dataset),
                    status_parquet(&rows, now)?,
                    PutMode::Overwrite,
                )
                .await?;
            info!(dataset = %dataset, cells = rows.len(), "status table written");
        }
        Ok(())
    }

    /// Writes a force's monthly summary: the status of its returns over the last year of
    /// every dataset, and the gaps, anomalies and headline figures of the month's current
    /// submissions.
    /// Reads of the upload's own dataset (`dataset`) take only the parts of the summary's
    /// year and the year before (and the earliest, for the first period received): it holds
    /// the force's receipt of `period`. Another dataset's receipts are read whole, to learn
    /// whether the force has sent any.
    pub(super) async fn write_summary(
        &self,
        dataset: &str,
        force: &str,
        period: Period,
    ) -> Result<(), PipelineError> {
        let now = self.clock.now();
        let mut datasets = Vec::new();
        for pipeline in self.project.pipelines.values() {
            // A summary is of one period: datasets of another cadence have their own.
            let cadence = pipeline.period.cadence;
            if !period.is_of(cadence) {
                continue;
            }
            let recent_from = periods_before(period, cadence.per_year().max(1) - 1);
            let years = if pipeline.dataset == dataset {
                Years::RangeAndFirst(recent_from.year()..=period.year())
            } else {
                Years::All
            };
            // Read at once: the manifest is wasted only for a dataset the force never sent.
            let (receipts, manifest) = tokio::try_join!(
                self.state.receipts(&pipeline.dataset, years),
                self.state.manifest(
                    &pipeline.dataset,
                    Years::Range(period.year()..=period.year())
                ),
            )?;
            if !receipts.receipts.iter().any(|r| r.force_id() == force) {
                continue;
            }
            let first = pipeline
                .period
                .first
                .or_else(|| earliest(&receipts, cadence))
                .unwrap_or(period)
                .max(recent_from);
            let mut periods = Vec::new();
            let mut p = first;
            while p <= period {
                periods.push(p);
                p = p.next();
            }
            let recent = status::status_table(
                &pipeline.dataset,
                &[force.to_owned()],
                &periods,
                &receipts,
                pipeline.period.deadline,
                now,
            );
            let this = recent.iter().find(|r| r.period == period).cloned();
            let current = manifest.and_then(|m| {
                m.current
                    .into_iter()
                    .find(|e| e.force_id() == force && e.period() == period)
            });
            let ((anomalies, rows), report) = match &current {
                Some(e) => (
                    tokio::try_join!(
                        self.anomalies_of(&pipeline.dataset, e.submission_id()),
                        self.metric_rows_of(&pipeline.dataset, e),
                    )?,
                    Some(format!(
                        "{}.html",
                        feedback_base(force, &pipeline.dataset, period, e.submission_id())
                    )),
                ),
                None => ((Vec::new(), Vec::new()), None),
            };
            datasets.push(DatasetSummary {
                dataset: pipeline.dataset.clone(),
                title: pipeline.title.clone(),
                status: this,
                recent,
                anomalies,
                headlines: summary::headlines(&rows, &pipeline.observe.headlines),
                report,
            });
        }
        let force_name = self
            .project
            .code_lists
            .forces()
            .and_then(|l| l.codes.iter().find(|c| c.code == force))
            .map(|c| c.label.clone());
        let s = ForceSummary {
            summary_version: 1,
            force_id: force.to_owned(),
            force_name,
            period,
            generated_at: rfc3339(now),
            datasets,
        };
        let (json_key, html_key) = (
            summary_key(force, period, "json"),
            summary_key(force, period, "html"),
        );
        tokio::try_join!(
            self.store.put(
                &json_key,
                crate::feedback::summary::render_json(&s),
                PutMode::Overwrite,
            ),
            self.store.put(
                &html_key,
                crate::feedback::summary::render_html(&s).into_bytes(),
                PutMode::Overwrite,
            ),
        )?;
        Ok(())
    }

    /// After the commit: adds each notice to the anomalies of the return it concerns and
    /// writes that force's summary again, so a force whose file another force's return repeats
    /// hears of it whichever was processed first. The anomalies object is rewritten only while
    /// it is the version read (`If-Match`), a few times over; a notice already there is not
    /// added again, so a reprocessed upload adds nothing.
    pub(super) async fn add_notices(
        &self,
        dataset: &str,
        notices: &[Anomaly],
    ) -> Result<(), PipelineError> {
        for notice in notices {
            self.update_anomalies(dataset, &notice.submission_id, |anomalies| {
                if anomalies
                    .iter()
                    .any(|a| a.code == notice.code && a.series == notice.series)
                {
                    return false;
                }
                anomalies.push(notice.clone());
                true
            })
            .await?;
            self.write_summary(dataset, &notice.force_id, notice.period)
                .await?;
            info!(force = %notice.force_id, code = notice.code.as_str(), "notice added to another force's return");
        }
        Ok(())
    }

    /// After the commit: replaces the reconciliation findings of the aggregate returns this
    /// upload's records were reconciled with (in their anomalies tables), and rewrites their
    /// summaries.
    pub(super) async fn replace_reconciliation(
        &self,
        found: &[(String, Anomaly)],
    ) -> Result<(), PipelineError> {
        let mut by_return: BTreeMap<(&str, &str), Vec<&Anomaly>> = BTreeMap::new();
        for (dataset, a) in found {
            by_return
                .entry((dataset.as_str(), a.submission_id.as_str()))
                .or_default()
                .push(a);
        }
        for ((dataset, submission), new) in by_return {
            self.update_anomalies(dataset, submission, |anomalies| {
                anomalies.retain(|a| !is_reconciliation(a.code));
                anomalies.extend(new.iter().map(|a| (*a).clone()));
                true
            })
            .await?;
            self.write_summary(dataset, &new[0].force_id, new[0].period)
                .await?;
            info!(dataset, submission, "reconciliation brought up to date");
        }
        Ok(())
    }

    /// Changes the anomalies table of one submission with `change` (which says whether it
    /// changed anything), written back only if no one else wrote it meanwhile (tried a few
    /// times).
    async fn update_anomalies(
        &self,
        dataset: &str,
        submission: &str,
        change: impl Fn(&mut Vec<Anomaly>) -> bool,
    ) -> Result<(), PipelineError> {
        const ATTEMPTS: usize = 4;
        let key = anomalies_key(dataset, submission);
        for _ in 0..ATTEMPTS {
            let (mut anomalies, mode) = match self.store.get(&key).await {
                Ok((bytes, meta)) => (read_anomalies(bytes)?, PutMode::Update(meta.etag)),
                Err(StoreError::NotFound { .. }) => (Vec::new(), PutMode::Create),
                Err(e) => return Err(e.into()),
            };
            if !change(&mut anomalies) {
                return Ok(());
            }
            match self
                .store
                .put(&key, anomalies_parquet(dataset, &anomalies)?, mode)
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::Changed { .. } | StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Changed {
            location: self.store.location(&key),
        }
        .into())
    }

    async fn anomalies_of(
        &self,
        dataset: &str,
        submission: &str,
    ) -> Result<Vec<Anomaly>, PipelineError> {
        match self.store.get(&anomalies_key(dataset, submission)).await {
            Ok((bytes, _)) => Ok(read_anomalies(bytes)?),
            Err(StoreError::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    async fn metric_rows_of(
        &self,
        dataset: &str,
        entry: &ManifestEntry,
    ) -> Result<Vec<MetricRow>, PipelineError> {
        let key = metrics_key(
            dataset,
            entry.period(),
            entry.force_id(),
            entry.submission_id(),
        );
        match self.store.get(&key).await {
            Ok((bytes, _)) => Ok(read_metrics(bytes)?),
            Err(StoreError::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the status tables at the end of a run (a worker's too: a return goes late or
    /// overdue as time passes, with no upload); a failure is logged and reported, and the next
    /// run writes them again.
    pub async fn finish_run(&self) -> Option<(String, String)> {
        match self.write_status_tables().await {
            Ok(()) => None,
            Err(e) => {
                error!(error = %e, "status tables not written; the next run writes them");
                Some(("quality/status".to_owned(), e.to_string()))
            }
        }
    }
}
