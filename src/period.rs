//! Reporting periods and their cadences: a calendar month `2024-03`, a calendar quarter
//! `2024-Q1`, a financial year `FY2023-24` (1 April to 31 March) or a snapshot date
//! `2024-03-31` (a count taken on set dates of the year, as the workforce is at 31 March and
//! 30 September).
//!
//! A [`Period`] knows its [`Cadence`], so it steps to the next and previous period, gives its
//! first and last day and its season without being told again. Periods of one cadence are
//! ordered by time; a cadence is read from a profile ([`Cadence::from_name`]) and reads the
//! period tokens of its own form only ([`Cadence::parse`]), so a quarter is never taken for a
//! month. `str::parse` reads a token of any form, for stored values whose dataset is known to
//! be consistent (receipts, manifests).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use chrono::{Datelike, Months, NaiveDate};
use serde::{Deserialize, Serialize};

const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// The dates of the year a snapshot cadence counts at: at most one day in each month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SnapshotDates {
    /// The day of each month (January first) a count is taken on; 0 for none.
    days: [u8; 12],
}

impl SnapshotDates {
    /// The workforce's dates: 31 March and 30 September.
    pub const WORKFORCE: SnapshotDates = SnapshotDates {
        days: [0, 0, 31, 0, 0, 0, 0, 0, 30, 0, 0, 0],
    };

    /// The dates written `MM-DD` (`03-31`), or why they cannot be a snapshot cadence's: none
    /// given, a day no year has, 29 February (not in every year), or two days in one month.
    pub fn parse(dates: &[String]) -> Result<SnapshotDates, String> {
        if dates.is_empty() {
            return Err("a snapshot cadence needs its dates of the year (`snapshot_dates = [\"03-31\", \"09-30\"]`)".into());
        }
        let mut days = [0u8; 12];
        for text in dates {
            let bad = || format!("`{text}` is not a day of the year written MM-DD (`03-31`)");
            let (m, d) = text.split_once('-').ok_or_else(bad)?;
            if m.len() != 2 || d.len() != 2 {
                return Err(bad());
            }
            let month: u32 = m.parse().map_err(|_| bad())?;
            let day: u32 = d.parse().map_err(|_| bad())?;
            // 2023 is not a leap year: a date it lacks is not in every year.
            if NaiveDate::from_ymd_opt(2023, month, day).is_none() {
                return Err(format!(
                    "`{text}` is not a day every year has (29 February is in leap years only)"
                ));
            }
            let slot = &mut days[(month - 1) as usize];
            if *slot != 0 {
                return Err(format!(
                    "two snapshot dates in {}: a snapshot cadence takes at most one a month",
                    MONTH_NAMES[(month - 1) as usize]
                ));
            }
            *slot = u8::try_from(day).map_err(|_| bad())?;
        }
        Ok(SnapshotDates { days })
    }

    /// The only date of the year of one snapshot date (what a token read without its cadence
    /// can know).
    fn only(date: NaiveDate) -> SnapshotDates {
        let mut days = [0u8; 12];
        days[date.month0() as usize] = u8::try_from(date.day()).unwrap_or(0);
        SnapshotDates { days }
    }

    /// The dates in `year`, earliest first.
    fn in_year(self, year: i32) -> impl Iterator<Item = NaiveDate> {
        self.days.into_iter().zip(1..).filter_map(move |(d, m)| {
            (d != 0)
                .then(|| NaiveDate::from_ymd_opt(year, m, u32::from(d)))
                .flatten()
        })
    }

    /// How many dates a year has.
    fn count(self) -> usize {
        self.days.iter().filter(|d| **d != 0).count()
    }

    /// The dates as `31 March and 30 September`.
    fn words(self) -> String {
        let dates: Vec<String> = self
            .in_year(2023)
            .map(|d| format!("{} {}", d.day(), MONTH_NAMES[d.month0() as usize]))
            .collect();
        match dates.as_slice() {
            [] => String::new(),
            [one] => one.clone(),
            [init @ .., last] => format!("{} and {last}", init.join(", ")),
        }
    }
}

