//! Evaluation of the gap and anomaly analysis on the demo's history with planted incidents.
//!
//! [`run`] generates the demo's returns (every force, every month of the window, with
//! [`INCIDENTS`] planted and no file defects), counts each with the real [`ObservationsBuilder`]
//! (the demo's valid files need no CSV quoting, so lines and commas suffice, and the demo's
//! own tests prove every clean file passes `check_upload` with no finding), then replays the months
//! in order: each force's month is analysed by [`detect`] against its own earlier months and
//! the other forces' latest months, exactly as the pipeline does, and the status table is
//! computed after the last deadline. It then measures:
//!
//! - **recall**: the share of planted incidents detected as `docs/demo.md` says (the expected
//!   code on the force within the stated months, or every missing month `overdue`);
//! - **false alarms**: every gap or anomaly on a force with no planted incident, per
//!   force-year of history.
//!
//! The `evaluate` command prints the figures that `QUALITY.md` records; a test fails when
//! they miss the targets.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Instant;

use chrono::Duration;

use crate::demo::{DemoConfig, Detection, INCIDENTS, PlantedIncident, demo_limits, uploads};
use force_returns::analyze::ObservationsBuilder;
use force_returns::analyze::status::{self, Status, StatusRow};
use force_returns::analyze::{Anomaly, Input, Labels, Observations, detect};
use force_returns::config::Project;
use force_returns::model::{Identity, Place, Receipt, Receipts, Upload};
use std::sync::Arc;

use arrow::array::{BooleanArray, StringBuilder};

use force_returns::ingest::Batch;
use force_returns::model::Decision;
use force_returns::period::Period;
use force_returns::pipeline::parse_upload_key;
use force_returns::schema::RecordSchema;

/// What happened to one planted incident.
#[derive(Debug, Clone)]
pub struct IncidentResult {
    /// The incident.
    pub incident: &'static PlantedIncident,
    /// Whether it was detected as expected.
    pub detected: bool,
    /// What was found on the force around it (`code month`, or statuses).
    pub found: Vec<String>,
}

/// The figures of one evaluation.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The demo configuration evaluated.
    pub config: DemoConfig,
    /// One result per planted incident.
    pub incidents: Vec<IncidentResult>,
    /// Forces with no planted incident.
    pub clean_forces: usize,
    /// Months in the window.
    pub months: usize,
    /// Gaps and anomalies on clean forces (every one a false alarm).
    pub false_alarms: Vec<Anomaly>,
    /// Gaps and anomalies on incident forces that match no incident.
    pub unmatched_on_incident_forces: Vec<Anomaly>,
    /// All gaps and anomalies found.
    pub alarms: usize,
    /// Clean force-months whose status is not accepted (a false gap).
    pub false_gaps: Vec<StatusRow>,
    /// Records generated and counted.
    pub records: u64,
    /// Seconds the evaluation took.
    pub seconds: f64,
}

impl Evaluation {
    /// Detected incidents ÷ planted incidents.
    pub fn recall(&self) -> f64 {
        let detected = self.incidents.iter().filter(|r| r.detected).count();
        detected as f64 / self.incidents.len().max(1) as f64
    }

    /// Force-years of clean history.
    pub fn clean_force_years(&self) -> f64 {
        self.clean_forces as f64 * self.months as f64 / 12.0
    }

    /// False alarms per force-year of clean history.
    pub fn false_alarms_per_force_year(&self) -> f64 {
        self.false_alarms.len() as f64 / self.clean_force_years().max(f64::MIN_POSITIVE)
    }

