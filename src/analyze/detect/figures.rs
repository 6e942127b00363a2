//! Anomalies among an aggregate return's figures: each figure (one metric of the catalogue at
//! one breakdown) against the force's own previous period, moved as the other forces' figures
//! moved; a force's first return against the other forces' levels; and a return whose figures
//! are, figure for figure, the force's previous return or another force's.
//!
//! A figure's usual value is its median over the force's latest `baseline_periods` earlier
//! returns (so one wrong return, kept in the history, does not make the next one look wrong).
//! An aggregate return comes once a year or a quarter, so a force's own history is one to three
//! earlier figures, too few to say how much its figures usually vary. The other forces' returns
//! of the same period say it: each peer's change on its own usual value (kept with its
//! observations, `Observations::usual_figures`) gives the national change (their median) and
//! how far forces ordinarily move (their scaled MAD, on the log scale). A figure is reported
//! when
//!
//! 1. its change is outside the band: the national change ± `max(z × spread, log(1 +
//!    relative))`, the spread raised by `1 / √peers` for the few forces it comes from; with
//!    fewer than `min_peers` returns of the period, no change ± `z ×` the spread of the other
//!    forces' changes in the previous period, or `default_spread` without those either; and
//! 2. it is improbable even at the band's edge: the count behind the figure (the figure itself
//!    for a count; for a rate, ratio or share, the count its numerator is made of) as a Poisson
//!    count whose mean is last period's count moved to the band's edge, below `probability`.
//!
//! A force's first return has no usual value: its rates, ratios and shares are compared with
//! the other forces' for the period, and reported only far outside the other forces' (more
//! than `level_z` spreads from their median, outside all of them) and improbable at the band's
//! edge by the same Poisson tail: a rate per 100,000 sent as per 1,000, a ratio upside down.
//!
//! The band keeps ordinary movements quiet (and a national one, which moves the band); the
//! tail keeps small forces' small counts quiet. A rate or ratio of zero is left to the count
//! behind it.
//!
//! Figures that share the count they are made of (a count by ethnicity, its rate per 1,000
//! and its disparity ratio) move together when that count is wrong, so every reported figure
//! made from one metric's counts is one finding, led by the least probable, listing the others.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Anomaly, Input, Unit, period_name, thousands};
use crate::analyze::stats::{median, poisson_cdf, poisson_sf, scaled_mad};
use crate::catalogue::{Metric, MetricCatalogue, Part};
use crate::finding::Code;
use crate::model::analysis::FigureSettings;
use crate::model::observe::{Figures, breakdown_cells, breakdown_columns, breakdown_key};
use crate::observe::Observations;
use crate::period::Period;

/// Links in a chain of numerators followed (a ratio of rates of counts is two).
const MAX_DEPTH: usize = 4;
/// Others named in a grouped finding's message.
const NAMED: usize = 6;

/// Each figure's usual value for the force before `current`'s period: its median over the
/// force's latest `periods` earlier returns in `history` that give it (none without any). Kept
/// with `current`'s observations so that later returns of other forces can see how this
/// force's figures moved.
pub fn usual_figures(current: &Observations, history: &[Observations], periods: usize) -> Figures {
    let earlier: Vec<&Observations> = history
        .iter()
        .filter(|h| {
            h.force_id == current.force_id
                && current
                    .period
                    .is_some_and(|p| h.period.is_some_and(|q| q < p))
        })
        .collect();
    usual(&earlier, periods).0
}

/// The median of each figure over the latest `periods` of `history` (any order) that have
/// figures, and the first and last of those periods.
fn usual(history: &[&Observations], periods: usize) -> (Figures, Option<(Period, Period)>) {
    let mut latest: Vec<&Observations> = history
        .iter()
        .copied()
        .filter(|h| !h.figures.is_empty() && h.period.is_some())
        .collect();
    latest.sort_by_key(|h| std::cmp::Reverse(h.period));
    latest.truncate(periods.max(1));
    let mut values: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for h in &latest {
        for (id, by_key) in &h.figures {
            for (key, v) in by_key {
                values.entry((id, key)).or_default().push(*v);
            }
        }
    }
    let mut out = Figures::new();
    for ((id, key), v) in values {
        if let Some(m) = median(&v) {
            out.entry(id.to_owned())
                .or_default()
                .insert(key.to_owned(), m);
        }
    }
    let span = match (latest.last(), latest.first()) {
        (Some(first), Some(last)) => first.period.zip(last.period),
        _ => None,
    };
    (out, span)
}

