//! The honest evaluation of detection over the data pack's figures
//! (`force-returns-dev evaluate-pack`).
//!
//! A history of packs generated here ([`history`]: its own model of counts, sharing no code
//! with the detector or the demo) is fed, year by year and in a shuffled order within each
//! year, through the engine's real checks with the `data_pack` pipeline's settings, and each
//! accepted pack is analysed with [`detect`] against the force's own earlier accepted packs and
//! the other forces' latest ones, as the pipeline does. What the force sees is every finding at
//! `warning` or `error`, the file's and the analysis's; it is scored against the ten planted
//! incidents: **recall** (an incident is found when its force's pack of that year gets one of
//! its class's codes) and **false alarms** per clean force-year (a force-year with a pack and no
//! incident), apart for the national shock's year and ordinary years. The detector may be tuned
//! on the [`TUNE_SEEDS`]; the figures in `QUALITY.md` are those of the [`REPORT_SEEDS`], which
//! tuning never looks at.

pub mod history;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::BooleanArray;
use chrono::{Duration, NaiveTime};
use force_returns::analyze::{
    Input, Labels, Observations, ObservationsBuilder, detect, usual_figures, usual_records,
};
use force_returns::config::Project;
use force_returns::finding::{NoSink, Severity};
use force_returns::model::Decision;
use force_returns::pipeline::{check_settings, check_upload};
use force_returns::validate::UploadScope;
use serde_json::{Value, json};

pub use history::{CLASSES, Class, Config, History, YEARS};

use crate::eval::rng::Rng;

/// Seeds the detector may be tuned on.
pub const TUNE_SEEDS: [u64; 6] = [31, 32, 33, 34, 35, 36];
/// Seeds the figures are reported on: never used while tuning.
pub const REPORT_SEEDS: [u64; 6] = [9301, 9302, 9303, 9304, 9305, 9306];

/// The codes that find each class.
pub fn codes_of(class: Class) -> &'static [&'static str] {
    match class {
        Class::LastYearResent | Class::OtherForcePack => {
            &["anomaly_figures_resent", "anomaly_figure"]
        }
        Class::FirstPackRateScale => &["anomaly_figure", "metric_out_of_range"],
        Class::DisparityInverted => &["anomaly_figure", "metric_disagrees_with_parts"],
        _ => &["anomaly_figure"],
    }
}

/// One finding a force saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The force (index into the forces' table).
    pub force: usize,
    /// The year.
    pub year: usize,
    /// The finding code.
    pub code: String,
    /// What moved, or how many times a file finding occurred.
    pub what: String,
}

/// What the engine made of one history.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Every finding at warning or error.
    pub seen: Vec<Seen>,
    /// Packs rejected, as (force, year).
    pub rejected: Vec<(usize, usize)>,
}

/// Runs the engine over every pack of `history`.
pub fn run(project: &Project, history: &History) -> Result<Run, String> {
    let pipeline = project
        .pipeline("data_pack")
        .ok_or("the project has no data_pack pipeline")?;
    let table = pipeline
        .table
        .as_ref()
        .ok_or("the data_pack pipeline reads no catalogue")?;
    let settings = check_settings(pipeline);
    let labels = Labels::new(&pipeline.schema, &pipeline.observe);
    let forces = History::force_ids();
    let mut accepted: Vec<Vec<Observations>> = vec![Vec::new(); forces.len()];
    let mut out = Run::default();
    for year in 0..YEARS {
        let period = History::period(year);
        let now = (period.last_day() + Duration::days(60)).and_time(NaiveTime::MIN);
        let mut order: Vec<usize> = (0..forces.len()).collect();
        Rng::new(&[history.config().seed, 6, year as u64]).shuffle(&mut order);
        for force in order {
            let Some(csv) = history.pack(force, year) else {
                continue;
            };
            let id = forces[force];
            let sid = format!("{id}-{period}");
            let mut builder =
                ObservationsBuilder::new(&pipeline.schema, &pipeline.observe, id, period, &sid);
            let outcome = check_upload(
                csv.as_bytes(),
                Some(csv.len() as u64),
                &settings,
                pipeline.limits,
                UploadScope {
                    force: Some(id.to_owned()),
                    period: Some(period),
                    now: Some(now.and_utc()),
                },
                &mut NoSink,
                &mut |batch, valid: BooleanArray| {
                    builder.add(&batch, &valid);
                    Ok(())
                },
            )
            .map_err(|e| format!("{id} {period}: {e}"))?;
            for f in outcome
                .findings
                .iter()
                .filter(|f| f.severity >= Severity::Warning)
            {
                out.seen.push(Seen {
                    force,
                    year,
                    code: f.code.as_str().to_owned(),
                    what: format!(
                        "{} occurrences: {}",
                        f.count,
                        f.examples.first().map_or("", |e| e.message.as_str())
                    ),
                });
            }
            if outcome.verdict.decision == Decision::Rejected {
                out.rejected.push((force, year));
                continue;
            }
            let mut observations = builder.finish();
            observations.figures.clone_from(&outcome.verdict.figures);
            let own = &accepted[force];
            observations.usual_rows =
                usual_records(&observations, own, pipeline.anomalies.baseline_months);
            observations.usual_figures = usual_figures(
                &observations,
                own,
                pipeline.anomalies.figures.baseline_periods,
            );
            let peers: Vec<Observations> = accepted
                .iter()
                .enumerate()
                .filter(|(f, _)| *f != force)
                .filter_map(|(_, years)| years.last().cloned())
                .collect();
            let found = detect(&Input {
                settings: &pipeline.anomalies,
                current: &observations,
                history: own,
                peers: &peers,
                labels: &labels,
                observe: &pipeline.observe,
                catalogue: Some(&table.catalogue),
            });
            let mut rejected = false;
            for a in found {
                let s = pipeline
                    .severity_overrides
                    .get(&a.code)
                    .copied()
                    .unwrap_or(a.severity);
                if s >= Severity::Warning {
                    out.seen.push(Seen {
                        force,
                        year,
                        code: a.code.as_str().to_owned(),
                        what: a.message.clone(),
                    });
                }
                rejected |= s == Severity::Error;
            }
            if rejected {
                out.rejected.push((force, year));
            } else {
                accepted[force].push(observations);
            }
        }
    }
    Ok(out)
}

