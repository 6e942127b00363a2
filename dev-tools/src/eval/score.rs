//! The scorer: runs the engine's real checks over a [`History`] and scores what the forces see.
//!
//! [`run`] feeds every upload, month by month in a shuffled order within each month, through
//! [`check_upload`] with the `stop_search` pipeline's settings (the upload's force, month and
//! arrival time as its scope), counts the accepted batches with the real [`ObservationsBuilder`],
//! and analyses each accepted month with [`detect`] against the force's own earlier accepted
//! months (the last four years, as the pipeline reads) and the other forces' latest months
//! already processed (no older than the pipeline's peer age). An anomaly at `error` rejects the
//! upload, which then joins neither history nor peers, as in the pipeline. The status table is
//! computed the day after the last month's deadline.
//!
//! What the force sees is every finding at `warning` or `error`: the file's own findings (one per
//! code, as its report groups them) and each gap or anomaly. [`score`] turns that into:
//!
//! - **recall**: an incident is found when its force gets a finding whose code is in its
//!   class's accepted set ([`TARGETS`]) in the incident month or, where the class allows, the
//!   month after; for missing periods, when every missing month is `overdue`; for a class that
//!   affects the whole history (a force that always codes differently from its peers), in any
//!   month, since it has no month of its own;
//! - **false alarms**: every finding on a force with no incident, per force-year, apart for the
//!   months of the national shock and the ordinary months, and by code.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Instant;

use arrow::array::BooleanArray;
use chrono::Duration;
use force_returns::analyze::status::{self, Status};
use force_returns::analyze::{
    Input, Labels, Observations, ObservationsBuilder, detect, usual_records,
};
use force_returns::config::Project;
use force_returns::finding::{NoSink, Severity};
use force_returns::model::{Decision, Identity, Place, Receipt, Receipts, Upload};
use force_returns::period::Period;
use force_returns::pipeline::{check_settings, check_upload};
use force_returns::validate::UploadScope;
use serde_json::{Value, json};

use super::history::{Class, History, Incident, MONTHS};
use super::rng::Rng;

/// Seeds the detector may be tuned on.
pub const TUNE_SEEDS: [u64; 3] = [1, 2, 3];
/// Seeds the figures are reported on: never used while tuning.
pub const REPORT_SEEDS: [u64; 3] = [9001, 9002, 9003];

/// Years of a force's own history the pipeline reads for its analysis.
const HISTORY_MONTHS: usize = 48;

/// How an incident class counts as found.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The class.
    pub class: Class,
    /// Codes that find it (today's codes and the planned `anomaly_resent_records`,
    /// `anomaly_distribution_shift` and `anomaly_fields_agree`).
    pub codes: &'static [&'static str],
    /// Months after the incident month a finding still counts (0: that month only).
    pub months_after: usize,
    /// Found when every missing month is `overdue` (codes are not asked for).
    pub overdue: bool,
}

const fn target(class: Class, codes: &'static [&'static str], months_after: usize) -> Target {
    Target {
        class,
        codes,
        months_after,
        overdue: false,
    }
}