/// Every anomaly among the current return's figures.
pub(super) fn figures(
    input: &Input<'_>,
    catalogue: &MetricCatalogue,
    history: &[&Observations],
    period: Period,
) -> Vec<Anomaly> {
    let current = input.current;
    if current.figures.is_empty() {
        return Vec::new();
    }
    let s = &input.settings.figures;
    let previous = history.iter().rev().find(|h| !h.figures.is_empty());
    let (baseline, span) = usual(history, s.baseline_periods);
    let baseline = span.map(|span| Baseline {
        figures: baseline,
        span,
        periods: history
            .iter()
            .filter(|h| !h.figures.is_empty())
            .count()
            .min(s.baseline_periods),
    });
    let peers: Vec<&Observations> = input
        .peers
        .iter()
        .filter(|p| p.force_id != current.force_id && p.period == Some(period))
        .filter(|p| !p.figures.is_empty())
        .collect();
    let last_period: Vec<&Observations> = input
        .peers
        .iter()
        .filter(|p| p.force_id != current.force_id && p.period == Some(period.prev()))
        .filter(|p| !p.figures.is_empty())
        .collect();
    let ctx = Context {
        catalogue,
        settings: s,
        probability: input.settings.probability,
        period,
    };
    if let Some(found) = repeated(&ctx, input, previous.copied(), &peers) {
        return vec![found];
    }
    let mut candidates = Vec::new();
    for (id, by_key) in &current.figures {
        let Some(metric) = catalogue.metric(id) else {
            continue;
        };
        for (key, &x) in by_key {
            let figure = Figure { metric, key, x };
            let judged = match &baseline {
                Some(usual) => ctx.against_usual(&figure, current, usual, [&peers, &last_period]),
                None => ctx.against_peers(&figure, current, &peers),
            };
            candidates.extend(judged);
        }
    }
    group(&ctx, input, candidates, baseline.as_ref())
}

struct Context<'a> {
    catalogue: &'a MetricCatalogue,
    settings: &'a FigureSettings,
    probability: f64,
    period: Period,
}

/// What the other forces' returns say about how far figures move.
#[derive(Debug, Clone, Copy)]
enum National {
    /// This many returns of the period, with a usual value of their own.
    Now(usize),
    /// Too few of the period; this many of the previous period.
    Before(usize),
    /// Too few of either.
    Unknown,
}

/// The force's usual figures before this period.
struct Baseline {
    figures: Figures,
    /// The first and last period they are taken from.
    span: (Period, Period),
    /// How many periods.
    periods: usize,
}

/// One figure of the current return.
struct Figure<'a> {
    metric: &'a Metric,
    key: &'a str,
    x: f64,
}

/// A figure found unusual, before grouping.
struct Candidate<'a> {
    metric: &'a Metric,
    key: String,
    root: &'a str,
    observed: f64,
    /// The usual value, when judged against the force's own.
    usual: Option<f64>,
    expected: f64,
    lower: f64,
    upper: f64,
    probability: f64,
    method: String,
    /// Why it was expected, in words.
    basis: String,
    peers: usize,
}