/// What was found of one incident.
#[derive(Debug, Clone)]
pub struct ClassResult {
    /// The class.
    pub class: Class,
    /// The force.
    pub force: String,
    /// The year's period.
    pub period: String,
    /// What was planted.
    pub detail: String,
    /// Whether the force saw one of the class's codes that year.
    pub detected: bool,
    /// The codes it saw that year.
    pub found: Vec<String>,
}

/// One history's score.
#[derive(Debug, Clone)]
pub struct Score {
    /// The seed.
    pub seed: u64,
    /// Each incident.
    pub classes: Vec<ClassResult>,
    /// Clean force-years in the shock's year, and in the others.
    pub clean: (usize, usize),
    /// The shock, in words.
    pub shock: String,
    /// False alarms by code, in the shock's year and in the others.
    pub alarms: (BTreeMap<String, usize>, BTreeMap<String, usize>),
    /// Each false alarm, in words.
    pub alarm_list: Vec<String>,
}

/// Scores a run of `history`.
pub fn score(history: &History, run: &Run) -> Score {
    let forces = History::force_ids();
    // The incident's year is not clean; nor are the force's later years, whose history holds
    // the wrong pack (the pipeline would compare with it until the force sends it again).
    let dirty = |f: usize, y: usize| {
        history
            .incidents()
            .iter()
            .any(|i| (i.force == f && i.year <= y) || (i.source == Some(f) && i.year == y))
    };
    let shock = history.shock();
    let classes = history
        .incidents()
        .iter()
        .map(|i| {
            let found: Vec<String> = run
                .seen
                .iter()
                .filter(|s| s.force == i.force && s.year == i.year)
                .map(|s| s.code.clone())
                .collect();
            ClassResult {
                class: i.class,
                force: forces[i.force].to_owned(),
                period: History::period(i.year).to_string(),
                detail: i.detail.clone(),
                detected: found
                    .iter()
                    .any(|c| codes_of(i.class).contains(&c.as_str())),
                found,
            }
        })
        .collect();
    let mut clean = (0, 0);
    for f in 0..forces.len() {
        for y in 0..YEARS {
            if history.pack(f, y).is_some() && !dirty(f, y) {
                if y == shock.year {
                    clean.0 += 1;
                } else {
                    clean.1 += 1;
                }
            }
        }
    }
    let (mut in_shock, mut ordinary) = (BTreeMap::new(), BTreeMap::new());
    let mut alarm_list = Vec::new();
    for s in run.seen.iter().filter(|s| !dirty(s.force, s.year)) {
        let map = if s.year == shock.year {
            &mut in_shock
        } else {
            &mut ordinary
        };
        *map.entry(s.code.clone()).or_insert(0) += 1;
        alarm_list.push(format!(
            "{} {}: {}: {}",
            forces[s.force],
            History::period(s.year),
            s.code,
            s.what
        ));
    }
    Score {
        seed: history.config().seed,
        classes,
        clean,
        shock: format!(
            "{} × {:.2} from {}",
            shock.metric,
            shock.factor,
            History::period(shock.year)
        ),
        alarms: (in_shock, ordinary),
        alarm_list,
    }
}

