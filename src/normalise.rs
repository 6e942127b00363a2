//! Normalisation: readings of cell values that their column refuses as sent but that mean a
//! valid value, as Excel and records systems write them.
//!
//! `validate` asks for a reading only of a value its column's checks refuse (each distinct
//! value of a column is judged once per batch), so clean data costs nothing here; the one
//! exception is the placeholder test below, a length comparison on the first sight of each
//! value. A reading must pass the same checks, and it replaces the cell before anything else
//! sees it: the checks, the `jsonschema` reference, the snapshot and the counts all read the
//! reading, never the text sent, so a cell still has one reading. Every reading used is
//! counted per column and kind and reported in one note per column and kind, with examples.
//!
//! The readings:
//! - **Excel's dates**, in a column whose schema asks for a date or a date and time:
//!   `dd/mm/yyyy`, `dd/mm/yyyy hh:mm` and `dd/mm/yyyy hh:mm:ss` (one-digit days, months and
//!   hours too) read day first, as UK dates are written, and Excel's serial numbers
//!   (`43831.5`: days since 30 December 1899, five digits, 1927 to 2173). A date alone becomes
//!   `yyyy-mm-dd`; a date and time becomes RFC 3339 in UK local time, `+00:00` in winter and
//!   `+01:00` in summer time (the rules in force since 1996; a time in the hour the clocks skip
//!   is read as GMT, one in the hour they repeat as summer time). A date whose day and month
//!   could be swapped (`03/01/2020`) is read day first, except where the column's dates must
//!   fall in the upload's month and only the month-first reading does: then neither is chosen
//!   and the cell is `value_ambiguous_date`, naming both. A month-first date that cannot be
//!   read day first (`01/13/2020`) is not read at all.
//! - **Thousands separators** in a number column: `1,234` and `-1,234.5` read as `1234` and
//!   `-1234.5`.
//! - **Smart quotes** in a column with a code list: `“ ”` and `‘ ’` read as `"` and `'`, and
//!   a pair of them around the whole value dropped, where that makes the value a code.
//! - **Placeholders**: a cell equal, ignoring ASCII case, to one of the pipeline's
//!   `[reading] placeholders` (`NULL`, `N/A`, `-`, `#N/A` unless set) is read as blank in every
//!   column that does not list that value as a code; the blank then meets the required and
//!   blank-rate checks like any other, and their messages say what the cell held.

use arrow::array::{Array, StringArray, StringBuilder};
use chrono::{Datelike, Duration, NaiveDate, NaiveTime, Timelike};
use serde_json::Value;

use crate::finding::{Code, Finding};
use crate::model::ReadingSettings;
use crate::period::{DaySpan, Period};
use crate::schema::{Property, RecordSchema};

/// The kinds of reading, one note each per column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A date or date and time as Excel writes it.
    ExcelDate,
    /// A number with thousands separators.
    Thousands,
    /// A code with typographic quotes.
    SmartQuotes,
    /// A placeholder for no value.
    Placeholder,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::ExcelDate,
        Kind::Thousands,
        Kind::SmartQuotes,
        Kind::Placeholder,
    ];

    fn code(self) -> Code {
        match self {
            Kind::ExcelDate => Code::ValueExcelDate,
            Kind::Thousands => Code::ValueThousandsSeparator,
            Kind::SmartQuotes => Code::ValueSmartQuotes,
            Kind::Placeholder => Code::ValuePlaceholder,
        }
    }
}

/// How a refused value is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// As blank: the cell held a placeholder.
    Blank,
    /// As this text.
    Value {
        /// What kind of reading it is.
        kind: Kind,
        /// The value read.
        text: String,
    },
    /// Not at all: a date that reads inside the upload's month only month first.
    Ambiguous {
        /// The day-first reading (outside the month).
        day_first: String,
        /// The month-first reading (inside the month).
        month_first: String,
    },
}

impl Reading {
    /// The value the cell is read as (`None` for blank), when the cell is rewritten.
    pub fn rewritten(&self) -> Option<Option<&str>> {
        match self {
            Reading::Blank => Some(None),
            Reading::Value { text, .. } => Some(Some(text)),
            Reading::Ambiguous { .. } => None,
        }
    }

    fn kind(&self) -> Option<Kind> {
        match self {
            Reading::Blank => Some(Kind::Placeholder),
            Reading::Value { kind, .. } => Some(*kind),
            Reading::Ambiguous { .. } => None,
        }
    }
}

