//! Reconciliation across returns: an aggregate return's counts against the same counts
//! computed from a record-level return the service holds for the same force and period.
//!
//! The catalogue says which counts can be computed (`computed_from` on a metric: the
//! record-level dataset, the dimension of its observations each of the metric's dimensions is
//! read from, and the code that records with no value count under). A count's total is the
//! records of every period of the source inside the aggregate return's period (twelve monthly
//! returns for a financial year); its breakdown by one dimension is the records in that
//! category. Breakdowns by two dimensions at once are not compared: observations count one
//! dimension at a time.
//!
//! Until every period of the source is held, nothing is compared and one
//! `reconciliation_pending` note says how many are; then each figure that differs is a
//! `reconciliation_differs` warning with both figures and the difference, and one
//! `reconciliation_agrees` note counts those that agree. The pipeline runs this when the
//! aggregate return arrives and again whenever a period of its source arrives, and reports it
//! on both.

use std::fmt::Write as _;

use super::detect::{Anomaly, Unit, format_value};
use crate::catalogue::{ComputedFrom, MetricCatalogue};
use crate::finding::{Code, Severity};
use crate::model::observe::{Observations, breakdown_cells};
use crate::period::Period;

/// The source's submissions held for the aggregate return's period.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    /// The aggregate return, in words (its pipeline's title).
    pub aggregate: &'a str,
    /// The record-level dataset.
    pub dataset: &'a str,
    /// Its periods inside the aggregate return's period, in order.
    pub expected: &'a [Period],
    /// The force's current submissions of those periods (at most one each).
    pub held: &'a [&'a Observations],
}

/// Whether any metric of the catalogue is computed from `dataset`.
pub fn computed_from<'c>(
    catalogue: &'c MetricCatalogue,
    dataset: &str,
) -> impl Iterator<Item = (&'c str, &'c ComputedFrom)> {
    catalogue.metrics.iter().filter_map(move |m| {
        m.computed_from
            .as_ref()
            .filter(|c| c.dataset == dataset)
            .map(|c| (m.id.as_str(), c))
    })
}

/// The count the records give for one breakdown key (`""`, or `dimension=code`), when it can
/// be computed from counts by one dimension.
fn from_records(computed: &ComputedFrom, key: &str, held: &[&Observations]) -> Option<f64> {
    let cells: Vec<(&str, &str)> = breakdown_cells(key).collect();
    let (dimension, code) = match cells[..] {
        [] => return Some(held.iter().map(|o| o.rows as f64).sum()),
        [one] => one,
        _ => return None,
    };
    let source = computed.dimensions.get(dimension)?;
    let blank = computed.blank.get(dimension).is_some_and(|b| b == code);
    Some(
        held.iter()
            .map(|o| {
                let mut n = o.count(source, code);
                if blank {
                    n += o.rows.saturating_sub(o.recorded(source));
                }
                n as f64
            })
            .sum(),
    )
}

/// `` `metric` `` (its total), or `` `metric` by ethnicity = Black ``.
fn series(metric: &str, key: &str) -> String {
    if key.is_empty() {
        format!("`{metric}` (total)")
    } else {
        format!("`{metric}` by {}", key.replace('=', " = "))
    }
}

