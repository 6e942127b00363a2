//! Derived metrics: the metrics table of one force and period, in long form (one row per
//! metric, dimension and category), from a submission's observations, what the profile's
//! `[observe]` names, and the population reference. `<records>` is `[observe] records`
//! (`searches` for stop and search); the other names in angle brackets are declared there too.
//!
//! | metric | dimension | category | value |
//! | --- | --- | --- | --- |
//! | `<records>` | (none) | (none) | records |
//! | `<records>` | a code-list or boolean dimension | a code, attribute value, `true`/`false` | records |
//! | `<records>` | `day_of_month` | `01` … `31` (days of the period, numbered from its first) | records that day |
//! | `<subset>` | (none), or `<subset by>` | (none), or a category or `(blank)` | records in the subset |
//! | `<category count>` | | | records in one declared category |
//! | `<category share>` | | | the same ÷ records |
//! | `<share>` | | | a declared recording-quality share (numerator ÷ denominator) |
//! | `<agreement>` | | | records where two dimensions agree ÷ records where both are recorded |
//! | `blank_rate` | `column` | a property | blank cells ÷ records (columns with blanks) |
//! | `population` | (none), or `<subset by>` | (none), or a group | residents |
//! | `rate_per_1000` | (none), or `<subset by>` | (none) = all, or a group | subset ÷ residents × 1,000 |
//! | `disparity_ratio` | `<subset by>` | a group other than the reference | the group's rate ÷ the reference group's rate |
//! | a catalogue metric's id (an aggregate return's figure) | (none), or its breakdown's dimensions joined by ` × ` | (none), or their codes joined the same way | the figure as the return gave it |
//!
//! Ratios carry their numerator and denominator, so a reader can add periods or forces up and
//! divide again. Rates follow `DOMAIN.md`: a group's rate counts the subset's records of that
//! group; records whose group is blank or not in the population reference are left out of
//! every group's rate but are in the all-persons rate. Rates are per period (add a year's
//! records, not its rates, for annual figures).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::observe::{ObserveSettings, breakdown_columns, breakdown_from_columns};
use crate::observe::Observations;
use crate::period::Period;
use crate::schema::AreaPopulation;

/// The dimension of records by day.
pub const DAY_OF_MONTH: &str = "day_of_month";

/// One row of the metrics table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    /// What is measured.
    pub metric: String,
    /// The breakdown (empty for a total).
    pub dimension: String,
    /// The category of the breakdown (empty for a total).
    pub category: String,
    /// The value.
    pub value: f64,
    /// For ratios: the numerator.
    pub numerator: Option<f64>,
    /// For ratios: the denominator.
    pub denominator: Option<f64>,
}

fn row(metric: &str, dimension: &str, category: &str, value: f64) -> MetricRow {
    MetricRow {
        metric: metric.to_owned(),
        dimension: dimension.to_owned(),
        category: category.to_owned(),
        value,
        numerator: None,
        denominator: None,
    }
}

fn ratio(metric: &str, dimension: &str, category: &str, num: f64, den: f64) -> Option<MetricRow> {
    (den > 0.0).then(|| MetricRow {
        value: num / den,
        numerator: Some(num),
        denominator: Some(den),
        ..row(metric, dimension, category, 0.0)
    })
}

/// The population of a force's area for rates, with the group disparity ratios compare with.
#[derive(Debug, Clone, Copy)]
pub struct Rates<'a> {
    /// The area's residents.
    pub area: &'a AreaPopulation,
    /// The reference group of disparity ratios, when any.
    pub reference_group: Option<&'a str>,
}

