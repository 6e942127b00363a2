//! Derived metrics: the monthly metrics table of one force, in long form (one row per metric,
//! dimension and category), from a submission's counts and the population reference.
//!
//! | metric | dimension | category | value |
//! | --- | --- | --- | --- |
//! | `searches` | (none) | (none) | records |
//! | `searches` | a code-list or boolean dimension | a code, attribute value, `true`/`false` | records |
//! | `searches` | `day_of_month` | `01` … `31` | records that day |
//! | `person_searches` | (none), or `self_defined_ethnicity_group` | (none), or a group or `(blank)` | searches of a person |
//! | `arrests` | | | records with outcome group `Arrest` |
//! | `arrest_rate` | | | arrests ÷ searches |
//! | `outcome_linked_rate` | | | outcome linked to the object of search ÷ searches |
//! | `more_thorough_searches` | | | removal of more than outer clothing |
//! | `more_thorough_share` | | | the same ÷ searches |
//! | `not_stated_share` | | | self-defined ethnicity not stated or blank ÷ searches |
//! | `midnight_share` | | | times exactly at midnight or dates alone ÷ dated records |
//! | `blank_rate` | `column` | a property | blank cells ÷ records (columns with blanks) |
//! | `population` | (none), or `self_defined_ethnicity_group` | (none), or a group | residents |
//! | `rate_per_1000` | (none), or `self_defined_ethnicity_group` | (none) = all persons, or a group | person searches ÷ residents × 1,000 |
//! | `disparity_ratio` | `self_defined_ethnicity_group` | a group other than White | the group's rate ÷ the White rate |
//!
//! Ratios carry their numerator and denominator, so a reader can add months or forces up and
//! divide again. Rates follow `DOMAIN.md`: a group's rate counts person searches of people who
//! gave that group; searches with ethnicity not stated or blank are left out of every group's
//! rate but are in the all-persons rate. Rates are per month (multiply a year's searches, not a
//! month's rate, for annual figures).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::counts::{MonthlyCounts, SDE_GROUP};
use crate::period::Period;
use crate::schema::AreaPopulation;

/// The dimension of searches by day.
pub const DAY_OF_MONTH: &str = "day_of_month";
/// The group whose rate is the denominator of disparity ratios.
pub const REFERENCE_GROUP: &str = "White";

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

/// The metrics of one submission; population figures add rates and disparity ratios.
pub fn metric_rows(c: &MonthlyCounts, population: Option<&AreaPopulation>) -> Vec<MetricRow> {
    let rows = c.rows as f64;
    let mut out = vec![row("searches", "", "", rows)];
    for (dimension, categories) in &c.categories {
        for (category, &n) in categories {
            out.push(row("searches", dimension, category, n as f64));
        }
    }
    for (day, &n) in c.by_day.iter().enumerate() {
        out.push(row(
            "searches",
            DAY_OF_MONTH,
            &format!("{:02}", day + 1),
            n as f64,
        ));
    }
    out.push(row("person_searches", "", "", c.persons as f64));
    for (group, &n) in &c.persons_by_group {
        out.push(row("person_searches", SDE_GROUP, group, n as f64));
    }
    let has = |d: &str| c.categories.contains_key(d);
    if has("outcome_outcome_group") {
        let arrests = c.count("outcome_outcome_group", "Arrest") as f64;
        out.push(row("arrests", "", "", arrests));
        out.extend(ratio("arrest_rate", "", "", arrests, rows));
    }
    if has("outcome_linked_to_object_of_search") {
        let linked = c.count("outcome_linked_to_object_of_search", "true") as f64;
        out.extend(ratio("outcome_linked_rate", "", "", linked, rows));
    }
    if has("removal_of_more_than_just_outer_clothing") {
        let strip = c.count("removal_of_more_than_just_outer_clothing", "true") as f64;
        out.push(row("more_thorough_searches", "", "", strip));
        out.extend(ratio("more_thorough_share", "", "", strip, rows));
    }
    if has(SDE_GROUP) {
        out.extend(ratio(
            "not_stated_share",
            "",
            "",
            c.not_stated() as f64,
            rows,
        ));
    }
    out.extend(ratio(
        "midnight_share",
        "",
        "",
        c.midnight as f64,
        c.dated as f64,
    ));
    for (property, &n) in &c.blanks {
        out.extend(ratio("blank_rate", "column", property, n as f64, rows));
    }
    if let Some(area) = population {
        out.push(row("population", "", "", area.all));
        out.extend(ratio(
            "rate_per_1000",
            "",
            "",
            c.persons as f64 * 1000.0,
            area.all,
        ));
        let mut rates = BTreeMap::new();
        for (group, &people) in &area.groups {
            out.push(row("population", SDE_GROUP, group, people));
            let searched = c.persons_by_group.get(group).copied().unwrap_or(0) as f64;
            if let Some(r) = ratio("rate_per_1000", SDE_GROUP, group, searched * 1000.0, people) {
                rates.insert(group.clone(), r.value);
                out.push(r);
            }
        }
        if let Some(&white) = rates.get(REFERENCE_GROUP) {
            for (group, &rate) in &rates {
                if group != REFERENCE_GROUP {
                    out.extend(ratio("disparity_ratio", SDE_GROUP, group, rate, white));
                }
            }
        }
    }
    out
}