/// Up to this many examples per column and kind.
const EXAMPLES: usize = 3;

/// Readings used in one column, of one kind.
#[derive(Debug, Clone, Default)]
struct Tally {
    count: u64,
    /// (row, as sent, as read) of the first few distinct values.
    examples: Vec<(u64, String, Option<String>)>,
}

/// What each column admits, and the readings used so far.
#[derive(Debug, Clone)]
pub struct Normaliser {
    /// The placeholders, in upper case.
    placeholders: Vec<String>,
    longest_placeholder: usize,
    /// The days of the upload's period, when known.
    period: Option<DaySpan>,
    /// Per property: its schema asks for a date or a date and time somewhere.
    dates: Vec<bool>,
    /// Per property: it lists its values (code list, `enum` or `const`).
    lists: Vec<bool>,
    /// Per property and kind (in [`Kind::ALL`] order).
    tallies: Vec<[Tally; 4]>,
}

impl Normaliser {
    /// A normaliser for `schema`'s columns in an upload for `period` (when known).
    pub fn new(schema: &RecordSchema, settings: &ReadingSettings, period: Option<Period>) -> Self {
        let placeholders: Vec<String> = settings
            .placeholders
            .iter()
            .map(|p| p.to_ascii_uppercase())
            .collect();
        Normaliser {
            longest_placeholder: placeholders.iter().map(String::len).max().unwrap_or(0),
            placeholders,
            period: period.map(DaySpan::of),
            dates: schema
                .properties
                .iter()
                .map(|p| asks_for_dates(&p.schema))
                .collect(),
            lists: schema
                .properties
                .iter()
                .map(|p| {
                    p.codelist.is_some()
                        || p.schema.get("enum").is_some()
                        || p.schema.get("const").is_some()
                })
                .collect(),
            tallies: vec![Default::default(); schema.properties.len()],
        }
    }

    /// Whether `text` is read as blank in property `p`'s column: it is a placeholder, and the
    /// column does not list it (`listed`: the column's checks accept it, asked only when the
    /// column lists values).
    pub fn is_blank(&self, p: usize, text: &str, listed: impl FnOnce() -> bool) -> bool {
        text.len() <= self.longest_placeholder
            && self
                .placeholders
                .iter()
                .any(|h| h.eq_ignore_ascii_case(text))
            && !(self.lists[p] && listed())
    }

    /// A reading of `text`, which property `p`'s column refuses, that `passes` (the column's
    /// checks) accepts; `None` when there is none.
    pub fn read(
        &self,
        p: usize,
        prop: &Property,
        text: &str,
        passes: impl Fn(&str) -> bool,
    ) -> Option<Reading> {
        if self.lists[p]
            && let Some(plain) = plain_quotes(text, &passes)
        {
            return Some(Reading::Value {
                kind: Kind::SmartQuotes,
                text: plain,
            });
        }
        if prop.types.reads_numbers()
            && let Some(number) = without_thousands(text)
            && passes(&number)
        {
            return Some(Reading::Value {
                kind: Kind::Thousands,
                text: number,
            });
        }
        if self.dates[p] {
            return self.excel_date(prop, text, &passes);
        }
        None
    }

    fn excel_date(
        &self,
        prop: &Property,
        text: &str,
        passes: &impl Fn(&str) -> bool,
    ) -> Option<Reading> {
        let sent = ExcelDate::parse(text)?;
        let day_first = Some(sent.day_first.iso()).filter(|t| passes(t));
        let month_first = sent.month_first.map(DateTime::iso).filter(|t| passes(t));
        let in_period = |t: &str| self.period.is_some_and(|p| p.holds(t));
        match (day_first, month_first) {
            (Some(d), Some(m))
                if prop.in_period && self.period.is_some() && !in_period(&d) && in_period(&m) =>
            {
                Some(Reading::Ambiguous {
                    day_first: d,
                    month_first: m,
                })
            }
            (Some(d), _) => Some(Reading::Value {
                kind: Kind::ExcelDate,
                text: d,
            }),
            (None, _) => None,
        }
    }

    /// Counts a reading used for `sent` on spreadsheet row `row` of property `p`.
    pub fn count(&mut self, p: usize, reading: &Reading, sent: &str, row: u64) {
        let Some(kind) = reading.kind() else { return };
        let tally = &mut self.tallies[p][kind as usize];
        tally.count += 1;
        if tally.examples.len() < EXAMPLES && !tally.examples.iter().any(|(_, s, _)| s == sent) {
            let read = reading.rewritten().flatten().map(str::to_owned);
            tally.examples.push((row, sent.to_owned(), read));
        }
    }