/// The accepted codes of each class, fixed before any tuning (`QUALITY.md` has the same table).
pub const TARGETS: [Target; 15] = [
    target(Class::ResentPreviousPeriod, &["anomaly_resent_records"], 0),
    target(
        Class::ResentOtherForce,
        &[
            "anomaly_resent_records",
            "anomaly_volume",
            "anomaly_category_share",
            "anomaly_category_vanished",
            "anomaly_recording_share",
        ],
        0,
    ),
    target(
        Class::NearDuplicateResend,
        &["anomaly_resent_records", "anomaly_distribution_shift"],
        0,
    ),
    target(
        Class::NotStatedJump,
        &["anomaly_recording_share", "anomaly_category_share"],
        1,
    ),
    target(
        Class::BlankFieldRise,
        &["anomaly_recording_share", "anomaly_category_share"],
        1,
    ),
    target(
        Class::EthnicityCopied,
        &[
            "anomaly_fields_agree",
            "anomaly_distribution_shift",
            "anomaly_category_share",
            "anomaly_category_vanished",
        ],
        1,
    ),
    target(
        Class::OutcomeCodesSwapped,
        &["anomaly_distribution_shift", "anomaly_category_share"],
        1,
    ),
    target(Class::SmallForceHalving, &["anomaly_volume"], 0),
    target(
        Class::VolumeStep,
        &["anomaly_volume", "anomaly_level_shift"],
        1,
    ),
    target(
        Class::PartialPeriod,
        &["gap_days_without_records", "anomaly_volume"],
        0,
    ),
    target(
        Class::DoubledPeriod,
        &["anomaly_volume", "duplicate_row"],
        0,
    ),
    Target {
        class: Class::MissingPeriods,
        codes: &[],
        months_after: 0,
        overdue: true,
    },
    target(
        Class::CategoryVanished,
        &[
            "anomaly_category_vanished",
            "anomaly_category_share",
            "anomaly_distribution_shift",
        ],
        1,
    ),
    target(
        Class::TimesAtMidnight,
        &["anomaly_recording_share", "anomaly_peer_share"],
        1,
    ),
    target(
        Class::PeerMiscoding,
        &["anomaly_peer_share", "anomaly_category_vanished"],
        1,
    ),
];

/// The target of `class`.
pub fn target_of(class: Class) -> &'static Target {
    TARGETS
        .iter()
        .find(|t| t.class == class)
        .expect("every class has a target")
}

/// One finding at warning or error, as the force sees it in its report.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// Force id.
    pub force: String,
    /// Month of the history (0-based).
    pub month: usize,
    /// Finding code.
    pub code: String,
    /// Severity, after the pipeline's overrides.
    pub severity: Severity,
    /// What moved (the anomaly's series), or how many times the file finding occurred.
    pub what: String,
}

/// What the engine made of one history.
#[derive(Debug, Clone)]
pub struct Run {
    /// Every finding at warning or error.
    pub seen: Vec<Seen>,
    /// Months `overdue` in the status table, by force.
    pub overdue: BTreeMap<String, BTreeSet<usize>>,
    /// Months not received in the status table, by force.
    pub not_received: BTreeMap<String, BTreeSet<usize>>,
    /// Records in the uploads.
    pub records: u64,
    /// Seconds the run took (generation, checks, analysis).
    pub seconds: f64,
    /// Seconds spent in `detect` alone, over every upload analysed.
    pub detect_seconds: f64,
}