/// How often a dataset is returned: the kind of period each return covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cadence {
    /// A calendar month, `2024-03`.
    Month,
    /// A calendar quarter, `2024-Q1` (January to March).
    Quarter,
    /// A financial year, `FY2023-24` (1 April 2023 to 31 March 2024).
    FinancialYear,
    /// A count on set dates of the year, `2024-03-31`.
    Snapshot(SnapshotDates),
}

/// The names a profile may give a cadence.
pub const CADENCE_NAMES: [&str; 4] = ["month", "quarter", "financial_year", "snapshot"];

impl Cadence {
    /// The cadence a profile names (`month`, `quarter`, `financial_year`, `snapshot`; the old
    /// spelling `monthly` is a month), with the snapshot dates a snapshot cadence needs.
    /// `None` for a name that is not a cadence.
    pub fn from_name(name: &str, snapshot_dates: SnapshotDates) -> Option<Cadence> {
        match name {
            "month" | "monthly" => Some(Cadence::Month),
            "quarter" => Some(Cadence::Quarter),
            "financial_year" => Some(Cadence::FinancialYear),
            "snapshot" => Some(Cadence::Snapshot(snapshot_dates)),
            _ => None,
        }
    }

    /// Its name in a profile.
    pub fn name(self) -> &'static str {
        match self {
            Cadence::Month => "month",
            Cadence::Quarter => "quarter",
            Cadence::FinancialYear => "financial_year",
            Cadence::Snapshot(_) => "snapshot",
        }
    }

    /// One of its periods in words: `month`, `quarter`, `year`, `snapshot`.
    pub fn word(self) -> &'static str {
        match self {
            Cadence::Month => "month",
            Cadence::Quarter => "quarter",
            Cadence::FinancialYear => "year",
            Cadence::Snapshot(_) => "snapshot",
        }
    }

    /// How often, as an adjective: `monthly`, `quarterly`, `yearly`, `snapshot`.
    pub fn adjective(self) -> &'static str {
        match self {
            Cadence::Month => "monthly",
            Cadence::Quarter => "quarterly",
            Cadence::FinancialYear => "yearly",
            Cadence::Snapshot(_) => "snapshot",
        }
    }

    /// `n` of its periods in words: `12 months`, `1 quarter`, `3 years`.
    pub fn count(self, n: usize) -> String {
        format!("{n} {}{}", self.word(), if n == 1 { "" } else { "s" })
    }

    /// The form of its period tokens, in words with an example.
    pub fn form(self) -> String {
        match self {
            Cadence::Month => "a month written YYYY-MM".into(),
            Cadence::Quarter => {
                "a calendar quarter written YYYY-Qn (`2024-Q1`, January to March)".into()
            }
            Cadence::FinancialYear => {
                "a financial year written FYyyyy-yy (`FY2023-24`, April 2023 to March 2024)".into()
            }
            Cadence::Snapshot(dates) => format!(
                "a snapshot date written YYYY-MM-DD, on {} (`2024-{}`)",
                dates.words(),
                dates
                    .in_year(2024)
                    .next()
                    .map_or_else(String::new, |d| d.format("%m-%d").to_string())
            ),
        }
    }

    /// Periods in a year: 12 months, 4 quarters, 1 financial year, or the snapshot dates.
    pub fn per_year(self) -> usize {
        match self {
            Cadence::Month => 12,
            Cadence::Quarter => 4,
            Cadence::FinancialYear => 1,
            Cadence::Snapshot(dates) => dates.count(),
        }
    }

    /// Whether returns of this cadence have seasons: months and quarters do.
    pub fn seasonal(self) -> bool {
        matches!(self, Cadence::Month | Cadence::Quarter)
    }

    /// The period that holds `date`; for snapshots, the latest snapshot on or before it.
    pub fn containing(self, date: NaiveDate) -> Period {
        let first = match self {
            Cadence::Month => date.with_day(1),
            Cadence::Quarter => NaiveDate::from_ymd_opt(date.year(), date.month0() / 3 * 3 + 1, 1),
            Cadence::FinancialYear => {
                let year = if date.month() >= 4 {
                    date.year()
                } else {
                    date.year() - 1
                };
                NaiveDate::from_ymd_opt(year, 4, 1)
            }
            Cadence::Snapshot(dates) => dates
                .in_year(date.year() - 1)
                .chain(dates.in_year(date.year()))
                .filter(|d| *d <= date)
                .last(),
        };
        Period {
            cadence: self,
            first: first.unwrap_or(date),
        }
    }

    /// Reads a period token of this cadence's form only. A token of another cadence's form
    /// is [`BadPeriod::WrongCadence`], naming both; a snapshot date that is not one of the
    /// cadence's dates is not a period of it.
    pub fn parse(self, token: &str) -> Result<Period, BadPeriod> {
        let bad = || BadPeriod::NotPeriod {
            token: token.to_owned(),
            form: self.form(),
        };
        let read = read_token(token).ok_or_else(bad)?;
        match (self, read) {
            (
                Cadence::Snapshot(dates),
                Period {
                    cadence: Cadence::Snapshot(_),
                    first,
                },
            ) => {
                if dates.in_year(first.year()).any(|d| d == first) {
                    Ok(Period {
                        cadence: self,
                        first,
                    })
                } else {
                    Err(bad())
                }
            }
            (_, p) if p.is_of(self) => Ok(p),
            (_, p) => Err(BadPeriod::WrongCadence {
                token: token.to_owned(),
                found: p.cadence.name(),
                form: self.form(),
            }),
        }
    }
}

