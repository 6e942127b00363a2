//! What a record-level return's records yield, as its profile declares it in `[observe]`: the
//! name of its records, recording-quality shares, the subset counted for rates per 1,000 and
//! its breakdown, agreement between two fields, single categories published as metrics, and
//! the headline figures of the force summary. The engine computes all of them in one columnar
//! pass (`crate::observe`); detection, derived metrics and summaries read them by the
//! names given here, so `src/` names no field of any return.
//!
//! Everything is named by *dimension*: a code-list property (`outcome`), a property and one of
//! its code list's attributes (`outcome_outcome_group`), or a boolean property — the names the
//! metrics snapshot uses (`RecordSchema::dimensions`). [`ObserveSettings::check`] lists every
//! name the schema does not have, for `check-config`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::fingerprint::Fingerprint;
use crate::period::Period;

/// The metrics every return's table has, whatever it declares.
pub const ENGINE_METRICS: [&str; 4] = [
    "blank_rate",
    "population",
    "rate_per_1000",
    "disparity_ratio",
];

/// The problems with one named dimension and its categories.
fn dimension_problems(
    dimensions: &BTreeMap<String, Vec<String>>,
    key: &str,
    d: &str,
    categories: &[String],
) -> Vec<String> {
    if d.is_empty() {
        return vec![format!(
            "observe.{key} must have either `dimension` (with `categories`) or `time_of_day`"
        )];
    }
    match dimensions.get(d) {
        None => vec![format!(
            "observe.{key} names `{d}`, which is not a dimension of the schema (one of {:?})",
            dimensions.keys().collect::<Vec<_>>()
        )],
        Some(values) => categories
            .iter()
            .filter(|c| !values.contains(c))
            .map(|c| format!("observe.{key}: `{c}` is not a value of `{d}` (one of {values:?})"))
            .collect(),
    }
}

/// The `[observe]` table of a pipeline.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObserveSettings {
    /// What one record is, in the plural (`searches`): the name of the record-count metric and
    /// the word messages use.
    pub records: String,
    /// Recording-quality shares, each checked for rises against history and peers.
    pub shares: Vec<ShareDecl>,
    /// The records counted for rates per 1,000 population, and their breakdown.
    pub subset: Option<SubsetDecl>,
    /// Agreement between two dimensions.
    pub agreements: Vec<AgreementDecl>,
    /// Single categories published as metrics of their own.
    pub categories: Vec<CategoryMetric>,
    /// The headline figures of the force summary, in order.
    pub headlines: Vec<HeadlineDecl>,
}

impl Default for ObserveSettings {
    fn default() -> Self {
        ObserveSettings {
            records: "records".to_owned(),
            shares: Vec::new(),
            subset: None,
            agreements: Vec::new(),
            categories: Vec::new(),
            headlines: Vec::new(),
        }
    }
}

/// A share of records meeting a condition (`[[observe.shares]]`): either some categories of a
/// dimension (with the blanks of a property) over every record, or records timed exactly at a
/// time of day (or dated without a time) over the records with a readable date.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareDecl {
    /// The metric's name (`not_stated_share`).
    pub name: String,
    /// The series in words, for anomaly tables (`share of searches with ethnicity not stated`).
    pub title: String,
    /// A clause for messages, completed by "in 4% of searches (12 of 300)".
    pub clause: String,
    /// What a force should check when the share rises.
    pub advice: String,
    /// The dimension whose `categories` are counted.
    #[serde(default)]
    pub dimension: Option<String>,
    /// The categories of `dimension` counted.
    #[serde(default)]
    pub categories: Vec<String>,
    /// A property whose blank cells are counted too.
    #[serde(default)]
    pub or_blank: Option<String>,
    /// A time of day (`00:00:00`): records of the period's date field at exactly this time, or
    /// with a date and no time, over the records with a readable date.
    #[serde(default)]
    pub time_of_day: Option<String>,
}

impl ShareDecl {
    /// Whether this share counts records by the time of day rather than by category.
    pub fn is_time_of_day(&self) -> bool {
        self.time_of_day.is_some()
    }
}