/// The metrics of one submission; a population adds rates and disparity ratios.
pub fn metric_rows(
    c: &Observations,
    observe: &ObserveSettings,
    population: Option<Rates<'_>>,
) -> Vec<MetricRow> {
    let records = observe.records.as_str();
    let rows = c.rows as f64;
    let mut out = vec![row(records, "", "", rows)];
    for (metric, by) in &c.figures {
        for (key, &value) in by {
            let (dimension, category) = breakdown_columns(key);
            out.push(row(metric, &dimension, &category, value));
        }
    }
    for (dimension, categories) in &c.categories {
        for (category, &n) in categories {
            out.push(row(records, dimension, category, n as f64));
        }
    }
    for (day, &n) in c.by_day.iter().enumerate() {
        out.push(row(
            records,
            DAY_OF_MONTH,
            &format!("{:02}", day + 1),
            n as f64,
        ));
    }
    if let Some(subset) = &observe.subset {
        out.push(row(&subset.name, "", "", c.subset as f64));
        for (group, &n) in &c.subset_by {
            out.push(row(&subset.name, &subset.by, group, n as f64));
        }
    }
    for m in &observe.categories {
        if !c.categories.contains_key(&m.dimension) {
            continue;
        }
        let n = c.count(&m.dimension, &m.category) as f64;
        if let Some(name) = &m.count {
            out.push(row(name, "", "", n));
        }
        if let Some(name) = &m.share {
            out.extend(ratio(name, "", "", n, rows));
        }
    }
    for share in &observe.shares {
        if c.records(share) {
            let (num, den) = c.share(share);
            out.extend(ratio(&share.name, "", "", num as f64, den as f64));
        }
    }
    for a in &observe.agreements {
        if let Some(&(agree, both)) = c.agreements.get(&a.name) {
            out.extend(ratio(&a.name, "", "", agree as f64, both as f64));
        }
    }
    for (property, &n) in &c.blanks {
        out.extend(ratio("blank_rate", "column", property, n as f64, rows));
    }
    if let (Some(rates), Some(subset)) = (population, &observe.subset) {
        let area = rates.area;
        let by = subset.by.as_str();
        out.push(row("population", "", "", area.all));
        out.extend(ratio(
            "rate_per_1000",
            "",
            "",
            c.subset as f64 * 1000.0,
            area.all,
        ));
        let mut group_rates = BTreeMap::new();
        for (group, &people) in &area.groups {
            out.push(row("population", by, group, people));
            let counted = c.subset_by.get(group).copied().unwrap_or(0) as f64;
            if let Some(r) = ratio("rate_per_1000", by, group, counted * 1000.0, people) {
                group_rates.insert(group.clone(), r.value);
                out.push(r);
            }
        }
        if let Some(reference) = rates.reference_group
            && let Some(&base) = group_rates.get(reference)
        {
            for (group, &rate) in &group_rates {
                if group != reference {
                    out.extend(ratio("disparity_ratio", by, group, rate, base));
                }
            }
        }
    }
    out
}

/// Rebuilds a submission's observations from its metric rows (the history the analysis reads
/// back). For an aggregate return (`figures`), every row but the records' is one of its
/// figures.
pub fn observations_from_rows(
    force_id: &str,
    period: Period,
    submission_id: &str,
    observe: &ObserveSettings,
    figures: bool,
    rows: &[MetricRow],
) -> Observations {
    let mut c = Observations {
        force_id: force_id.to_owned(),
        period: Some(period),
        submission_id: submission_id.to_owned(),
        by_day: vec![0; period.days() as usize],
        ..Observations::default()
    };
    let whole = |v: f64| {
        if v.is_finite() && v > 0.0 {
            v.round() as u64
        } else {
            0
        }
    };
    let subset = observe.subset.as_ref().map(|s| s.name.as_str());
    for r in rows {
        let (metric, dimension) = (r.metric.as_str(), r.dimension.as_str());
        let ratio = (
            whole(r.numerator.unwrap_or(0.0)),
            whole(r.denominator.unwrap_or(0.0)),
        );
        if metric == observe.records {
            match dimension {
                "" => c.rows = whole(r.value),
                DAY_OF_MONTH => {
                    if let Some(slot) = r
                        .category
                        .parse::<usize>()
                        .ok()
                        .and_then(|d| d.checked_sub(1))
                        .and_then(|d| c.by_day.get_mut(d))
                    {
                        *slot = whole(r.value);
                    }
                }
                _ => {
                    c.categories
                        .entry(dimension.to_owned())
                        .or_default()
                        .insert(r.category.clone(), whole(r.value));
                }
            }
        } else if metric == "blank_rate" && dimension == "column" {
            c.blanks.insert(r.category.clone(), ratio.0);
        } else if figures {
            c.figures
                .entry(metric.to_owned())
                .or_default()
                .insert(breakdown_from_columns(dimension, &r.category), r.value);
        } else if Some(metric) == subset {
            if dimension.is_empty() {
                c.subset = whole(r.value);
            } else {
                c.subset_by.insert(r.category.clone(), whole(r.value));
            }
        } else if let Some(share) = observe.share(metric).filter(|s| s.is_time_of_day()) {
            if ratio.0 > 0 {
                c.at_time.insert(share.name.clone(), ratio.0);
            }
            c.dated = ratio.1;
        } else if observe.agreements.iter().any(|a| a.name == metric) {
            c.agreements.insert(metric.to_owned(), ratio);
        }
    }
    c
}