/// A token that is not a period of the cadence it was read for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPeriod {
    /// Not a period of the form wanted (nor, read as any period, of any form).
    #[error("`{token}` is not {form}")]
    NotPeriod {
        /// The token.
        token: String,
        /// The form wanted, in words.
        form: String,
    },
    /// A period of another cadence.
    #[error("`{token}` is a {} period, but this dataset is returned by {form}", found.replace('_', " "))]
    WrongCadence {
        /// The token.
        token: String,
        /// The cadence it is a period of.
        found: &'static str,
        /// The form wanted, in words.
        form: String,
    },
}

/// The first and last day of a period written `yyyy-mm-dd`, to tell cheaply whether a date or
/// date-time as written falls in it (dates in ISO 8601 order as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaySpan {
    first: [u8; 10],
    last: [u8; 10],
}

impl DaySpan {
    /// The days of `period`.
    pub fn of(period: Period) -> DaySpan {
        let day = |d: NaiveDate| {
            let mut out = [b'0'; 10];
            out.copy_from_slice(&d.format("%Y-%m-%d").to_string().as_bytes()[..10]);
            out
        };
        DaySpan {
            first: day(period.first_day()),
            last: day(period.last_day()),
        }
    }

    /// Whether the date written at the start of `text` is one of these days.
    pub fn holds(&self, text: &str) -> bool {
        text.as_bytes()
            .get(..10)
            .is_some_and(|d| d >= &self.first[..] && d <= &self.last[..])
    }
}

/// The span one return covers: a period of a cadence.
///
/// Equal, ordered and hashed by cadence kind and first day: a snapshot date read without its
/// cadence ([`FromStr`]) equals the same date read with it.
#[derive(Debug, Clone, Copy)]
pub struct Period {
    cadence: Cadence,
    first: NaiveDate,
}

impl PartialEq for Period {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Period {}

impl Hash for Period {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialOrd for Period {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Period {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl Period {
    /// The month `year`-`month`, if `month` is 1 to 12.
    pub fn new(year: i32, month: u32) -> Option<Period> {
        Some(Period {
            cadence: Cadence::Month,
            first: NaiveDate::from_ymd_opt(year, month, 1)?,
        })
    }

    /// The month containing `date`.
    pub fn of(date: NaiveDate) -> Period {
        Cadence::Month.containing(date)
    }

    fn key(self) -> (u8, NaiveDate) {
        let kind = match self.cadence {
            Cadence::Month => 0,
            Cadence::Quarter => 1,
            Cadence::FinancialYear => 2,
            Cadence::Snapshot(_) => 3,
        };
        (kind, self.first)
    }