/// Runs the engine over every upload of `history`.
pub fn run(project: &Project, history: &History) -> Result<Run, String> {
    let started = Instant::now();
    let pipeline = project
        .pipeline("stop_search")
        .ok_or("the project has no stop_search pipeline")?;
    let settings = check_settings(pipeline);
    let labels = Labels::new(&pipeline.schema, &pipeline.observe);
    let max_age = pipeline.anomalies.peers.max_age_months as usize;
    let forces = history.force_ids();
    let periods = history.periods();
    // Each force's accepted months, oldest first, and its latest accepted month.
    let mut accepted: Vec<Vec<(usize, Observations)>> = vec![Vec::new(); forces.len()];
    let mut receipts = Receipts::new(&pipeline.dataset);
    let mut seen = Vec::new();
    let mut records = 0;
    let mut detect_seconds = 0.0;
    for month in 0..MONTHS {
        let mut order: Vec<usize> = (0..forces.len()).collect();
        Rng::new(&[history.config().seed, 6, month as u64]).shuffle(&mut order);
        for force in order {
            let Some(upload) = history.upload(force, month) else {
                continue;
            };
            let id = forces[force];
            let sid = format!("{id}-{}", upload.period);
            let mut builder = ObservationsBuilder::new(
                &pipeline.schema,
                &pipeline.observe,
                id,
                upload.period,
                &sid,
            );
            let scope = UploadScope {
                force: Some(id.to_owned()),
                period: Some(upload.period),
                now: Some(upload.uploaded_at),
            };
            let outcome = check_upload(
                upload.bytes.as_slice(),
                Some(upload.bytes.len() as u64),
                &settings,
                pipeline.limits,
                scope,
                &mut NoSink,
                &mut |batch, valid: BooleanArray| {
                    builder.add(&batch, &valid);
                    Ok(())
                },
            )
            .map_err(|e| format!("{}: {e}", upload.key))?;
            records += outcome.decode.records;
            for f in &outcome.findings {
                if f.severity >= Severity::Warning {
                    seen.push(Seen {
                        force: id.to_owned(),
                        month,
                        code: f.code.as_str().to_owned(),
                        severity: f.severity,
                        what: format!("{} occurrences", f.count),
                    });
                }
            }
            let mut decision = outcome.verdict.decision;
            if decision != Decision::Rejected {
                let mut observations = builder.finish();
                if pipeline.anomalies.enabled {
                    let own: Vec<Observations> = accepted[force]
                        .iter()
                        .filter(|(m, _)| month - m <= HISTORY_MONTHS)
                        .map(|(_, o)| o.clone())
                        .collect();
                    observations.usual_rows =
                        usual_records(&observations, &own, pipeline.anomalies.baseline_months);
                    let peers: Vec<Observations> = accepted
                        .iter()
                        .enumerate()
                        .filter(|(f, _)| *f != force)
                        .filter_map(|(_, months)| months.last())
                        .filter(|(m, _)| month - m <= max_age)
                        .map(|(_, o)| o.clone())
                        .collect();
                    let detecting = Instant::now();
                    let found = detect(&Input {
                        settings: &pipeline.anomalies,
                        current: &observations,
                        history: &own,
                        peers: &peers,
                        labels: &labels,
                        observe: &pipeline.observe,
                        catalogue: None,
                    });
                    detect_seconds += detecting.elapsed().as_secs_f64();
                    for a in found {
                        let s = pipeline
                            .severity_overrides
                            .get(&a.code)
                            .copied()
                            .unwrap_or(a.severity);
                        if s >= Severity::Warning {
                            // A notice about another force's return of this month is seen by
                            // that force (the pipeline adds it to that return's anomalies).
                            seen.push(Seen {
                                force: a.force_id.clone(),
                                month,
                                code: a.code.as_str().to_owned(),
                                severity: s,
                                what: a.series.clone(),
                            });
                        }
                        if a.submission_id != observations.submission_id {
                            continue;
                        }
                        decision = match (decision, s) {
                            (_, Severity::Error) => Decision::Rejected,
                            (Decision::Accepted, Severity::Warning) => {
                                Decision::AcceptedWithWarnings
                            }
                            (d, _) => d,
                        };
                    }
                }
                if decision != Decision::Rejected {
                    accepted[force].push((month, observations));
                }
            }
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
                        force_id: id.to_owned(),
                        dataset: pipeline.dataset.clone(),
                        period: upload.period,
                    },
                },
                decision,
                rows: outcome.decode.records,
            });
        }
    }
    let last = periods[MONTHS - 1];
    let now = status::deadline(last, pipeline.period.deadline) + Duration::days(1);
    let table = status::status_table(
        &pipeline.dataset,
        &pipeline.expected_forces,
        &periods,
        &receipts,
        pipeline.period.deadline,
        now,
    );
    let (mut overdue, mut not_received) = (BTreeMap::new(), BTreeMap::new());
    for row in table {
        let Some(month) = periods.iter().position(|p| *p == row.period) else {
            continue;
        };
        if row.status == Status::Overdue {
            overdue
                .entry(row.force_id.clone())
                .or_insert_with(BTreeSet::new)
                .insert(month);
        }
        if !row.status.received() {
            not_received
                .entry(row.force_id.clone())
                .or_insert_with(BTreeSet::new)
                .insert(month);
        }
    }
    Ok(Run {
        seen,
        overdue,
        not_received,
        records,
        seconds: started.elapsed().as_secs_f64(),
        detect_seconds,
    })
}