impl<'a> Context<'a> {
    /// A figure against the force's usual value, moved as its peers' figures moved.
    fn against_usual(
        &self,
        f: &Figure<'a>,
        current: &Observations,
        usual: &Baseline,
        [peers, last_period]: [&[&Observations]; 2],
    ) -> Option<Candidate<'a>> {
        let s = self.settings;
        let was = *usual.figures.get(&f.metric.id)?.get(f.key)?;
        let moved = change(f.metric, was, f.x)?;
        let changes_of = |forces: &[&Observations]| -> Vec<f64> {
            forces
                .iter()
                .filter_map(|o| {
                    let now = *o.figures.get(&f.metric.id)?.get(f.key)?;
                    let before = *o.usual_figures.get(&f.metric.id)?.get(f.key)?;
                    change(f.metric, before, now)
                })
                .collect()
        };
        // Raised by about one standard error of a spread taken from few forces.
        let spread_of = |m: &[f64]| {
            scaled_mad(m)
                .map(|mad| (mad * (1.0 + (m.len() as f64).sqrt().recip())).max(s.min_spread))
        };
        let (now, before) = (changes_of(peers), changes_of(last_period));
        let (centre, spread, national) = if now.len() >= s.min_peers {
            (median(&now)?, spread_of(&now)?, National::Now(now.len()))
        } else if before.len() >= s.min_peers {
            (0.0, spread_of(&before)?, National::Before(before.len()))
        } else {
            (0.0, s.default_spread, National::Unknown)
        };
        let half = (s.z * spread).max(s.relative.ln_1p());
        if (moved - centre).abs() <= half {
            return None;
        }
        let up = moved > centre;
        let before = self.size(&usual.figures, f.metric, f.key, was, 0)?;
        let now = self.size(&current.figures, f.metric, f.key, f.x, 0)?;
        let edge = (before + 0.5) * (centre + if up { half } else { -half }).exp();
        // For a rate, the count it would take to move it so far, its population unchanged.
        let count = if f.metric.unit.additive() {
            now
        } else {
            before * moved.exp()
        };
        let count = count.round().max(0.0) as u64;
        let probability = if up {
            poisson_sf(count, edge)
        } else {
            poisson_cdf(count, edge)
        };
        if probability >= self.probability {
            return None;
        }
        let scale = |d: f64| {
            if f.metric.unit.additive() {
                ((was + 0.5) * d.exp() - 0.5).max(0.0)
            } else {
                was * d.exp()
            }
        };
        let usual_words = format!(
            "{} usually ({})",
            figure_words(f.metric, was),
            span_words(usual.span, usual.periods)
        );
        let too_few = format!(
            "too few other forces' returns for {} yet to say how figures moved nationally",
            period_name(self.period)
        );
        let basis = match national {
            National::Now(n) => format!(
                "{usual_words}, moved as the figure moved for the other {n} forces with a usual value of their own (median {})",
                signed_percent(centre.exp() - 1.0)
            ),
            National::Before(n) => format!(
                "{usual_words}; {too_few}, so the range is how far the figure moved for {n} forces in {}",
                period_name(self.period.prev())
            ),
            National::Unknown => format!("{usual_words}; {too_few}"),
        };
        Some(Candidate {
            metric: f.metric,
            key: f.key.to_owned(),
            root: self.root(f.metric),
            observed: f.x,
            usual: Some(was),
            expected: scale(centre),
            lower: scale(centre - half),
            upper: scale(centre + half),
            probability,
            method: match national {
                National::Now(_) => "change on the force's usual value (median of its latest periods) against the other forces' changes (median, scaled MAD of log changes), Poisson tail at the band's edge",
                National::Before(_) => "change on the force's usual value (median of its latest periods) against no change, spread of the other forces' changes in the previous period (scaled MAD of log changes), Poisson tail at the band's edge",
                National::Unknown => "change on the force's usual value (median of its latest periods), fixed band, Poisson tail at the band's edge",
            }
            .to_owned(),
            basis,
            peers: match national {
                National::Now(n) | National::Before(n) => n,
                National::Unknown => 0,
            },
        })
    }

    /// A rate, ratio or share in a force's first return, against the other forces' levels: only
    /// far outside all of them (a rate per 100,000 given as per 1,000, a ratio the wrong way up).
    fn against_peers(
        &self,
        f: &Figure<'a>,
        current: &Observations,
        peers: &[&Observations],
    ) -> Option<Candidate<'a>> {
        let s = self.settings;
        if f.metric.unit.additive() || f.x <= 0.0 {
            return None;
        }
        let levels: Vec<f64> = peers
            .iter()
            .filter_map(|o| o.figures.get(&f.metric.id)?.get(f.key).copied())
            .filter(|v| *v > 0.0)
            .collect();
        if levels.len() < s.min_peers {
            return None;
        }
        let logs: Vec<f64> = levels.iter().map(|v| v.ln()).collect();
        let centre = median(&logs)?;
        let spread = scaled_mad(&logs)?.max(s.min_spread);
        let up = f.x.ln() > centre;
        let (lo, hi) = levels.iter().fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
        let half = (s.level_z * spread).max(s.level_factor.ln());
        if (f.x.ln() - centre).abs() <= half || (lo..=hi).contains(&f.x) {
            return None;
        }
        // As improbable as the count behind it would be, moved to the band's edge.
        let n = self.size(&current.figures, f.metric, f.key, f.x, 0)?;
        let k = n.round() as u64;
        let probability = if up {
            poisson_sf(k, n * (centre + half).exp() / f.x)
        } else {
            poisson_cdf(k, n * (centre - half).exp() / f.x)
        };
        if probability >= self.probability {
            return None;
        }
        Some(Candidate {
            metric: f.metric,
            key: f.key.to_owned(),
            root: self.root(f.metric),
            observed: f.x,
            usual: None,
            expected: centre.exp(),
            lower: (centre - half).exp().max(lo),
            upper: (centre + half).exp().min(hi),
            probability,
            method: "first return against the other forces' values for the period (median, scaled MAD of logs), Poisson tail at the band's edge".to_owned(),
            basis: format!(
                "the median of the other {} forces' values for {}, which run from {} to {}",
                levels.len(),
                period_name(self.period),
                figure_words(f.metric, lo),
                figure_words(f.metric, hi)
            ),
            peers: levels.len(),
        })
    }

    /// The count behind a figure: the figure itself for a count; for a rate, ratio or share,
    /// its numerator's count at the same breakdown, or (when the numerator is not in the
    /// return) its share of its denominator's count.
    fn size(
        &self,
        figures: &Figures,
        metric: &Metric,
        key: &str,
        x: f64,
        depth: usize,
    ) -> Option<f64> {
        if metric.unit.additive() {
            return Some(x.max(0.0));
        }
        if depth >= MAX_DEPTH {
            return None;
        }
        if let Some(part) = &metric.numerator {
            let inner = self.catalogue.metric(&part.metric)?;
            if let Some(v) = self.part_value(figures, part, key) {
                return self.size(figures, inner, &self.part_key(part, key)?, v, depth + 1);
            }
        }
        let part = metric.denominator.as_ref()?;
        let inner = self.catalogue.metric(&part.metric)?;
        let scale = metric.unit.scale()?;
        if !inner.unit.additive() {
            return None;
        }
        Some(x / scale * self.part_value(figures, part, key)?)
    }

    /// A part's key at the figure's breakdown: the breakdown's codes with the part's fixed codes
    /// put in, the part's first code where it fixes several (used only to find the metric the
    /// chain leads to, not to add).
    fn part_key(&self, part: &Part, key: &str) -> Option<String> {
        let metric = self.catalogue.metric(&part.metric)?;
        let mut cells: BTreeMap<&str, &str> = breakdown_cells(key).collect();
        for (d, codes) in &part.at {
            cells.insert(d, codes.first()?);
        }
        Some(self.key_of(metric, &cells))
    }

    /// The part's value at the figure's breakdown (its fixed codes summed), when the return
    /// gives every figure it needs.
    fn part_value(&self, figures: &Figures, part: &Part, key: &str) -> Option<f64> {
        let metric = self.catalogue.metric(&part.metric)?;
        let given = figures.get(&metric.id)?;
        let base: BTreeMap<&str, &str> = breakdown_cells(key).collect();
        let mut keys = vec![base];
        for (d, codes) in &part.at {
            keys = keys
                .into_iter()
                .flat_map(|k| {
                    codes.iter().map(move |c| {
                        let mut k = k.clone();
                        k.insert(d.as_str(), c.as_str());
                        k
                    })
                })
                .collect();
        }
        if !metric.unit.additive() && keys.len() > 1 {
            return None;
        }
        keys.iter()
            .map(|k| given.get(&self.key_of(metric, k)).copied())
            .sum()
    }

    /// The key of `cells` for `metric`, its dimensions in the catalogue's order.
    fn key_of(&self, metric: &Metric, cells: &BTreeMap<&str, &str>) -> String {
        breakdown_key(
            self.catalogue
                .dimensions()
                .into_iter()
                .filter(|d| metric.dimension(&d.name).is_some())
                .filter_map(|d| cells.get(d.name.as_str()).map(|c| (d.name.as_str(), *c))),
        )
    }

    /// The metric whose counts a metric is made of, following its numerators.
    fn root(&self, metric: &'a Metric) -> &'a str {
        let mut m = metric;
        for _ in 0..MAX_DEPTH {
            match m
                .numerator
                .as_ref()
                .and_then(|p| self.catalogue.metric(&p.metric))
            {
                Some(next) if !m.unit.additive() => m = next,
                _ => break,
            }
        }
        &m.id
    }
}

