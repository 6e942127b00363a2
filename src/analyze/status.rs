//! Expected returns: which force × period returns are due, and the status of each.
//!
//! A pipeline expects one return per period from each force of its `expected_forces`, for
//! every period from `[period] first` (or the earliest period any force sent) up to the last
//! period that has ended by the clock's `now`, periods of the dataset's cadence (months,
//! quarters, financial years or snapshot dates). A period's deadline is the end of the last
//! day its profile's rule allows: the `deadline_days`-th day after its last day, or the next
//! `deadline_date` of the year (UTC). Each cell's status comes from the
//! [`Receipt`]s of its uploads:
//!
//! | status | when |
//! | --- | --- |
//! | `accepted`, `accepted_with_warnings` | the current accepted upload's decision, first accepted upload before the deadline |
//! | `late` | accepted, but the first accepted upload arrived after the deadline |
//! | `rejected` | uploads arrived but none was accepted: awaiting resubmission |
//! | `due` | nothing yet, deadline not passed |
//! | `overdue` | nothing yet, deadline passed |
//!
//! A zero report (a header and no records) is an accepted upload: it is received, not a gap;
//! its row says `zero_report`. The status is a pure function of the receipts and `now`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Decision, Receipt, Receipts};
use crate::period::{Cadence, Deadline, Period};

/// The status of one expected return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted on time, no warnings.
    Accepted,
    /// Accepted on time, with warnings.
    AcceptedWithWarnings,
    /// Accepted after the deadline.
    Late,
    /// Uploaded but rejected: awaiting resubmission.
    Rejected,
    /// Nothing yet; the deadline has not passed.
    Due,
    /// Nothing usable; the deadline has passed.
    Overdue,
}

impl Status {
    /// The name used in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::AcceptedWithWarnings => "accepted_with_warnings",
            Status::Late => "late",
            Status::Rejected => "rejected",
            Status::Due => "due",
            Status::Overdue => "overdue",
        }
    }

    /// One character for compact tables.
    pub fn symbol(self) -> char {
        match self {
            Status::Accepted => 'A',
            Status::AcceptedWithWarnings => 'W',
            Status::Late => 'L',
            Status::Rejected => 'R',
            Status::Due => '.',
            Status::Overdue => 'X',
        }
    }

    /// Whether usable data arrived.
    pub fn received(self) -> bool {
        matches!(
            self,
            Status::Accepted | Status::AcceptedWithWarnings | Status::Late
        )
    }
}

/// One cell of the status table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRow {
    /// Dataset id.
    pub dataset: String,
    /// Force id.
    pub force_id: String,
    /// The period.
    pub period: Period,
    /// The status.
    pub status: Status,
    /// When the return is due (exclusive: the first instant after the deadline day).
    pub deadline: DateTime<Utc>,
    /// The current submission's decision, or the latest rejected one's.
    pub decision: Option<Decision>,
    /// The current accepted submission, or the latest rejected one.
    pub submission_id: Option<String>,
    /// When the first accepted upload arrived (for `late`), or the latest upload.
    pub received_at: Option<DateTime<Utc>>,
    /// Uploads received for this cell.
    pub uploads: u64,
    /// Records in the current accepted submission.
    pub rows: Option<u64>,
    /// The current accepted submission is a zero report.
    pub zero_report: bool,
}

/// The deadline of a period: the first instant after the last day its `rule` allows.
pub fn deadline(period: Period, rule: Deadline) -> DateTime<Utc> {
    rule.last_day(period)
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(DateTime::<Utc>::MAX_UTC, |d| d.and_utc())
}

/// Periods from `first` (of the dataset's cadence) to the last one that has ended by `now`.
pub fn periods(first: Period, now: DateTime<Utc>) -> Vec<Period> {
    let today = now.date_naive();
    let mut out = Vec::new();
    let mut p = first;
    while p.last_day() < today {
        out.push(p);
        p = p.next();
    }
    out
}