/// The records counted for rates (`[observe.subset]`): those whose `dimension` is one of
/// `categories` (every record when no dimension is given), counted by the categories of `by`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubsetDecl {
    /// The metric's name (`person_searches`).
    pub name: String,
    /// The dimension that selects the subset.
    #[serde(default)]
    pub dimension: Option<String>,
    /// Its categories that are in the subset.
    #[serde(default)]
    pub categories: Vec<String>,
    /// The breakdown: a dimension whose categories the population reference has columns for.
    pub by: String,
}

/// Agreement between two dimensions (`[[observe.agreements]]`): of the records where both are
/// recorded and neither is one of `ignore`, the share where they are equal.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgreementDecl {
    /// The metric's name.
    pub name: String,
    /// The two dimensions compared.
    pub dimensions: [String; 2],
    /// Categories that do not count as recorded (`Not stated`).
    #[serde(default)]
    pub ignore: Vec<String>,
}

/// One category published as metrics (`[[observe.categories]]`): its count, its share of every
/// record, or both.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryMetric {
    /// The dimension.
    pub dimension: String,
    /// The category.
    pub category: String,
    /// The name of the count metric, when published.
    #[serde(default)]
    pub count: Option<String>,
    /// The name of the share metric (count ÷ records), when published.
    #[serde(default)]
    pub share: Option<String>,
}

/// One headline figure (`[[observe.headlines]]`): a metric's total, or one figure per category
/// of a dimension (`{category}` in the label is replaced by it).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadlineDecl {
    /// The words shown.
    pub label: String,
    /// The metric.
    pub metric: String,
    /// The dimension, for one headline per category.
    #[serde(default)]
    pub dimension: Option<String>,
    /// How to show it: `count` (the default) or `share`.
    #[serde(default)]
    pub unit: HeadlineUnit,
}

/// How a headline is shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadlineUnit {
    /// A number.
    #[default]
    Count,
    /// A percentage.
    Share,
}

impl ObserveSettings {
    /// Every problem with these declarations for a schema whose dimensions (with the values
    /// each may take) are `dimensions` and whose properties are `properties`, as messages
    /// naming the key.
    pub fn check(
        &self,
        dimensions: &BTreeMap<String, Vec<String>>,
        properties: &[String],
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let mut dimension = |key: &str, d: &str, categories: &[String]| {
            problems.extend(dimension_problems(dimensions, key, d, categories));
        };
        for s in &self.shares {
            let key = format!("shares.{}", s.name);
            match (&s.dimension, &s.time_of_day) {
                (Some(d), None) => dimension(&key, d, &s.categories),
                (None, Some(_)) => {}
                _ => dimension(&key, "", &[]),
            }
        }
        if let Some(s) = &self.subset {
            if let Some(d) = &s.dimension {
                dimension("subset.dimension", d, &s.categories);
            }
            dimension("subset.by", &s.by, &[]);
        }
        for a in &self.agreements {
            for d in &a.dimensions {
                dimension(&format!("agreements.{}", a.name), d, &[]);
            }
        }
        for c in &self.categories {
            dimension(
                "categories",
                &c.dimension,
                std::slice::from_ref(&c.category),
            );
        }
        for s in &self.shares {
            if let Some(p) = &s.or_blank
                && !properties.contains(p)
            {
                problems.push(format!(
                    "observe.shares.{}.or_blank names `{p}`, which is not a field of the schema",
                    s.name
                ));
            }
            if let Some(t) = &s.time_of_day
                && chrono::NaiveTime::parse_from_str(t, "%H:%M:%S").is_err()
            {
                problems.push(format!(
                    "observe.shares.{}.time_of_day is `{t}`, not a time written hh:mm:ss",
                    s.name
                ));
            }
        }
        let mut names = self.metric_names();
        for h in self.headlines.iter().filter(|h| {
            !names.contains(&h.metric.as_str()) && !ENGINE_METRICS.contains(&h.metric.as_str())
        }) {
            problems.push(format!(
                "observe.headlines: `{}` is not a metric of this return (one of {names:?} or {ENGINE_METRICS:?})",
                h.metric
            ));
        }
        names.extend(ENGINE_METRICS);
        names.sort_unstable();
        for pair in names.windows(2).filter(|w| w[0] == w[1]) {
            problems.push(format!(
                "observe: the metric name `{}` is declared twice (or is one the engine writes)",
                pair[0]
            ));
        }
        problems
    }