/// A value in a metric's unit: `1,234`, `12.3 FTE`, `8.61 per 1,000`, `3.27`, `12.5%`.
fn figure_words(metric: &Metric, x: f64) -> String {
    use crate::catalogue::Unit as M;
    match metric.unit {
        M::Count | M::Headcount => thousands(x),
        M::Fte => format!("{x:.1} FTE"),
        M::RatePer1000 => format!("{} per 1,000", decimals(x)),
        M::Ratio => decimals(x),
        M::Percent => format!("{}%", decimals(x)),
    }
}

/// Two decimals below 10, one below 100, none above.
fn decimals(x: f64) -> String {
    if x.abs() < 10.0 {
        format!("{x:.2}")
    } else if x.abs() < 100.0 {
        format!("{x:.1}")
    } else {
        thousands(x)
    }
}

/// `the financial year 2023-24`, or `3 financial years, 2021-22 to 2023-24`.
fn span_words((from, to): (Period, Period), periods: usize) -> String {
    if periods <= 1 {
        period_name(from)
    } else {
        format!(
            "the median of {}, {} to {}",
            from.cadence().count(periods),
            period_name(from),
            period_name(to)
        )
    }
}

fn signed_percent(x: f64) -> String {
    format!("{:+.0}%", x * 100.0)
}

