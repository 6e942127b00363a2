//! Gaps inside a submission and anomalies against the force's own history and its peers.
//!
//! [`detect`] is a pure function: this month's counts, the force's earlier months, the other
//! forces' latest months and the settings in, [`Anomaly`]s out. Each series of a force —
//! records a month, the share of each category of the configured dimensions, blank rates, the
//! not-stated share, the midnight share — is checked the same way:
//!
//! 1. **Regime.** The history is scanned for lasting steps (a records-system change): once a
//!    step has lasted `level_shift.months` months it is reported once, as
//!    `anomaly_level_shift`, and the months since it become the baseline, so one change does
//!    not alarm every month after.
//! 2. **Baseline.** The median of the last `baseline_months` months of the regime (at least
//!    `min_history_months`; volumes are first divided by month-of-year factors when
//!    `seasonal_min_months` of history exist) and the scaled median absolute deviation.
//! 3. **Band.** A plausible range around the median: half-width `max(z × MAD, relative ×
//!    median, min_change)`. A value outside it is reported only when it is improbable *even at
//!    the band's edge* (Poisson for counts, binomial for shares, below `probability`). The
//!    band keeps large but ordinary swings quiet; the tail test keeps small forces quiet.
//!
//! Besides these: a category at zero where history (at its lower quartile) or, for peers,
//! nearly every other force (at their lowest tenth) expects at least `vanished_min_expected`
//! records; and days of the month without records,
//! judged against the force's own day-to-day counts and its history of quiet days.
//!
//! An aggregate return (when [`Input::catalogue`] is given) is judged by its figures instead,
//! each against the force's previous return and the other forces' (`figures`).
//!
//! Every anomaly carries what was observed, the expected value and range, the method, the
//! history used and a message a force analyst can read without knowing the statistics.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::stats::{
    binomial_cdf, binomial_sf, median, median_mad_in_place, negative_binomial_cdf,
    negative_binomial_sf, poisson_cdf, poisson_sf, quantile, scaled_mad,
};
use crate::catalogue::MetricCatalogue;
use crate::finding::{Code, Finding, Severity};
use crate::model::analysis::{AnomalySettings, Band, PeerSeries};
use crate::model::observe::{AgreementDecl, ObserveSettings, ShareDecl};
use crate::observe::Observations;
use crate::period::{Cadence, Period};
use crate::schema::RecordSchema;

mod figures;
mod resent;
mod shift;

pub use figures::usual_figures;

/// What an anomaly's numbers count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Records.
    Count,
    /// A share between 0 and 1.
    Share,
    /// Days of the month.
    Days,
    /// A rate, ratio or percentage of an aggregate return, in its metric's unit.
    Figure,
}

impl Unit {
    /// The name used in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "count",
            Unit::Share => "share",
            Unit::Days => "days",
            Unit::Figure => "figure",
        }
    }
}

/// One gap or anomaly in a force's month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// The finding code.
    pub code: Code,
    /// Its severity (the code's default until the pipeline applies its overrides).
    pub severity: Severity,
    /// Force id.
    pub force_id: String,
    /// The month.
    pub period: Period,
    /// The submission analysed.
    pub submission_id: String,
    /// What was measured, in words (`searches`, `share of Outcome (outcome group) = Arrest`).
    pub series: String,
    /// The dimension, for category series.
    pub dimension: Option<String>,
    /// The category, for category series.
    pub category: Option<String>,
    /// The property, for column series (blank rates).
    pub column: Option<String>,
    /// What the numbers count.
    pub unit: Unit,
    /// The value this month.
    pub observed: f64,
    /// The expected value.
    pub expected: f64,
    /// The low end of the plausible range.
    pub lower: f64,
    /// The high end of the plausible range.
    pub upper: f64,
    /// How improbable the value is at the edge of the range (smaller is stranger).
    pub probability: f64,
    /// How it was judged.
    pub method: String,
    /// Months of history (or forces, for peer comparisons) behind the expectation.
    pub history_months: u32,
    /// First month of that history.
    pub history_from: Option<Period>,
    /// Last month of that history.
    pub history_to: Option<Period>,
    /// For a lasting step: the month it started.
    pub since: Option<Period>,
    /// The explanation for the force.
    pub message: String,
}

impl Anomaly {
    /// Whether this is a gap inside the submission rather than an unusual value.
    pub fn is_gap(&self) -> bool {
        matches!(self.code, Code::GapDaysWithoutRecords)
    }

    /// The anomaly as a finding in the force's report.
    pub fn finding(&self, column_header: Option<&str>) -> Finding {
        let mut f = Finding::new(self.code, self.message.clone(), self.method.clone())
            .with_severity(self.severity)
            .with_value(format_value(self.observed, self.unit));
        if let Some(c) = column_header {
            f = f.in_column(c);
        }
        f
    }
}

/// What the schema and the profile say about words and categories: plain-words names of
/// dimensions and columns, the word for records, and the categories a declared share counts —
/// its own, and the codes that stand for them (a share of `<property>_<attribute>` = "Not
/// stated" covers the codes of `<property>` whose attribute is "Not stated") — whose own
/// shares are then not checked twice.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    dimensions: BTreeMap<String, String>,
    /// What one record is, in the plural (`[observe] records`).
    pub records: String,
    covered: BTreeSet<(String, String)>,
}

impl Labels {
    /// Names from a schema: the header spelling forces use, with the attribute in brackets for
    /// attribute dimensions (`Outcome (outcome group)`).
    pub fn new(schema: &RecordSchema, observe: &ObserveSettings) -> Labels {
        let mut dimensions = BTreeMap::new();
        for p in &schema.properties {
            let name = p
                .aliases
                .first()
                .cloned()
                .unwrap_or_else(|| p.title.clone());
            for a in p.codelist.iter().flat_map(|list| &list.attributes) {
                let words = format!("{name} ({})", a.replace('_', " "));
                dimensions.insert(format!("{}_{a}", p.name), words);
            }
            dimensions.insert(p.name.clone(), name);
        }
        Labels {
            dimensions,
            records: observe.records.clone(),
            covered: observe
                .shares
                .iter()
                .flat_map(|share| covered_by(schema, share))
                .collect(),
        }
    }

    /// The words for a dimension or property.
    pub fn of<'a>(&'a self, name: &'a str) -> &'a str {
        self.dimensions.get(name).map_or(name, String::as_str)
    }

    /// Whether a category of a dimension is one a declared share counts.
    fn covered(&self, dimension: &str, category: &str) -> bool {
        self.covered
            .contains(&(dimension.to_owned(), category.to_owned()))
    }
}

/// The categories a share counts: its own, and, for a share of `<property>_<attribute>`, the
/// codes of `<property>` whose attribute is one of them.
fn covered_by(schema: &RecordSchema, share: &ShareDecl) -> Vec<(String, String)> {
    let Some(dimension) = &share.dimension else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = share
        .categories
        .iter()
        .map(|c| (dimension.clone(), c.clone()))
        .collect();
    for p in &schema.properties {
        let Some(list) = &p.codelist else { continue };
        let Some(a) = dimension
            .strip_prefix(p.name.as_str())
            .and_then(|rest| rest.strip_prefix('_'))
            .filter(|a| list.attributes.iter().any(|x| x == a))
        else {
            continue;
        };
        for (k, code) in list.codes.iter().enumerate() {
            if share
                .categories
                .iter()
                .any(|c| c == list.attribute(k as u32, a))
            {
                out.push((p.name.clone(), code.code.clone()));
            }
        }
    }
    out
}

/// What [`detect`] looks at.
pub struct Input<'a> {
    /// Thresholds.
    pub settings: &'a AnomalySettings,
    /// This month.
    pub current: &'a Observations,
    /// The force's earlier months (any order; later months and other forces are ignored).
    pub history: &'a [Observations],
    /// Other forces' latest months.
    pub peers: &'a [Observations],
    /// Words for dimensions.
    pub labels: &'a Labels,
    /// What the profile declares its records yield.
    pub observe: &'a ObserveSettings,
    /// For an aggregate return, the metric catalogue its figures are read against: its
    /// figures are then what is judged, not its rows.
    pub catalogue: Option<&'a MetricCatalogue>,
}

/// The force's usual records a period before `current`: the median of its latest
/// `baseline_months` earlier periods in `history` (none without any). Stored with the
/// observations (`usual_rows`), it lets other forces' analyses see a national movement.
pub fn usual_records(
    current: &Observations,
    history: &[Observations],
    baseline_months: usize,
) -> Option<f64> {
    let mut earlier: Vec<&Observations> = history
        .iter()
        .filter(|h| {
            h.force_id == current.force_id
                && h.period.is_some()
                && current.period.is_some_and(|p| h.period < Some(p))
        })
        .collect();
    earlier.sort_by_key(|h| h.period);
    let rows: Vec<f64> = earlier
        .iter()
        .rev()
        .take(baseline_months)
        .map(|h| h.rows as f64)
        .collect();
    median(&rows)
}