/// What was found of one incident.
#[derive(Debug, Clone)]
pub struct ClassResult {
    /// The class.
    pub class: Class,
    /// The force.
    pub force: String,
    /// The incident month.
    pub period: Period,
    /// The incident's size, in words.
    pub detail: String,
    /// Whether it was found.
    pub detected: bool,
    /// What the force saw from the incident month to the end of its window (`code month`), or
    /// the months overdue.
    pub found: Vec<String>,
}

/// The scores of one history.
#[derive(Debug, Clone)]
pub struct Score {
    /// The seed.
    pub seed: u64,
    /// The scale.
    pub scale: f64,
    /// One result per class.
    pub classes: Vec<ClassResult>,
    /// Forces with no incident.
    pub clean_forces: usize,
    /// Months of the national shock.
    pub shock_months: usize,
    /// The shock in words (its months and which way every force moved).
    pub shock: String,
    /// Findings on clean forces in shock months, by code.
    pub shock_alarms: BTreeMap<String, usize>,
    /// Findings on clean forces in ordinary months, by code.
    pub ordinary_alarms: BTreeMap<String, usize>,
    /// Clean force-months not received in the status table.
    pub false_gaps: usize,
    /// Every false alarm (`force month code: what`).
    pub alarms: Vec<String>,
    /// Records in the uploads.
    pub records: u64,
    /// Seconds the run took.
    pub seconds: f64,
    /// Seconds spent in `detect` alone.
    pub detect_seconds: f64,
}

/// Scores `run` against what `history` planted.
pub fn score(history: &History, run: &Run) -> Score {
    let periods = history.periods();
    let mut classes = Vec::new();
    let incident_forces: BTreeSet<&str> =
        history.incidents().iter().map(Incident::force_id).collect();
    for incident in history.incidents() {
        let t = target_of(incident.class);
        let force = incident.force_id();
        let (detected, found) = if t.overdue {
            let months = incident.month..incident.month + 3;
            let overdue = run.overdue.get(force);
            let n = months
                .clone()
                .filter(|m| overdue.is_some_and(|o| o.contains(m)))
                .count();
            (n == 3, vec![format!("{n} of 3 months overdue")])
        } else {
            let window = if incident.class.whole_history() {
                0..=MONTHS - 1
            } else {
                incident.month..=incident.month + t.months_after
            };
            let mut detected = false;
            let mut found = Vec::new();
            for s in run
                .seen
                .iter()
                .filter(|s| s.force == force && window.contains(&s.month))
            {
                let hit = t.codes.contains(&s.code.as_str());
                detected |= hit;
                let entry = format!(
                    "{}`{}` {}",
                    if hit { "" } else { "(other) " },
                    s.code,
                    periods[s.month]
                );
                if !found.contains(&entry) {
                    found.push(entry);
                }
            }
            (detected, found)
        };
        classes.push(ClassResult {
            class: incident.class,
            force: force.to_owned(),
            period: periods[incident.month],
            detail: incident.detail.clone(),
            detected,
            found,
        });
    }
    let (shock, direction) = history.shock();
    let shock_words = format!(
        "{} to {}, {}",
        periods[shock.start],
        periods[shock.end - 1],
        if direction > 0.0 { "up" } else { "down" }
    );
    let mut shock_alarms = BTreeMap::new();
    let mut ordinary_alarms = BTreeMap::new();
    let mut alarms = Vec::new();
    for s in run
        .seen
        .iter()
        .filter(|s| !incident_forces.contains(s.force.as_str()))
    {
        let into = if shock.contains(&s.month) {
            &mut shock_alarms
        } else {
            &mut ordinary_alarms
        };
        *into.entry(s.code.clone()).or_insert(0) += 1;
        alarms.push(format!(
            "{} {} `{}`{}: {}",
            s.force,
            periods[s.month],
            s.code,
            if shock.contains(&s.month) {
                " (shock)"
            } else {
                ""
            },
            s.what
        ));
    }
    let clean: Vec<&str> = history
        .force_ids()
        .into_iter()
        .filter(|f| !incident_forces.contains(f))
        .collect();
    let false_gaps = clean
        .iter()
        .map(|f| run.not_received.get(*f).map_or(0, BTreeSet::len))
        .sum();
    Score {
        seed: history.config().seed,
        scale: history.config().scale,
        classes,
        clean_forces: clean.len(),
        shock_months: shock.len(),
        shock: shock_words,
        shock_alarms,
        ordinary_alarms,
        false_gaps,
        alarms,
        records: run.records,
        seconds: run.seconds,
        detect_seconds: run.detect_seconds,
    }
}