/// The scores of several histories.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Which seeds.
    pub name: String,
    /// One per seed.
    pub scores: Vec<Score>,
}

impl Summary {
    /// Incidents found.
    pub fn detected(&self) -> usize {
        self.scores
            .iter()
            .flat_map(|s| &s.classes)
            .filter(|c| c.detected)
            .count()
    }

    /// Incidents planted.
    pub fn planted(&self) -> usize {
        self.scores.iter().map(|s| s.classes.len()).sum()
    }

    /// False alarms per clean force-year: in the shock's year, in the others, overall.
    pub fn alarm_rates(&self) -> (f64, f64, f64) {
        let count = |pick: fn(&Score) -> &BTreeMap<String, usize>| -> usize {
            self.scores
                .iter()
                .map(|s| pick(s).values().sum::<usize>())
                .sum()
        };
        let (a_shock, a_ord) = (count(|s| &s.alarms.0), count(|s| &s.alarms.1));
        let y_shock: usize = self.scores.iter().map(|s| s.clean.0).sum();
        let y_ord: usize = self.scores.iter().map(|s| s.clean.1).sum();
        let rate = |a: usize, y: usize| if y == 0 { 0.0 } else { a as f64 / y as f64 };
        (
            rate(a_shock, y_shock),
            rate(a_ord, y_ord),
            rate(a_shock + a_ord, y_shock + y_ord),
        )
    }

    /// Recall per class: found, planted.
    pub fn by_class(&self) -> Vec<(Class, usize, usize)> {
        CLASSES
            .iter()
            .map(|&class| {
                let results: Vec<&ClassResult> = self
                    .scores
                    .iter()
                    .flat_map(|s| &s.classes)
                    .filter(|c| c.class == class)
                    .collect();
                (
                    class,
                    results.iter().filter(|c| c.detected).count(),
                    results.len(),
                )
            })
            .collect()
    }

    /// The figures as Markdown, for `QUALITY.md`.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let seeds: Vec<String> = self.scores.iter().map(|s| s.seed.to_string()).collect();
        let _ = writeln!(
            out,
            "Data pack detection on the {} ({}): {} of {} planted incidents found.\n",
            self.name,
            seeds.join(", "),
            self.detected(),
            self.planted()
        );
        let _ = writeln!(out, "| class | found | planted | codes that count |");
        let _ = writeln!(out, "|---|---|---|---|");
        for (class, found, planted) in self.by_class() {
            let _ = writeln!(
                out,
                "| `{}` | {found} | {planted} | {} |",
                class.name(),
                codes_of(class)
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let (shock, ordinary, all) = self.alarm_rates();
        let y_shock: usize = self.scores.iter().map(|s| s.clean.0).sum();
        let y_ord: usize = self.scores.iter().map(|s| s.clean.1).sum();
        let _ = writeln!(
            out,
            "\nFalse alarms per clean force-year: {all:.3} overall; {shock:.3} in the national shock's year ({y_shock} force-years), {ordinary:.3} in the others ({y_ord} force-years).\n"
        );
        let mut codes: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for s in &self.scores {
            for (c, n) in &s.alarms.0 {
                codes.entry(c).or_default().0 += n;
            }
            for (c, n) in &s.alarms.1 {
                codes.entry(c).or_default().1 += n;
            }
        }
        if !codes.is_empty() {
            let _ = writeln!(out, "| false alarm code | shock year | other years |");
            let _ = writeln!(out, "|---|---|---|");
            for (c, (a, b)) in codes {
                let _ = writeln!(out, "| `{c}` | {a} | {b} |");
            }
            out.push('\n');
        }
        for s in &self.scores {
            let _ = writeln!(out, "Seed {} (shock: {}):\n", s.seed, s.shock);
            for c in &s.classes {
                let _ = writeln!(
                    out,
                    "- `{}` at {} {} ({}): {}{}",
                    c.class.name(),
                    c.force,
                    c.period,
                    c.detail,
                    if c.detected { "found" } else { "missed" },
                    if c.found.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", c.found.join(", "))
                    }
                );
            }
            for a in &s.alarm_list {
                let _ = writeln!(out, "- false alarm: {a}");
            }
            out.push('\n');
        }
        out
    }

    /// The figures as JSON.
    pub fn json(&self) -> Value {
        let (shock, ordinary, all) = self.alarm_rates();
        json!({
            "seeds": self.name,
            "detected": self.detected(),
            "planted": self.planted(),
            "classes": self.by_class().iter().map(|(c, found, planted)| json!({
                "class": c.name(), "found": found, "planted": planted,
            })).collect::<Vec<_>>(),
            "false_alarms_per_clean_force_year": {
                "all": all, "shock_year": shock, "other_years": ordinary,
            },
        })
    }
}

