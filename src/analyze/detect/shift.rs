//! A field's whole distribution against the force's history: a G-test of this period's counts
//! by category against the force's recent periods pooled, allowing for how much the mix varies
//! from period to period (its over-dispersion, measured on the history itself), with a floor on
//! the size of the change and the probability shared out over the fields tested (Bonferroni).
//!
//! This catches what a check of each category alone misses or reports in pieces: two outcome
//! codes exchanged by a mapping, a category folded into another, a field filled from another
//! field. The finding names the categories that moved most.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::{Anomaly, Input, Unit, history_words, percent};
use crate::analyze::stats::{chi_square_sf, median, quantile};
use crate::finding::Code;
use crate::observe::Observations;
use crate::period::Period;

/// Counts by category of one dimension in one period, over the categories compared.
fn counts(o: &Observations, dimension: &str, categories: &[&str]) -> Vec<f64> {
    categories
        .iter()
        .map(|c| o.count(dimension, c) as f64)
        .collect()
}

/// The G statistic of `observed` against the proportions `expected` (which sum to 1), and its
/// degrees of freedom (categories expected, less one).
fn g_statistic(observed: &[f64], expected: &[f64]) -> (f64, f64) {
    let total: f64 = observed.iter().sum();
    let mut g = 0.0;
    let mut cells = 0.0;
    for (&o, &p) in observed.iter().zip(expected) {
        if p <= 0.0 {
            continue;
        }
        cells += 1.0;
        if o > 0.0 {
            g += o * (o / (total * p)).ln();
        }
    }
    (2.0 * g, (cells - 1.0_f64).max(0.0))
}

/// Proportions of pooled counts, each category given half a record so none is impossible.
fn proportions(pooled: &[f64]) -> Vec<f64> {
    let total: f64 = pooled.iter().map(|n| n + 0.5).sum();
    pooled.iter().map(|n| (n + 0.5) / total).collect()
}

/// A category that is usually absent and now and then bursts (a power authorised for a few
/// days): at zero in at least a quarter of the history's periods, and present in some.
fn bursty(months: &[&Observations], dimension: &str, category: &str) -> bool {
    let counts: Vec<u64> = months
        .iter()
        .map(|h| h.count(dimension, category))
        .collect();
    let zeros = counts.iter().filter(|&&n| n == 0).count();
    zeros * 4 >= counts.len() && zeros < counts.len()
}

/// Per-period counts of a category over `months`.
fn series(months: &[&Observations], dimension: &str, category: &str) -> Vec<f64> {
    months
        .iter()
        .map(|h| h.count(dimension, category) as f64)
        .collect()
}

/// Pearson correlation of two equally long series (0 when either is flat).
fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        ab += (x - ma) * (y - mb);
        aa += (x - ma) * (x - ma);
        bb += (y - mb) * (y - mb);
    }
    if aa <= 0.0 || bb <= 0.0 {
        0.0
    } else {
        ab / (aa * bb).sqrt()
    }
}

/// The bursty categories that burst this period (at least ten records, over three times their
/// history's upper quartile), with their history series.
fn bursting(input: &Input<'_>, months: &[&Observations]) -> Vec<Vec<f64>> {
    let mut out = Vec::new();
    for dimension in &input.settings.dimensions {
        let Some(now) = input.current.categories.get(dimension) else {
            continue;
        };
        for (category, &n) in now {
            if n < 10 || !bursty(months, dimension, category) {
                continue;
            }
            let past = series(months, dimension, category);
            let upper = quantile(&past, 0.75).unwrap_or(0.0);
            if n as f64 > 3.0 * upper.max(1.0) {
                out.push(past);
            }
        }
    }
    out
}