/// Several scored histories together.
#[derive(Debug, Clone)]
pub struct Summary {
    /// What the seeds are (`tune`, `report`, or the list given).
    pub name: String,
    /// One score per seed.
    pub scores: Vec<Score>,
}

impl Summary {
    /// Classes found, summed over the seeds.
    pub fn detected(&self) -> usize {
        self.scores
            .iter()
            .map(|s| s.classes.iter().filter(|c| c.detected).count())
            .sum()
    }

    /// Incidents planted, summed over the seeds.
    pub fn planted(&self) -> usize {
        self.scores.iter().map(|s| s.classes.len()).sum()
    }

    /// Clean force-years of shock months and of ordinary months.
    pub fn force_years(&self) -> (f64, f64) {
        self.scores.iter().fold((0.0, 0.0), |(a, b), s| {
            let shock = (s.clean_forces * s.shock_months) as f64 / 12.0;
            let all = (s.clean_forces * MONTHS) as f64 / 12.0;
            (a + shock, b + all - shock)
        })
    }

    /// False alarms in shock months and in ordinary months, by code.
    pub fn alarms_by_code(&self) -> BTreeMap<String, (usize, usize)> {
        let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for s in &self.scores {
            for (code, n) in &s.shock_alarms {
                out.entry(code.clone()).or_default().0 += n;
            }
            for (code, n) in &s.ordinary_alarms {
                out.entry(code.clone()).or_default().1 += n;
            }
        }
        out
    }

    /// False alarms per clean force-year: in shock months, in ordinary months, in all.
    pub fn alarm_rates(&self) -> (f64, f64, f64) {
        let (shock_years, ordinary_years) = self.force_years();
        let (shock, ordinary) = self
            .alarms_by_code()
            .values()
            .fold((0, 0), |(a, b), (s, o)| (a + s, b + o));
        let rate = |n: usize, years: f64| n as f64 / years.max(f64::MIN_POSITIVE);
        (
            rate(shock, shock_years),
            rate(ordinary, ordinary_years),
            rate(shock + ordinary, shock_years + ordinary_years),
        )
    }