/// Generates, runs and scores the history of each seed.
pub fn evaluate(project: &Project, seeds: &[u64], name: &str) -> Result<Summary, String> {
    let pipeline = project
        .pipeline("data_pack")
        .ok_or("the project has no data_pack pipeline")?;
    let catalogue = Arc::clone(
        &pipeline
            .table
            .as_ref()
            .ok_or("the data_pack pipeline reads no catalogue")?
            .catalogue,
    );
    let mut scores = Vec::new();
    for &seed in seeds {
        let history = History::new(&catalogue, Config { seed });
        let run = run(project, &history)?;
        scores.push(score(&history, &run));
    }
    Ok(Summary {
        name: name.to_owned(),
        scores,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn project() -> Project {
        Project::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap()
    }

    fn history(seed: u64) -> History {
        let project = project();
        let pipeline = project.pipeline("data_pack").unwrap();
        History::new(&pipeline.table.as_ref().unwrap().catalogue, Config { seed })
    }

    /// A pack's rows without its force and period.
    fn body(csv: &str) -> Vec<String> {
        csv.lines()
            .skip(1)
            .map(|l| l.splitn(3, ',').nth(2).unwrap().to_owned())
            .collect()
    }

    #[test]
    fn every_clean_pack_passes_every_check_of_the_catalogue() {
        let h = history(5);
        let project = project();
        let pipeline = project.pipeline("data_pack").unwrap();
        let settings = check_settings(pipeline);
        let forces = History::force_ids();
        for year in [0, YEARS - 1] {
            for (f, id) in forces.iter().enumerate() {
                if h.incidents().iter().any(|i| i.force == f && i.year <= year) {
                    continue;
                }
                let Some(csv) = h.pack(f, year) else {
                    // Only the force whose first pack is an incident sends none before it.
                    assert!(h.incidents().iter().any(|i| i.force == f
                        && i.class == Class::FirstPackRateScale
                        && year < i.year));
                    continue;
                };
                let outcome = check_upload(
                    csv.as_bytes(),
                    None,
                    &settings,
                    pipeline.limits,
                    UploadScope {
                        force: Some((*id).to_owned()),
                        period: Some(History::period(year)),
                        now: None,
                    },
                    &mut NoSink,
                    &mut |_, _| Ok(()),
                )
                .unwrap();
                let codes: Vec<&str> = outcome.findings.iter().map(|f| f.code.as_str()).collect();
                assert!(codes.is_empty(), "{id} {year}: {codes:?}");
                assert_eq!(outcome.verdict.decision, Decision::Accepted);
                // Every mandatory row, figures and all.
                assert!(outcome.verdict.figures.len() >= 10, "{id} {year}");
            }
        }
    }

    #[test]
    fn the_planted_packs_are_what_their_class_says() {
        let h = history(5);
        for i in h.incidents() {
            let pack = h.pack(i.force, i.year).unwrap();
            let before = h.pack(i.force, i.year - 1);
            match i.class {
                Class::LastYearResent => assert_eq!(body(pack), body(before.unwrap())),
                Class::OtherForcePack => {
                    let source = h.pack(i.source.unwrap(), i.year).unwrap();
                    assert_eq!(body(pack), body(source));
                }
                Class::FirstPackRateScale => {
                    assert!((0..i.year).all(|y| h.pack(i.force, y).is_none()));
                }
                _ => assert_ne!(body(pack), body(before.unwrap()), "{:?}", i.class),
            }
        }
        assert_eq!(h.incidents().len(), CLASSES.len());
    }

    #[test]
    fn the_scorer_sees_what_the_engine_reports() {
        let h = history(5);
        let run = run(&project(), &h).unwrap();
        let s = score(&h, &run);
        // A pack sent again is found by its content, whichever force.
        let resent = s
            .classes
            .iter()
            .find(|c| c.class == Class::LastYearResent)
            .unwrap();
        assert!(resent.detected, "{resent:?}");
        assert!(resent.found.iter().any(|c| c == "anomaly_figures_resent"));
        // Every finding of an incident force-year is one of the found codes.
        for c in &s.classes {
            let seen = run
                .seen
                .iter()
                .filter(|x| History::force_ids()[x.force] == c.force)
                .filter(|x| History::period(x.year).to_string() == c.period)
                .count();
            assert_eq!(seen, c.found.len(), "{c:?}");
        }
        let summary = Summary {
            name: "seed 5".into(),
            scores: vec![s],
        };
        assert_eq!(summary.planted(), CLASSES.len());
        assert!(summary.detected() <= summary.planted());
        assert!(
            summary
                .markdown()
                .contains("| `last_year_resent` | 1 | 1 |")
        );
    }
}