/// The status of every expected force × period.
pub fn status_table(
    dataset: &str,
    forces: &[String],
    periods: &[Period],
    receipts: &Receipts,
    rule: Deadline,
    now: DateTime<Utc>,
) -> Vec<StatusRow> {
    let mut by_cell: BTreeMap<(&str, Period), Vec<&Receipt>> = BTreeMap::new();
    // An upload that arrives after `now` does not count yet (status as of a past day).
    for r in receipts.receipts.iter().filter(|r| r.uploaded_at() <= now) {
        by_cell
            .entry((r.force_id(), r.period()))
            .or_default()
            .push(r);
    }
    let mut out = Vec::with_capacity(forces.len() * periods.len());
    for &period in periods {
        let due = deadline(period, rule);
        for force in forces {
            let cell = by_cell
                .get(&(force.as_str(), period))
                .map_or(&[][..], Vec::as_slice);
            out.push(status_of(dataset, force, period, due, cell, now));
        }
    }
    out
}

fn status_of(
    dataset: &str,
    force: &str,
    period: Period,
    due: DateTime<Utc>,
    cell: &[&Receipt],
    now: DateTime<Utc>,
) -> StatusRow {
    let mut row = StatusRow {
        dataset: dataset.to_owned(),
        force_id: force.to_owned(),
        period,
        status: if now < due {
            Status::Due
        } else {
            Status::Overdue
        },
        deadline: due,
        decision: None,
        submission_id: None,
        received_at: None,
        uploads: cell.len() as u64,
        rows: None,
        zero_report: false,
    };
    // Receipts are sorted by upload time, so the last accepted one is current.
    let accepted: Vec<&&Receipt> = cell
        .iter()
        .filter(|r| r.decision != Decision::Rejected)
        .collect();
    if let (Some(first), Some(current)) = (accepted.first(), accepted.last()) {
        row.status = if first.uploaded_at() >= due {
            Status::Late
        } else if current.decision == Decision::Accepted {
            Status::Accepted
        } else {
            Status::AcceptedWithWarnings
        };
        row.decision = Some(current.decision);
        row.submission_id = Some(current.submission_id().to_owned());
        row.received_at = Some(first.uploaded_at());
        row.rows = Some(current.rows);
        row.zero_report = current.rows == 0;
    } else if let Some(latest) = cell.last() {
        row.status = Status::Rejected;
        row.decision = Some(latest.decision);
        row.submission_id = Some(latest.submission_id().to_owned());
        row.received_at = Some(latest.uploaded_at());
    }
    row
}

const MONTH_LETTERS: [char; 12] = ['J', 'F', 'M', 'A', 'M', 'J', 'J', 'A', 'S', 'O', 'N', 'D'];