/// Every gap and anomaly of this month.
pub fn detect(input: &Input<'_>) -> Vec<Anomaly> {
    let s = input.settings;
    let Some(period) = input.current.period else {
        return Vec::new();
    };
    if !s.enabled {
        return Vec::new();
    }
    let mut history: Vec<&Observations> = input
        .history
        .iter()
        .filter(|h| h.force_id == input.current.force_id && h.period.is_some_and(|p| p < period))
        .collect();
    history.sort_by_key(|h| h.period);
    if let Some(catalogue) = input.catalogue {
        return figures::figures(input, catalogue, &history, period);
    }
    let mut out = Vec::new();
    out.extend(gap_days(input, &history, period));
    out.extend(resent::resent(input, &history, period));
    // A blank rate far above the force's own history is reported also when the file check
    // already warned that it is over the pipeline's threshold: the two say different things.
    for series in own_series(input, &history) {
        out.extend(own_history(input, &history, period, &series));
    }
    out.extend(shift::shifts(input, &history, period));
    out.extend(peer_checks(input, &history, period));
    out
}

// ---------------------------------------------------------------------------------------------
// Series
// ---------------------------------------------------------------------------------------------

/// One monthly series of a force.
#[derive(Debug, Clone, PartialEq)]
enum Series {
    /// Records.
    Volume,
    /// Records in a category ÷ records with a value in the dimension.
    Share { dimension: String, category: String },
    /// Blank cells ÷ records.
    Blank { property: String },
    /// A recording-quality share the profile declares (`[[observe.shares]]`).
    Recording(ShareDecl),
    /// How often two dimensions agree (`[[observe.agreements]]`), by the agreement's name.
    Agreement(AgreementDecl),
}

/// One month of a series: numerator and denominator (1 for counts).
#[derive(Debug, Clone, Copy)]
struct Point {
    period: Period,
    num: u64,
    den: u64,
}

impl Series {
    fn observe(&self, c: &Observations) -> (u64, u64) {
        match self {
            Series::Volume => (c.rows, 1),
            Series::Share {
                dimension,
                category,
            } => (c.count(dimension, category), c.recorded(dimension)),
            Series::Blank { property } => (c.blank(property), c.rows),
            Series::Recording(share) => c.share(share),
            Series::Agreement(a) => c.agreements.get(&a.name).copied().unwrap_or((0, 0)),
        }
    }

    fn point(&self, c: &Observations) -> Option<Point> {
        let (num, den) = self.observe(c);
        Some(Point {
            period: c.period?,
            num,
            den,
        })
    }

    fn unit(&self) -> Unit {
        if *self == Series::Volume {
            Unit::Count
        } else {
            Unit::Share
        }
    }

    /// Series where only an increase is a problem.
    fn one_sided(&self) -> bool {
        matches!(
            self,
            Series::Blank { .. } | Series::Recording(_) | Series::Agreement(_)
        )
    }

    fn code(&self) -> Code {
        match self {
            Series::Volume => Code::AnomalyVolume,
            Series::Share { .. } => Code::AnomalyCategoryShare,
            Series::Blank { .. } | Series::Recording(_) => Code::AnomalyRecordingShare,
            Series::Agreement(_) => Code::AnomalyFieldsAgree,
        }
    }

    /// The range of its values judged against history; none for a category's share, which
    /// is judged by its field's whole mix (`shift`).
    fn band(&self, s: &AnomalySettings) -> Option<Band> {
        match self {
            Series::Volume => Some(s.volume),
            Series::Share { .. } => None,
            Series::Blank { .. } => Some(s.blank_rate),
            Series::Recording(_) => Some(s.recording),
            Series::Agreement(_) => Some(s.agreement),
        }
    }

    fn describe(&self, labels: &Labels) -> String {
        match self {
            Series::Volume => labels.records.clone(),
            Series::Share {
                dimension,
                category,
            } => format!("share of {} = {category}", labels.of(dimension)),
            Series::Blank { property } => format!("blank rate of {}", labels.of(property)),
            Series::Recording(share) => share.title.clone(),
            Series::Agreement(a) => format!(
                "agreement of {} and {}",
                labels.of(&a.dimensions[0]),
                labels.of(&a.dimensions[1])
            ),
        }
    }

    fn dimension(&self) -> Option<String> {
        match self {
            Series::Share { dimension, .. } => Some(dimension.clone()),
            _ => None,
        }
    }

    fn category(&self) -> Option<String> {
        match self {
            Series::Share { category, .. } => Some(category.clone()),
            _ => None,
        }
    }

    fn column(&self) -> Option<String> {
        match self {
            Series::Blank { property } => Some(property.clone()),
            Series::Share { dimension, .. } => Some(dimension.clone()),
            Series::Recording(share) => share.or_blank.clone(),
            Series::Agreement(a) => Some(a.dimensions[0].clone()),
            Series::Volume => None,
        }
    }
}