    /// Its cadence.
    pub fn cadence(self) -> Cadence {
        self.cadence
    }

    /// Whether it is a period of `cadence`'s kind (any snapshot date is a snapshot's period:
    /// which dates a dataset takes is its own rule, checked when a key is read).
    pub fn is_of(self, cadence: Cadence) -> bool {
        self.cadence.name() == cadence.name()
    }

    /// The calendar year of its first day (for a financial year, the year it begins).
    pub fn year(self) -> i32 {
        self.first.year()
    }

    /// The month of its first day, 1 to 12.
    pub fn month(self) -> u32 {
        self.first.month()
    }

    /// Its first day.
    pub fn first_day(self) -> NaiveDate {
        self.first
    }

    /// Its last day (a snapshot's only day).
    pub fn last_day(self) -> NaiveDate {
        let months = match self.cadence {
            Cadence::Month => 1,
            Cadence::Quarter => 3,
            Cadence::FinancialYear => 12,
            Cadence::Snapshot(_) => return self.first,
        };
        self.first
            .checked_add_months(Months::new(months))
            .and_then(|d| d.pred_opt())
            .unwrap_or(NaiveDate::MAX)
    }

    /// The period after this one, by its cadence.
    #[must_use]
    pub fn next(self) -> Period {
        match self.cadence {
            Cadence::Snapshot(dates) => {
                let first = dates
                    .in_year(self.year())
                    .chain(dates.in_year(self.year() + 1))
                    .find(|d| *d > self.first)
                    .unwrap_or(NaiveDate::MAX);
                Period { first, ..self }
            }
            _ => Period {
                first: self.last_day().succ_opt().unwrap_or(NaiveDate::MAX),
                ..self
            },
        }
    }

    /// The period before this one, by its cadence.
    #[must_use]
    pub fn prev(self) -> Period {
        self.cadence
            .containing(self.first.pred_opt().unwrap_or(NaiveDate::MIN))
    }

    /// Days it covers (1 for a snapshot).
    pub fn days(self) -> u32 {
        u32::try_from((self.last_day() - self.first).num_days() + 1).unwrap_or(0)
    }

    /// The season used for seasonality: the month of the year (1 to 12) for a month, the
    /// quarter of the year (1 to 4) for a quarter, `None` for a financial year or a snapshot.
    pub fn season(self) -> Option<u32> {
        match self.cadence {
            Cadence::Month => Some(self.first.month()),
            Cadence::Quarter => Some(self.first.month0() / 3 + 1),
            Cadence::FinancialYear | Cadence::Snapshot(_) => None,
        }
    }

    /// The `count` periods ending with this one, oldest first.
    pub fn trailing(self, count: usize) -> Vec<Period> {
        let mut out = Vec::with_capacity(count);
        let mut p = self;
        for _ in 0..count {
            out.push(p);
            p = p.prev();
        }
        out.reverse();
        out
    }

    /// In words: `March 2024`, `January to March 2024`, `the financial year 2023-24`,
    /// `31 March 2024`.
    pub fn name(self) -> String {
        let month = |d: NaiveDate| MONTH_NAMES[d.month0() as usize];
        match self.cadence {
            Cadence::Month => format!("{} {}", month(self.first), self.year()),
            Cadence::Quarter => format!(
                "{} to {} {}",
                month(self.first),
                month(self.last_day()),
                self.year()
            ),
            Cadence::FinancialYear => format!(
                "the financial year {}-{:02}",
                self.year(),
                (self.year() + 1).rem_euclid(100)
            ),
            Cadence::Snapshot(_) => {
                format!("{} {} {}", self.first.day(), month(self.first), self.year())
            }
        }
    }
}

/// When a period's return is due, by the profile's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// By the end of this many days after the period's last day (`deadline_days`).
    DaysAfter(u32),
    /// By the end of this day of the year (month, day) next after the period's last day
    /// (`deadline_date = "07-31"`): for a cadence with one period a year.
    DayOfYear(u32, u32),
}

impl Deadline {
    /// The last day a return for `period` is on time.
    pub fn last_day(self, period: Period) -> NaiveDate {
        let end = period.last_day();
        match self {
            Deadline::DaysAfter(days) => end
                .checked_add_days(chrono::Days::new(u64::from(days)))
                .unwrap_or(NaiveDate::MAX),
            Deadline::DayOfYear(month, day) => [end.year(), end.year() + 1]
                .into_iter()
                .filter_map(|y| NaiveDate::from_ymd_opt(y, month, day))
                .find(|d| *d > end)
                .unwrap_or(NaiveDate::MAX),
        }
    }