    /// How many cells of property `p` held a placeholder, and the first placeholder seen.
    pub fn placeholders_in(&self, p: usize) -> (u64, Option<&str>) {
        let tally = &self.tallies[p][Kind::Placeholder as usize];
        (
            tally.count,
            tally.examples.first().map(|(_, s, _)| s.as_str()),
        )
    }

    /// One note per column and kind of reading used. `header_of(p)` is the column's header
    /// spelling; values of personal columns are left out of the messages (rows are given).
    pub fn notes<'a>(
        &self,
        schema: &RecordSchema,
        header_of: impl Fn(usize) -> &'a str,
    ) -> Vec<Finding> {
        let mut notes = Vec::new();
        for (p, tallies) in self.tallies.iter().enumerate() {
            let prop = &schema.properties[p];
            for kind in Kind::ALL {
                let tally = &tallies[kind as usize];
                if tally.count == 0 {
                    continue;
                }
                notes.push(
                    Finding::new(kind.code(), note(prop, kind, tally), "reading")
                        .in_column(header_of(p)),
                );
            }
        }
        notes
    }
}

/// `column` as read: the cells at the rows of `read` (row, index into `readings`, in row order)
/// replaced by their readings. Also returns how many cells that were not blank now are.
pub fn read_column(
    column: &StringArray,
    read: &[(usize, u32)],
    readings: &[Reading],
) -> (StringArray, u64) {
    let mut read = read.iter().peekable();
    let mut blanks = 0;
    let mut builder = StringBuilder::with_capacity(column.len(), column.value_data().len());
    for i in 0..column.len() {
        let sent = column.is_valid(i).then(|| column.value(i));
        let value = match read.next_if(|&&(row, _)| row == i) {
            Some(&(_, r)) => readings[r as usize].rewritten().unwrap_or(sent),
            None => sent,
        };
        if let Some(v) = value {
            builder.append_value(v);
        } else {
            blanks += u64::from(sent.is_some());
            builder.append_null();
        }
    }
    (builder.finish(), blanks)
}

fn note(prop: &Property, kind: Kind, tally: &Tally) -> String {
    let n = tally.count;
    let (cells, were) = if n == 1 {
        ("1 cell".to_owned(), "was")
    } else {
        (format!("{n} cells"), "were")
    };
    let what = match kind {
        Kind::ExcelDate => format!(
            "{cells} {were} written as Excel writes dates and {were} read as ISO 8601, day first as UK dates are, times in UK time"
        ),
        Kind::Thousands => {
            format!("{cells} {were} numbers with thousands separators, read without them")
        }
        Kind::SmartQuotes => format!(
            "{cells} held typographic quotes (“ ” ‘ ’) and {were} read with plain ones, or without the quotes around them, as codes of the list"
        ),
        Kind::Placeholder => {
            format!("{cells} held a placeholder for no value and {were} read as blank")
        }
    };
    let examples: Vec<String> = tally
        .examples
        .iter()
        .map(|(row, sent, read)| {
            if prop.pii.masked() {
                format!("row {row}")
            } else {
                match read {
                    Some(read) => format!("`{sent}` as `{read}` (row {row})"),
                    None => format!("`{sent}` (row {row})"),
                }
            }
        })
        .collect();
    format!(
        "{}: {what}, for example {}",
        prop.title,
        examples.join(", ")
    )
}

/// Whether a (sub)schema asks for `format` date or date-time anywhere in it.
fn asks_for_dates(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => map.iter().any(|(k, v)| {
            (k == "format" && matches!(v.as_str(), Some("date" | "date-time"))) || asks_for_dates(v)
        }),
        Value::Array(items) => items.iter().any(asks_for_dates),
        _ => false,
    }
}

/// `text` with typographic quotes made plain, and then without a pair of quotes around it,
/// whichever `passes` first; `None` when it holds no typographic quote or neither passes.
fn plain_quotes(text: &str, passes: &impl Fn(&str) -> bool) -> Option<String> {
    if !text.contains(['“', '”', '‘', '’']) {
        return None;
    }
    let plain: String = text
        .chars()
        .map(|c| match c {
            '“' | '”' => '"',
            '‘' | '’' => '\'',
            c => c,
        })
        .collect();
    if passes(&plain) {
        return Some(plain);
    }
    let inner = ['"', '\'']
        .into_iter()
        .find_map(|q| plain.strip_prefix(q)?.strip_suffix(q))?;
    passes(inner).then(|| inner.to_owned())
}

