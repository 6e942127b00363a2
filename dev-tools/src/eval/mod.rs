//! The honest evaluation of the gap and anomaly analysis: a history generated here, sharing no
//! code with the demo ([`history`], with its own random numbers in [`rng`] and its own force
//! table in [`forces`]), with fifteen planted incident classes.

pub mod forces;
pub mod history;
pub mod rng;

pub use history::{Class, Config, History};

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use force_returns::config::Project;
    use force_returns::finding::{NoSink, Severity};
    use force_returns::pipeline::{check_settings, check_upload};
    use force_returns::validate::UploadScope;

    use super::history::{FIRST_INCIDENT_MONTH, HEADER, Incident, MONTHS};
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
}
