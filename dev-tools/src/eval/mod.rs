//! The honest evaluation of the gap and anomaly analysis (`force-returns-dev evaluate`).
//!
//! A history generated here, sharing no code with the demo ([`history`], with its own random
//! numbers in [`rng`] and its own force table in [`forces`]), is fed through the engine's real
//! checks and analysis, and what the forces would see is scored against the fifteen incidents
//! planted in it ([`score`]). The detector may be tuned on the [`TUNE_SEEDS`]; the figures in
//! `QUALITY.md` are those of the [`REPORT_SEEDS`], which tuning never looks at.

pub mod forces;
pub mod history;
pub mod rng;
pub mod score;

use force_returns::config::Project;

pub use history::{Class, Config, History};
pub use score::{REPORT_SEEDS, Score, Summary, TARGETS, TUNE_SEEDS};

/// Which histories to evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seeds {
    /// The seeds the detector may be tuned on.
    Tune,
    /// The seeds the figures are reported on.
    Report,
    /// Seeds given one by one.
    List(Vec<u64>),
}

impl Seeds {
    /// Reads `tune`, `report` or seeds separated by commas.
    pub fn parse(text: &str) -> Result<Seeds, String> {
        match text {
            "tune" => Ok(Seeds::Tune),
            "report" => Ok(Seeds::Report),
            _ => text
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse::<u64>()
                        .map_err(|_| format!("`{s}` is not a seed: give `tune`, `report` or numbers separated by commas"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Seeds::List),
        }
    }

    /// The seeds.
    pub fn values(&self) -> Vec<u64> {
        match self {
            Seeds::Tune => TUNE_SEEDS.to_vec(),
            Seeds::Report => REPORT_SEEDS.to_vec(),
            Seeds::List(v) => v.clone(),
        }
    }

    /// How the summary names them.
    pub fn name(&self) -> String {
        match self {
            Seeds::Tune => "tune seeds".to_owned(),
            Seeds::Report => "report seeds".to_owned(),
            Seeds::List(_) => "seeds given".to_owned(),
        }
    }
}

/// Generates, runs and scores the history of each seed at `scale`.
pub fn evaluate(project: &Project, seeds: &Seeds, scale: f64) -> Result<Summary, String> {
    let mut scores = Vec::new();
    for seed in seeds.values() {
        let history = History::new(Config { seed, scale });
        let run = score::run(project, &history)?;
        scores.push(score::score(&history, &run));
    }
    Ok(Summary {
        name: seeds.name(),
        scores,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use force_returns::finding::{NoSink, Severity};
    use force_returns::pipeline::{check_settings, check_upload};
    use force_returns::validate::UploadScope;

    use super::history::{FIRST_INCIDENT_MONTH, HEADER, Incident, MONTHS};
    use super::score::{Run, Seen, run, score, target_of};
    use super::*;

    fn project() -> Project {
        Project::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap()
    }

    fn small() -> History {
        History::new(Config {
            seed: 5,
            scale: 0.05,
        })
    }

    fn incident(h: &History, class: Class) -> Incident {
        h.incidents()
            .iter()
            .find(|i| i.class == class)
            .unwrap()
            .clone()
    }

    fn rows(h: &History, force: usize, month: usize) -> Vec<Vec<String>> {
        let upload = h.upload(force, month).unwrap();
        let text = String::from_utf8(upload.bytes).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(HEADER));
        lines
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect()
    }

    #[test]
    fn fifteen_incidents_on_fifteen_forces_after_the_first_year() {
        let h = small();
        assert_eq!(h.incidents().len(), 15);
        let forces: BTreeSet<usize> = h.incidents().iter().map(|i| i.force).collect();
        assert_eq!(forces.len(), 15);
        for i in h.incidents() {
            assert!(i.month >= FIRST_INCIDENT_MONTH && i.month < MONTHS, "{i:?}");
        }
        let other = incident(&h, Class::ResentOtherForce).other.unwrap();
        assert!(
            !forces.contains(&other),
            "the force whose file is sent stays clean"
        );
    }

    #[test]
    fn a_resent_month_is_last_months_records_with_only_the_dates_moved() {
        let h = small();
        let i = incident(&h, Class::ResentPreviousPeriod);
        let drop_date = |rows: Vec<Vec<String>>| -> Vec<Vec<String>> {
            rows.into_iter()
                .map(|mut r| {
                    r.remove(1);
                    r
                })
                .collect()
        };
        let this = rows(&h, i.force, i.month);
        let month = h.periods()[i.month].to_string();
        assert!(!this.is_empty());
        assert!(
            this.iter().all(|r| r[1].starts_with(&month)),
            "dates are in {month}"
        );
        assert_eq!(drop_date(this), drop_date(rows(&h, i.force, i.month - 1)));
        // The month before it is the force's own, not a copy of the one before.
        assert_ne!(
            drop_date(rows(&h, i.force, i.month - 1)),
            drop_date(rows(&h, i.force, i.month - 2))
        );
    }

    #[test]
    fn a_doubled_month_has_every_record_twice_and_other_planted_files_show_their_fault() {
        let h = small();
        let i = incident(&h, Class::DoubledPeriod);
        let this = rows(&h, i.force, i.month);
        let (a, b) = this.split_at(this.len() / 2);
        assert!(!a.is_empty());
        assert_eq!(a, b);
        let other = incident(&h, Class::ResentOtherForce);
        assert_eq!(
            h.upload(other.force, other.month).unwrap().bytes,
            h.upload(other.other.unwrap(), other.month).unwrap().bytes
        );
        let missing = incident(&h, Class::MissingPeriods);
        for m in missing.month..missing.month + 3 {
            assert!(h.upload(missing.force, m).is_none());
        }
        assert!(h.upload(missing.force, missing.month + 3).is_some());
        let midnight = incident(&h, Class::TimesAtMidnight);
        assert!(
            rows(&h, midnight.force, midnight.month)
                .iter()
                .all(|r| r[1].ends_with("T00:00:00+00:00"))
        );
        let partial = incident(&h, Class::PartialPeriod);
        let days: BTreeSet<String> = rows(&h, partial.force, partial.month)
            .iter()
            .map(|r| r[1][8..10].to_owned())
            .collect();
        assert!(days.iter().all(|d| d.as_str() <= "17"), "{days:?}");
        let miscoded = incident(&h, Class::PeerMiscoding);
        assert!(
            (0..MONTHS)
                .flat_map(|m| rows(&h, miscoded.force, m))
                .all(|r| r[8] != "Other ethnic group - Not stated")
        );
    }

    #[test]
    fn clean_files_pass_the_real_check_with_no_error() {
        let project = project();
        let pipeline = project.pipeline("stop_search").unwrap();
        let settings = check_settings(pipeline);
        let h = small();
        let incident_forces: BTreeSet<usize> = h.incidents().iter().map(|i| i.force).collect();
        let mut warnings: BTreeMap<String, usize> = BTreeMap::new();
        let mut records = 0;
        for force in (0..43).filter(|f| !incident_forces.contains(f)) {
            for month in (0..MONTHS).step_by(5) {
                let upload = h.upload(force, month).unwrap();
                let outcome = check_upload(
                    upload.bytes.as_slice(),
                    None,
                    &settings,
                    pipeline.limits,
                    UploadScope {
                        force: Some(upload.force.to_owned()),
                        period: Some(upload.period),
                        now: Some(upload.uploaded_at),
                    },
                    &mut NoSink,
                    &mut |_, _| Ok(()),
                )
                .unwrap();
                records += outcome.decode.records;
                for f in &outcome.findings {
                    assert!(f.severity < Severity::Error, "{}: {f:?}", upload.key);
                    if f.severity == Severity::Warning {
                        *warnings.entry(f.code.as_str().to_owned()).or_default() += 1;
                    }
                }
            }
        }
        assert!(records > 5_000, "{records}");
        // Blank-rate warnings can come by chance on a small file; nothing else.
        assert!(warnings.keys().all(|c| c == "blank_rate"), "{warnings:?}");
    }

    /// The group a self-defined label belongs to, as the officer-defined list names it.
    fn group(label: &str) -> Option<&str> {
        match label.split([' ', '/']).next()? {
            _ if label.ends_with("Not stated") => None,
            "White" => Some("White"),
            "Mixed" => Some("Mixed"),
            "Asian" => Some("Asian"),
            "Black" => Some("Black"),
            "Other" => Some("Other"),
            _ => None,
        }
    }

    #[test]
    fn clean_forces_agree_on_ethnicity_mostly_and_use_section_60_only_in_bursts() {
        let h = History::new(Config {
            seed: 5,
            scale: 0.2,
        });
        let incident_forces: BTreeSet<usize> = h.incidents().iter().map(|i| i.force).collect();
        let (mut agree, mut both) = (0u32, 0u32);
        let mut bursting = 0;
        for force in (0..43).filter(|f| !incident_forces.contains(f)) {
            let bursts = h.burst_months(force);
            bursting += usize::from(!bursts.is_empty());
            for month in 0..MONTHS {
                let rows = rows(&h, force, month);
                let s60 = rows
                    .iter()
                    .filter(|r| r[10].ends_with("(section 60)"))
                    .count();
                assert_eq!(s60 > 0, bursts.contains(&month), "{force} {month}");
                if month % 6 != 0 {
                    continue;
                }
                for r in &rows {
                    if let Some(g) = group(&r[8])
                        && ["White", "Mixed", "Asian", "Black", "Other"].contains(&r[9].as_str())
                    {
                        both += 1;
                        agree += u32::from(g == r[9]);
                    }
                }
            }
        }
        let share = f64::from(agree) / f64::from(both);
        assert!((0.8..=0.92).contains(&share), "{share}");
        assert!(bursting > 0);
    }

    #[test]
    fn the_scorer_counts_a_planted_alarm_and_a_false_one() {
        let h = small();
        let i = incident(&h, Class::SmallForceHalving);
        let (shock, _) = h.shock();
        let clean = h
            .force_ids()
            .into_iter()
            .find(|f| h.incidents().iter().all(|i| i.force_id() != *f))
            .unwrap();
        let seen = |force: &str, month: usize, code: &str| Seen {
            force: force.to_owned(),
            month,
            code: code.to_owned(),
            severity: Severity::Warning,
            what: "searches".to_owned(),
        };
        let empty = Run {
            seen: Vec::new(),
            overdue: BTreeMap::new(),
            not_received: BTreeMap::new(),
            records: 0,
            seconds: 0.0,
            detect_seconds: 0.0,
        };
        let found = |s: &Score| {
            s.classes
                .iter()
                .find(|c| c.class == Class::SmallForceHalving)
                .unwrap()
                .detected
        };
        assert!(!found(&score(&h, &empty)));
        let mut wrong = empty.clone();
        wrong
            .seen
            .push(seen(i.force_id(), i.month, "anomaly_category_share"));
        wrong
            .seen
            .push(seen(i.force_id(), i.month + 1, "anomaly_volume"));
        assert!(!found(&score(&h, &wrong)), "another code, or a month late");
        let mut right = empty.clone();
        right
            .seen
            .push(seen(i.force_id(), i.month, "anomaly_volume"));
        right.seen.push(seen(clean, shock.start, "anomaly_volume"));
        right.seen.push(seen(clean, 0, "blank_rate"));
        let s = score(&h, &right);
        assert!(found(&s));
        assert_eq!(s.shock_alarms.get("anomaly_volume"), Some(&1));
        assert_eq!(s.ordinary_alarms.get("blank_rate"), Some(&1));
        let summary = Summary {
            name: "test".to_owned(),
            scores: vec![s],
        };
        assert_eq!(summary.detected(), 1);
        let (shock_rate, ordinary_rate, _) = summary.alarm_rates();
        let (shock_years, ordinary_years) = summary.force_years();
        assert!((shock_rate - 1.0 / shock_years).abs() < 1e-12);
        assert!((ordinary_rate - 1.0 / ordinary_years).abs() < 1e-12);
        assert!(target_of(Class::MissingPeriods).overdue);
    }

    #[test]
    fn missing_months_are_overdue_in_the_engine_run() {
        let project = project();
        let h = small();
        let r = run(&project, &h).unwrap();
        let s = score(&h, &r);
        let missing = s
            .classes
            .iter()
            .find(|c| c.class == Class::MissingPeriods)
            .unwrap();
        assert!(missing.detected, "{missing:?}");
        assert_eq!(s.false_gaps, 0, "{:?}", r.not_received);
    }
}