    /// Why this rule cannot apply to `cadence`, if it cannot: a day of the year is one
    /// deadline a year, so it fits a cadence with one period a year only.
    pub fn misfit(self, cadence: Cadence) -> Option<String> {
        match self {
            Deadline::DaysAfter(_) => None,
            Deadline::DayOfYear(..) if cadence.per_year() == 1 => None,
            Deadline::DayOfYear(..) => Some(format!(
                "`deadline_date` is one day of the year, but a `{}` cadence has {} periods a year: give `deadline_days` (days after each period ends) instead",
                cadence.name(),
                cadence.per_year()
            )),
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let year = self.year();
        match self.cadence {
            Cadence::Month => write!(f, "{year:04}-{:02}", self.month()),
            Cadence::Quarter => write!(f, "{year:04}-Q{}", self.first.month0() / 3 + 1),
            Cadence::FinancialYear => {
                write!(f, "FY{year:04}-{:02}", (year + 1).rem_euclid(100))
            }
            Cadence::Snapshot(_) => write!(f, "{}", self.first.format("%Y-%m-%d")),
        }
    }
}

/// Digits at `range` of `b`, as a number, when they are all ASCII digits.
fn digits(b: &[u8], range: std::ops::Range<usize>) -> Option<u32> {
    let part = b.get(range)?;
    part.iter()
        .all(u8::is_ascii_digit)
        .then(|| part.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

/// A token of any of the four forms, read as its own cadence (a snapshot date knowing only
/// its own date of the year).
fn read_token(token: &str) -> Option<Period> {
    let b = token.as_bytes();
    let year = |range| digits(b, range).and_then(|y| i32::try_from(y).ok());
    match b.len() {
        7 if b[4] == b'-' && b[5] == b'Q' => {
            let quarter = digits(b, 6..7).filter(|q| (1..=4).contains(q))?;
            Some(Period {
                cadence: Cadence::Quarter,
                first: NaiveDate::from_ymd_opt(year(0..4)?, quarter * 3 - 2, 1)?,
            })
        }
        7 if b[4] == b'-' => Period::new(year(0..4)?, digits(b, 5..7)?),
        9 if b.starts_with(b"FY") && b[6] == b'-' => {
            let start = year(2..6)?;
            let end = digits(b, 7..9)?;
            (i64::from(end) == i64::from(start + 1).rem_euclid(100)).then_some(())?;
            Some(Period {
                cadence: Cadence::FinancialYear,
                first: NaiveDate::from_ymd_opt(start, 4, 1)?,
            })
        }
        10 if b[4] == b'-' && b[7] == b'-' => {
            let first = NaiveDate::from_ymd_opt(year(0..4)?, digits(b, 5..7)?, digits(b, 8..10)?)?;
            Some(Period {
                cadence: Cadence::Snapshot(SnapshotDates::only(first)),
                first,
            })
        }
        _ => None,
    }
}

impl FromStr for Period {
    type Err = BadPeriod;

    /// A token of any form: `2024-03`, `2024-Q1`, `FY2023-24` or `2024-03-31`. Read a folder
    /// or an argument with its dataset's [`Cadence::parse`] instead.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        read_token(s).ok_or_else(|| BadPeriod::NotPeriod {
            token: s.to_owned(),
            form: "a period written YYYY-MM, YYYY-Qn, FYyyyy-yy or YYYY-MM-DD".into(),
        })
    }
}

impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints_months() {
        let p: Period = Cadence::Month.parse("2020-02").unwrap();
        assert_eq!(p.days(), 29);
        assert_eq!(p.to_string(), "2020-02");
        assert_eq!(p.prev().to_string(), "2020-01");
        assert_eq!(p.last_day(), day("2020-02-29"));
        assert_eq!(p.season(), Some(2));
        assert_eq!(
            "2019-12".parse::<Period>().unwrap().next().to_string(),
            "2020-01"
        );
        for bad in [
            "2020-13",
            "2020-1",
            "20-01-01",
            "2020/01",
            "２０２０-01",
            "",
        ] {
            let e = Cadence::Month.parse(bad).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("`{bad}` is not a month written YYYY-MM")
            );
        }
        let t = p.trailing(3);
        assert_eq!(
            t.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["2019-12", "2020-01", "2020-02"]
        );
    }