/// The status table as compact text: one line per force, one character per period (`A`
/// accepted, `W` with warnings, `z` zero report, `L` late, `R` rejected, `.` due, `X`
/// overdue), with totals.
pub fn render_text(dataset: &str, periods: &[Period], rows: &[StatusRow]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let (Some(first), Some(last)) = (periods.first(), periods.last()) else {
        let _ = writeln!(out, "{dataset}: no returns expected yet");
        return out;
    };
    let mut forces: Vec<&str> = rows.iter().map(|r| r.force_id.as_str()).collect();
    forces.sort_unstable();
    forces.dedup();
    let _ = writeln!(
        out,
        "{dataset}: {} forces × {} {} ({first} to {last})",
        forces.len(),
        periods.len(),
        match first.cadence() {
            Cadence::Month => "months",
            Cadence::Quarter => "quarters",
            Cadence::FinancialYear => "financial years",
            Cadence::Snapshot(_) => "snapshot dates",
        }
    );
    let _ = writeln!(
        out,
        "A accepted  W with warnings  z zero report  L late  R rejected  . due  X overdue\n"
    );
    let pad = forces.iter().map(|f| f.len()).max().unwrap_or(5).max(5) + 2;
    // Months grouped by year, each group at least as wide as its year.
    let mut groups: Vec<(i32, Vec<Period>)> = Vec::new();
    for p in periods {
        match groups.last_mut() {
            Some((year, months)) if *year == p.year() => months.push(*p),
            _ => groups.push((p.year(), vec![*p])),
        }
    }
    let line = |label: &str, cell: &dyn Fn(Period) -> char| {
        let mut l = format!("{label:pad$}");
        for (_, months) in &groups {
            let cells: String = months.iter().map(|p| cell(*p)).collect();
            let _ = write!(l, "{cells:<width$} ", width = months.len().max(4));
        }
        l.trim_end().to_owned()
    };
    let mut years = format!("{:pad$}", "");
    for (year, months) in &groups {
        let _ = write!(years, "{year:<width$} ", width = months.len().max(4));
    }
    let _ = writeln!(out, "{}", years.trim_end());
    let _ = writeln!(
        out,
        "{}",
        line("force", &|p| match p.cadence() {
            Cadence::Quarter => char::from_digit(p.season().unwrap_or(0), 10).unwrap_or('Q'),
            Cadence::FinancialYear => 'Y',
            Cadence::Month | Cadence::Snapshot(_) => MONTH_LETTERS[(p.month() - 1) as usize],
        })
    );
    let cells: BTreeMap<(&str, Period), &StatusRow> = rows
        .iter()
        .map(|r| ((r.force_id.as_str(), r.period), r))
        .collect();
    let mut totals: BTreeMap<Status, usize> = BTreeMap::new();
    for r in rows {
        *totals.entry(r.status).or_default() += 1;
    }
    for force in &forces {
        let _ = writeln!(
            out,
            "{}",
            line(force, &|p| match cells.get(&(*force, p)) {
                Some(r) if r.zero_report && r.status.received() => 'z',
                Some(r) => r.status.symbol(),
                None => ' ',
            })
        );
    }
    let totals: Vec<String> = totals
        .iter()
        .map(|(s, n)| format!("{} {n}", s.as_str()))
        .collect();
    let _ = writeln!(out, "\n{}", totals.join(", "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, FixedClock};
    use crate::model::{Identity, Place, Upload};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn receipt(
        force: &str,
        period: &str,
        id: &str,
        decision: Decision,
        at_: &str,
        rows: u64,
    ) -> Receipt {
        Receipt {
            identity: Identity {
                upload: Upload {
                    source_key: format!("incoming/{force}/x/{period}/{id}.csv"),
                    etag: String::new(),
                    sha256: String::new(),
                    submission_id: id.into(),
                    uploaded_at: at(at_),
                },
                place: Place {
                    force_id: force.into(),
                    dataset: "x".into(),
                    period: period.parse().unwrap(),
                },
            },
            decision,
            rows,
        }
    }

    #[test]
    fn deadlines_are_whole_days_after_the_period_ends() {
        let jan: Period = "2020-01".parse().unwrap();
        assert_eq!(
            deadline(jan, Deadline::DaysAfter(28)),
            at("2020-02-29T00:00:00Z")
        );
        let dec: Period = "2019-12".parse().unwrap();
        assert_eq!(
            deadline(dec, Deadline::DaysAfter(0)),
            at("2020-01-01T00:00:00Z")
        );
        assert_eq!(
            periods(dec, at("2020-03-05T09:00:00Z")),
            ["2019-12", "2020-01", "2020-02"]
                .map(|p| p.parse::<Period>().unwrap())
                .to_vec()
        );
        assert!(periods("2020-03".parse().unwrap(), at("2020-03-31T23:59:59Z")).is_empty());
    }

    #[test]
    fn quarters_and_financial_years_fall_due_by_their_own_rule() {
        let q = Cadence::Quarter.parse("2024-Q1").unwrap();
        assert_eq!(
            deadline(q, Deadline::DaysAfter(15)),
            at("2024-04-16T00:00:00Z")
        );
        assert_eq!(
            periods(q.prev(), at("2024-07-01T00:00:00Z")),
            ["2023-Q4", "2024-Q1", "2024-Q2"]
                .map(|p| Cadence::Quarter.parse(p).unwrap())
                .to_vec()
        );
        assert_eq!(periods(q, at("2024-03-31T23:59:59Z")), []);
        let y = Cadence::FinancialYear.parse("FY2023-24").unwrap();
        assert_eq!(
            deadline(y, Deadline::DayOfYear(7, 31)),
            at("2024-08-01T00:00:00Z")
        );
        let r = Receipts {
            receipts: vec![receipt(
                "a",
                "2024-Q1",
                "s1",
                Decision::Accepted,
                "2024-04-20T10:00:00Z",
                3,
            )],
            ..Receipts::new("x")
        };
        let forces = ["a".to_owned(), "b".to_owned()];
        let rows = status_table(
            "x",
            &forces,
            &[q],
            &r,
            Deadline::DaysAfter(15),
            at("2024-05-01T00:00:00Z"),
        );
        let statuses: Vec<(String, Status)> = rows
            .iter()
            .map(|r| (r.period.to_string(), r.status))
            .collect();
        assert_eq!(
            statuses,
            [
                ("2024-Q1".to_owned(), Status::Late),
                ("2024-Q1".to_owned(), Status::Overdue)
            ]
        );
    }

    /// Every status, with an injected clock moved across a deadline.
    #[test]
    fn each_status_follows_the_receipts_and_the_clock() {
        use Decision::{Accepted as Ok_, AcceptedWithWarnings as Warn, Rejected as Rej};
        let forces: Vec<String> = ["a", "b", "c", "d", "e", "f", "g"]
            .map(String::from)
            .to_vec();
        let mut r = Receipts::new("x");
        // a: accepted on time; b: with warnings; c: rejected then fixed after the deadline;
        // d: rejected only; e: nothing; f: a zero report; g: accepted, then a later correction.
        assert!(r.add(receipt(
            "a",
            "2020-01",
            "a1",
            Ok_,
            "2020-02-10T10:00:00Z",
            10
        )));
        assert!(r.add(receipt(
            "b",
            "2020-01",
            "b1",
            Warn,
            "2020-02-28T23:59:59Z",
            10
        )));
        assert!(r.add(receipt(
            "c",
            "2020-01",
            "c1",
            Rej,
            "2020-02-01T00:00:00Z",
            10
        )));
        assert!(r.add(receipt(
            "c",
            "2020-01",
            "c2",
            Ok_,
            "2020-02-29T00:00:00Z",
            12
        )));
        assert!(r.add(receipt(
            "d",
            "2020-01",
            "d1",
            Rej,
            "2020-02-02T00:00:00Z",
            10
        )));
        assert!(r.add(receipt(
            "f",
            "2020-01",
            "f1",
            Warn,
            "2020-02-03T00:00:00Z",
            0
        )));
        assert!(r.add(receipt(
            "g",
            "2020-01",
            "g1",
            Ok_,
            "2020-02-03T00:00:00Z",
            5
        )));
        assert!(r.add(receipt(
            "g",
            "2020-01",
            "g2",
            Warn,
            "2020-03-20T00:00:00Z",
            6
        )));
        assert!(!r.add(receipt(
            "g",
            "2020-01",
            "g2",
            Warn,
            "2020-03-20T00:00:00Z",
            6
        )));
        let jan: Period = "2020-01".parse().unwrap();
        let clock = FixedClock::new(at("2020-02-15T00:00:00Z"));
        let table = |clock: &FixedClock| {
            status_table(
                "x",
                &forces,
                &[jan],
                &r,
                Deadline::DaysAfter(28),
                clock.now(),
            )
            .into_iter()
            .map(|row| (row.force_id.clone(), row))
            .collect::<BTreeMap<_, _>>()
        };
        let before = table(&clock);
        assert_eq!(before["e"].status, Status::Due);
        assert_eq!(before["d"].status, Status::Rejected);
        assert_eq!(
            before["b"].status,
            Status::Due,
            "not arrived yet on the 15th"
        );
        clock.set(at("2020-03-21T00:00:00Z"));
        let after = table(&clock);
        let status = |f: &str| after[f].status;
        assert_eq!(status("a"), Status::Accepted);
        assert_eq!(
            status("b"),
            Status::AcceptedWithWarnings,
            "one second before"
        );
        assert_eq!(
            status("c"),
            Status::Late,
            "first accepted at the deadline instant"
        );
        assert_eq!(after["c"].uploads, 2);
        assert_eq!(after["c"].submission_id.as_deref(), Some("c2"));
        assert_eq!(status("d"), Status::Rejected);
        assert_eq!(status("e"), Status::Overdue);
        assert_eq!(status("f"), Status::AcceptedWithWarnings);
        assert!(after["f"].zero_report);
        assert_eq!(
            status("g"),
            Status::AcceptedWithWarnings,
            "current decision, on time"
        );
        assert_eq!(after["g"].rows, Some(6));
        assert_eq!(
            after["g"].received_at,
            Some(at("2020-02-03T00:00:00Z")),
            "the first accepted upload counts for timeliness"
        );
        let rows: Vec<StatusRow> = after.into_values().collect();
        let text = render_text("x", &[jan], &rows);
        assert!(text.contains("\na      A\n"), "{text}");
        assert!(text.contains("\nf      z\n"), "{text}");
        assert!(text.contains("late 1"), "{text}");
    }
}