/// The change from `before` to `now` on the log scale: counts with half a record added (so a
/// count may start or end at zero), rates and ratios only when both are above zero.
fn change(metric: &Metric, before: f64, now: f64) -> Option<f64> {
    if metric.unit.additive() {
        (before >= 0.0 && now >= 0.0).then(|| ((now + 0.5) / (before + 0.5)).ln())
    } else {
        (before > 0.0 && now > 0.0).then(|| (now / before).ln())
    }
}

/// A figure in words: `Stop and search: searches (ethnicity = Black)`.
fn describe(metric: &Metric, key: &str) -> String {
    let cells: Vec<String> = breakdown_cells(key)
        .map(|(d, c)| format!("{d} = {c}"))
        .collect();
    if cells.is_empty() {
        metric.title.clone()
    } else {
        format!("{} ({})", metric.title, cells.join(", "))
    }
}

/// The return's figures, when they are (nearly) all those of the force's previous return or
/// of another force's return for the same period.
fn repeated(
    ctx: &Context<'_>,
    input: &Input<'_>,
    previous: Option<&Observations>,
    peers: &[&Observations],
) -> Option<Anomaly> {
    let s = ctx.settings;
    let current = input.current;
    let same = |other: &Observations| -> Option<(usize, usize)> {
        let (mut equal, mut compared) = (0, 0);
        for (id, by_key) in &current.figures {
            let metric = ctx.catalogue.metric(id)?;
            if !metric.unit.additive() {
                continue;
            }
            for (key, x) in by_key.iter().filter(|(_, x)| **x >= s.resent_min_value) {
                if let Some(y) = other.figures.get(id).and_then(|o| o.get(key)) {
                    compared += 1;
                    // Copied, not computed again: the same number as written.
                    equal += usize::from((x - y).abs() < 1e-9);
                }
            }
        }
        (compared >= s.resent_min_figures && equal as f64 >= s.resent_share * compared as f64)
            .then_some((equal, compared))
    };
    let (other, (equal, compared)) = previous
        .into_iter()
        .chain(peers.iter().copied())
        .find_map(|o| same(o).map(|found| (o, found)))?;
    let from_period = other.period?;
    let whose = if other.force_id == current.force_id {
        format!("your own return for {}", period_name(from_period))
    } else {
        format!(
            "{}'s return for {}",
            other.force_id,
            period_name(from_period)
        )
    };
    let share = equal as f64 / compared as f64;
    Some(Anomaly {
        code: Code::AnomalyFiguresResent,
        severity: Code::AnomalyFiguresResent.default_severity(),
        force_id: current.force_id.clone(),
        period: ctx.period,
        submission_id: current.submission_id.clone(),
        series: format!("counts the same as in {whose}"),
        dimension: None,
        category: None,
        column: None,
        unit: Unit::Share,
        observed: share,
        expected: 0.0,
        lower: 0.0,
        upper: 0.0,
        probability: 0.0,
        method: "counts of at least the minimum value compared figure for figure".to_owned(),
        history_months: 1,
        history_from: Some(from_period),
        history_to: Some(from_period),
        since: None,
        message: format!(
            "{equal} of the {compared} counts in your return for {} are exactly as in {whose}: a year's or a quarter's counts almost never repeat. Check that the file is this period's return, and your own",
            period_name(ctx.period)
        ),
    })
}

