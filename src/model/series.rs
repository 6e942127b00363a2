//! A dataset's observations kept together so that an analysis reads them in one request: per
//! force, the observations of its current submissions over the window an analysis looks back
//! on (its series), and per dataset, each force's latest period (its peers). `state` stores
//! them; the analysis reads them before falling back to the metrics files.
//!
//! A [`Series`] is a derived cache of the metrics files, never the truth: an entry counts only
//! for the submission it names, and a reader asks for it by force, period and the submission
//! the manifest holds current. A stale entry (a submission since replaced) or a missing one is
//! simply not found, and the reader reads the metrics file as it would without a series.
//!
//! The format carries a version ([`SERIES_VERSION`]); a field added to [`Observations`] takes
//! its default when an older object lacks it, so objects written before it still read.

use serde::{Deserialize, Serialize};

use crate::model::observe::Observations;
use crate::period::Period;

/// The version of the series format this build reads and writes.
pub const SERIES_VERSION: u32 = 1;

/// Observations of current submissions, each naming its force, period and submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// The format's version: an object of another version is not read, and one of a later
    /// version is never overwritten.
    pub series_version: u32,
    /// The dataset.
    pub dataset: String,
    /// The observations, ordered by force and period, one per force and period.
    pub observations: Vec<Observations>,
}

/// Just the version of a stored series.
#[derive(Deserialize)]
struct Version {
    series_version: u32,
}

/// The version a stored series declares, read before the rest; `None` when it declares none
/// (not a series).
pub fn version_of(bytes: &[u8]) -> Option<u32> {
    serde_json::from_slice::<Version>(bytes)
        .ok()
        .map(|v| v.series_version)
}

impl Series {
    /// A series holding nothing.
    pub fn empty(dataset: &str) -> Series {
        Series {
            series_version: SERIES_VERSION,
            dataset: dataset.to_owned(),
            observations: Vec::new(),
        }
    }

    /// The observations of exactly this submission of `force` for `period`, if held.
    pub fn find(&self, force: &str, period: Period, submission: &str) -> Option<&Observations> {
        self.observations.iter().find(|o| {
            o.force_id == force && o.period == Some(period) && o.submission_id == submission
        })
    }

    /// Holds `o` for its force and period, in place of what was held there. Returns whether
    /// anything changed; observations without a period are not held.
    pub fn put(&mut self, o: Observations) -> bool {
        self.hold(o, |held, o| held.period == o.period, |_, _| true)
    }

    /// Holds `o` as its force's latest period: in place of the force's observations when they
    /// are of the same period or an earlier one; kept out when the force has a later one.
    /// Returns whether anything changed.
    pub fn put_latest(&mut self, o: Observations) -> bool {
        self.hold(o, |_, _| true, |held, o| held.period <= o.period)
    }

    /// Holds `o` in place of the force's entry that `same` picks, when `replaces` says it may,
    /// or beside the others when there is none. Returns whether anything changed; observations
    /// without a period are not held.
    fn hold(
        &mut self,
        o: Observations,
        same: impl Fn(&Observations, &Observations) -> bool,
        replaces: impl Fn(&Observations, &Observations) -> bool,
    ) -> bool {
        if o.period.is_none() {
            return false;
        }
        match self
            .observations
            .iter_mut()
            .find(|h| h.force_id == o.force_id && same(h, &o))
        {
            Some(held) if *held == o || !replaces(held, &o) => false,
            Some(held) => {
                *held = o;
                true
            }
            None => {
                self.observations.push(o);
                self.sort();
                true
            }
        }
    }

    /// Drops each force's periods more than `periods` periods before its latest one. Returns
    /// whether anything was dropped.
    pub fn keep_last(&mut self, periods: usize) -> bool {
        let before = self.observations.len();
        let newest: Vec<(String, Period)> = self
            .observations
            .iter()
            .filter_map(|o| Some((o.force_id.clone(), o.period?)))
            .fold(Vec::new(), |mut newest, (force, period)| {
                match newest.iter_mut().find(|(f, _)| *f == force) {
                    Some((_, p)) if *p < period => *p = period,
                    Some(_) => {}
                    None => newest.push((force, period)),
                }
                newest
            });
        self.observations.retain(|o| {
            let Some((_, latest)) = newest.iter().find(|(f, _)| *f == o.force_id) else {
                return false;
            };
            let oldest = (0..periods).fold(*latest, |p, _| p.prev());
            o.period.is_some_and(|p| p >= oldest)
        });
        self.observations.len() != before
    }

    fn sort(&mut self) {
        self.observations
            .sort_by(|a, b| (&a.force_id, a.period).cmp(&(&b.force_id, b.period)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn month(force: &str, period: &str, submission: &str, rows: u64) -> Observations {
        Observations {
            force_id: force.to_owned(),
            period: Some(period.parse().unwrap()),
            submission_id: submission.to_owned(),
            rows,
            ..Observations::default()
        }
    }

    fn p(s: &str) -> Period {
        s.parse().unwrap()
    }

    #[test]
    fn an_entry_is_found_only_for_the_submission_it_names() {
        let mut s = Series::empty("stop_search");
        assert!(s.put(month("kent", "2020-01", "a", 10)));
        assert_eq!(s.find("kent", p("2020-01"), "a").map(|o| o.rows), Some(10));
        assert!(s.find("kent", p("2020-01"), "b").is_none());
        assert!(s.find("kent", p("2020-02"), "a").is_none());
        assert!(s.find("essex", p("2020-01"), "a").is_none());
        // A resubmission takes the period's place.
        assert!(s.put(month("kent", "2020-01", "b", 12)));
        assert!(!s.put(month("kent", "2020-01", "b", 12)), "nothing new");
        assert_eq!(s.observations.len(), 1);
        assert!(s.find("kent", p("2020-01"), "a").is_none());
    }

    #[test]
    fn the_latest_keeps_one_period_a_force_and_never_goes_back() {
        let mut s = Series::empty("stop_search");
        assert!(s.put_latest(month("kent", "2020-02", "a", 1)));
        assert!(s.put_latest(month("essex", "2020-01", "b", 1)));
        assert!(!s.put_latest(month("kent", "2020-01", "c", 1)), "earlier");
        assert!(s.put_latest(month("kent", "2020-03", "d", 1)));
        assert_eq!(
            s.observations
                .iter()
                .map(|o| (o.force_id.as_str(), o.submission_id.as_str()))
                .collect::<Vec<_>>(),
            [("essex", "b"), ("kent", "d")]
        );
    }

    #[test]
    fn each_force_keeps_its_window_of_periods() {
        let mut s = Series::empty("stop_search");
        for (period, id) in [("2019-12", "a"), ("2020-01", "b"), ("2020-03", "c")] {
            s.put(month("kent", period, id, 1));
        }
        s.put(month("essex", "2019-12", "e", 1));
        assert!(s.keep_last(2));
        assert_eq!(
            s.observations
                .iter()
                .map(|o| o.submission_id.as_str())
                .collect::<Vec<_>>(),
            ["e", "b", "c"]
        );
        assert!(!s.keep_last(2));
    }

    #[test]
    fn an_object_of_an_older_build_without_a_later_field_still_reads() {
        // As written before a field was added: `observations` entries with fewer fields.
        let old = r#"{"series_version":1,"dataset":"stop_search","observations":[
            {"force_id":"kent","period":"2020-01","submission_id":"a","rows":3}]}"#;
        let s: Series = serde_json::from_str(old).unwrap();
        assert_eq!(s.find("kent", p("2020-01"), "a").map(|o| o.rows), Some(3));
        let back: Series = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