/// Rebuilds a submission's counts from its metric rows (the history the analysis reads back).
pub fn counts_from_rows(
    force_id: &str,
    period: Period,
    submission_id: &str,
    rows: &[MetricRow],
) -> MonthlyCounts {
    let mut c = MonthlyCounts {
        force_id: force_id.to_owned(),
        period: Some(period),
        submission_id: submission_id.to_owned(),
        by_day: vec![0; period.days() as usize],
        ..MonthlyCounts::default()
    };
    let whole = |v: f64| {
        if v.is_finite() && v > 0.0 {
            v.round() as u64
        } else {
            0
        }
    };
    for r in rows {
        match (r.metric.as_str(), r.dimension.as_str()) {
            ("searches", "") => c.rows = whole(r.value),
            ("searches", DAY_OF_MONTH) => {
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
            ("searches", dimension) => {
                c.categories
                    .entry(dimension.to_owned())
                    .or_default()
                    .insert(r.category.clone(), whole(r.value));
            }
            ("person_searches", "") => c.persons = whole(r.value),
            ("person_searches", _) => {
                c.persons_by_group
                    .insert(r.category.clone(), whole(r.value));
            }
            ("midnight_share", _) => {
                c.midnight = whole(r.numerator.unwrap_or(0.0));
                c.dated = whole(r.denominator.unwrap_or(0.0));
            }
            ("blank_rate", "column") => {
                c.blanks
                    .insert(r.category.clone(), whole(r.numerator.unwrap_or(0.0)));
            }
            _ => {}
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
    use crate::analyze::counts::{BLANK, NOT_STATED};
    use crate::analyze::counts::{HEADER, count_csv};

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
        let rows = metric_rows(&counts, Some(&area));
        let value = |m: &str, d: &str, c: &str| {
            find(&rows, m, d, c)
                .unwrap_or_else(|| panic!("no {m}/{d}/{c}"))
                .value
        };
        assert_eq!(value("searches", "", ""), 9.0);
        assert_eq!(value("person_searches", "", ""), 8.0);
        assert_eq!(value("person_searches", SDE_GROUP, NOT_STATED), 1.0);
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
    }

    #[test]
    fn counts_survive_the_round_trip_through_metric_rows() {
        let text = format!(
            "{HEADER}\n\
             Person search,2020-02-03T00:00:00+00:00,,,,,Male,18-24,W1,White,Misuse of Drugs Act 1971 (section 23),Controlled drugs,Arrest,True,False\n\
             Vehicle search,2020-02-29,False,,53.4,-1.4,,,,,Police and Criminal Evidence Act 1984 (section 1),Stolen goods,Community resolution,,True\n"
        );
        let counts = count_csv(&text, "2020-02");
        let rows = metric_rows(&counts, None);
        let back = counts_from_rows(
            &counts.force_id,
            counts.period.unwrap(),
            &counts.submission_id,
            &rows,
        );
        assert_eq!(back, counts);
    }
}