/// Every dimension of `[anomalies] dimensions` whose mix moved far from the force's history.
/// Categories a declared recording share counts (a field's "not stated") are left to that
/// share's series, which judges them with their blanks. Bursty categories (usually absent, now and then many) are left out of the test, and a field
/// one of whose categories moves with a category bursting this period (correlated over the
/// history) is not tested this period: a burst of a power and the object searched for that goes
/// with it are the force's operations, not its recording.
pub(super) fn shifts(input: &Input<'_>, history: &[&Observations], period: Period) -> Vec<Anomaly> {
    let s = input.settings;
    let d = s.distribution;
    let recent: Vec<&Observations> = history
        .iter()
        .rev()
        .take(s.baseline_months)
        .copied()
        .collect();
    let tested: Vec<&String> = s
        .dimensions
        .iter()
        .filter(|dim| input.current.recorded(dim) >= d.min_records)
        .collect();
    // Whether a category bursts, and what moves with its bursts, is read from the whole history
    // the analysis has (up to four years): a power used a few times a year may be absent from
    // all of the last twelve months.
    let whole: Vec<&Observations> = history.iter().rev().copied().collect();
    let bursts = bursting(input, &whole);
    let mut out = Vec::new();
    for dimension in &tested {
        let months: Vec<&Observations> = recent
            .iter()
            .copied()
            .filter(|h| h.recorded(dimension) >= d.min_records)
            .collect();
        if months.len() < s.min_history_months {
            continue;
        }
        let categories: BTreeSet<&str> = months
            .iter()
            .chain(std::iter::once(&input.current))
            .flat_map(|o| o.categories.get(dimension.as_str()).into_iter().flatten())
            .map(|(c, _)| c.as_str())
            .collect();
        let categories: Vec<&str> = categories
            .into_iter()
            .filter(|c| !bursty(&whole, dimension, c) && !input.labels.covered(dimension, c))
            .collect();
        if categories.len() < 2 {
            continue;
        }
        let moves_with_a_burst = categories.iter().any(|c| {
            let own = series(&whole, dimension, c);
            bursts.iter().any(|b| correlation(b, &own) >= 0.6)
        });
        if moves_with_a_burst {
            continue;
        }
        let per_month: Vec<Vec<f64>> = months
            .iter()
            .map(|h| counts(h, dimension, &categories))
            .collect();
        let pooled: Vec<f64> = (0..categories.len())
            .map(|i| per_month.iter().map(|m| m[i]).sum())
            .collect();
        // Over-dispersion: each history period against the others pooled, G ÷ df; at least 1.
        let ratios: Vec<f64> = per_month
            .iter()
            .filter_map(|m| {
                let others: Vec<f64> = pooled.iter().zip(m).map(|(p, x)| p - x).collect();
                let (g, df) = g_statistic(m, &proportions(&others));
                (df > 0.0).then(|| g / df)
            })
            .collect();
        let dispersion = median(&ratios).unwrap_or(1.0).max(1.0);
        let expected = proportions(&pooled);
        let current = counts(input.current, dimension, &categories);
        let (g, df) = g_statistic(&current, &expected);
        if df <= 0.0 {
            continue;
        }
        let probability = chi_square_sf(g / dispersion, df);
        let total: f64 = current.iter().sum();
        let shares: Vec<f64> = current.iter().map(|n| n / total).collect();
        let moved: f64 = shares
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>()
            / 2.0;
        if moved < d.min_change || probability >= s.probability / tested.len() as f64 {
            continue;
        }
        let mut changes: Vec<(f64, &str, f64, f64)> = categories
            .iter()
            .zip(shares.iter().zip(&expected))
            .map(|(c, (now, was))| ((now - was).abs(), *c, *was, *now))
            .collect();
        changes.sort_by(|a, b| b.0.total_cmp(&a.0));
        let named: Vec<String> = changes
            .iter()
            .take(3)
            .filter(|c| c.0 >= d.min_change / 2.0)
            .map(|(_, c, was, now)| format!("`{c}` {} → {}", percent(*was), percent(*now)))
            .collect();
        let label = input.labels.of(dimension);
        let from = months.last().and_then(|h| h.period).unwrap_or(period);
        let to = months.first().and_then(|h| h.period).unwrap_or(period);
        let records_moved = moved * total;
        out.push((records_moved, Anomaly {
            code: Code::AnomalyDistributionShift,
            severity: Code::AnomalyDistributionShift.default_severity(),
            force_id: input.current.force_id.clone(),
            period,
            submission_id: input.current.submission_id.clone(),
            series: format!("mix of {label}"),
            dimension: Some((*dimension).clone()),
            category: None,
            column: None,
            unit: Unit::Share,
            observed: moved,
            expected: 0.0,
            lower: 0.0,
            upper: d.min_change,
            probability,
            method: format!(
                "G-test of this period's {label} counts against {} pooled, the statistic divided by the history's own period-to-period variation ({:.1} times a multinomial's), {} categories; reported when the chance is under {:.0e} shared over {} fields and at least {} of records moved category",
                history_words(from, to, months.len()),
                dispersion,
                categories.len(),
                s.probability,
                tested.len(),
                percent(d.min_change)
            ),
            history_months: u32::try_from(months.len()).unwrap_or(u32::MAX),
            history_from: Some(from),
            history_to: Some(to),
            since: None,
            message: format!(
                "the mix of {label} moved away from your history: {} of {} sit in a different category than your history's mix would put them ({}); a change this large happens by chance less than once in {} periods",
                percent(moved),
                input.labels.records,
                named.join(", "),
                one_in(probability)
            ),
        }));
    }
    together(out, &input.labels.records)
}

