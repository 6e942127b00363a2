//! Reporting periods: a calendar month written `YYYY-MM`.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

/// A calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    /// The year.
    pub year: i32,
    /// The month, 1 to 12.
    pub month: u32,
}

/// A string that is not a `YYYY-MM` month.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a month written YYYY-MM")]
pub struct BadPeriod(pub String);

impl Period {
    /// The month `year`-`month`, if `month` is 1 to 12.
    pub fn new(year: i32, month: u32) -> Option<Period> {
        (1..=12).contains(&month).then_some(Period { year, month })
    }

    /// The month containing `date`.
    pub fn of(date: NaiveDate) -> Period {
        Period {
            year: date.year(),
            month: date.month(),
        }
    }

    /// The first day of the month.
    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap_or(NaiveDate::MIN)
    }

    /// The month after this one.
    #[must_use]
    pub fn next(self) -> Period {
        if self.month == 12 {
            Period {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Period {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// The month before this one.
    #[must_use]
    pub fn prev(self) -> Period {
        if self.month == 1 {
            Period {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Period {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// Days in the month.
    pub fn days(self) -> u32 {
        (self.next().first_day() - self.first_day()).num_days() as u32
    }

    /// The `count` months ending with this one, oldest first.
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
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Period {
    type Err = BadPeriod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPeriod(s.to_owned());
        let b = s.as_bytes();
        if b.len() != 7
            || b[4] != b'-'
            || !b
                .iter()
                .enumerate()
                .all(|(i, c)| i == 4 || c.is_ascii_digit())
        {
            return Err(bad());
        }
        let year = s[..4].parse().map_err(|_| bad())?;
        let month = s[5..].parse().map_err(|_| bad())?;
        Period::new(year, month).ok_or_else(bad)
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

    #[test]
    fn parses_and_prints_months() {
        let p: Period = "2020-02".parse().unwrap();
        assert_eq!(p.days(), 29);
        assert_eq!(p.to_string(), "2020-02");
        assert_eq!(p.prev().to_string(), "2020-01");
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
            assert!(bad.parse::<Period>().is_err(), "{bad}");
        }
        let t = p.trailing(3);
        assert_eq!(
            t.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["2019-12", "2020-01", "2020-02"]
        );
    }
}
