//! Records sent again: a file that holds, record for record, the force's previous period (its
//! dates moved on or not) or another force's return, compared by the submissions' fingerprints
//! (`crate::model::fingerprint`), not by their counts.
//!
//! The share of distinct records two submissions hold in common is compared with the force's
//! own usual overlap between consecutive periods: records with times to the second and
//! locations almost never repeat, but a return without them may repeat many every period, and
//! only a jump above that is a file sent again.
//!
//! When the other return is another force's for the same period, either force may be the one
//! that sent the other's file, and whichever return was processed first could not be compared
//! with the second. So the finding is made twice: for this upload, and as a notice for the other
//! force's return (its `force_id` and `submission_id`), which the pipeline adds to that return's
//! anomalies once this upload is committed.

use super::{Anomaly, Input, Unit, percent, period_name};
use crate::finding::Code;
use crate::observe::Observations;
use crate::period::Period;

/// The worst overlap of this period's records with the force's previous period or another
/// force's latest return, when it is far above the force's usual overlap: the finding, and for
/// another force's return of the same period, the notice to that force.
pub(super) fn resent(input: &Input<'_>, history: &[&Observations], period: Period) -> Vec<Anomaly> {
    let Some((found, other)) = found(input, history, period) else {
        return Vec::new();
    };
    let mut out = vec![found.clone()];
    if other.force_id != input.current.force_id && other.period == Some(period) {
        let word = &input.labels.records;
        out.push(Anomaly {
            force_id: other.force_id.clone(),
            submission_id: other.submission_id.clone(),
            series: format!(
                "{word} in common with {}'s return for {}",
                input.current.force_id,
                period_name(period)
            ),
            message: format!(
                "{} of the {word} in {}'s return for {}, processed after yours, are the same, field for field, as in yours. One of the two forces sent the other's file: check that the file you sent is your own extract",
                percent(found.observed),
                input.current.force_id,
                period_name(period),
            ),
            ..found
        });
    }
    out
}