/// The value of one metric row, when present.
pub fn find<'a>(
    rows: &'a [MetricRow],
    metric: &str,
    dimension: &str,
    category: &str,
) -> Option<&'a MetricRow> {
    rows.iter()
        .find(|r| r.metric == metric && r.dimension == dimension && r.category == category)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{BLANK, HEADER, count_csv};

    const SDE_GROUP: &str = "self_defined_ethnicity_group";

    /// The stop-and-search profile's declarations.
    fn observe() -> ObserveSettings {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let project = crate::config::Project::load(root).unwrap();
        project.pipeline("stop_search").unwrap().observe.clone()
    }

    /// Eight person searches with known groups, one vehicle search, and a population of round
    /// numbers: every rate and ratio below is worked out by hand in the comments.
    #[test]
    #[expect(
        clippy::float_cmp,
        reason = "every expected value is exact in binary or computed by the same division"
    )]
    fn rates_and_disparity_equal_hand_computed_values() {
        let line = |kind: &str, day: u32, sde: &str, outcome: &str, strip: &str| {
            format!(
                "{kind},2020-01-{day:02}T10:00:00+00:00,False,,53.4,-1.4,Male,18-24,{sde},White,Misuse of Drugs Act 1971 (section 23),Controlled drugs,{outcome},True,{strip}\n"
            )
        };
        let mut text = format!("{HEADER}\n");
        // White: 4 person searches (one of them also a vehicle), 1 arrest.
        text += &line("Person search", 1, "W1", "Arrest", "False");
        text += &line(
            "Person search",
            2,
            "W2",
            "A no further action disposal",
            "False",
        );
        text += &line(
            "Person search",
            3,
            "W9",
            "A no further action disposal",
            "True",
        );
        text += &line(
            "Person and Vehicle search",
            4,
            "W1",
            "A no further action disposal",
            "False",
        );
        // Black: 3 person searches, 2 arrests.
        text += &line("Person search", 5, "B1", "Arrest", "False");
        text += &line("Person search", 6, "B2", "Arrest", "False");
        text += &line(
            "Person search",
            7,
            "B9",
            "A no further action disposal",
            "False",
        );
        // Not stated: 1 person search; blank: a vehicle search (not a person).
        text += &line(
            "Person search",
            8,
            "NS",
            "A no further action disposal",
            "False",
        );
        text += &line(
            "Vehicle search",
            9,
            "",
            "A no further action disposal",
            "False",
        );
        let counts = count_csv(&text, "2020-01");
        let area = AreaPopulation {
            all: 20_000.0,
            groups: BTreeMap::from([
                ("White".to_owned(), 16_000.0),
                ("Black".to_owned(), 1_000.0),
                ("Asian".to_owned(), 2_000.0),
            ]),
        };
        let rates = Rates {
            area: &area,
            reference_group: Some("White"),
        };
        let rows = metric_rows(&counts, &observe(), Some(rates));
        let value = |m: &str, d: &str, c: &str| {
            find(&rows, m, d, c)
                .unwrap_or_else(|| panic!("no {m}/{d}/{c}"))
                .value
        };
        assert_eq!(value("searches", "", ""), 9.0);
        assert_eq!(value("person_searches", "", ""), 8.0);
        assert_eq!(value("person_searches", SDE_GROUP, "Not stated"), 1.0);
        assert!(find(&rows, "person_searches", SDE_GROUP, BLANK).is_none());
        assert_eq!(value("arrests", "", ""), 3.0);
        // 3 arrests of 9 searches.
        assert_eq!(value("arrest_rate", "", ""), 3.0 / 9.0);
        // Outcome linked is True in every row.
        assert_eq!(value("outcome_linked_rate", "", ""), 1.0);
        assert_eq!(value("more_thorough_searches", "", ""), 1.0);
        // NS plus the blank of the vehicle search: 2 of 9.
        assert_eq!(value("not_stated_share", "", ""), 2.0 / 9.0);
        // White: 4 ÷ 16,000 × 1,000 = 0.25; Black: 3 ÷ 1,000 × 1,000 = 3; Asian: 0.
        assert_eq!(value("rate_per_1000", SDE_GROUP, "White"), 0.25);
        assert_eq!(value("rate_per_1000", SDE_GROUP, "Black"), 3.0);
        assert_eq!(value("rate_per_1000", SDE_GROUP, "Asian"), 0.0);
        // All persons, not-stated included: 8 ÷ 20,000 × 1,000 = 0.4.
        assert_eq!(value("rate_per_1000", "", ""), 0.4);
        // Black ÷ White = 3 ÷ 0.25 = 12.
        assert_eq!(value("disparity_ratio", SDE_GROUP, "Black"), 12.0);
        let black = find(&rows, "disparity_ratio", SDE_GROUP, "Black").unwrap();
        assert_eq!(
            (black.numerator, black.denominator),
            (Some(3.0), Some(0.25))
        );
        assert_eq!(value("disparity_ratio", SDE_GROUP, "Asian"), 0.0);
        assert!(find(&rows, "disparity_ratio", SDE_GROUP, "White").is_none());
        assert_eq!(value("population", SDE_GROUP, "Black"), 1000.0);
        // The officer recorded White for everyone: the 4 White people agree, the 3 Black people
        // do not; NS is not compared and the vehicle search records neither.
        assert_eq!(value("ethnicity_agreement", "", ""), 4.0 / 7.0);
    }

    #[test]
    fn counts_survive_the_round_trip_through_metric_rows() {
        let text = format!(
            "{HEADER}\n\
             Person search,2020-02-03T00:00:00+00:00,,,,,Male,18-24,W1,White,Misuse of Drugs Act 1971 (section 23),Controlled drugs,Arrest,True,False\n\
             Vehicle search,2020-02-29,False,,53.4,-1.4,,,,,Police and Criminal Evidence Act 1984 (section 1),Stolen goods,Community resolution,,True\n"
        );
        let counts = count_csv(&text, "2020-02");
        let observe = observe();
        let rows = metric_rows(&counts, &observe, None);
        let back = observations_from_rows(
            &counts.force_id,
            counts.period.unwrap(),
            &counts.submission_id,
            &observe,
            false,
            &rows,
        );
        // Everything but the fingerprint, which is not a metric.
        assert!(!counts.fingerprint.is_empty());
        let mut expected = counts;
        expected.fingerprint = crate::model::fingerprint::Fingerprint::default();
        assert_eq!(back, expected);
    }

    #[test]
    fn an_aggregate_returns_figures_survive_the_round_trip_through_metric_rows() {
        let period: Period = "FY2024-25".parse().unwrap();
        let observe = ObserveSettings {
            records: "rows".into(),
            ..ObserveSettings::default()
        };
        let mut counts = Observations {
            force_id: "kent".into(),
            period: Some(period),
            submission_id: "s1".into(),
            rows: 4,
            by_day: vec![0; period.days() as usize],
            blanks: BTreeMap::from([("tactic".to_owned(), 3)]),
            ..Observations::default()
        };
        // The catalogue's `population` is a figure here, not the engine's metric of that name.
        for (metric, key, value) in [
            ("population", "", 1_850_000.0),
            ("stop_search_searches", "ethnicity=Black", 200.0),
            (
                "use_of_force_disparity_ratio",
                "ethnicity=Black; tactic=CED",
                3.25,
            ),
            ("stop_search_searches", "", 1000.0),
        ] {
            counts
                .figures
                .entry(metric.into())
                .or_default()
                .insert(key.into(), value);
        }
        let rows = metric_rows(&counts, &observe, None);
        let two = find(
            &rows,
            "use_of_force_disparity_ratio",
            "ethnicity × tactic",
            "Black × CED",
        );
        assert_eq!(two.map(|r| r.value), Some(3.25));
        let back = observations_from_rows("kent", period, "s1", &observe, true, &rows);
        assert_eq!(back, counts);
    }
}