/// `text` without its thousands separators, when it is a number written with them: an
/// optional sign, one to three digits, groups of a comma and three digits, an optional
/// decimal part.
pub(crate) fn without_thousands(text: &str) -> Option<String> {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (unsigned, None),
    };
    let mut groups = whole.split(',');
    let lead = groups.next()?;
    let mut rest = groups.peekable();
    rest.peek()?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(1..=3).contains(&lead.len()) || !digits(lead) || !rest.all(|g| g.len() == 3 && digits(g)) {
        return None;
    }
    if fraction.is_some_and(|f| !digits(f)) {
        return None;
    }
    Some(text.replace(',', ""))
}

/// A date as Excel wrote it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ExcelDate {
    day_first: DateTime,
    /// The reading with day and month swapped, when both can be months and they differ.
    month_first: Option<DateTime>,
}

/// A date with its time of day, when it has one.
#[derive(Debug, Clone, Copy, PartialEq)]
struct DateTime {
    date: NaiveDate,
    time: Option<NaiveTime>,
}

impl ExcelDate {
    fn parse(text: &str) -> Option<ExcelDate> {
        if let Some(serial) = serial(text) {
            return Some(ExcelDate {
                day_first: serial,
                month_first: None,
            });
        }
        let (date, time) = match text.split_once(' ') {
            Some((d, t)) => (d, Some(clock(t)?)),
            None => (text, None),
        };
        let mut parts = date.split('/');
        let (a, b, year) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || year.len() != 4 {
            return None;
        }
        let number = |s: &str, max_len: usize| -> Option<u32> {
            (!s.is_empty() && s.len() <= max_len && s.bytes().all(|c| c.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        let (a, b, year) = (number(a, 2)?, number(b, 2)?, number(year, 4)?);
        let year = i32::try_from(year).ok()?;
        let day_first = NaiveDate::from_ymd_opt(year, b, a)?;
        let month_first = (a != b)
            .then(|| NaiveDate::from_ymd_opt(year, a, b))
            .flatten();
        Some(ExcelDate {
            day_first: DateTime {
                date: day_first,
                time,
            },
            month_first: month_first.map(|date| DateTime { date, time }),
        })
    }
}

/// `hh:mm` or `hh:mm:ss` (one-digit hours too).
fn clock(text: &str) -> Option<NaiveTime> {
    let mut parts = text.split(':');
    let (h, m) = (parts.next()?, parts.next()?);
    let s = parts.next();
    if parts.next().is_some() {
        return None;
    }
    let two = |s: &str, min_len: usize| -> Option<u32> {
        ((min_len..=2).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    NaiveTime::from_hms_opt(two(h, 1)?, two(m, 2)?, s.map_or(Some(0), |s| two(s, 2))?)
}

/// Excel's serial date number: five digits of days since 30 December 1899 (Excel's count,
/// which takes 1900 for a leap year, is right from March 1900 on), and a fraction of a day.
fn serial(text: &str) -> Option<DateTime> {
    let (days, fraction) = match text.split_once('.') {
        Some((d, f)) => (d, Some(f)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if days.len() != 5 || !digits(days) || fraction.is_some_and(|f| !digits(f) || f.len() > 15) {
        return None;
    }
    let epoch = NaiveDate::from_ymd_opt(1899, 12, 30)?;
    let date = epoch + Duration::days(days.parse().ok()?);
    let Some(fraction) = fraction else {
        return Some(DateTime { date, time: None });
    };
    let seconds = (format!("0.{fraction}").parse::<f64>().ok()? * 86_400.0).round() as u32;
    let (date, seconds) = if seconds >= 86_400 {
        (date.succ_opt()?, 0)
    } else {
        (date, seconds)
    };
    Some(DateTime {
        date,
        time: Some(NaiveTime::from_hms_opt(
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60,
        )?),
    })
}

impl DateTime {
    /// ISO 8601: the date, or the date and time with the UK offset of that moment.
    fn iso(self) -> String {
        match self.time {
            None => self.date.format("%Y-%m-%d").to_string(),
            Some(time) => format!(
                "{}T{}+0{}:00",
                self.date.format("%Y-%m-%d"),
                time.format("%H:%M:%S"),
                uk_offset_hours(self.date, time)
            ),
        }
    }
}

/// The hours UK local time is ahead of UTC at `date` `time` (local): 1 in British Summer
/// Time, from 01:00 UTC on the last Sunday of March to 01:00 UTC on the last Sunday of
/// October, else 0. A local time in the hour the clocks skip (01:00 to 01:59 on the day
/// summer time starts) is read as GMT; one in the hour they repeat (01:00 to 01:59 on the day
/// it ends), as summer time, the first time that hour comes.
fn uk_offset_hours(date: NaiveDate, time: NaiveTime) -> u32 {
    let last_sunday = |month: u32| {
        let last = NaiveDate::from_ymd_opt(date.year(), month, 31).unwrap_or(date);
        last - Duration::days(i64::from(last.weekday().num_days_from_sunday()))
    };
    let (starts, ends) = (last_sunday(3), last_sunday(10));
    let hour = time.hour();
    let summer = if date == starts {
        hour >= 2
    } else if date == ends {
        hour < 2
    } else {
        date > starts && date < ends
    };
    u32::from(summer)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow::array::BooleanArray;
    use proptest::prelude::*;

    use super::*;
    use crate::finding::{FindingLog, FindingSink};
    use crate::ingest::{Batch, Distinct, HeaderMap};
    use crate::schema::CodeLists;
    use crate::validate::{CheckSettings, Checker, UploadScope, row_object};

    fn schema() -> RecordSchema {
        RecordSchema::parse(
            "t",
            r#"{"type":"object","properties":{
                "d":{"type":"string","anyOf":[{"format":"date-time"},{"format":"date"}],"x-in-period":true},
                "dt":{"type":"string","format":"date-time"},
                "n":{"type":["number","null"]},
                "c":{"type":["string","null"],"enum":["Arrest","Don't know","-"]},
                "s":{"type":["string","null"]}}}"#,
            &CodeLists::default(),
        )
        .unwrap()
    }

    fn read(column: &str, text: &str, period: Option<Period>) -> Option<Reading> {
        let schema = schema();
        let plan = crate::validate::Plan::compile(&schema).unwrap();
        let n = Normaliser::new(&schema, &ReadingSettings::default(), period);
        let p = schema
            .properties
            .iter()
            .position(|q| q.name == column)
            .unwrap();
        let prop = &schema.properties[p];
        n.read(p, prop, text, |t| {
            plan.check_cell(p, prop.types, Some(t)).is_none()
        })
    }

    #[expect(
        clippy::unnecessary_wraps,
        reason = "compared with what `read` returns"
    )]
    fn value(kind: Kind, text: &str) -> Option<Reading> {
        Some(Reading::Value {
            kind,
            text: text.to_owned(),
        })
    }

    /// A schema whose columns each take one kind of reading (`normalise`).
    const READINGS: &str = r#"{
        "type": "object",
        "required": ["d", "r"],
        "properties": {
            "d": {"type": "string", "anyOf": [{"format": "date-time"}, {"format": "date"}], "x-in-period": true},
            "n": {"type": ["number", "null"], "minimum": -10, "maximum": 100000},
            "c": {"type": ["string", "null"], "enum": ["Arrest", "Don't know", "-"]},
            "b": {"type": ["boolean", "null"]},
            "r": {"type": "string"}
        }
    }"#;

    /// Every finding, in order.
    struct Collect(Vec<Finding>);

    impl FindingSink for Collect {
        fn accept(&mut self, f: &Finding) -> std::io::Result<()> {
            self.0.push(f.clone());
            Ok(())
        }
    }

    /// Checks `rows` as one batch of an upload for January 2020: the batch as read and every
    /// finding.
    fn check_rows(
        schema: &RecordSchema,
        rows: &[Vec<Option<String>>],
    ) -> (Batch, BooleanArray, Vec<Finding>) {
        let settings = CheckSettings::schema_only(schema.clone());
        let n = schema.properties.len();
        let header = HeaderMap {
            headers: schema.properties.iter().map(|p| p.name.clone()).collect(),
            column_property: (0..n).map(Some).collect(),
            property_column: (0..n).map(Some).collect(),
        };
        let scope = UploadScope {
            force: None,
            period: Period::new(2020, 1),
            now: None,
        };
        let mut checker = Checker::new(&settings, scope, header).unwrap();
        let mut batch = Batch {
            properties: (0..n).collect::<Vec<_>>().into(),
            columns: (0..n)
                .map(|p| rows.iter().map(|r| r[p].clone()).collect::<StringArray>())
                .collect(),
            rows: (2..2 + rows.len() as u64).collect(),
            row_hashes: (0..rows.len() as u128).collect(),
            distinct: Vec::new(),
        };
        let mut sink = Collect(Vec::new());
        let mut log = FindingLog::new(10, BTreeMap::new(), &mut sink);
        let ok = checker.check_batch(&mut batch, &mut log).unwrap();
        checker.finish(0, &mut log).unwrap();
        log.finish().unwrap();
        (batch, ok, sink.0)
    }

    fn readings_cell(column: usize) -> impl Strategy<Value = Option<String>> {
        let pools: [&[&str]; 5] = [
            &[
                "31/01/2020 10:00",
                "01/02/2020 10:00",
                "13/01/2020",
                "1/1/2020 9:05",
                "43831.5",
                "43861",
                "2020-01-05",
                "05/03/2020",
                "01/13/2020",
                "N/A",
                "x",
            ],
            &[
                "1,234", "12", "-1,000.5", "1,23", "123,456", "N/A", "-", "null", "abc",
            ],
            &[
                "“Arrest”",
                "Don’t know",
                "‘Arrest’",
                "Arrest",
                "-",
                "NULL",
                "nope",
                "“nope”",
            ],
            &["True", "false", "-", "n/a", "#N/A", "yes"],
            &["hello", "N/A", "#n/a", "-", "x y"],
        ];
        prop_oneof![
            6 => prop::sample::select(pools[column]).prop_map(|s| Some(s.to_owned())),
            1 => Just(None),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        /// A cell read otherwise than sent has one reading: the plan judged the cell as read,
        /// the batch holds it as read, and `jsonschema` on the batch as read finds exactly the
        /// columns the checks refused (an ambiguous date is left as sent, refused by both).
        #[test]
        fn readings_are_judged_alike_by_the_plan_and_jsonschema(
            rows in prop::collection::vec(
                (0..5usize).map(readings_cell).collect::<Vec<_>>(),
                1..12,
            )
        ) {
            let schema = RecordSchema::parse("readings", READINGS, &CodeLists::default()).unwrap();
            let (batch, ok, findings) = check_rows(&schema, &rows);
            let reference = schema.compile_reference().unwrap();
            let schema_codes = [
                Code::ValueRequired, Code::ValueWrongType, Code::ValueNotInList, Code::ValueBadDate,
                Code::ValueOutOfRange, Code::ValueAmbiguousDate,
            ];
            for i in 0..batch.len() {
                let object = row_object(&schema, &batch, i);
                let mut reference_bad: Vec<String> = reference
                    .iter_errors(&object)
                    .map(|e| e.instance_path().to_string().trim_start_matches('/').to_owned())
                    .collect();
                reference_bad.sort();
                reference_bad.dedup();
                let mut plan_bad: Vec<String> = findings
                    .iter()
                    .filter(|f| f.row == Some(batch.rows[i]) && schema_codes.contains(&f.code))
                    .filter_map(|f| f.column.clone())
                    .collect();
                plan_bad.sort();
                plan_bad.dedup();
                prop_assert_eq!(&plan_bad, &reference_bad, "row {}", object);
                let out_of_period = findings.iter().any(|f| f.row == Some(batch.rows[i]) && f.code == Code::DateOutOfPeriod);
                prop_assert_eq!(ok.value(i), reference_bad.is_empty() && !out_of_period, "row {}", object);
            }
        }
    }

    #[test]
    fn cells_are_read_as_excel_writes_them_and_counted_per_column() {
        let schema = RecordSchema::parse("readings", READINGS, &CodeLists::default()).unwrap();
        let row = |cells: [&str; 5]| {
            cells
                .iter()
                .map(|c| (!c.is_empty()).then(|| (*c).to_owned()))
                .collect::<Vec<_>>()
        };
        let rows = [
            row(["31/01/2020 10:00", "1,234", "“Arrest”", "-", "hello"]),
            row(["31/01/2020 10:00", "N/A", "Don’t know", "True", "N/A"]),
            row(["01/02/2020 09:00", "12", "-", "", "x"]),
        ];
        let (batch, ok, findings) = check_rows(&schema, &rows);
        let column = |p: usize| -> Vec<Option<&str>> {
            (0..batch.len())
                .map(|i| crate::ingest::cell(&batch.columns[p], i))
                .collect()
        };
        assert_eq!(
            column(0),
            [
                Some("2020-01-31T10:00:00+00:00"),
                Some("2020-01-31T10:00:00+00:00"),
                Some("01/02/2020 09:00")
            ]
        );
        assert_eq!(column(1), [Some("1234"), None, Some("12")]);
        assert_eq!(
            column(2),
            [Some("Arrest"), Some("Don't know"), Some("-")],
            "`-` is a code of c"
        );
        assert_eq!(column(3), [None, Some("True"), None]);
        assert_eq!(column(4), [Some("hello"), None, Some("x")]);
        assert_eq!(batch.distinct[0].as_ref().unwrap().of_row, [0, 0, 1]);
        assert_eq!(
            batch.distinct[4].as_ref().unwrap().of_row,
            [0, Distinct::BLANK, 1]
        );
        assert_eq!(
            (ok.value(0), ok.value(1), ok.value(2)),
            (true, false, false)
        );
        let by_code = |code: Code| -> Vec<&str> {
            findings
                .iter()
                .filter(|f| f.code == code)
                .map(|f| f.message.as_str())
                .collect()
        };
        assert_eq!(
            by_code(Code::ValueRequired),
            ["r is blank but must have a value (the cell held `N/A`, a placeholder for no value)"]
        );
        assert_eq!(
            by_code(Code::ValueAmbiguousDate),
            [
                "`01/02/2020 09:00` in d is 2020-02-01T09:00:00+00:00 read day first, as UK dates are written, which is outside 2020-01, the month of this upload; read month first it is 2020-01-02T09:00:00+00:00: neither is chosen"
            ]
        );
        assert_eq!(
            by_code(Code::ValueExcelDate),
            [
                "d: 2 cells were written as Excel writes dates and were read as ISO 8601, day first as UK dates are, times in UK time, for example `31/01/2020 10:00` as `2020-01-31T10:00:00+00:00` (row 2)"
            ]
        );
        assert_eq!(by_code(Code::ValueThousandsSeparator).len(), 1);
        assert_eq!(by_code(Code::ValueSmartQuotes).len(), 1);
        assert_eq!(
            by_code(Code::ValuePlaceholder),
            [
                "n: 1 cell held a placeholder for no value and was read as blank, for example `N/A` (row 3)",
                "b: 1 cell held a placeholder for no value and was read as blank, for example `-` (row 2)",
                "r: 1 cell held a placeholder for no value and was read as blank, for example `N/A` (row 3)",
            ]
        );
    }

    #[test]
    fn excel_dates_are_read_day_first_in_uk_time() {
        let jan = Period::new(2020, 1);
        let d = |text| read("d", text, jan);
        assert_eq!(
            d("31/01/2020 10:00"),
            value(Kind::ExcelDate, "2020-01-31T10:00:00+00:00")
        );
        assert_eq!(
            d("3/1/2020 9:05:07"),
            value(Kind::ExcelDate, "2020-01-03T09:05:07+00:00")
        );
        assert_eq!(d("03/01/2020"), value(Kind::ExcelDate, "2020-01-03"));
        assert_eq!(
            d("43831.5"),
            value(Kind::ExcelDate, "2020-01-01T12:00:00+00:00")
        );
        assert_eq!(d("43831"), value(Kind::ExcelDate, "2020-01-01"));
        assert_eq!(
            d("43831.99999999"),
            value(Kind::ExcelDate, "2020-01-02T00:00:00+00:00")
        );
        // Summer time, and the hours around the changes of the clocks in 2020 (29 March and
        // 25 October).
        let summer = |text| read("dt", text, None);
        assert_eq!(
            summer("01/07/2020 10:00"),
            value(Kind::ExcelDate, "2020-07-01T10:00:00+01:00")
        );
        assert_eq!(
            summer("29/03/2020 00:59"),
            value(Kind::ExcelDate, "2020-03-29T00:59:00+00:00")
        );
        assert_eq!(
            summer("29/03/2020 01:30"),
            value(Kind::ExcelDate, "2020-03-29T01:30:00+00:00")
        );
        assert_eq!(
            summer("29/03/2020 02:00"),
            value(Kind::ExcelDate, "2020-03-29T02:00:00+01:00")
        );
        assert_eq!(
            summer("25/10/2020 01:30"),
            value(Kind::ExcelDate, "2020-10-25T01:30:00+01:00")
        );
        assert_eq!(
            summer("25/10/2020 02:00"),
            value(Kind::ExcelDate, "2020-10-25T02:00:00+00:00")
        );
        // A date alone does not become a time in a column that needs one.
        assert_eq!(summer("25/10/2020"), None);
        for refused in [
            "01/13/2020",
            "31/02/2020",
            "1/1/20",
            "2020/01/01",
            "31/01/2020 25:00",
            "4383",
            "43831,5",
            "31/01/2020T10:00",
        ] {
            assert_eq!(d(refused), None, "{refused}");
        }
    }

    #[test]
    fn a_swappable_date_is_not_read_outside_the_month_when_the_other_reading_is_inside() {
        let jan = Period::new(2020, 1);
        assert_eq!(
            read("d", "01/02/2020 10:00", jan),
            Some(Reading::Ambiguous {
                day_first: "2020-02-01T10:00:00+00:00".into(),
                month_first: "2020-01-02T10:00:00+00:00".into(),
            })
        );
        // Inside the month day first: read so. Without a month to compare, or in a column
        // whose dates need not be in the month: day first.
        assert_eq!(
            read("d", "02/01/2020", jan),
            value(Kind::ExcelDate, "2020-01-02")
        );
        assert_eq!(
            read("d", "01/02/2020", None),
            value(Kind::ExcelDate, "2020-02-01")
        );
        assert_eq!(
            read("dt", "01/02/2020 10:00", jan),
            value(Kind::ExcelDate, "2020-02-01T10:00:00+00:00")
        );
        // Outside the month either way: day first (and the month check says it is outside).
        assert_eq!(
            read("d", "05/03/2020", jan),
            value(Kind::ExcelDate, "2020-03-05")
        );
    }

    #[test]
    fn thousands_smart_quotes_and_placeholders() {
        assert_eq!(read("n", "1,234", None), value(Kind::Thousands, "1234"));
        assert_eq!(
            read("n", "-12,345,678.25", None),
            value(Kind::Thousands, "-12345678.25")
        );
        for refused in ["1,23", "1234,567", ",123", "1,234,", "1,234.", "a,bcd"] {
            assert_eq!(read("n", refused, None), None, "{refused}");
        }
        assert_eq!(
            read("c", "“Arrest”", None),
            value(Kind::SmartQuotes, "Arrest")
        );
        assert_eq!(
            read("c", "Don’t know", None),
            value(Kind::SmartQuotes, "Don't know")
        );
        assert_eq!(read("c", "“Arrested”", None), None);
        assert_eq!(read("s", "“Arrest”", None), None, "free text is not a code");
        let schema = schema();
        let n = Normaliser::new(&schema, &ReadingSettings::default(), None);
        assert!(n.is_blank(2, "n/a", || false));
        assert!(n.is_blank(4, "NULL", || true), "free text lists no values");
        assert!(!n.is_blank(3, "-", || true), "`-` is one of c's codes");
        assert!(!n.is_blank(4, "None", || false));
    }

    #[test]
    fn notes_count_per_column_and_show_examples() {
        let schema = schema();
        let mut n = Normaliser::new(&schema, &ReadingSettings::default(), None);
        let date = value(Kind::ExcelDate, "2020-01-03").unwrap();
        for row in 2..7 {
            n.count(0, &date, "03/01/2020", row);
        }
        n.count(
            0,
            &value(Kind::ExcelDate, "2020-01-04").unwrap(),
            "04/01/2020",
            9,
        );
        n.count(2, &Reading::Blank, "N/A", 4);
        let notes = n.notes(&schema, |p| schema.properties[p].name.as_str());
        assert_eq!(notes.len(), 2);
        assert_eq!(notes[0].code, Code::ValueExcelDate);
        assert_eq!(
            notes[0].message,
            "d: 6 cells were written as Excel writes dates and were read as ISO 8601, day first as UK dates are, times in UK time, for example `03/01/2020` as `2020-01-03` (row 2), `04/01/2020` as `2020-01-04` (row 9)"
        );
        assert_eq!(
            notes[1].message,
            "n: 1 cell held a placeholder for no value and was read as blank, for example `N/A` (row 4)"
        );
        assert_eq!(n.placeholders_in(2), (1, Some("N/A")));
    }
}