fn found<'a>(
    input: &'a Input<'_>,
    history: &[&'a Observations],
    period: Period,
) -> Option<(Anomaly, &'a Observations)> {
    let s = input.settings.resent;
    let c = input.current;
    if c.rows < s.min_records || c.fingerprint.is_empty() {
        return None;
    }
    let compared = |o: &Observations| o.rows >= s.min_records && !o.fingerprint.is_empty();
    let previous = history.iter().rev().copied().find(|h| compared(h));
    let peers = input
        .peers
        .iter()
        .filter(|p| p.force_id != c.force_id && compared(p));
    let mut best: Option<(f64, &Observations)> = None;
    for other in previous.into_iter().chain(peers) {
        let Some(shared) = c.fingerprint.similarity(&other.fingerprint) else {
            continue;
        };
        if best.is_none_or(|(b, _)| shared > b) {
            best = Some((shared, other));
        }
    }
    let (shared, other) = best?;
    // The force's usual overlap: the most any two of its consecutive periods shared lately.
    let dated: Vec<&Observations> = history.iter().copied().filter(|h| compared(h)).collect();
    let usual = dated
        .windows(2)
        .rev()
        .take(input.settings.baseline_months)
        .filter_map(|w| w[1].fingerprint.similarity(&w[0].fingerprint))
        .fold(0.0, f64::max);
    if shared < s.min_similarity || shared < usual + s.above_usual {
        return None;
    }
    let other_period = other.period.unwrap_or(period);
    let whose = if other.force_id == c.force_id {
        format!("your accepted return for {}", period_name(other_period))
    } else {
        format!(
            "{}'s return for {}",
            other.force_id,
            period_name(other_period)
        )
    };
    let word = &input.labels.records;
    let pairs = dated.len().saturating_sub(1);
    let usual_words = if pairs == 0 {
        "there is no history of yours to compare with".to_owned()
    } else {
        format!(
            "between your consecutive returns at most {} repeat",
            percent(usual)
        )
    };
    let anomaly = Anomaly {
        code: Code::AnomalyResentRecords,
        severity: Code::AnomalyResentRecords.default_severity(),
        force_id: c.force_id.clone(),
        period,
        submission_id: c.submission_id.clone(),
        series: format!("{word} in common with {whose}"),
        dimension: None,
        category: None,
        column: None,
        unit: Unit::Share,
        observed: shared,
        expected: usual,
        lower: 0.0,
        upper: s.min_similarity.max(usual + s.above_usual),
        probability: 0.0,
        method: format!(
            "share of distinct {word} (every field; dates by day of the month and time) held by both submissions, estimated from fingerprints of {} {word} each",
            crate::model::fingerprint::SIZE
        ),
        history_months: u32::try_from(pairs).unwrap_or(u32::MAX),
        history_from: dated.first().and_then(|h| h.period),
        history_to: dated.last().and_then(|h| h.period),
        since: None,
        message: format!(
            "{} of this {}'s {word} are the same, field for field (apart from the year and month of their date), as in {whose}; {usual_words}. The file looks like that return sent again",
            percent(shared),
            period.cadence().word(),
        ),
    };
    Some((anomaly, other))
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use super::super::tests::month;
    use super::*;
    use crate::analyze::{Labels, detect};
    use crate::model::analysis::AnomalySettings;
    use crate::model::fingerprint::{FingerprintBuilder, RecordHashes};
    use crate::model::observe::ObserveSettings;

    /// A force's month whose records are numbered `records` (the same number, the same record).
    fn holding(force: &str, period: &str, records: Range<u64>) -> Observations {
        let mut o = month(force, period, records.end - records.start, 0.5);
        let mut hashes = RecordHashes::new(o.rows as usize);
        for (r, id) in records.enumerate() {
            hashes.mix(r, id);
        }
        let mut builder = FingerprintBuilder::default();
        hashes.finish(&mut builder);
        o.fingerprint = builder.finish();
        o
    }

    fn resent_found(
        history: &[Observations],
        peers: &[Observations],
        current: &Observations,
    ) -> Vec<Anomaly> {
        detect(&Input {
            settings: &AnomalySettings::default(),
            current,
            history,
            peers,
            labels: &Labels::default(),
            observe: &ObserveSettings::default(),
            catalogue: None,
        })
        .into_iter()
        .filter(|a| a.code == Code::AnomalyResentRecords)
        .collect()
    }

    /// Twelve months of a force whose records never repeat: month `i` holds `i*1000..i*1000+n`.
    fn distinct_history(force: &str, n: u64) -> Vec<Observations> {
        (0..12)
            .map(|i| holding(force, &format!("2023-{:02}", i + 1), i * 1000..i * 1000 + n))
            .collect()
    }

    #[test]
    fn last_months_file_sent_again_is_found_and_a_new_month_is_not() {
        let history = distinct_history("kent", 300);
        let again = holding("kent", "2024-01", 11_000..11_300);
        let found = resent_found(&history, &[], &again);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!((found[0].observed - 1.0).abs() < 1e-12);
        assert!(
            found[0].message.contains("your accepted return for"),
            "{}",
            found[0].message
        );
        assert!(
            found[0].message.starts_with("100.0% of this month"),
            "{}",
            found[0].message
        );
        // With a tenth of the rows replaced, it is still the same file (300 of 330 distinct).
        let nearly = holding("kent", "2024-01", 11_030..11_330);
        assert_eq!(resent_found(&history, &[], &nearly).len(), 1);
        let fresh = holding("kent", "2024-01", 12_000..12_300);
        assert!(resent_found(&history, &[], &fresh).is_empty());
    }

    #[test]
    fn another_forces_file_is_found_and_small_files_are_not_compared() {
        let history = distinct_history("kent", 300);
        let essex = holding("essex", "2024-01", 50_000..50_300);
        let copied = holding("kent", "2024-01", 50_000..50_300);
        let found = resent_found(&history, std::slice::from_ref(&essex), &copied);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].force_id, "kent");
        assert!(
            found[0].message.contains("essex's return"),
            "{}",
            found[0].message
        );
        // Essex, processed first, could not know: it is told too, on its own return.
        assert_eq!(
            (found[1].force_id.as_str(), found[1].submission_id.as_str()),
            ("essex", essex.submission_id.as_str())
        );
        assert!(
            found[1]
                .message
                .contains("kent's return for January 2024, processed after yours"),
            "{}",
            found[1].message
        );
        // Essex's return of the month before is not this month's: only Kent is told.
        let december = holding("essex", "2023-12", 50_000..50_300);
        assert_eq!(resent_found(&history, &[december], &copied).len(), 1);
        let tiny_history = distinct_history("kent", 10);
        let tiny = holding("kent", "2024-01", 11_000..11_010);
        assert!(resent_found(&tiny_history, &[], &tiny).is_empty());
    }

    #[test]
    fn a_return_whose_records_always_repeat_is_judged_against_its_usual_overlap() {
        // Every month holds the same 200 records and 100 of its own: consecutive months share
        // half their distinct records as a matter of course.
        let history: Vec<Observations> = (0..12u64)
            .map(|i| {
                let mut o = holding("kent", &format!("2023-{:02}", i + 1), 0..300);
                let mut hashes = RecordHashes::new(300);
                for r in 0..300u64 {
                    hashes.mix(r as usize, if r < 200 { r } else { 10_000 * (i + 1) + r });
                }
                let mut builder = FingerprintBuilder::default();
                hashes.finish(&mut builder);
                o.fingerprint = builder.finish();
                o
            })
            .collect();
        let mut usual = holding("kent", "2024-01", 0..300);
        let mut hashes = RecordHashes::new(300);
        for r in 0..300u64 {
            hashes.mix(r as usize, if r < 200 { r } else { 990_000 + r });
        }
        let mut builder = FingerprintBuilder::default();
        hashes.finish(&mut builder);
        usual.fingerprint = builder.finish();
        assert!(resent_found(&history, &[], &usual).is_empty());
        // The last month's file again: everything in common, far above the usual half.
        let mut again = history[11].clone();
        again.period = Some("2024-01".parse().unwrap());
        assert_eq!(resent_found(&history, &[], &again).len(), 1);
    }
}