    /// Every metric name these declarations give, the record count first.
    pub fn metric_names(&self) -> Vec<&str> {
        std::iter::once(self.records.as_str())
            .chain(self.shares.iter().map(|s| s.name.as_str()))
            .chain(self.subset.iter().map(|s| s.name.as_str()))
            .chain(self.agreements.iter().map(|a| a.name.as_str()))
            .chain(
                self.categories
                    .iter()
                    .flat_map(|c| c.count.iter().chain(c.share.iter()).map(String::as_str)),
            )
            .collect()
    }

    /// The declared share called `name`.
    pub fn share(&self, name: &str) -> Option<&ShareDecl> {
        self.shares.iter().find(|s| s.name == name)
    }
}

/// An aggregate return's figures: metric id → breakdown ([`breakdown_key`]) → value.
pub type Figures = BTreeMap<String, BTreeMap<String, f64>>;

/// What joins the dimensions (and the codes) of a breakdown of several in the metrics table.
pub const BREAKDOWN_JOIN: &str = " × ";

/// How a breakdown is keyed in [`Figures`]: each dimension and its code, in the catalogue's
/// order (`ethnicity=Black; tactic=CED`); empty for a total.
pub fn breakdown_key<'a>(cells: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    cells
        .into_iter()
        .map(|(d, c)| format!("{d}={c}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A breakdown key's dimensions and codes ([`breakdown_key`] back); none for a total.
pub fn breakdown_cells(key: &str) -> impl Iterator<Item = (&str, &str)> {
    key.split("; ")
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
}

/// A breakdown key as the metrics table's dimension and category: `ethnicity × tactic` and
/// `Black × CED`; `ethnicity` and `Black`; both empty for a total.
pub fn breakdown_columns(key: &str) -> (String, String) {
    let (dimensions, codes): (Vec<&str>, Vec<&str>) = breakdown_cells(key).unzip();
    (dimensions.join(BREAKDOWN_JOIN), codes.join(BREAKDOWN_JOIN))
}

/// The breakdown key of a metrics table's dimension and category ([`breakdown_columns`] back).
pub fn breakdown_from_columns(dimension: &str, category: &str) -> String {
    if dimension.is_empty() {
        return String::new();
    }
    breakdown_key(
        dimension
            .split(BREAKDOWN_JOIN)
            .zip(category.split(BREAKDOWN_JOIN)),
    )
}

/// The observations of one submission for one force and period.
///
/// They are stored (the force's series, `crate::model::series`) as JSON. A field added later
/// must read old objects: the struct takes its default for any field an object lacks, and
/// fields it does not know are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Observations {
    /// Canonical force id.
    pub force_id: String,
    /// The period.
    pub period: Option<Period>,
    /// The submission counted.
    pub submission_id: String,
    /// Records.
    pub rows: u64,
    /// Records per day of the period (index 0 is its first day); dates that are not readable
    /// are not counted.
    pub by_day: Vec<u64>,
    /// Records with a readable date.
    pub dated: u64,
    /// Per time-of-day share (by name): dated records at exactly that time, or with no time.
    pub at_time: BTreeMap<String, u64>,
    /// Blank cells per property (properties with no blanks are left out).
    pub blanks: BTreeMap<String, u64>,
    /// Records per category: the dimension is a code-list property (canonical codes), a
    /// property and one of its code list's attributes (`<property>_<attribute>`), or a boolean
    /// property (`true` / `false`). Blank cells are not counted here; zero counts are left out.
    pub categories: BTreeMap<String, BTreeMap<String, u64>>,
    /// Records in the declared subset (every record when it names no dimension).
    pub subset: u64,
    /// The subset by its breakdown's categories, blanks under [`BLANK`].
    pub subset_by: BTreeMap<String, u64>,
    /// Per agreement (by name): records where both dimensions agree, and records where both
    /// are recorded.
    pub agreements: BTreeMap<String, (u64, u64)>,
    /// Which records it holds, to compare with other submissions (empty in observations read
    /// back from a metrics file, and in series written before fingerprints were kept).
    #[serde(skip_serializing_if = "Fingerprint::is_empty")]
    pub fingerprint: Fingerprint,
    /// For an aggregate return: each figure it gave as a number, by metric id and breakdown
    /// ([`breakdown_key`]; `""` for the metric's total). Withheld figures are left out.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub figures: Figures,
    /// For an aggregate return: each figure's usual value for the force when this submission
    /// was analysed (its median over the force's latest earlier periods), so that another
    /// force's analysis can see how figures moved across forces (empty without history, and in
    /// observations read back from a metrics file).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub usual_figures: Figures,
    /// The force's usual records a period when this submission was analysed (the median of up
    /// to a year of its earlier periods), so that another force's analysis can tell a movement
    /// of every force from its own (none when there was no history, and in observations read
    /// back from a metrics file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usual_rows: Option<f64>,
}

impl Observations {
    /// Records in one category of a dimension (0 when never seen).
    pub fn count(&self, dimension: &str, category: &str) -> u64 {
        self.categories
            .get(dimension)
            .and_then(|c| c.get(category))
            .copied()
            .unwrap_or(0)
    }

    /// Records with a recorded (non-blank) value in a dimension.
    pub fn recorded(&self, dimension: &str) -> u64 {
        self.categories
            .get(dimension)
            .map_or(0, |c| c.values().sum())
    }

    /// Blank cells of a property.
    pub fn blank(&self, property: &str) -> u64 {
        self.blanks.get(property).copied().unwrap_or(0)
    }

    /// Days of the period with no record.
    pub fn empty_days(&self) -> u64 {
        self.by_day.iter().filter(|&&n| n == 0).count() as u64
    }

    /// Whether these records say anything about a declared share: a time-of-day share always,
    /// a category share when the dimension was recorded at all.
    pub fn records(&self, share: &ShareDecl) -> bool {
        share.is_time_of_day()
            || share
                .dimension
                .as_ref()
                .is_some_and(|d| self.categories.contains_key(d))
    }

    /// A declared share's numerator and denominator.
    pub fn share(&self, share: &ShareDecl) -> (u64, u64) {
        if share.is_time_of_day() {
            return (
                self.at_time.get(&share.name).copied().unwrap_or(0),
                self.dated,
            );
        }
        let counted: u64 = share.dimension.as_ref().map_or(0, |d| {
            share.categories.iter().map(|c| self.count(d, c)).sum()
        });
        let blank = share.or_blank.as_ref().map_or(0, |p| self.blank(p));
        (counted + blank, self.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dimensions() -> BTreeMap<String, Vec<String>> {
        BTreeMap::from([
            (
                "reason".to_owned(),
                vec!["Warrant".to_owned(), "Bail".to_owned()],
            ),
            (
                "flag".to_owned(),
                vec!["true".to_owned(), "false".to_owned()],
            ),
        ])
    }

    fn parse(text: &str) -> ObserveSettings {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn declarations_the_schema_lacks_are_each_reported() {
        let settings = parse(
            r#"
            records = "detentions"
            [[shares]]
            name = "x"
            title = "t"
            clause = "c"
            advice = "a"
            dimension = "reasons"
            [[shares]]
            name = "y"
            title = "t"
            clause = "c"
            advice = "a"
            dimension = "reason"
            categories = ["Bale"]
            or_blank = "reasn"
            [[shares]]
            name = "z"
            title = "t"
            clause = "c"
            advice = "a"
            time_of_day = "25:00"
            [[shares]]
            name = "detentions"
            title = "t"
            clause = "c"
            advice = "a"
            [[headlines]]
            label = "l"
            metric = "nothing"
            [[headlines]]
            label = "l"
            metric = "rate_per_1000"
            "#,
        );
        let problems = settings.check(&dimensions(), &["reason".to_owned()]);
        let has = |s: &str| problems.iter().any(|p| p.contains(s));
        assert!(has("`reasons`, which is not a dimension"), "{problems:?}");
        assert!(has("`Bale` is not a value of `reason`"), "{problems:?}");
        assert!(has("`reasn`, which is not a field"), "{problems:?}");
        assert!(has("`25:00`, not a time"), "{problems:?}");
        assert!(has("shares.detentions must have either"), "{problems:?}");
        assert!(has("`detentions` is declared twice"), "{problems:?}");
        assert!(has("`nothing` is not a metric"), "{problems:?}");
        assert_eq!(
            problems.len(),
            7,
            "the engine's rate_per_1000 is a metric: {problems:?}"
        );
    }

    #[test]
    fn a_profile_without_observe_declares_nothing_and_passes() {
        let settings = parse("");
        assert_eq!(settings.records, "records");
        assert!(settings.check(&dimensions(), &[]).is_empty());
    }
}