    /// The figures as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let seeds: Vec<String> = self.scores.iter().map(|s| s.seed.to_string()).collect();
        let scale = self.scores.first().map_or(1.0, |s| s.scale);
        let records: u64 = self.scores.iter().map(|s| s.records).sum();
        let seconds: f64 = self.scores.iter().map(|s| s.seconds).sum();
        let detecting: f64 = self.scores.iter().map(|s| s.detect_seconds).sum();
        let per_period = detecting / (self.scores.len().max(1) * MONTHS) as f64;
        let _ = writeln!(
            out,
            "Seeds {} ({}), scale {scale}, {MONTHS} months from 2021-04, 43 forces: {records} records, {seconds:.1} s, of which detection {detecting:.2} s ({:.1} ms for one month of every force against its history). National shock: {}.\n",
            seeds.join(", "),
            self.name,
            per_period * 1000.0,
            self.scores
                .iter()
                .map(|s| format!("{} (seed {})", s.shock, s.seed))
                .collect::<Vec<_>>()
                .join("; ")
        );
        let (shock_years, ordinary_years) = self.force_years();
        let (shock_rate, ordinary_rate, all_rate) = self.alarm_rates();
        let _ = writeln!(
            out,
            "- **Recall: {} of {} planted incidents** ({} classes × {} seeds).",
            self.detected(),
            self.planted(),
            TARGETS.len(),
            self.scores.len()
        );
        let _ = writeln!(
            out,
            "- **False alarms per clean force-year: {all_rate:.2}** ({ordinary_rate:.2} in ordinary months over {ordinary_years:.1} force-years, {shock_rate:.2} in the shock's months over {shock_years:.1}).",
        );
        let gaps: usize = self.scores.iter().map(|s| s.false_gaps).sum();
        let _ = writeln!(
            out,
            "- False gaps: {gaps} clean force-months not received in the status table.\n"
        );
        let _ = writeln!(
            out,
            "| # | class | found | {} |\n| --- | --- | --- |{}",
            seeds
                .iter()
                .map(|s| format!("seed {s}"))
                .collect::<Vec<_>>()
                .join(" | "),
            " --- |".repeat(seeds.len())
        );
        for (k, t) in TARGETS.iter().enumerate() {
            let results: Vec<&ClassResult> = self
                .scores
                .iter()
                .filter_map(|s| s.classes.iter().find(|c| c.class == t.class))
                .collect();
            let hits = results.iter().filter(|c| c.detected).count();
            let cells: Vec<String> = results
                .iter()
                .map(|c| {
                    format!(
                        "{} {} {} ({}): {}",
                        if c.detected { "**yes**" } else { "no" },
                        c.force,
                        c.period,
                        c.detail,
                        if c.found.is_empty() {
                            "nothing".to_owned()
                        } else {
                            c.found.join(", ")
                        }
                    )
                    .replace('|', "/")
                })
                .collect();
            let _ = writeln!(
                out,
                "| {} | `{}` | {hits} of {} | {} |",
                k + 1,
                t.class.id(),
                results.len(),
                cells.join(" | ")
            );
        }
        let _ = writeln!(
            out,
            "\nFalse alarms on clean forces by code (shock months / ordinary months):\n\n| code | shock | ordinary |\n| --- | --- | --- |"
        );
        for (code, (s, o)) in self.alarms_by_code() {
            let _ = writeln!(out, "| `{code}` | {s} | {o} |");
        }
        let _ = writeln!(out, "\nEvery false alarm:\n");
        for s in &self.scores {
            for a in &s.alarms {
                let _ = writeln!(out, "- seed {}: {a}", s.seed);
            }
        }
        out
    }

    /// The figures as JSON.
    pub fn json(&self) -> Value {
        let (shock_years, ordinary_years) = self.force_years();
        let (shock_rate, ordinary_rate, all_rate) = self.alarm_rates();
        json!({
            "seeds": self.name,
            "detected": self.detected(),
            "planted": self.planted(),
            "false_alarms_per_clean_force_year": {
                "all": all_rate,
                "ordinary_months": ordinary_rate,
                "shock_months": shock_rate,
                "ordinary_force_years": ordinary_years,
                "shock_force_years": shock_years,
            },
            "false_alarms_by_code": self.alarms_by_code().into_iter().map(|(c, (s, o))| {
                (c, json!({"shock": s, "ordinary": o}))
            }).collect::<serde_json::Map<String, Value>>(),
            "histories": self.scores.iter().map(|s| json!({
                "seed": s.seed,
                "scale": s.scale,
                "records": s.records,
                "seconds": s.seconds,
                "detect_seconds": s.detect_seconds,
                "clean_forces": s.clean_forces,
                "shock": s.shock,
                "false_gaps": s.false_gaps,
                "classes": s.classes.iter().map(|c| json!({
                    "class": c.class.id(),
                    "number": c.class.number(),
                    "force": c.force,
                    "period": c.period.to_string(),
                    "detail": c.detail,
                    "detected": c.detected,
                    "found": c.found,
                })).collect::<Vec<_>>(),
                "false_alarms": s.alarms,
            })).collect::<Vec<_>>(),
        })
    }
}