    #[test]
    fn quarters_run_january_to_march_and_so_on() {
        let q = Cadence::Quarter.parse("2024-Q1").unwrap();
        assert_eq!(
            (q.first_day(), q.last_day()),
            (day("2024-01-01"), day("2024-03-31"))
        );
        assert_eq!(q.days(), 91);
        assert_eq!(q.season(), Some(1));
        assert_eq!(q.prev().to_string(), "2023-Q4");
        assert_eq!(q.next().to_string(), "2024-Q2");
        assert_eq!(q.next().season(), Some(2));
        assert_eq!(q.name(), "January to March 2024");
        assert_eq!(
            Cadence::Quarter.containing(day("2024-11-05")).to_string(),
            "2024-Q4"
        );
        for bad in ["2024-Q0", "2024-Q5", "2024-q1", "2024-Q12"] {
            assert!(Cadence::Quarter.parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn financial_years_run_april_to_march() {
        let y = Cadence::FinancialYear.parse("FY2023-24").unwrap();
        assert_eq!(
            (y.first_day(), y.last_day()),
            (day("2023-04-01"), day("2024-03-31"))
        );
        assert_eq!(y.days(), 366);
        assert_eq!(y.season(), None);
        assert_eq!(y.next().to_string(), "FY2024-25");
        assert_eq!(y.prev().to_string(), "FY2022-23");
        assert_eq!(
            Cadence::FinancialYear
                .parse("FY1999-00")
                .unwrap()
                .next()
                .to_string(),
            "FY2000-01"
        );
        assert_eq!(y.name(), "the financial year 2023-24");
        assert_eq!(Cadence::FinancialYear.containing(day("2024-03-31")), y);
        assert_eq!(
            Cadence::FinancialYear.containing(day("2024-04-01")),
            y.next()
        );
        for bad in ["FY2023-25", "FY2023-2024", "fy2023-24", "FY23-24"] {
            assert!(Cadence::FinancialYear.parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn snapshots_step_through_their_dates() {
        let c = Cadence::Snapshot(SnapshotDates::WORKFORCE);
        let s = c.parse("2024-03-31").unwrap();
        assert_eq!(
            (s.first_day(), s.last_day(), s.days()),
            (day("2024-03-31"), day("2024-03-31"), 1)
        );
        assert_eq!(s.next().to_string(), "2024-09-30");
        assert_eq!(s.next().next().to_string(), "2025-03-31");
        assert_eq!(s.prev().to_string(), "2023-09-30");
        assert_eq!(s.season(), None);
        assert_eq!(s.name(), "31 March 2024");
        assert_eq!(c.containing(day("2024-09-29")), s);
        assert!(c.parse("2024-03-30").is_err());
        // Read without its cadence, the same date is the same period.
        assert_eq!("2024-03-31".parse::<Period>().unwrap(), s);
        assert_eq!(
            c.form(),
            "a snapshot date written YYYY-MM-DD, on 31 March and 30 September (`2024-03-31`)"
        );
    }

    #[test]
    fn snapshot_dates_are_checked() {
        let dates = |d: &[&str]| {
            SnapshotDates::parse(&d.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
        };
        assert_eq!(dates(&["09-30", "03-31"]), Ok(SnapshotDates::WORKFORCE));
        assert!(dates(&[]).is_err());
        assert!(dates(&["02-29"]).unwrap_err().contains("leap years"));
        assert!(dates(&["03-30", "03-31"]).unwrap_err().contains("March"));
        assert!(dates(&["3-31"]).is_err());
        assert!(dates(&["04-31"]).is_err());
    }

    #[test]
    fn a_token_of_another_cadence_is_named_as_such() {
        let e = Cadence::Month.parse("2024-Q1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "`2024-Q1` is a quarter period, but this dataset is returned by a month written YYYY-MM"
        );
        assert!(matches!(
            Cadence::Quarter.parse("2024-03"),
            Err(BadPeriod::WrongCadence { found: "month", .. })
        ));
        assert!(matches!(
            Cadence::Month.parse("2024-03-31"),
            Err(BadPeriod::WrongCadence {
                found: "snapshot",
                ..
            })
        ));
    }

    #[test]
    fn deadlines_count_from_the_period_end() {
        let m = Cadence::Month.parse("2020-01").unwrap();
        assert_eq!(Deadline::DaysAfter(28).last_day(m), day("2020-02-28"));
        let q = Cadence::Quarter.parse("2024-Q1").unwrap();
        assert_eq!(Deadline::DaysAfter(15).last_day(q), day("2024-04-15"));
        let y = Cadence::FinancialYear.parse("FY2023-24").unwrap();
        assert_eq!(Deadline::DayOfYear(7, 31).last_day(y), day("2024-07-31"));
        assert_eq!(Deadline::DayOfYear(3, 31).last_day(y), day("2025-03-31"));
        assert_eq!(
            Deadline::DayOfYear(7, 31).misfit(Cadence::FinancialYear),
            None
        );
        let one = Cadence::Snapshot(SnapshotDates::only(day("2023-03-31")));
        assert_eq!(Deadline::DayOfYear(5, 1).misfit(one), None);
        assert!(
            Deadline::DayOfYear(7, 31)
                .misfit(Cadence::Quarter)
                .unwrap()
                .contains("4 periods a year")
        );
        assert!(
            Deadline::DayOfYear(7, 31)
                .misfit(Cadence::Snapshot(SnapshotDates::WORKFORCE))
                .is_some()
        );
        assert_eq!(Deadline::DaysAfter(15).misfit(Cadence::Quarter), None);
    }

    #[test]
    fn periods_of_one_cadence_are_ordered_by_time() {
        let q = |s: &str| Cadence::Quarter.parse(s).unwrap();
        assert!(q("2023-Q4") < q("2024-Q1"));
        assert!(q("2024-Q1") < q("2024-Q2"));
        let m = |s: &str| Cadence::Month.parse(s).unwrap();
        assert!(m("2023-12") < m("2024-01"));
    }

    fn cadences() -> impl Strategy<Value = Cadence> {
        prop_oneof![
            Just(Cadence::Month),
            Just(Cadence::Quarter),
            Just(Cadence::FinancialYear),
            Just(Cadence::Snapshot(SnapshotDates::WORKFORCE)),
            Just(Cadence::Snapshot(SnapshotDates::only(
                NaiveDate::from_ymd_opt(2023, 12, 31).unwrap()
            ))),
        ]
    }

    proptest! {
        #[test]
        fn every_cadence_round_trips_and_steps_back_and_forth(
            cadence in cadences(),
            days in 0i64..(400 * 366),
        ) {
            let date = NaiveDate::from_ymd_opt(1800, 1, 1).unwrap() + chrono::Duration::days(days);
            let p = cadence.containing(date);
            prop_assert!(p.first_day() <= date);
            prop_assert_eq!(cadence.parse(&p.to_string()), Ok(p));
            prop_assert_eq!(p.to_string().parse::<Period>(), Ok(p));
            prop_assert_eq!(p.prev().next(), p);
            prop_assert_eq!(p.next().prev(), p);
            prop_assert!(p < p.next());
            prop_assert_eq!(p.next().trailing(2), vec![p, p.next()]);
            prop_assert!(p.last_day() < p.next().first_day());
            if !matches!(cadence, Cadence::Snapshot(_)) {
                prop_assert!(date <= p.last_day());
                prop_assert_eq!(p.last_day().succ_opt(), Some(p.next().first_day()));
            }
        }
    }
}