    /// The figures as Markdown (what `QUALITY.md` records).
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let c = &self.config;
        let _ = writeln!(
            out,
            "Demo history: seed {}, {} months ending {}, scale {} ({} records, 43 forces), evaluated in {:.0} s.\n",
            c.seed, c.months, c.end, c.scale, self.records, self.seconds
        );
        let detected = self.incidents.iter().filter(|r| r.detected).count();
        let _ = writeln!(
            out,
            "- **Recall**: {detected} of {} planted incidents detected ({:.0}%).",
            self.incidents.len(),
            self.recall() * 100.0
        );
        let _ = writeln!(
            out,
            "- **False alarms**: {} on {} clean forces over {:.1} force-years: {:.2} per force-year.",
            self.false_alarms.len(),
            self.clean_forces,
            self.clean_force_years(),
            self.false_alarms_per_force_year()
        );
        let _ = writeln!(
            out,
            "- **False gaps**: {} clean force-months not accepted in the status table.",
            self.false_gaps.len()
        );
        let _ = writeln!(
            out,
            "- Other findings on incident forces, outside the expected detection: {} (the incident's later months, its end, knock-on shares).\n",
            self.unmatched_on_incident_forces.len()
        );
        let _ = writeln!(
            out,
            "| incident | pattern | force | expected | detected | found |\n| --- | --- | --- | --- | --- | --- |"
        );
        for r in &self.incidents {
            let i = r.incident;
            let expected = match i.expected {
                Detection::Overdue => "every missing month `overdue`".to_owned(),
                Detection::Codes {
                    codes,
                    months_back,
                    tolerance,
                } => format!(
                    "{} at {}{}",
                    codes
                        .iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join(" or "),
                    back(c, months_back),
                    if tolerance > 0 {
                        format!(" ±{tolerance}")
                    } else {
                        String::new()
                    }
                ),
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | `{}` | {expected} | {} | {} |",
                i.id,
                i.pattern,
                i.force,
                if r.detected { "yes" } else { "**no**" },
                r.found.join(", ")
            );
        }
        if !self.unmatched_on_incident_forces.is_empty() {
            let _ = writeln!(
                out,
                "\nOther findings on incident forces (not the expected detection):\n"
            );
            for a in &self.unmatched_on_incident_forces {
                let _ = writeln!(
                    out,
                    "- `{}` {} {}{}: {}",
                    a.code,
                    a.force_id,
                    a.period,
                    a.since.map(|p| format!(" (since {p})")).unwrap_or_default(),
                    a.series
                );
            }
        }
        if !self.false_alarms.is_empty() {
            let _ = writeln!(out, "\nFalse alarms:\n");
            for a in &self.false_alarms {
                let _ = writeln!(
                    out,
                    "- `{}` {} {}: {} (observed {:.4}, range {:.4} to {:.4})",
                    a.code, a.force_id, a.period, a.series, a.observed, a.lower, a.upper
                );
            }
        }
        out
    }
}

/// A demo return as one batch of text columns (cells are never quoted in the demo's valid
/// returns; blanks are nulls, as the decoder makes them).
fn batch_of(bytes: &[u8], schema: &RecordSchema) -> Batch {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.lines();
    let header: Vec<Option<usize>> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(|h| schema.match_header(h))
        .collect();
    let mut builders: Vec<StringBuilder> = header.iter().map(|_| StringBuilder::new()).collect();
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        for (cell, b) in line.split(',').zip(builders.iter_mut()) {
            if cell.is_empty() {
                b.append_null();
            } else {
                b.append_value(cell);
            }
        }
        rows.push(i as u64 + 2);
    }
    let (properties, columns): (Vec<usize>, Vec<_>) = header
        .into_iter()
        .zip(builders)
        .filter_map(|(p, mut b)| p.map(|p| (p, b.finish())))
        .unzip();
    // The analysis reads columns only; repeat detection (which uses row hashes) is not run here.
    let row_hashes = vec![0; rows.len()];
    Batch {
        properties: Arc::from(properties),
        columns,
        rows,
        row_hashes,
        distinct: Vec::new(),
    }
}

fn back(config: &DemoConfig, months_back: usize) -> Period {
    (0..months_back).fold(config.end, |p, _| p.prev())
}

/// Months of a peer's latest return that still count (as the pipeline's default).
fn peer_age(project: &Project) -> u32 {
    project
        .pipeline("stop_search")
        .map_or(2, |p| p.anomalies.peers.max_age_months)
}