/// One finding per metric whose counts the reported figures are made of, led by the least
/// probable, naming the others.
fn group(
    ctx: &Context<'_>,
    input: &Input<'_>,
    candidates: Vec<Candidate<'_>>,
    baseline: Option<&Baseline>,
) -> Vec<Anomaly> {
    let mut groups: BTreeMap<&str, Vec<Candidate<'_>>> = BTreeMap::new();
    for c in candidates {
        groups.entry(c.root).or_default().push(c);
    }
    let mut out = Vec::new();
    for (_, mut members) in groups {
        members.sort_by(|a, b| a.probability.total_cmp(&b.probability));
        let lead = &members[0];
        let (dimension, category) = breakdown_columns(&lead.key);
        let mut message = format!(
            "In {}, {} is {}, against an expected {}: {}. Anything from {} to {} would not be unusual.",
            period_name(ctx.period),
            describe(lead.metric, &lead.key),
            figure_words(lead.metric, lead.observed),
            figure_words(lead.metric, lead.expected),
            lead.basis,
            figure_words(lead.metric, lead.lower),
            figure_words(lead.metric, lead.upper),
        );
        if members.len() > 1 {
            let others: Vec<String> = members[1..]
                .iter()
                .take(NAMED)
                .map(|m| {
                    let was = m
                        .usual
                        .map(|p| format!(", usually {}", figure_words(m.metric, p)))
                        .unwrap_or_default();
                    format!(
                        "{} {}{was}",
                        describe(m.metric, &m.key),
                        figure_words(m.metric, m.observed)
                    )
                })
                .collect();
            let more = members.len() - 1 - others.len();
            let _ = write!(message, " Moved with it: {}", others.join("; "));
            if more > 0 {
                let _ = write!(message, "; and {more} more");
            }
            message.push('.');
        }
        message.push_str(if lead.usual.is_some() {
            " Check that the figures cover the whole period and only your force, and that each breakdown's codes are mapped as the catalogue defines them; if they are right, say what changed."
        } else {
            " Check the figure's unit and its denominator against the metric's definition (`force-returns catalogue`)."
        });
        let (span, months) = match (lead.usual, baseline) {
            (Some(_), Some(b)) => (Some(b.span), b.periods as u32),
            _ => (None, lead.peers as u32),
        };
        out.push(Anomaly {
            code: Code::AnomalyFigure,
            severity: Code::AnomalyFigure.default_severity(),
            force_id: input.current.force_id.clone(),
            period: ctx.period,
            submission_id: input.current.submission_id.clone(),
            series: describe(lead.metric, &lead.key),
            dimension: (!dimension.is_empty()).then_some(dimension),
            category: (!category.is_empty()).then_some(category),
            column: None,
            unit: if lead.metric.unit.additive() {
                Unit::Count
            } else {
                Unit::Figure
            },
            observed: lead.observed,
            expected: lead.expected,
            lower: lead.lower,
            upper: lead.upper,
            probability: lead.probability,
            method: lead.method.clone(),
            history_months: months,
            history_from: span.map(|s| s.0),
            history_to: span.map(|s| s.1),
            since: None,
            message,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::analyze::detect::{Labels, detect};
    use crate::config::Project;
    use crate::model::analysis::AnomalySettings;

    fn project() -> Project {
        Project::load(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    const GROUPS: [(&str, f64); 6] = [
        ("Asian", 0.08),
        ("Black", 0.12),
        ("Mixed", 0.04),
        ("Other", 0.02),
        ("White", 0.7),
        ("Not stated", 0.04),
    ];

    /// A force's year: searches (total and by ethnicity, `searches` in all), its rates per
    /// 1,000 on `population` people and its disparity ratios, each group's rate `per_1000`
    /// apart from the scale.
    fn year(force: &str, period: &str, searches: f64, population: f64) -> Observations {
        let mut figures = Figures::new();
        let count = figures.entry("stop_search_searches".into()).or_default();
        count.insert(String::new(), searches.round());
        for (g, share) in GROUPS {
            count.insert(format!("ethnicity={g}"), (searches * share).round());
        }
        let rates = figures
            .entry("stop_search_rate_per_1000".into())
            .or_default();
        for (g, share) in GROUPS.iter().filter(|(g, _)| *g != "Not stated") {
            let people = population * if *g == "White" { 0.85 } else { 0.05 };
            rates.insert(format!("ethnicity={g}"), searches * share / people * 1000.0);
        }
        let white = rates["ethnicity=White"];
        let ratios: BTreeMap<String, f64> =
            rates.iter().map(|(k, v)| (k.clone(), v / white)).collect();
        figures.insert("stop_search_disparity_ratio".into(), ratios);
        Observations {
            force_id: force.into(),
            period: Some(period.parse().unwrap()),
            submission_id: format!("{force}-{period}"),
            figures,
            ..Observations::default()
        }
    }

    /// Twelve other forces of different sizes: last year and this year, this year's figures
    /// `moved` times last year's (up to 3% either way apart), with their usual figures.
    fn peers(moved: f64) -> Vec<Observations> {
        (0..12)
            .map(|i| {
                let size = 2000.0 + 1500.0 * f64::from(i);
                let wobble = 1.0 + 0.03 * (f64::from(i % 5) - 2.0) / 2.0;
                let before = year(&format!("p{i}"), "FY2023-24", size, size * 150.0);
                let mut now = year(
                    &format!("p{i}"),
                    "FY2024-25",
                    size * moved * wobble,
                    size * 150.0,
                );
                now.usual_figures = before.figures;
                now
            })
            .collect()
    }

    fn run(
        current: &Observations,
        history: &[Observations],
        peers: &[Observations],
    ) -> Vec<Anomaly> {
        let project = project();
        let pipeline = project.pipeline("data_pack").unwrap();
        let catalogue = &pipeline.table.as_ref().unwrap().catalogue;
        let settings = AnomalySettings::default();
        let labels = Labels::new(&pipeline.schema, &pipeline.observe);
        detect(&Input {
            settings: &settings,
            current,
            history,
            peers,
            labels: &labels,
            observe: &pipeline.observe,
            catalogue: Some(catalogue),
        })
    }

    #[test]
    fn a_halved_count_is_one_finding_naming_the_figures_that_moved_with_it() {
        let before = year("kent", "FY2023-24", 10_000.0, 1_600_000.0);
        let now = year("kent", "FY2024-25", 5_000.0, 1_600_000.0);
        let found = run(&now, std::slice::from_ref(&before), &peers(1.0));
        assert_eq!(found.len(), 1, "{found:#?}");
        let a = &found[0];
        assert_eq!(a.code, Code::AnomalyFigure);
        assert!(a.series.starts_with("Stop and searches"), "{}", a.series);
        assert!(a.observed < a.lower && a.lower < a.expected, "{a:#?}");
        assert!(a.message.contains("Moved with it"), "{}", a.message);
        assert!(
            a.message.contains("the financial year 2023-24"),
            "{}",
            a.message
        );
        // The same year, kept: nothing.
        let kept = year("kent", "FY2024-25", 10_300.0, 1_600_000.0);
        assert!(run(&kept, &[before], &peers(1.0)).is_empty());
    }

    #[test]
    fn a_force_that_moved_with_every_other_force_is_not_reported_and_one_that_did_not_is() {
        let before = year("kent", "FY2023-24", 10_000.0, 1_600_000.0);
        let with_them = year("kent", "FY2024-25", 6_000.0, 1_600_000.0);
        assert!(run(&with_them, std::slice::from_ref(&before), &peers(0.6)).is_empty());
        let against = year("kent", "FY2024-25", 10_000.0, 1_600_000.0);
        let found = run(&against, &[before], &peers(0.6));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].message.contains("median -40%"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn a_small_forces_small_counts_may_halve_without_a_finding() {
        let before = year("city", "FY2023-24", 40.0, 8_000.0);
        let now = year("city", "FY2024-25", 20.0, 8_000.0);
        assert!(run(&now, &[before], &peers(1.0)).is_empty());
    }

    #[test]
    fn a_wrong_population_moves_the_rates_and_not_the_counts() {
        let before = year("kent", "FY2023-24", 10_000.0, 1_600_000.0);
        let now = year("kent", "FY2024-25", 10_000.0, 800_000.0);
        let found = run(&now, &[before], &peers(1.0));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].series.contains("per 1,000"), "{}", found[0].series);
        assert_eq!(found[0].unit, Unit::Figure);
    }

    #[test]
    fn last_years_pack_sent_again_is_reported_as_such_and_nothing_else() {
        let before = year("kent", "FY2023-24", 10_000.0, 1_600_000.0);
        let mut again = before.clone();
        again.period = Some("FY2024-25".parse().unwrap());
        again.submission_id = "kent-again".into();
        // Too few counts to say: no finding (seven counts, ten needed).
        assert!(run(&again, std::slice::from_ref(&before), &peers(1.0)).is_empty());
        let mut settings = AnomalySettings::default();
        settings.figures.resent_min_figures = 5;
        let project = project();
        let pipeline = project.pipeline("data_pack").unwrap();
        let labels = Labels::new(&pipeline.schema, &pipeline.observe);
        let found = detect(&Input {
            settings: &settings,
            current: &again,
            history: &[before],
            peers: &peers(1.0),
            labels: &labels,
            observe: &pipeline.observe,
            catalogue: Some(&pipeline.table.as_ref().unwrap().catalogue),
        });
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].code, Code::AnomalyFiguresResent);
        assert!(
            found[0]
                .message
                .contains("your own return for the financial year 2023-24")
        );
    }

    #[test]
    fn a_first_pack_is_compared_with_the_other_forces_only_for_gross_mistakes() {
        let others = peers(1.0);
        // Rates per 100,000 in place of per 1,000: a hundred times the others'.
        let mut wrong = year("kent", "FY2024-25", 10_000.0, 16_000.0);
        let found = run(&wrong, &[], &others);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].message.contains("other 12 forces"),
            "{}",
            found[0].message
        );
        // Twice the others' rates: a force may be so.
        wrong = year("kent", "FY2024-25", 10_000.0, 800_000.0);
        assert!(run(&wrong, &[], &others).is_empty());
    }

    #[test]
    fn usual_figures_are_the_median_of_the_latest_periods() {
        let history: Vec<Observations> = [(2021, 100.0), (2022, 300.0), (2023, 200.0)]
            .iter()
            .map(|(y, n)| year("kent", &format!("FY{y}-{}", (y + 1) % 100), *n, 1e6))
            .collect();
        let now = year("kent", "FY2024-25", 50.0, 1e6);
        let total = |f: &Figures| f["stop_search_searches"][""].to_string();
        assert_eq!(total(&usual_figures(&now, &history, 1)), "200");
        assert_eq!(total(&usual_figures(&now, &history, 2)), "250");
        assert_eq!(total(&usual_figures(&now, &history, 3)), "200");
        assert_eq!(total(&usual_figures(&now, &history[..2], 2)), "200");
        assert!(usual_figures(&now, &[], 3).is_empty());
    }
}