/// Compares the aggregate return's figures (`aggregate`, whose period is the aggregate
/// return's) with what `source`'s records give: the findings for the aggregate return.
pub fn reconcile(
    catalogue: &MetricCatalogue,
    aggregate: &Observations,
    source: Held<'_>,
) -> Vec<Anomaly> {
    let Some(period) = aggregate.period else {
        return Vec::new();
    };
    let metrics: Vec<(&str, &ComputedFrom)> = computed_from(catalogue, source.dataset)
        .filter(|(id, _)| aggregate.figures.contains_key(*id))
        .collect();
    if metrics.is_empty() {
        return Vec::new();
    }
    let (first, last) = match (source.expected.first(), source.expected.last()) {
        (Some(a), Some(b)) => (*a, *b),
        _ => return Vec::new(),
    };
    let base = Anomaly {
        code: Code::ReconciliationPending,
        severity: Severity::Info,
        force_id: aggregate.force_id.clone(),
        period,
        submission_id: aggregate.submission_id.clone(),
        series: String::new(),
        dimension: None,
        category: None,
        column: None,
        unit: Unit::Count,
        observed: 0.0,
        expected: 0.0,
        lower: 0.0,
        upper: 0.0,
        probability: 1.0,
        method: format!("reconciliation with the {} records", source.dataset),
        history_months: source.held.len() as u32,
        history_from: Some(first),
        history_to: Some(last),
        since: None,
        message: String::new(),
    };
    let names: Vec<String> = metrics.iter().map(|(id, _)| format!("`{id}`")).collect();
    let span = format!(
        "{} records for {period} ({} {} returns, {first} to {last})",
        source.dataset,
        source.expected.len(),
        first.cadence().adjective()
    );
    if source.held.len() < source.expected.len() {
        return vec![Anomaly {
            series: names.join(", "),
            observed: source.held.len() as f64,
            expected: source.expected.len() as f64,
            message: format!(
                "{} will be compared with the force's {span} once all are held: {} of {} are",
                names.join(", "),
                source.held.len(),
                source.expected.len()
            ),
            ..base
        }];
    }
    let mut out = Vec::new();
    let mut agree = 0usize;
    for (id, computed) in metrics {
        for (key, &given) in &aggregate.figures[id] {
            let Some(records) = from_records(computed, key, source.held) else {
                continue;
            };
            if (given - records).abs() < 0.5 {
                agree += 1;
                continue;
            }
            let difference = given - records;
            let mut message = format!(
                "{}: the {} says {}; the force's {span} count {}, ",
                series(id, key),
                source.aggregate,
                format_value(given, Unit::Count),
                format_value(records, Unit::Count),
            );
            let _ = write!(
                message,
                "{} {}",
                format_value(difference.abs(), Unit::Count),
                if difference > 0.0 { "fewer" } else { "more" }
            );
            if records > 0.0 {
                let _ = write!(message, " ({:.1}%)", difference.abs() / records * 100.0);
            }
            let (dimension, category) =
                breakdown_cells(key).next().map_or((None, None), |(d, c)| {
                    (Some(d.to_owned()), Some(c.to_owned()))
                });
            out.push(Anomaly {
                code: Code::ReconciliationDiffers,
                severity: Severity::Warning,
                series: series(id, key),
                dimension,
                category,
                observed: given,
                expected: records,
                lower: records,
                upper: records,
                probability: 0.0,
                message,
                ..base.clone()
            });
        }
    }
    if agree > 0 {
        out.push(Anomaly {
            code: Code::ReconciliationAgrees,
            series: names.join(", "),
            observed: agree as f64,
            expected: agree as f64,
            message: format!(
                "{agree} figure(s) of {} agree with the force's {span}",
                names.join(", ")
            ),
            ..base
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn computed() -> ComputedFrom {
        ComputedFrom {
            dataset: "records".into(),
            dimensions: BTreeMap::from([("ethnicity".into(), "sde_group".into())]),
            blank: BTreeMap::from([("ethnicity".into(), "Not stated".into())]),
        }
    }

    fn month(rows: u64, black: u64, not_stated: u64) -> Observations {
        let mut o = Observations {
            rows,
            ..Observations::default()
        };
        let groups = o.categories.entry("sde_group".into()).or_default();
        groups.insert("Black".into(), black);
        groups.insert("Not stated".into(), not_stated);
        // Everything else is White, but for two records with no group at all.
        groups.insert("White".into(), rows - black - not_stated - 2);
        o
    }

    #[test]
    fn counts_come_from_the_records_of_every_period_with_blanks_under_their_code() {
        let c = computed();
        let (a, b) = (month(100, 10, 3), month(50, 5, 0));
        let held = [&a, &b];
        assert_eq!(from_records(&c, "", &held), Some(150.0));
        assert_eq!(from_records(&c, "ethnicity=Black", &held), Some(15.0));
        // 3 stated as not stated, and 2 + 2 with no group.
        assert_eq!(from_records(&c, "ethnicity=Not stated", &held), Some(7.0));
        // A dimension the records do not give, and two dimensions at once, are not computed.
        assert_eq!(from_records(&c, "outcome=Arrest", &held), None);
        assert_eq!(from_records(&c, "ethnicity=Black; tactic=CED", &held), None);
    }
}