/// Runs the evaluation on the demo generated with `config` (its `incidents` should be on and
/// its `defects` off).
pub fn run(project: &Project, config: &DemoConfig) -> Result<Evaluation, String> {
    let started = Instant::now();
    let pipeline = project
        .pipeline("stop_search")
        .ok_or("the project has no stop_search pipeline")?;
    let limits = demo_limits();
    let mut counts: BTreeMap<(String, Period), Observations> = BTreeMap::new();
    let mut receipts = Receipts::new(&pipeline.dataset);
    let mut records = 0;
    for upload in uploads(&project.catalog, config) {
        let Ok(location) = parse_upload_key(&upload.key, project) else {
            continue;
        };
        let sid = format!("{}-{}", location.force_id, location.period);
        if upload.bytes.len() as u64 > limits.max_file_bytes {
            return Err(format!("{}: over the demo's size limit", upload.key));
        }
        let mut builder = ObservationsBuilder::new(
            &pipeline.schema,
            &pipeline.observe,
            &location.force_id,
            location.period,
            &sid,
        );
        let batch = batch_of(&upload.bytes, &pipeline.schema);
        builder.add(&batch, &BooleanArray::from(vec![true; batch.len()]));
        let rows = batch.len() as u64;
        records += rows;
        receipts.add(Receipt {
            identity: Identity {
                upload: Upload {
                    source_key: upload.key.clone(),
                    etag: String::new(),
                    sha256: String::new(),
                    submission_id: sid,
                    uploaded_at: upload.uploaded_at,
                },
                place: Place {
                    force_id: location.force_id.clone(),
                    dataset: pipeline.dataset.clone(),
                    period: location.period,
                },
            },
            decision: Decision::Accepted,
            rows,
        });
        counts.insert((location.force_id, location.period), builder.finish());
    }

    let labels = Labels::new(&pipeline.schema, &pipeline.observe);
    let blank_warn_above = pipeline.blank_warn_above();
    let window = config.end.trailing(config.months);
    let max_age = i64::from(peer_age(project));
    let mut alarms: Vec<Anomaly> = Vec::new();
    for &period in &window {
        let month: Vec<&Observations> = counts
            .iter()
            .filter(|((_, p), _)| *p == period)
            .map(|(_, c)| c)
            .collect();
        for current in month {
            let history: Vec<Observations> = counts
                .range(
                    (
                        current.force_id.clone(),
                        Period::new(1, 1).unwrap_or(period),
                    )..,
                )
                .take_while(|((f, p), _)| *f == current.force_id && *p < period)
                .map(|(_, c)| c.clone())
                .collect();
            let mut latest: BTreeMap<&str, &Observations> = BTreeMap::new();
            for ((f, p), c) in &counts {
                let age = i64::from(period.year() - p.year()) * 12 + i64::from(period.month())
                    - i64::from(p.month());
                if *f != current.force_id && *p <= period && age <= max_age {
                    latest.insert(f.as_str(), c);
                }
            }
            let peers: Vec<Observations> = latest.into_values().cloned().collect();
            alarms.extend(detect(&Input {
                settings: &pipeline.anomalies,
                current,
                history: &history,
                peers: &peers,
                labels: &labels,
                observe: &pipeline.observe,
                blank_warn_above: &blank_warn_above,
            }));
        }
    }

    let last = window.last().copied().unwrap_or(config.end);
    let now = status::deadline(last, pipeline.period.deadline) + Duration::days(1);
    let periods: Vec<Period> = status::periods(window[0], now)
        .into_iter()
        .filter(|p| window.contains(p))
        .collect();
    let table = status::status_table(
        &pipeline.dataset,
        &pipeline.expected_forces,
        &periods,
        &receipts,
        pipeline.period.deadline,
        now,
    );

    let planted: Vec<&'static PlantedIncident> = if config.incidents {
        INCIDENTS.iter().collect()
    } else {
        Vec::new()
    };
    let incident_forces: BTreeSet<&str> = planted.iter().map(|i| i.force).collect();
    let mut matched = vec![false; alarms.len()];
    let mut results = Vec::new();
    for incident in planted {
        let result = match incident.expected {
            Detection::Overdue => {
                let months = incident.periods(config);
                let statuses: Vec<&StatusRow> = table
                    .iter()
                    .filter(|r| r.force_id == incident.force && months.contains(&r.period))
                    .collect();
                let overdue = statuses
                    .iter()
                    .filter(|r| r.status == Status::Overdue)
                    .count();
                IncidentResult {
                    incident,
                    detected: !months.is_empty() && overdue == months.len(),
                    found: vec![format!("{overdue} of {} months overdue", months.len())],
                }
            }
            Detection::Codes {
                codes,
                months_back,
                tolerance,
            } => {
                let at = back(config, months_back);
                let near = |p: Period| {
                    let d = (i64::from(p.year() - at.year()) * 12 + i64::from(p.month())
                        - i64::from(at.month()))
                    .unsigned_abs();
                    d <= tolerance as u64
                };
                let mut detected = false;
                let mut found = Vec::new();
                for (k, a) in alarms.iter().enumerate() {
                    if a.force_id != incident.force {
                        continue;
                    }
                    let when = a.since.unwrap_or(a.period);
                    if codes.contains(&a.code) && near(when) {
                        detected = true;
                        matched[k] = true;
                        found.push(format!("`{}` {}", a.code, a.period));
                    }
                }
                found.dedup();
                IncidentResult {
                    incident,
                    detected,
                    found,
                }
            }
        };
        results.push(result);
    }
    let clean_forces = pipeline
        .expected_forces
        .iter()
        .filter(|f| counts.keys().any(|(g, _)| g == *f) && !incident_forces.contains(f.as_str()))
        .count();
    let false_alarms: Vec<Anomaly> = alarms
        .iter()
        .filter(|a| !incident_forces.contains(a.force_id.as_str()))
        .cloned()
        .collect();
    let unmatched = alarms
        .iter()
        .zip(&matched)
        .filter(|(a, m)| !**m && incident_forces.contains(a.force_id.as_str()))
        .map(|(a, _)| a.clone())
        .collect();
    let false_gaps = table
        .into_iter()
        .filter(|r| {
            !incident_forces.contains(r.force_id.as_str())
                && counts.keys().any(|(g, _)| *g == r.force_id)
                && !r.status.received()
        })
        .collect();
    Ok(Evaluation {
        config: config.clone(),
        incidents: results,
        clean_forces,
        months: config.months,
        false_alarms,
        unmatched_on_incident_forces: unmatched,
        alarms: alarms.len(),
        false_gaps,
        records,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The evaluation the issue asks for: three clean years of the 43 forces at the real
    /// national volume, every incident of `docs/demo.md` planted. It fails when recall drops
    /// below 95% or false alarms rise above one per force-year (the figures are in
    /// `QUALITY.md`; `force-returns-dev evaluate` prints them).
    #[test]
    fn planted_incidents_are_found_and_clean_forces_stay_quiet() {
        let project = Project::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
        let config = DemoConfig {
            months: 36,
            scale: 1.0,
            defects: false,
            incidents: true,
            ..DemoConfig::default()
        };
        let e = run(&project, &config).unwrap();
        let report = e.markdown();
        eprintln!("{report}");
        assert_eq!(e.incidents.len(), INCIDENTS.len());
        assert_eq!(e.clean_forces, 43 - 10, "{report}");
        assert!(e.recall() >= 0.95, "{report}");
        assert!(e.false_alarms_per_force_year() <= 1.0, "{report}");
        assert!(e.false_gaps.is_empty(), "{report}");
        // The volume is the real one: about 45,000 records a month.
        assert!(e.records > 36 * 40_000, "{}", e.records);
    }
}