/// Shifts of several fields in one period that moved about as many records (within a third of
/// the larger) are most likely the same records: a burst of searches under one power for one
/// object moves both fields. They are one finding, the largest, naming the others.
fn together(mut shifts: Vec<(f64, Anomaly)>, word: &str) -> Vec<Anomaly> {
    shifts.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out: Vec<(f64, Anomaly)> = Vec::new();
    for (records, shift) in shifts {
        match out
            .iter_mut()
            .find(|(lead, _)| records >= *lead * (2.0 / 3.0))
        {
            Some((lead, first)) => {
                let label = shift.series.trim_start_matches("mix of ");
                let _ = write!(
                    first.message,
                    ". The mix of {label} moved with it, by about as many {word} ({} against {}): most likely the same {word}",
                    super::thousands(records),
                    super::thousands(*lead)
                );
                let _ = write!(first.series, " and {label}");
            }
            None => out.push((records, shift)),
        }
    }
    out.into_iter().map(|(_, a)| a).collect()
}

/// `1 / p` in words: `10,000`, `a million`, `10^12`.
fn one_in(p: f64) -> String {
    let n = (1.0 / p.max(f64::MIN_POSITIVE)).log10().floor();
    match n as i64 {
        i64::MIN..=5 => super::thousands(10f64.powf(n)),
        6 => "a million".to_owned(),
        n => format!("10^{n}"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::analyze::{Labels, detect};
    use crate::model::analysis::AnomalySettings;
    use crate::model::observe::ObserveSettings;

    /// For the tests: a month whose dimension `d` has these counts.
    fn mix(force: &str, period: &str, counts: &[(&str, u64)]) -> Observations {
        let rows = counts.iter().map(|c| c.1).sum();
        let mut o = super::super::tests::month(force, period, rows, 0.5);
        o.categories = BTreeMap::from([(
            "d".to_owned(),
            counts
                .iter()
                .map(|(c, n)| ((*c).to_owned(), *n))
                .filter(|(_, n)| *n > 0)
                .collect(),
        )]);
        o
    }

    /// The distribution shifts of `current`, the dimensions compared being `dimensions`.
    fn shifts_of(
        dimensions: &[&str],
        history: &[Observations],
        current: &Observations,
    ) -> Vec<Anomaly> {
        detect(&Input {
            settings: &AnomalySettings {
                dimensions: dimensions.iter().map(|d| (*d).to_owned()).collect(),
                ..AnomalySettings::default()
            },
            current,
            history,
            peers: &[],
            labels: &Labels::default(),
            observe: &ObserveSettings::default(),
            catalogue: None,
        })
        .into_iter()
        .filter(|a| a.code == Code::AnomalyDistributionShift)
        .collect()
    }

    fn found(history: &[Observations], current: &Observations) -> Vec<Anomaly> {
        shifts_of(&["d"], history, current)
    }

    /// Twelve months of 1,000 records: `A` 600 ± 30, `B` 300, `C` 100 ∓ 30.
    fn history() -> Vec<Observations> {
        (0..12u64)
            .map(|i| {
                let wobble = (i % 3) * 30;
                mix(
                    "kent",
                    &format!("2023-{:02}", i + 1),
                    &[("A", 570 + wobble), ("B", 300), ("C", 130 - wobble)],
                )
            })
            .collect()
    }

    #[test]
    fn two_categories_exchanged_are_one_finding() {
        let swapped = mix("kent", "2024-01", &[("A", 600), ("B", 100), ("C", 300)]);
        let f = found(&history(), &swapped);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!((f[0].observed - 0.2).abs() < 0.01, "{}", f[0].observed);
        assert!(
            f[0].message.contains("`B` 30.0% → 10.0%"),
            "{}",
            f[0].message
        );
        assert!(f[0].message.contains("`C`"), "{}", f[0].message);
    }

    #[test]
    fn an_ordinary_month_and_a_small_change_pass() {
        let ordinary = mix("kent", "2024-01", &[("A", 590), ("B", 300), ("C", 110)]);
        assert!(found(&history(), &ordinary).is_empty());
        // 3% of records move: significant for so many records, but under the floor.
        let small = mix("kent", "2024-01", &[("A", 600), ("B", 270), ("C", 130)]);
        assert!(found(&history(), &small).is_empty());
    }

    #[test]
    fn a_history_that_varies_a_lot_needs_a_larger_change() {
        // B swings between 150 and 450 from month to month: a 350 is ordinary for this force.
        let swinging: Vec<Observations> = (0..12u64)
            .map(|i| {
                let b = if i % 2 == 0 { 150 } else { 450 };
                mix(
                    "kent",
                    &format!("2023-{:02}", i + 1),
                    &[("A", 900 - b), ("B", b), ("C", 100)],
                )
            })
            .collect();
        let month = mix("kent", "2024-01", &[("A", 500), ("B", 400), ("C", 100)]);
        assert!(found(&swinging, &month).is_empty());
        let folded = mix("kent", "2024-01", &[("A", 600), ("B", 400), ("C", 0)]);
        assert_eq!(found(&history(), &folded).len(), 1);
    }

    /// A month with a power (`d`: `A`, `B`, the bursting `S`) and the object searched for
    /// (`o`: `drugs`, `weapons`), where each search under `S` is for a weapon.
    fn operation(period: &str, i: u64, s: u64) -> Observations {
        let wobble = (i % 3) * 10;
        let mut o = mix(
            "kent",
            period,
            &[("A", 400 + wobble), ("B", 200 - wobble), ("S", s)],
        );
        o.categories.insert(
            "o".to_owned(),
            BTreeMap::from([("drugs".to_owned(), 450), ("weapons".to_owned(), 150 + s)]),
        );
        o
    }

    fn shifted(history: &[Observations], current: &Observations) -> Vec<String> {
        shifts_of(&["d", "o"], history, current)
            .into_iter()
            .map(|a| a.series)
            .collect()
    }

    #[test]
    fn a_power_that_bursts_a_few_times_a_year_is_not_a_shift_nor_is_its_object() {
        // Three years; the power `S` is used for a few days in four months, none in the last 12.
        let months: Vec<Observations> = (0..36u64)
            .map(|i| {
                let s = if [2, 9, 14, 20].contains(&i) { 80 } else { 0 };
                operation(&format!("{}-{:02}", 2021 + i / 12, i % 12 + 1), i, s)
            })
            .collect();
        let burst = operation("2024-01", 0, 90);
        assert!(shifted(&months, &burst).is_empty());
        // With only the last year to go by, the same month looks like a change of recording:
        // of both fields, by the same records, so one finding naming both.
        assert_eq!(shifted(&months[24..], &burst), ["mix of d and o"]);
        // The object moving by three times as many records as the power is another matter.
        let mut apart = burst.clone();
        apart.categories.insert(
            "o".to_owned(),
            BTreeMap::from([("drugs".to_owned(), 150), ("weapons".to_owned(), 540)]),
        );
        assert_eq!(shifted(&months[24..], &apart), ["mix of o", "mix of d"]);
    }

    #[test]
    fn one_in_reads_as_words() {
        assert_eq!(one_in(1e-4), "10,000");
        assert_eq!(one_in(1e-6), "a million");
        assert_eq!(one_in(1e-12), "10^12");
    }
}