/// The series checked against the force's own history. Categories of a dimension come from
/// this period and the history; the categories and blanks a declared recording share counts
/// are left to that share's series, which covers them.
fn own_series(input: &Input<'_>, history: &[&Observations]) -> Vec<Series> {
    let mut out = vec![Series::Volume];
    let periods = || std::iter::once(input.current).chain(history.iter().copied());
    let shares = &input.observe.shares;
    for dimension in &input.settings.dimensions {
        let categories: BTreeSet<&String> = periods()
            .filter_map(|c| c.categories.get(dimension))
            .flat_map(BTreeMap::keys)
            .collect();
        for category in categories {
            if !input.labels.covered(dimension, category) {
                out.push(Series::Share {
                    dimension: dimension.clone(),
                    category: category.clone(),
                });
            }
        }
    }
    let columns: BTreeSet<&String> = periods().flat_map(|c| c.blanks.keys()).collect();
    for property in columns {
        if !shares.iter().any(|s| s.or_blank.as_ref() == Some(property)) {
            out.push(Series::Blank {
                property: property.clone(),
            });
        }
    }
    for share in shares {
        if periods().any(|c| c.records(share)) {
            out.push(Series::Recording(share.clone()));
        }
    }
    for agreement in &input.observe.agreements {
        if periods().any(|c| c.agreements.contains_key(&agreement.name)) {
            out.push(Series::Agreement(agreement.clone()));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Bands and tails
// ---------------------------------------------------------------------------------------------

/// A plausible range around an expected value.
#[derive(Debug, Clone, Copy)]
struct Range {
    center: f64,
    lo: f64,
    hi: f64,
}

impl Range {
    /// The range moved by `factor`.
    fn scaled(self, factor: f64) -> Range {
        Range {
            center: self.center * factor,
            lo: self.lo * factor,
            hi: self.hi * factor,
        }
    }
}

fn range(center: f64, spread: f64, unit: Unit, band: Band) -> Range {
    // The relative part follows the share itself, so a large category moves a lot before it
    // is unusual (its small neighbours, whose relative change is large, carry the signal).
    let level = center;
    let min_change = if unit == Unit::Share {
        band.min_change
    } else {
        0.0
    };
    let half = (band.z * spread).max(band.relative * level).max(min_change);
    let hi = center + half;
    Range {
        center,
        lo: (center - half).max(0.0),
        hi: if unit == Unit::Share { hi.min(1.0) } else { hi },
    }
}

/// Where a point falls: `Some((true, p))` above the range with tail probability `p` at its
/// edge, `Some((false, p))` below, `None` inside.
fn tail(point: Point, unit: Unit, r: Range) -> Option<(bool, f64)> {
    match unit {
        Unit::Count | Unit::Days | Unit::Figure => {
            let x = point.num as f64;
            if x < r.lo {
                Some((false, poisson_cdf(point.num, r.lo)))
            } else if x > r.hi {
                Some((true, poisson_sf(point.num, r.hi)))
            } else {
                None
            }
        }
        Unit::Share => {
            if point.den == 0 {
                return None;
            }
            let p = point.num as f64 / point.den as f64;
            if p < r.lo {
                Some((false, binomial_cdf(point.num, point.den, r.lo)))
            } else if p > r.hi {
                Some((true, binomial_sf(point.num, point.den, r.hi)))
            } else {
                None
            }
        }
    }
}

/// The expected value and spread of a baseline: median and scaled MAD, with a share's
/// expected value at least its pooled share (months added up), so that a category seen in a
/// few months only is not expected at zero. `scratch` is reused to avoid allocating.
fn baseline(points: &[Point], unit: Unit, scratch: &mut Vec<f64>) -> Option<(f64, f64, usize)> {
    scratch.clear();
    scratch.extend(points.iter().filter_map(|p| value(*p, unit)));
    let n = scratch.len();
    let (median, spread) = median_mad_in_place(scratch)?;
    let center = if unit == Unit::Share {
        let (num, den) = points
            .iter()
            .fold((0u64, 0u64), |(a, b), p| (a + p.num, b + p.den));
        if den > 0 {
            median.max(num as f64 / den as f64)
        } else {
            median
        }
    } else {
        median
    };
    Some((center, spread, n))
}

fn value(point: Point, unit: Unit) -> Option<f64> {
    match unit {
        Unit::Share => (point.den > 0).then(|| point.num as f64 / point.den as f64),
        Unit::Count | Unit::Days | Unit::Figure => Some(point.num as f64),
    }
}

// ---------------------------------------------------------------------------------------------
// Own history: regimes, level shifts, outliers, vanished categories
// ---------------------------------------------------------------------------------------------

/// A lasting step ending at the last point.
struct Shift {
    /// Index of its first month.
    start: usize,
    up: bool,
    range: Range,
    before: (Period, Period, usize),
    probability: f64,
}

fn shift_at(
    points: &[Point],
    regime: usize,
    unit: Unit,
    s: &AnomalySettings,
    scratch: &mut Vec<f64>,
) -> Option<Shift> {
    let ls = &s.level_shift;
    let k = ls.months;
    let n = points.len();
    if k == 0 || n < regime + k {
        return None;
    }
    let need = if regime == 0 { s.min_history_months } else { k };
    let before_end = n - k;
    let before_start = before_end.saturating_sub(s.baseline_months).max(regime);
    if before_end < before_start + need {
        return None;
    }
    let before = &points[before_start..before_end];
    let (center, spread, used) = baseline(before, unit, scratch)?;
    if used < need {
        return None;
    }
    let band = Band {
        z: ls.z,
        relative: ls.relative,
        min_change: ls.min_change,
    };
    let r = range(center, spread, unit, band);
    let mut up = None;
    let mut worst: f64 = 0.0;
    for p in &points[n - k..] {
        let (side, prob) = tail(*p, unit, r)?;
        if prob >= ls.probability || up.is_some_and(|u| u != side) {
            return None;
        }
        up = Some(side);
        worst = worst.max(prob);
    }
    Some(Shift {
        start: n - k,
        up: up?,
        range: r,
        before: (
            before[0].period,
            before[before.len() - 1].period,
            before.len(),
        ),
        probability: worst,
    })
}

/// The latest regime of `points`, followed by `next`: the index of its lasting step's first
/// point (0 when none was found), and its points since, without the episodes inside it. A
/// step is an episode when a later point is back inside the range it left (a national shock
/// that ends, an operation): the regime before it goes on, and the episode's points are no
/// part of its baseline.
fn regime(
    points: &[Point],
    next: Point,
    unit: Unit,
    s: &AnomalySettings,
    scratch: &mut Vec<f64>,
) -> (usize, Vec<Point>) {
    let mut start = 0;
    let mut left: Option<(usize, Range)> = None;
    let mut episodes: Vec<std::ops::Range<usize>> = Vec::new();
    for t in 0..=points.len() {
        let point = points.get(t).copied().unwrap_or(next);
        if let Some((before, r)) = left
            && tail(point, unit, r).is_none()
        {
            episodes.push(start..t);
            start = before;
            left = None;
            continue;
        }
        if t == points.len() {
            break;
        }
        if let Some(shift) = shift_at(&points[..=t], start, unit, s, scratch) {
            left = Some((start, shift.range));
            start = shift.start;
        }
    }
    let kept = points
        .iter()
        .enumerate()
        .filter(|(i, _)| *i >= start && !episodes.iter().any(|e| e.contains(i)))
        .map(|(_, p)| *p)
        .collect();
    (start, kept)
}

/// Seasonal factors of a volume series (month of year for months, quarter of year for
/// quarters): for each point, its ratio to the median of the points within half a year
/// either side; a season's factor is the median of its ratios (1 when fewer than two years
/// give one). Indexed by season, from 0.
fn seasonal_factors(points: &[Point], seasons: usize) -> Vec<f64> {
    let half = seasons / 2;
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); seasons];
    for (i, p) in points.iter().enumerate() {
        let window: Vec<f64> = points[i.saturating_sub(half)..(i + half + 1).min(points.len())]
            .iter()
            .map(|q| q.num as f64)
            .collect();
        if let (Some(level), Some(season)) = (
            median(&window).filter(|l| *l > 0.0),
            p.period
                .season()
                .and_then(|s| ratios.get_mut(s as usize - 1)),
        ) {
            season.push(p.num as f64 / level);
        }
    }
    ratios
        .iter()
        .map(|r| {
            if r.len() >= 2 {
                median(r).unwrap_or(1.0).clamp(0.5, 2.0)
            } else {
                1.0
            }
        })
        .collect()
}

fn own_history(
    input: &Input<'_>,
    history: &[&Observations],
    period: Period,
    series: &Series,
) -> Option<Anomaly> {
    let s = input.settings;
    let unit = series.unit();
    let points: Vec<Point> = history.iter().filter_map(|h| series.point(h)).collect();
    let current = series.point(input.current)?;
    let mut scratch = Vec::with_capacity(s.baseline_months);
    let (regime, kept) = regime(&points, current, unit, s, &mut scratch);

    // A category's share is judged by the test of its field's whole mix (`shift`); here only
    // whether it vanished.
    let share = matches!(series, Series::Share { .. });
    let mut all = points.clone();
    all.push(current);
    if !share && let Some(shift) = shift_at(&all, regime, unit, s, &mut scratch) {
        if series.one_sided() && !shift.up {
            return None;
        }
        let mut a = level_shift(input, series, &all, &shift, period);
        if *series == Series::Volume {
            national(input, &mut a, period, |factor| {
                let moved = shift.range.scaled(factor);
                let off = tail(current, Unit::Count, moved).is_some_and(|(_, p)| p < s.probability);
                (off, moved)
            });
        }
        return Some(a);
    }
    let need = if regime == 0 {
        s.min_history_months
    } else {
        s.level_shift.months
    };
    let regime_points = kept.as_slice();
    if regime_points.len() < need {
        return None;
    }
    let base = &regime_points[regime_points.len().saturating_sub(s.baseline_months)..];
    let (center, spread, n) = baseline(base, unit, &mut scratch)?;
    if n < need {
        return None;
    }
    let history_used = (base[0].period, base[base.len() - 1].period, base.len());
    if let Series::Share { .. } = series
        && current.num == 0
        && current.den > 0
    {
        // Judged at the lower quartile of the history's shares, so that a category whose
        // typical month is only just above the floor does not alarm on an ordinary quiet month.
        let shares: Vec<f64> = base.iter().filter_map(|p| value(*p, unit)).collect();
        let share = median(&shares)?;
        let low = quantile(&shares, 0.25)?;
        if low * current.den as f64 >= s.vanished_min_expected {
            let probability = binomial_cdf(0, current.den, low);
            if probability < s.probability {
                return Some(vanished(
                    input,
                    series,
                    current,
                    (share, low),
                    history_used,
                    probability,
                ));
            }
        }
    }
    if share {
        return None;
    }
    let seasonal = unit == Unit::Count
        && period.cadence().seasonal()
        && regime_points.len() >= s.seasonal_min_months;
    let (center, spread) = if seasonal {
        let factors = seasonal_factors(regime_points, period.cadence().per_year());
        let f = |p: &Period| {
            p.season()
                .and_then(|s| factors.get(s as usize - 1))
                .copied()
                .unwrap_or(1.0)
        };
        let adjusted: Vec<f64> = base.iter().map(|p| p.num as f64 / f(&p.period)).collect();
        (
            median(&adjusted)? * f(&period),
            scaled_mad(&adjusted).unwrap_or(0.0) * f(&period),
        )
    } else {
        (center, spread)
    };
    let band = series.band(s)?;
    if *series == Series::Volume {
        let model = VolumeModel::new(center, spread, base.len(), band);
        let probability = model.judge(current, s.probability)?;
        let mut a = outlier(
            input,
            series,
            current,
            model.range(s.probability),
            (band, probability),
            history_used,
            seasonal,
        );
        a.method = model.method(history_used, seasonal, s.probability);
        national(input, &mut a, period, |factor| {
            let moved = model.scaled(factor);
            (
                moved.judge(current, s.probability).is_some(),
                moved.range(s.probability),
            )
        });
        return Some(a);
    }
    let r = range(center, spread, unit, band);
    let (up, probability) = tail(current, unit, r)?;
    if probability >= s.probability || (series.one_sided() && !up) {
        return None;
    }
    Some(outlier(
        input,
        series,
        current,
        r,
        (band, probability),
        history_used,
        seasonal,
    ))
}

/// Records a period as a negative binomial count: the expected value from the history, and an
/// over-dispersion estimated from the history's own spread, raised for the few periods it is
/// estimated from and never below the band's `min_change` (the least relative variation any
/// force's months have). A value is flagged when its exact tail probability is under the
/// pipeline's and it is at least `relative` away from the expectation.
#[derive(Debug, Clone, Copy)]
struct VolumeModel {
    mean: f64,
    dispersion: f64,
    /// The history's relative spread (scaled MAD ÷ median), and raised for its length.
    spread: (f64, f64),
    band: Band,
}

impl VolumeModel {
    fn new(center: f64, spread: f64, periods: usize, band: Band) -> VolumeModel {
        let relative = if center > 0.0 { spread / center } else { 0.0 };
        // About one standard error of a MAD-based spread (its efficiency is 37%) higher.
        let raised = relative * (1.0 + 1.0 / (0.37 * 2.0 * periods.max(1) as f64).sqrt());
        let extra = raised * raised - 1.0 / center.max(1.0);
        VolumeModel {
            mean: center,
            dispersion: extra.max(band.min_change * band.min_change),
            spread: (relative, raised),
            band,
        }
    }

    /// The same model with its expectation moved by `factor`.
    fn scaled(self, factor: f64) -> VolumeModel {
        VolumeModel {
            mean: self.mean * factor,
            ..self
        }
    }

    /// The tail probability of `point` when it is far from the expectation, improbable and
    /// at least `relative` away; `None` otherwise.
    fn judge(&self, point: Point, probability: f64) -> Option<f64> {
        let x = point.num as f64;
        if self.mean <= 0.0 || (x / self.mean - 1.0).abs() < self.band.relative {
            return None;
        }
        let p = if x > self.mean {
            negative_binomial_sf(point.num, self.mean, self.dispersion)
        } else {
            negative_binomial_cdf(point.num, self.mean, self.dispersion)
        };
        (p < probability).then_some(p)
    }

    /// What would not be flagged at `probability`: from the lowest count whose lower tail is
    /// not under it (and no nearer than `relative`) to the highest whose upper tail is not.
    fn range(&self, probability: f64) -> Range {
        let low_edge = (self.mean * (1.0 - self.band.relative)).floor().max(0.0) as u64;
        let high_edge = (self.mean * (1.0 + self.band.relative)).ceil() as u64;
        // The first count from which the lower tail is at least `probability` (the cdf rises).
        let (mut a, mut b) = (0u64, low_edge);
        while a < b {
            let m = a + (b - a) / 2;
            if negative_binomial_cdf(m, self.mean, self.dispersion) < probability {
                a = m + 1;
            } else {
                b = m;
            }
        }
        let lo = a;
        // The first count above which the upper tail is under `probability` (the sf falls).
        let sd = (self.mean + self.dispersion * self.mean * self.mean).sqrt();
        let (mut a, mut b) = (high_edge, high_edge + 64 + (40.0 * sd) as u64);
        while a < b {
            let m = a + (b - a) / 2;
            if negative_binomial_sf(m, self.mean, self.dispersion) >= probability {
                a = m + 1;
            } else {
                b = m;
            }
        }
        Range {
            center: self.mean,
            lo: lo as f64,
            hi: a.saturating_sub(1) as f64,
        }
    }

    fn method(&self, (from, _, months): (Period, Period, usize), seasonal: bool, p: f64) -> String {
        format!(
            "negative binomial: expected the median of {}{}; over-dispersion {:.3} from their spread ({} of the level, {} allowing for how few they are, at least {}); flagged when the exact tail is below {p} and the value at least {} from the expectation",
            from.cadence().count(months),
            if seasonal {
                format!(", adjusted by {}-of-year factors", from.cadence().word())
            } else {
                String::new()
            },
            self.dispersion,
            percent(self.spread.0),
            percent(self.spread.1),
            percent(self.band.min_change),
            percent(self.band.relative),
        )
    }
}

/// Explains a volume anomaly by the other forces, when they moved too: across the forces whose
/// latest return is of this period, the median of their records against their own usual level.
/// A force whose value is ordinary once its range moves by that much moved with them: the
/// anomaly is information, a national movement. One that is still far off keeps its warning,
/// which says how far the others moved.
fn national(
    input: &Input<'_>,
    a: &mut Anomaly,
    period: Period,
    moved_with: impl Fn(f64) -> (bool, Range),
) {
    let s = input.settings;
    let ratios: Vec<f64> = input
        .peers
        .iter()
        .filter(|p| p.force_id != input.current.force_id && p.period == Some(period))
        .filter_map(|p| p.usual_rows.filter(|u| *u > 0.0).map(|u| p.rows as f64 / u))
        .collect();
    if ratios.len() < s.peers.min_peers {
        return;
    }
    let Some(factor) = median(&ratios) else {
        return;
    };
    if (factor - 1.0).abs() < s.peers.national_min_change {
        return;
    }
    let (still_off, moved) = moved_with(factor);
    let with_them = !still_off;
    let others = format!(
        "across {} other forces this {}, records were {} of their usual level (median)",
        ratios.len(),
        period.cadence().word(),
        percent(factor)
    );
    if with_them {
        a.severity = Severity::Info;
        let _ = write!(
            a.message,
            " Most forces moved the same way: {others}. Moved with them, your range would be {} to {}, and this is inside it: a national movement, not yours alone.",
            thousands(moved.lo),
            thousands(moved.hi)
        );
    } else {
        let _ = write!(
            a.message,
            " Other forces moved too ({others}), but yours is far outside even the range moved with them ({} to {}).",
            thousands(moved.lo),
            thousands(moved.hi)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------------------------

fn peer_checks(input: &Input<'_>, history: &[&Observations], period: Period) -> Vec<Anomaly> {
    let s = input.settings;
    let p = &s.peers;
    let peers: Vec<&Observations> = input
        .peers
        .iter()
        .filter(|c| {
            c.force_id != input.current.force_id
                && c.period.is_some_and(|q| {
                    q <= period && months_between(q, period) <= i64::from(p.max_age_months)
                })
        })
        .collect();
    let mut out = Vec::new();
    for spec in &p.series {
        let series: Vec<Series> = match PeerSeries::parse(spec, input.observe) {
            PeerSeries::Recording(name) => input
                .observe
                .share(&name)
                .map(|share| Series::Recording(share.clone()))
                .into_iter()
                .collect(),
            PeerSeries::Dimension {
                dimension,
                category: Some(category),
            } => vec![Series::Share {
                dimension,
                category,
            }],
            PeerSeries::Dimension {
                dimension,
                category: None,
            } => {
                let categories: BTreeSet<&String> = peers
                    .iter()
                    .copied()
                    .chain(std::iter::once(input.current))
                    .filter_map(|c| c.categories.get(&dimension))
                    .flat_map(BTreeMap::keys)
                    .collect();
                categories
                    .into_iter()
                    .map(|category| Series::Share {
                        dimension: dimension.clone(),
                        category: category.clone(),
                    })
                    .collect()
            }
        };
        for series in series {
            out.extend(peer_check(input, history, &peers, &series, period));
        }
    }
    out
}

/// A difference from the other forces: this period's value against their latest, and, when it
/// has lasted, how many of the force's returns show it.
fn peer_check(
    input: &Input<'_>,
    history: &[&Observations],
    peers: &[&Observations],
    series: &Series,
    period: Period,
) -> Option<Anomaly> {
    let p = &input.settings.peers;
    let shares: Vec<f64> = peers
        .iter()
        .map(|c| series.observe(c))
        .filter(|(_, den)| *den >= p.min_records)
        .map(|(num, den)| num as f64 / den as f64)
        .collect();
    if shares.len() < p.min_peers {
        return None;
    }
    let current = series.point(input.current)?;
    let peers_now = PeerShares::of(&shares)?;
    let (r, probability) = peers_now.outlier(input.settings, current)?;
    // The force's own earlier returns against the same peers: a difference in each of the last
    // `lasting_periods` returns, and not in the one before them, is new and lasting.
    let before = history
        .iter()
        .rev()
        .take_while(|c| {
            series
                .point(c)
                .is_some_and(|q| peers_now.outlier(input.settings, q).is_some())
        })
        .count();
    let lasting = before + 1;
    let mut a = peer(input, series, current, r, probability, shares.len(), period);
    if lasting >= p.lasting_periods as usize {
        let first = history[history.len() - before].period.unwrap_or(period);
        a.since = Some(first);
        if lasting == p.lasting_periods as usize {
            a.severity = Severity::Warning;
            let _ = write!(
                a.message,
                " Each of your {lasting} returns since {} is as far from the other forces: a lasting difference, reported once.",
                period_name(first)
            );
        } else {
            let _ = write!(
                a.message,
                " This has lasted since {} ({lasting} returns) and was reported when it began.",
                period_name(first)
            );
        }
    }
    Some(a)
}

/// The other forces' shares of one series, summarised once for every point judged against them.
struct PeerShares {
    center: f64,
    low: f64,
    high: f64,
    spread: f64,
    with_some: f64,
}

impl PeerShares {
    fn of(shares: &[f64]) -> Option<PeerShares> {
        Some(PeerShares {
            center: median(shares)?,
            low: quantile(shares, 0.1)?,
            high: quantile(shares, 0.9)?,
            spread: scaled_mad(shares).unwrap_or(0.0),
            with_some: shares.iter().filter(|v| **v > 0.0).count() as f64 / shares.len() as f64,
        })
    }

    /// Whether `point` is far from the other forces: the range it was judged against and how
    /// probable it is at the range's edge.
    fn outlier(&self, s: &AnomalySettings, point: Point) -> Option<(Range, f64)> {
        if point.den < s.peers.min_records {
            return None;
        }
        if point.num == 0 {
            // Zero where nearly every other force has some: judged at the lowest tenth of forces.
            if self.with_some < 0.9 || self.low * (point.den as f64) < s.vanished_min_expected {
                return None;
            }
            let probability = binomial_cdf(0, point.den, self.low);
            let r = Range {
                center: self.center,
                lo: self.low,
                hi: self.high,
            };
            return (probability < s.probability).then_some((r, probability));
        }
        let r = range(self.center, self.spread, Unit::Share, s.peers.band);
        let (_, probability) = tail(point, Unit::Share, r)?;
        (probability < s.probability).then_some((r, probability))
    }
}

/// Calendar months from the first day of `from` to the first day of `to`, whatever their
/// cadence: `peers.max_age_months` is in months for every cadence.
fn months_between(from: Period, to: Period) -> i64 {
    i64::from(to.year() - from.year()) * 12 + i64::from(to.month()) - i64::from(from.month())
}

// ---------------------------------------------------------------------------------------------
// Days without records
// ---------------------------------------------------------------------------------------------

fn gap_days(input: &Input<'_>, history: &[&Observations], period: Period) -> Option<Anomaly> {
    let s = input.settings;
    let c = input.current;
    let days = c.by_day.len() as u64;
    let empty = c.empty_days();
    if c.dated == 0 || days == 0 || empty < s.gap_days.min_days {
        return None;
    }
    let busy: Vec<f64> = c
        .by_day
        .iter()
        .filter(|&&n| n > 0)
        .map(|&n| n as f64)
        .collect();
    if busy.len() < 5 {
        return None;
    }
    // A day at the force's own lower decile of daily counts (or at the month's average, if
    // that is lower, as it is for forces with a few records a month) is empty with this
    // probability; the force's history of empty days makes them more usual, or, when it has
    // hardly any, less.
    let low = quantile(&busy, 0.1)?.min(c.dated as f64 / days as f64);
    let model = (-low).exp();
    let recent: Vec<&&Observations> = history
        .iter()
        .rev()
        .filter(|h| h.dated > 0 && !h.by_day.is_empty())
        .take(s.baseline_months)
        .collect();
    let past: Vec<f64> = recent
        .iter()
        .map(|h| h.empty_days() as f64 / h.by_day.len() as f64)
        .collect();
    let past_share = if past.len() >= 3 { median(&past) } else { None };
    // Days of the recent history: a force with hundreds of days and hardly an empty one has
    // empty days at most this often (the rule of three's upper bound), which, when lower, takes
    // the place of the model, so a clean history is evidence too.
    let past_days: u64 = recent.iter().map(|h| h.by_day.len() as u64).sum();
    let past_empty: u64 = recent.iter().map(|h| h.empty_days()).sum();
    let seen = if past.len() >= 3 {
        (past_empty as f64 + 3.0) / past_days.max(1) as f64
    } else {
        1.0
    };
    let p0 = model.min(seen).max(past_share.unwrap_or(0.0)).max(1e-300);
    let (run_start, run) = longest_run(&c.by_day);
    let count_tail = binomial_sf(empty, days, p0);
    let run_tail = (days as f64 * p0.powi(i32::try_from(run).unwrap_or(i32::MAX))).min(1.0);
    let probability = count_tail.min(run_tail);
    if probability >= s.gap_days.probability {
        return None;
    }
    let upper = (0..=days)
        .find(|&k| binomial_sf(k, days, p0) < s.gap_days.probability)
        .map_or(days, |k| k.saturating_sub(1));
    let empty_list: Vec<u32> = c
        .by_day
        .iter()
        .enumerate()
        .filter(|(_, n)| **n == 0)
        .map(|(d, _)| d as u32 + 1)
        .collect();
    let lowest = busy.iter().copied().fold(f64::INFINITY, f64::min);
    let highest = busy.iter().copied().fold(0.0, f64::max);
    let mut message = format!(
        "No records on {} of {} ({} {}). On the other days of the {} there were {} to {} records a day.",
        day_list(&empty_list),
        period_name(period),
        empty,
        if empty == 1 { "day" } else { "days" },
        period.cadence().word(),
        thousands(lowest),
        thousands(highest),
    );
    if run >= 2 && run < empty {
        let _ = write!(
            message,
            " The longest run without records is {run} days, from the {} to the {}.",
            ordinal(run_start + 1),
            ordinal(run_start + u32::try_from(run).unwrap_or(0))
        );
    }
    match past_share {
        Some(share) => {
            let usual = (share * days as f64).round();
            let _ = if usual < 1.0 {
                write!(
                    message,
                    " In the previous {} there were records on almost every day.",
                    period.cadence().count(past.len())
                )
            } else {
                write!(
                    message,
                    " In the previous {} about {} {} a {} had no records.",
                    period.cadence().count(past.len()),
                    thousands(usual),
                    if usual > 1.0 { "days" } else { "day" },
                    period.cadence().word()
                )
            };
        }
        None => message.push_str(" There is not yet enough history to compare with."),
    }
    let _ = write!(
        message,
        " A block of empty days usually means the extract missed part of the {0}; check the \
         date range of the export and upload the {0} again if records are missing.",
        period.cadence().word()
    );
    Some(Anomaly {
        code: Code::GapDaysWithoutRecords,
        severity: Code::GapDaysWithoutRecords.default_severity(),
        force_id: c.force_id.clone(),
        period,
        submission_id: c.submission_id.clone(),
        series: format!("days of the {} without records", period.cadence().word()),
        dimension: None,
        category: None,
        column: None,
        unit: Unit::Days,
        observed: empty as f64,
        expected: p0 * days as f64,
        lower: 0.0,
        upper: upper as f64,
        probability,
        method: format!(
            "empty days against a Poisson model at the {}'s lowest tenth of daily counts or its average, whichever is lower ({low:.1}){}; flagged below probability {}",
            period.cadence().word(),
            if past_share.is_some() {
                " or the force's usual share of empty days, whichever is higher"
            } else {
                ""
            },
            s.gap_days.probability
        ),
        history_months: u32::try_from(recent.len()).unwrap_or(u32::MAX),
        history_from: recent.last().and_then(|h| h.period),
        history_to: recent.first().and_then(|h| h.period),
        since: None,
        message,
    })
}

/// Start (0-based day) and length of the longest run of days without records.
fn longest_run(by_day: &[u64]) -> (u32, u64) {
    let (mut best, mut best_start, mut run, mut start) = (0u64, 0u32, 0u64, 0u32);
    for (d, &n) in by_day.iter().enumerate() {
        if n == 0 {
            if run == 0 {
                start = d as u32;
            }
            run += 1;
            if run > best {
                best = run;
                best_start = start;
            }
        } else {
            run = 0;
        }
    }
    (best_start, best)
}

// ---------------------------------------------------------------------------------------------
// Building anomalies and their messages
// ---------------------------------------------------------------------------------------------

fn base(input: &Input<'_>, series: &Series, code: Code, period: Period) -> Anomaly {
    Anomaly {
        code,
        severity: code.default_severity(),
        force_id: input.current.force_id.clone(),
        period,
        submission_id: input.current.submission_id.clone(),
        series: series.describe(input.labels),
        dimension: series.dimension(),
        category: series.category(),
        column: series.column(),
        unit: series.unit(),
        observed: 0.0,
        expected: 0.0,
        lower: 0.0,
        upper: 0.0,
        probability: 1.0,
        method: String::new(),
        history_months: 0,
        history_from: None,
        history_to: None,
        since: None,
        message: String::new(),
    }
}

fn observed(point: Point, unit: Unit) -> f64 {
    value(point, unit).unwrap_or(0.0)
}

fn what(series: &Series, point: Point, labels: &Labels) -> String {
    match series {
        Series::Volume => format!("{} {}", thousands(point.num as f64), labels.records),
        Series::Share {
            dimension,
            category,
        } => format!(
            "{} has `{category}` in {} of the records that give it ({} of {})",
            labels.of(dimension),
            percent(point.num as f64 / point.den.max(1) as f64),
            thousands(point.num as f64),
            thousands(point.den as f64)
        ),
        Series::Blank { property } => format!(
            "{} is blank in {} of records ({} of {})",
            labels.of(property),
            percent(point.num as f64 / point.den.max(1) as f64),
            thousands(point.num as f64),
            thousands(point.den as f64)
        ),
        Series::Recording(share) => format!(
            "{} in {} of {} ({} of {})",
            share.clause,
            percent(point.num as f64 / point.den.max(1) as f64),
            labels.records,
            thousands(point.num as f64),
            thousands(point.den as f64)
        ),
        Series::Agreement(a) => format!(
            "{} and {} agree in {} of the {} that give both ({} of {})",
            labels.of(&a.dimensions[0]),
            labels.of(&a.dimensions[1]),
            percent(point.num as f64 / point.den.max(1) as f64),
            labels.records,
            thousands(point.num as f64),
            thousands(point.den as f64)
        ),
    }
}

fn history_words(from: Period, to: Period, months: usize) -> String {
    format!(
        "the force's own history ({}, {} to {})",
        from.cadence().count(months),
        period_name(from),
        period_name(to)
    )
}

fn outlier(
    input: &Input<'_>,
    series: &Series,
    current: Point,
    r: Range,
    (band, probability): (Band, f64),
    (from, to, months): (Period, Period, usize),
    seasonal: bool,
) -> Anomaly {
    let unit = series.unit();
    let period = current.period;
    let mut a = base(input, series, series.code(), period);
    let x = observed(current, unit);
    a.observed = x;
    a.expected = r.center;
    a.lower = r.lo;
    a.upper = r.hi;
    a.probability = probability;
    a.history_months = u32::try_from(months).unwrap_or(u32::MAX);
    a.history_from = Some(from);
    a.history_to = Some(to);
    a.method = format!(
        "robust z: median and scaled MAD of {}{}; range ±max({} × MAD, {}% of the level{}); flagged when a {} tail beyond the range is below {}",
        from.cadence().count(months),
        if seasonal {
            format!(", adjusted by {}-of-year factors", from.cadence().word())
        } else {
            String::new()
        },
        band.z,
        band.relative * 100.0,
        if unit == Unit::Share {
            format!(", {} points", band.min_change * 100.0)
        } else {
            String::new()
        },
        if unit == Unit::Share {
            "binomial"
        } else {
            "Poisson"
        },
        input.settings.probability
    );
    let direction = if x > r.center { "higher" } else { "lower" };
    let ratio = if r.center > 0.0 && unit == Unit::Count {
        format!(" ({:.1} times the usual level)", x / r.center)
    } else {
        String::new()
    };
    a.message = format!(
        "In {}, {}{ratio}. From {}{} about {} was expected, and anything from {} to {} would not be unusual; this is far {direction}. {}",
        period_name(period),
        what(series, current, input.labels),
        history_words(from, to, months),
        if seasonal {
            ", allowing for the time of year"
        } else {
            ""
        },
        format_value(r.center, unit),
        format_value(r.lo, unit),
        format_value(r.hi, unit),
        advice(series, period.cadence()),
    );
    a
}

fn vanished(
    input: &Input<'_>,
    series: &Series,
    current: Point,
    (share, low): (f64, f64),
    (from, to, months): (Period, Period, usize),
    probability: f64,
) -> Anomaly {
    let period = current.period;
    let mut a = base(input, series, Code::AnomalyCategoryVanished, period);
    let expected = share * current.den as f64;
    a.unit = Unit::Count;
    a.observed = 0.0;
    a.expected = expected;
    a.lower = low * current.den as f64;
    a.upper = expected;
    a.probability = probability;
    a.history_months = u32::try_from(months).unwrap_or(u32::MAX);
    a.history_from = Some(from);
    a.history_to = Some(to);
    a.method = format!(
        "a category at zero where even the lower quartile of its share over {} expects at least {} records; flagged when zero has a binomial probability below {}",
        from.cadence().count(months),
        input.settings.vanished_min_expected,
        input.settings.probability
    );
    let (dimension, category) = match series {
        Series::Share {
            dimension,
            category,
        } => (input.labels.of(dimension), category.as_str()),
        _ => ("", ""),
    };
    a.message = format!(
        "In {}, no record has {dimension} `{category}`. In {} it made up {} of the records that give {dimension}, so about {} were expected among this {}'s {}. Even in its quieter {}s it would have had {} or more. A category that drops to zero usually means it is no longer recorded or is mapped to another code; check the extract and the code mapping of your records system.",
        period_name(period),
        history_words(from, to, months),
        percent(share),
        thousands(expected),
        period.cadence().word(),
        thousands(current.den as f64),
        period.cadence().word(),
        thousands(low * current.den as f64),
    );
    a
}

fn level_shift(
    input: &Input<'_>,
    series: &Series,
    points: &[Point],
    shift: &Shift,
    period: Period,
) -> Anomaly {
    let unit = series.unit();
    let mut a = base(input, series, Code::AnomalyLevelShift, period);
    let recent = &points[shift.start..];
    let values: Vec<String> = recent
        .iter()
        .map(|p| format_value(observed(*p, unit), unit))
        .collect();
    let current = recent[recent.len() - 1];
    let (from, to, months) = shift.before;
    let since = recent[0].period;
    a.observed = observed(current, unit);
    a.expected = shift.range.center;
    a.lower = shift.range.lo;
    a.upper = shift.range.hi;
    a.probability = shift.probability;
    a.history_months = u32::try_from(months).unwrap_or(u32::MAX);
    a.history_from = Some(from);
    a.history_to = Some(to);
    a.since = Some(since);
    let ls = &input.settings.level_shift;
    a.method = format!(
        "level shift: each of the last {} outside ±max({} × MAD, {}% of the level) of the median of the {} before, each with a tail probability below {}",
        from.cadence().count(ls.months),
        ls.z,
        ls.relative * 100.0,
        from.cadence().count(months),
        ls.probability
    );
    a.message = format!(
        "Since {}, the {} has moved to a new level: {} in the last {}, against a usual {} (range {} to {}) in {}. A lasting step like this often follows a change of records system or of recording practice. If the change is real, nothing needs correcting and it becomes the new baseline; if not, correct the {}s affected.",
        period_name(since),
        series.describe(input.labels),
        values.join(", "),
        from.cadence().count(recent.len()),
        format_value(shift.range.center, unit),
        format_value(shift.range.lo, unit),
        format_value(shift.range.hi, unit),
        history_words(from, to, months),
        from.cadence().word(),
    );
    a
}

fn peer(
    input: &Input<'_>,
    series: &Series,
    current: Point,
    r: Range,
    probability: f64,
    forces: usize,
    period: Period,
) -> Anomaly {
    let mut a = base(input, series, Code::AnomalyPeerShare, period);
    let x = observed(current, Unit::Share);
    a.observed = x;
    a.expected = r.center;
    a.lower = r.lo;
    a.upper = r.hi;
    a.probability = probability;
    a.history_months = u32::try_from(forces).unwrap_or(u32::MAX);
    let band = input.settings.peers.band;
    a.method = if current.num == 0 {
        format!(
            "zero where at least 90% of {forces} other forces have some; judged at the lowest tenth of their shares, below probability {}",
            input.settings.probability
        )
    } else {
        format!(
            "robust z across {forces} other forces: median and scaled MAD; range ±max({} × MAD, {}% of the level, {} points); binomial tail below {}",
            band.z,
            band.relative * 100.0,
            band.min_change * 100.0,
            input.settings.probability
        )
    };
    a.message = format!(
        "In {}, {}. Across {forces} other forces this {} the share is {} (most between {} and {}). A share far from every other force often means a code is mapped to the wrong category; check how your records system exports it.",
        period_name(period),
        what(series, current, input.labels),
        period.cadence().word(),
        percent(r.center),
        percent(r.lo),
        percent(r.hi),
    );
    a
}

fn advice(series: &Series, cadence: Cadence) -> String {
    match series {
        Series::Volume => format!(
            "Check that the extract covers the whole {} and only this force; if the number is right, say what changed in your reply.",
            cadence.word()
        ),
        Series::Share { .. } => "Check the code mapping of your records system for this field; if the change is real, no action is needed.".to_owned(),
        Series::Blank { .. } => "Check that the field is still being recorded and exported.".to_owned(),
        Series::Recording(share) => share.advice.clone(),
        Series::Agreement(a) => format!(
            "Check that {} is recorded in its own right and not filled in from {}.",
            a.dimensions[0], a.dimensions[1]
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------------------

/// A period in words: `2024-03` → `March 2024`, `2024-Q1` → `January to March 2024`.
pub fn period_name(p: Period) -> String {
    p.name()
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Days as runs: `1st to 15th, 18th and 20th`.
fn day_list(days: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < days.len() {
        let mut j = i;
        while j + 1 < days.len() && days[j + 1] == days[j] + 1 {
            j += 1;
        }
        if j > i + 1 {
            parts.push(format!("{} to {}", ordinal(days[i]), ordinal(days[j])));
        } else {
            parts.extend(days[i..=j].iter().map(|&d| ordinal(d)));
        }
        i = j + 1;
    }
    match parts.len() {
        0 => String::new(),
        1 => parts.remove(0),
        _ => {
            let last = parts.pop().unwrap_or_default();
            format!("{} and {last}", parts.join(", "))
        }
    }
}

/// A count with thousands separators, rounded to a whole number.
pub fn thousands(x: f64) -> String {
    let n = x.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A share as a percentage: `0.1234` → `12.3%`.
pub fn percent(share: f64) -> String {
    if share.is_finite() {
        format!("{:.1}%", share * 100.0)
    } else {
        "—".to_owned()
    }
}

/// A value in its unit.
pub fn format_value(x: f64, unit: Unit) -> String {
    match unit {
        Unit::Share => percent(x),
        Unit::Count | Unit::Days => thousands(x),
        Unit::Figure => format!("{x:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A force's month with `rows` records spread over the days, `share` of them in category
    /// `X` of dimension `d`, nothing blank.
    pub(crate) fn month(force: &str, period: &str, rows: u64, share: f64) -> Observations {
        let period: Period = period.parse().unwrap();
        let days = u64::from(period.days());
        let mut by_day = vec![rows / days; days as usize];
        by_day[0] += rows % days;
        let x = (rows as f64 * share).round() as u64;
        Observations {
            force_id: force.into(),
            period: Some(period),
            submission_id: format!("{force}-{period}"),
            rows,
            by_day,
            dated: rows,
            categories: BTreeMap::from([(
                "d".to_owned(),
                BTreeMap::from([("X".to_owned(), x), ("Y".to_owned(), rows - x)])
                    .into_iter()
                    .filter(|(_, n)| *n > 0)
                    .collect(),
            )]),
            ..Observations::default()
        }
    }

    fn settings() -> AnomalySettings {
        AnomalySettings {
            dimensions: vec!["d".into()],
            ..AnomalySettings::default()
        }
    }

    fn run(history: &[Observations], current: &Observations) -> Vec<Anomaly> {
        detect(&Input {
            settings: &settings(),
            current,
            history,
            peers: &[],
            labels: &Labels::default(),
            observe: &ObserveSettings::default(),
            catalogue: None,
        })
    }

    fn periods(n: usize) -> Vec<String> {
        let mut p: Period = "2022-01".parse().unwrap();
        (0..n)
            .map(|_| {
                let s = p.to_string();
                p = p.next();
                s
            })
            .collect()
    }

    /// Deterministic noise roughly like Poisson counts around `mean`.
    pub(crate) fn noisy_for_tests(mean: f64, i: usize) -> u64 {
        let u = ((i as u64 * 2_654_435_761) % 1000) as f64 / 1000.0 - 0.5;
        (mean + 2.0 * u * mean.sqrt()).round().max(0.0) as u64
    }

    #[test]
    fn days_are_listed_in_runs_in_words() {
        assert_eq!(
            day_list(&[1, 2, 3, 5, 6, 9]),
            "1st to 3rd, 5th, 6th and 9th"
        );
        assert_eq!(day_list(&[1, 2]), "1st and 2nd");
        assert_eq!(day_list(&[11, 12, 13, 22]), "11th to 13th and 22nd");
        assert_eq!(period_name("2020-01".parse().unwrap()), "January 2020");
    }

    /// Two years of a force's months from 2022-01, about 500 a month; `rows` gives month `i`'s
    /// records from its usual level.
    fn two_years(rows: impl Fn(usize, i64) -> i64) -> (Vec<String>, Vec<Observations>) {
        let months = periods(24);
        let noise = [0, 7, -5, 3, -8, 6, -2, 4, -6, 1, 5, -3];
        let all = months
            .iter()
            .enumerate()
            .map(|(i, p)| month("f", p, rows(i, 500 + noise[i % 12]) as u64, 0.2))
            .collect();
        (months, all)
    }

    #[test]
    fn a_fourfold_step_alarms_twice_then_is_a_level_shift_then_the_new_baseline() {
        let (months, all) = two_years(|i, base| if i >= 14 { base * 4 } else { base });
        let mut codes = Vec::new();
        for i in 6..all.len() {
            let found = run(&all[..i], &all[i]);
            codes.push((
                months[i].clone(),
                found.iter().map(|a| a.code).collect::<Vec<_>>(),
            ));
        }
        let at = |p: &str| codes.iter().find(|(q, _)| q == p).unwrap().1.clone();
        for (p, c) in &codes {
            let expected: &[Code] = match p.as_str() {
                "2023-03" | "2023-04" => &[Code::AnomalyVolume],
                "2023-05" => &[Code::AnomalyLevelShift],
                _ => &[],
            };
            assert_eq!(c, expected, "{p}: {codes:?}");
        }
        let shift = run(&all[..16], &all[16]);
        assert_eq!(shift[0].since, Some("2023-03".parse().unwrap()));
        assert!(
            shift[0].message.contains("Since March 2023"),
            "{}",
            shift[0].message
        );
        assert!(at("2023-02").is_empty());
    }

    #[test]
    fn volume_is_judged_against_the_forces_own_over_dispersion() {
        let volume = |history: &[Observations], rows: u64| -> Vec<Code> {
            run(history, &month("f", "2024-01", rows, 0.2))
                .iter()
                .map(|a| a.code)
                .filter(|c| *c == Code::AnomalyVolume)
                .collect()
        };
        let history = |swing: [i64; 12]| -> Vec<Observations> {
            (0..12)
                .map(|m| {
                    month(
                        "f",
                        &format!("2023-{:02}", m + 1),
                        (1000 + swing[m]) as u64,
                        0.2,
                    )
                })
                .collect()
        };
        // Months within a few percent of 1,000 (judged as varying by at least `min_change`, 20%):
        // twice as many is an alarm, and so is 40%.
        let steady = history([0, 30, -20, 10, -40, 25, -5, 15, -30, 35, -10, 5]);
        assert_eq!(volume(&steady, 2000), [Code::AnomalyVolume]);
        assert_eq!(volume(&steady, 400), [Code::AnomalyVolume]);
        // The range it states is what would not have been flagged: 2,000 is above it, and the
        // least change reported (40%) is inside it.
        let double = run(&steady, &month("f", "2024-01", 2000, 0.2));
        let (lower, upper) = (double[0].lower, double[0].upper);
        assert!(
            lower < 600.0 && (1400.0..2000.0).contains(&upper),
            "{lower} {upper}"
        );
        // 30% fewer is under the least change reported (`relative`), however steady.
        assert!(volume(&steady, 700).is_empty());
        // Months swinging by 40% either way: twice as many is within what this force does.
        let swinging = history([
            0, 400, -350, 300, -400, 380, -300, 350, -380, 400, -250, 300,
        ]);
        assert!(volume(&swinging, 2000).is_empty());
        assert_eq!(volume(&swinging, 4000), [Code::AnomalyVolume]);
    }

    #[test]
    fn a_step_that_ends_is_an_episode_not_a_new_baseline() {
        // Three months at a fifth of the usual level (a national lockdown), then back.
        let (months, all) = two_years(|i, base| {
            if (14..17).contains(&i) {
                base / 5
            } else {
                base
            }
        });
        for i in 6..all.len() {
            let codes: Vec<Code> = run(&all[..i], &all[i]).iter().map(|a| a.code).collect();
            let expected: &[Code] = match months[i].as_str() {
                "2023-03" | "2023-04" => &[Code::AnomalyVolume],
                "2023-05" => &[Code::AnomalyLevelShift],
                _ => &[],
            };
            assert_eq!(codes, expected, "{}", months[i]);
        }
    }
}

#[cfg(test)]
mod more_tests {
    use super::tests::month;
    use super::*;

    fn settings() -> AnomalySettings {
        AnomalySettings {
            dimensions: vec!["d".into()],
            peers: crate::model::analysis::PeerSettings {
                series: vec!["d=X".into()],
                ..Default::default()
            },
            ..AnomalySettings::default()
        }
    }

    fn codes(
        history: &[Observations],
        current: &Observations,
        peers: &[Observations],
    ) -> Vec<Code> {
        detect(&Input {
            settings: &settings(),
            current,
            history,
            peers,
            labels: &Labels::default(),
            observe: &ObserveSettings::default(),
            catalogue: None,
        })
        .iter()
        .map(|a| a.code)
        .collect()
    }

    fn year(force: &str, rows: u64, share: f64) -> Vec<Observations> {
        (1..=12)
            .map(|m| month(force, &format!("2023-{m:02}"), rows + (m % 3), share))
            .collect()
    }

    #[test]
    fn a_category_at_zero_alarms_only_where_history_expects_ten_or_more() {
        let history = year("f", 1000, 0.03);
        let zero = month("f", "2024-01", 1000, 0.0);
        assert_eq!(codes(&history, &zero, &[]), [Code::AnomalyCategoryVanished]);
        // A small force with about 3 a month: zero is ordinary.
        let small = year("s", 100, 0.03);
        assert!(codes(&small, &month("s", "2024-01", 100, 0.0), &[]).is_empty());
    }

    #[test]
    fn small_forces_do_not_alarm_on_noise() {
        let months: Vec<Observations> = (0..30)
            .map(|i| {
                let p = format!("{}-{:02}", 2022 + i / 12, i % 12 + 1);
                let rows = super::tests::noisy_for_tests(20.0, i);
                month("c", &p, rows, 0.1)
            })
            .collect();
        for i in 6..months.len() {
            assert!(
                codes(&months[..i], &months[i], &[]).is_empty(),
                "{:?}",
                months[i].period
            );
        }
    }

    #[test]
    fn a_blank_rate_that_falls_is_not_an_alarm_but_one_that_rises_is() {
        let mut history = year("f", 1000, 0.5);
        for h in &mut history {
            h.blanks.insert("gender".into(), 50);
        }
        let mut better = month("f", "2024-01", 1000, 0.5);
        better.blanks.insert("gender".into(), 5);
        assert!(codes(&history, &better, &[]).is_empty());
        let mut worse = month("f", "2024-01", 1000, 0.5);
        worse.blanks.insert("gender".into(), 160);
        assert_eq!(codes(&history, &worse, &[]), [Code::AnomalyRecordingShare]);
    }

    #[test]
    fn zero_where_nearly_every_peer_has_some_is_a_peer_anomaly() {
        let peers: Vec<Observations> = (0..20)
            .map(|i| {
                month(
                    &format!("p{i}"),
                    "2024-01",
                    500 + i,
                    0.04 + i as f64 / 2000.0,
                )
            })
            .collect();
        let current = month("f", "2024-01", 500, 0.0);
        assert_eq!(codes(&[], &current, &peers), [Code::AnomalyPeerShare]);
        // Within the peers' spread: nothing.
        assert!(codes(&[], &month("f", "2024-01", 500, 0.05), &peers).is_empty());
        // Too few peers to compare with.
        assert!(codes(&[], &current, &peers[..5]).is_empty());
    }

    #[test]
    fn a_fall_every_force_shares_is_national_information_and_a_deeper_one_still_warns() {
        let history = year("f", 1000, 0.5);
        let peers = |share_of_usual: f64| -> Vec<Observations> {
            (0..12)
                .map(|i| {
                    let usual = 800.0 + 50.0 * f64::from(i);
                    let mut p = month(
                        &format!("p{i}"),
                        "2024-01",
                        (usual * share_of_usual) as u64,
                        0.5,
                    );
                    p.usual_rows = Some(usual);
                    p
                })
                .collect()
        };
        let volume = |current: &Observations, peers: &[Observations]| -> Vec<(Severity, String)> {
            detect(&Input {
                settings: &settings(),
                current,
                history: &history,
                peers,
                labels: &Labels::default(),
                observe: &ObserveSettings::default(),
                catalogue: None,
            })
            .into_iter()
            .filter(|a| a.code == Code::AnomalyVolume)
            .map(|a| (a.severity, a.message))
            .collect()
        };
        let lockdown = month("f", "2024-01", 300, 0.5);
        // Alone, a fall to 30% is a warning.
        let alone = volume(&lockdown, &peers(1.0));
        assert_eq!(alone.len(), 1);
        assert_eq!(alone[0].0, Severity::Warning);
        // Every other force at 30% of its usual level: the same fall is national.
        let together = volume(&lockdown, &peers(0.3));
        assert_eq!(together[0].0, Severity::Info, "{}", together[0].1);
        assert!(
            together[0]
                .1
                .contains("across 12 other forces this month, records were 30.0%"),
            "{}",
            together[0].1
        );
        // Others at 70%: a fall to 15% is far beyond theirs and still warns, saying so.
        let further = volume(&month("f", "2024-01", 150, 0.5), &peers(0.7));
        assert_eq!(further[0].0, Severity::Warning);
        assert!(
            further[0].1.contains("but yours is far outside"),
            "{}",
            further[0].1
        );
        // Too few forces of this month to say what moved nationally.
        assert_eq!(volume(&lockdown, &peers(0.3)[..5])[0].0, Severity::Warning);
    }

    #[test]
    fn a_difference_from_the_peers_that_lasts_is_a_warning_once() {
        let peers: Vec<Observations> = (0..20)
            .map(|i| {
                month(
                    &format!("p{i}"),
                    "2024-06",
                    500 + i,
                    0.04 + i as f64 / 2000.0,
                )
            })
            .collect();
        let own = |m: u32, share: f64| month("f", &format!("2024-{m:02}"), 500, share);
        let severities = |history: &[Observations], current: &Observations| -> Vec<Severity> {
            detect(&Input {
                settings: &settings(),
                current,
                history,
                peers: &peers,
                labels: &Labels::default(),
                observe: &ObserveSettings::default(),
                catalogue: None,
            })
            .iter()
            .filter(|a| a.code == Code::AnomalyPeerShare)
            .map(|a| a.severity)
            .collect()
        };
        // One month apart from the others: information.
        let ordinary: Vec<Observations> = (1..=5).map(|m| own(m, 0.045)).collect();
        assert_eq!(severities(&ordinary, &own(6, 0.0)), [Severity::Info]);
        // The third month in a row: a warning, said once.
        let mut apart: Vec<Observations> = (1..=3).map(|m| own(m, 0.045)).collect();
        apart.extend((4..=5).map(|m| own(m, 0.0)));
        assert_eq!(severities(&apart, &own(6, 0.0)), [Severity::Warning]);
        // From the fourth on, information again: it was reported when it began.
        let always: Vec<Observations> = (1..=5).map(|m| own(m, 0.0)).collect();
        assert_eq!(severities(&always, &own(6, 0.0)), [Severity::Info]);
        // A force whose every return so far differs is warned at its third.
        assert_eq!(severities(&always[3..], &own(6, 0.0)), [Severity::Warning]);
    }

    #[test]
    fn days_without_records_in_a_block_are_a_gap_and_scattered_quiet_days_are_not() {
        let history = year("f", 3100, 0.5);
        let mut half = month("f", "2024-01", 1550, 0.5);
        half.by_day = (0..31).map(|d| if d < 15 { 103 } else { 0 }).collect();
        assert_eq!(codes(&history, &half, &[]), [Code::GapDaysWithoutRecords]);
        // Two empty days at the start of a busy month, with no history (as South Yorkshire's
        // January 2020).
        let mut start = month("f", "2024-01", 2000, 0.5);
        start.by_day = (0..31).map(|d| if d < 2 { 0 } else { 69 }).collect();
        assert_eq!(codes(&[], &start, &[]), [Code::GapDaysWithoutRecords]);
        // A small force with 4 a day on average and six scattered quiet days.
        let mut quiet = month("s", "2024-02", 120, 0.5);
        quiet.by_day = (0..29)
            .map(|d| {
                if d % 5 == 3 {
                    0
                } else {
                    [1, 4, 6, 9, 3][d % 5]
                }
            })
            .collect();
        assert!(codes(&[], &quiet, &[]).is_empty());
    }

    #[test]
    fn a_history_without_empty_days_makes_a_half_month_a_gap_even_on_uneven_days() {
        // About 6 a day, some days only 1: from this month alone, an empty day is too usual to
        // be sure of a 17-day run.
        let uneven = |period: &str, upto: usize| {
            let mut m = month("s", period, 0, 0.5);
            m.by_day = (0..31)
                .map(|d| {
                    if d < upto {
                        [1, 6, 9, 4, 11, 7][d % 6]
                    } else {
                        0
                    }
                })
                .collect();
            m.rows = m.by_day.iter().sum();
            m.dated = m.rows;
            m
        };
        let half = uneven("2024-01", 14);
        assert!(codes(&[], &half, &[]).is_empty());
        // A year of months with not one empty day says otherwise.
        let history: Vec<Observations> = (1..=12)
            .map(|m| uneven(&format!("2023-{m:02}"), 31))
            .collect();
        assert_eq!(codes(&history, &half, &[]), [Code::GapDaysWithoutRecords]);
        // Two scattered empty days in that force's month are still nothing to report.
        let mut two = uneven("2024-01", 31);
        two.by_day[9] = 0;
        two.by_day[20] = 0;
        assert!(codes(&history, &two, &[]).is_empty());
    }

    #[test]
    fn with_two_years_volumes_are_judged_against_the_same_time_of_year() {
        // A strong season: +40% in July, -40% in January.
        let season = [0.6, 0.7, 0.8, 0.9, 1.1, 1.2, 1.4, 1.2, 1.1, 0.9, 0.8, 0.7];
        let months: Vec<Observations> = (0..30)
            .map(|i| {
                let p = format!("{}-{:02}", 2022 + i / 12, i % 12 + 1);
                month("f", &p, (1000.0 * season[i % 12]) as u64, 0.5)
            })
            .collect();
        for i in 24..30 {
            assert!(codes(&months[..i], &months[i], &[]).is_empty(), "{i}");
        }
        // Twice the usual July is still flagged.
        let mut july = month("f", "2024-07", 2800, 0.5);
        july.by_day = vec![90; 31];
        let found = detect(&Input {
            settings: &settings(),
            current: &july,
            history: &months[..30],
            peers: &[],
            labels: &Labels::default(),
            observe: &ObserveSettings::default(),
            catalogue: None,
        });
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("allowing for the time of year"));
        assert!(
            (found[0].expected - 1400.0).abs() < 100.0,
            "{}",
            found[0].expected
        );
    }

    #[test]
    fn two_fields_that_suddenly_agree_are_reported_and_their_usual_agreement_is_not() {
        let observe = ObserveSettings {
            agreements: vec![AgreementDecl {
                name: "agree".into(),
                dimensions: ["a".into(), "b".into()],
                ignore: Vec::new(),
            }],
            ..ObserveSettings::default()
        };
        let with = |period: &str, agree: u64| {
            let mut o = month("kent", period, 1000, 0.5);
            o.agreements.insert("agree".into(), (agree, 1000));
            o
        };
        let history: Vec<Observations> = (1..=12u64)
            .map(|m| with(&format!("2022-{m:02}"), 840 + (m % 3) * 10))
            .collect();
        let found = |current: &Observations| {
            detect(&Input {
                settings: &settings(),
                current,
                history: &history,
                peers: &[],
                labels: &Labels::default(),
                observe: &observe,
                catalogue: None,
            })
            .into_iter()
            .filter(|a| a.code == Code::AnomalyFieldsAgree)
            .collect::<Vec<_>>()
        };
        let copied = found(&with("2023-01", 1000));
        assert_eq!(copied.len(), 1, "{copied:?}");
        assert!(
            copied[0].message.contains("agree in 100.0%"),
            "{}",
            copied[0].message
        );
        assert!(found(&with("2023-01", 860)).is_empty());
        // Agreeing less often is not a recording problem.
        assert!(found(&with("2023-01", 500)).is_empty());
    }
}
