//! Validation: batches of text columns → findings, a per-row verdict and a decision.
//!
//! The record schema is compiled into a columnar [`Plan`]: for each property, the JSON Schema
//! keywords it uses (`type`, `enum`, `const`, `pattern`, `format` date and date-time,
//! `minimum`/`maximum` and their exclusive forms, `minLength`/`maxLength`, `anyOf`) are checked over a whole Arrow column at a time, with each distinct value of a
//! column checked once per batch. When a schema uses anything else, every row also goes
//! through the `jsonschema` crate, which is the reference implementation: a differential test
//! on generated data proves the plan and `jsonschema` agree on every cell.
//!
//! A row becomes a JSON object as `docs/schemas.md` says: empty cell → `null`; a cell whose
//! property admits numbers and that parses as one → number; `true`/`false` (any case) where
//! booleans are admitted → boolean; anything else → string. [`cell_to_json`] is that rule.
//! A value a column refuses as sent may be read as Excel and records systems write values (a
//! date, a number with thousands separators, a code in smart quotes, a placeholder for blank:
//! [`crate::normalise`]); the batch then holds the reading in place of the cell, before the
//! reference, the snapshot and the counts read it, so a cell keeps one reading.
//!
//! After the schema come the checks JSON Schema cannot express: dates in the upload's month,
//! force and period columns that must agree with the upload's folder, the plausibility rules
//! the pipeline declares ([`crate::rules`], judged with the same memo), `x-unique`, duplicate
//! rows, legacy spellings and blank rates. This module does no bucket or network IO and reads
//! no clock (the time of processing is in [`UploadScope`]); repeats are found through
//! [`crate::spill`], which keeps memory bounded with local temporary files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, StringArray};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::finding::{Code, Finding, FindingLog, Severity};
use crate::ingest::{Batch, Distinct, HeaderMap};
use crate::model::observe::Figures;
use crate::model::{BlankThreshold, Decision, ReadingSettings};
use crate::normalise::{Normaliser, Reading};
use crate::period::{DaySpan, Period};
use crate::rules::{self, RuleSet, UploadRules};
use crate::schema::{Property, RecordSchema, Spelling, TypeSet, UploadContext};
use crate::spill::RepeatFinder;

pub mod table;

use table::{Cells, TableCheck, TableRows};

/// A cell as JSON Schema sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    /// Empty cell.
    Null,
    /// Text.
    Str(&'a str),
    /// A number (finite), with its exact value when written as a whole number that fits `i64`.
    Num(f64, Option<i64>),
    /// A boolean.
    Bool(bool),
}

/// Reads a cell the way `docs/schemas.md` defines, given the types its property admits.
pub fn read_cell(types: TypeSet, text: Option<&str>) -> Cell<'_> {
    let Some(text) = text else { return Cell::Null };
    if types.reads_numbers()
        && let Some(n) = parse_number(text)
    {
        return Cell::Num(n, text.parse::<i64>().ok());
    }
    if types.boolean {
        if text.eq_ignore_ascii_case("true") {
            return Cell::Bool(true);
        }
        if text.eq_ignore_ascii_case("false") {
            return Cell::Bool(false);
        }
    }
    Cell::Str(text)
}

fn parse_number(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    if let Some(n) = short_decimal(b) {
        return Some(n);
    }
    // Only plain decimal notation: Rust also parses "inf", "NaN" and "infinity".
    if b.is_empty()
        || !b
            .iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'+' | b'-' | b'.' | b'e' | b'E'))
    {
        return None;
    }
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// `text.parse::<f64>()`, taking a shortcut for the usual short decimals.
pub fn parse_f64(text: &str) -> Option<f64> {
    short_decimal(text.as_bytes()).or_else(|| text.parse().ok())
}

/// Powers of ten that are exact in `f64`.
const EXACT_POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// A decimal of at most 15 digits with an optional sign and point (`-3.292147`), read exactly
/// as `str::parse::<f64>` reads it: its digits as a whole number and a power of ten are both
/// exact in `f64`, and one division rounds correctly. Anything else is `None`.
fn short_decimal(b: &[u8]) -> Option<f64> {
    let (negative, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, b),
    };
    if digits.len() > 16 {
        return None;
    }
    let (mut whole, mut count, mut scale, mut point) = (0u64, 0, 0, false);
    for &c in digits {
        match c {
            b'0'..=b'9' => {
                whole = whole * 10 + u64::from(c - b'0');
                count += 1;
                scale += usize::from(point);
            }
            b'.' if !point => point = true,
            _ => return None,
        }
    }
    if count == 0 || count > 15 {
        return None;
    }
    // Below 10^15, so exact.
    #[allow(clippy::cast_precision_loss)]
    let value = whole as f64 / EXACT_POWERS_OF_TEN[scale];
    Some(if negative { -value } else { value })
}

/// The JSON value of a cell (what `jsonschema` is given).
pub fn cell_to_json(types: TypeSet, text: Option<&str>) -> Value {
    match read_cell(types, text) {
        Cell::Null => Value::Null,
        Cell::Str(s) => Value::String(s.to_owned()),
        Cell::Bool(b) => Value::Bool(b),
        Cell::Num(_, Some(i)) => Value::from(i),
        Cell::Num(n, None) => serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number),
    }
}

#[derive(Debug, Clone, Default)]
struct Literals {
    strings: HashSet<String>,
    numbers: Vec<f64>,
    bools: [bool; 2],
    null: bool,
}

impl Literals {
    fn from_values<'a>(values: impl IntoIterator<Item = &'a Value>) -> Option<Literals> {
        let mut lit = Literals::default();
        for v in values {
            match v {
                Value::String(s) => {
                    lit.strings.insert(s.clone());
                }
                Value::Number(n) => lit.numbers.push(n.as_f64()?),
                Value::Bool(b) => lit.bools[usize::from(*b)] = true,
                Value::Null => lit.null = true,
                // Arrays and objects never equal a cell; keeping them changes nothing.
                Value::Array(_) | Value::Object(_) => {}
            }
        }
        Some(lit)
    }

    fn contains(&self, cell: Cell<'_>) -> bool {
        match cell {
            Cell::Null => self.null,
            Cell::Str(s) => self.strings.contains(s),
            Cell::Num(n, _) => self.numbers.contains(&n),
            Cell::Bool(b) => self.bools[usize::from(b)],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Date,
    DateTime,
}

/// Why a cell fails.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// The finding code.
    pub code: Code,
    /// The keyword broken.
    pub rule: String,
    /// Schema path of the keyword.
    pub schema_path: String,
}

/// The compiled checks of one (sub)schema.
#[derive(Debug, Clone)]
struct Node {
    path: String,
    types: Option<TypeSet>,
    enumeration: Option<Literals>,
    constant: Option<Literals>,
    format: Option<Format>,
    pattern: Option<regex::Regex>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: Option<f64>,
    exclusive_maximum: Option<f64>,
    any_of: Vec<Node>,
}

/// Keywords that carry no assertion.
fn is_annotation(key: &str) -> bool {
    key.starts_with("x-")
        || matches!(
            key,
            "title"
                | "description"
                | "examples"
                | "default"
                | "$comment"
                | "deprecated"
                | "readOnly"
                | "writeOnly"
        )
}

impl Node {
    /// Compiles a subschema; `None` when it uses something the plan does not cover.
    fn compile(schema: &Value, path: &str) -> Option<Node> {
        let obj = schema.as_object()?;
        let mut node = Node {
            path: path.to_owned(),
            types: None,
            enumeration: None,
            constant: None,
            format: None,
            pattern: None,
            min_length: None,
            max_length: None,
            minimum: None,
            maximum: None,
            exclusive_minimum: None,
            exclusive_maximum: None,
            any_of: Vec::new(),
        };
        for (key, value) in obj {
            match key.as_str() {
                k if is_annotation(k) => {}
                "type" => node.types = Some(TypeSet::from_schema(schema).ok()?),
                "enum" => node.enumeration = Some(Literals::from_values(value.as_array()?)?),
                "const" => node.constant = Some(Literals::from_values([value])?),
                "format" => {
                    node.format = Some(match value.as_str()? {
                        "date" => Format::Date,
                        "date-time" => Format::DateTime,
                        _ => return None,
                    });
                }
                "pattern" => {
                    let rust = jsonschema_regex::to_rust_regex(value.as_str()?).ok()?;
                    node.pattern = Some(regex::Regex::new(&rust).ok()?);
                }
                "minLength" => node.min_length = Some(value.as_u64()?),
                "maxLength" => node.max_length = Some(value.as_u64()?),
                "minimum" => node.minimum = Some(value.as_f64()?),
                "maximum" => node.maximum = Some(value.as_f64()?),
                "exclusiveMinimum" => node.exclusive_minimum = Some(value.as_f64()?),
                "exclusiveMaximum" => node.exclusive_maximum = Some(value.as_f64()?),
                "anyOf" => {
                    for (i, branch) in value.as_array()?.iter().enumerate() {
                        node.any_of
                            .push(Node::compile(branch, &format!("{path}/anyOf/{i}"))?);
                    }
                }
                _ => return None,
            }
        }
        Some(node)
    }

    fn fail(&self, code: Code, keyword: &str) -> Violation {
        Violation {
            code,
            rule: keyword.to_owned(),
            schema_path: format!("{}/{keyword}", self.path),
        }
    }

    /// The first keyword the cell breaks, in a fixed order.
    fn check(&self, cell: Cell<'_>) -> Option<Violation> {
        if let Some(types) = self.types {
            let ok = match cell {
                Cell::Null => types.null,
                Cell::Str(_) => types.string,
                Cell::Bool(_) => types.boolean,
                Cell::Num(n, _) => types.number || (types.integer && n.fract() == 0.0),
            };
            if !ok {
                let code = if cell == Cell::Null {
                    Code::ValueRequired
                } else {
                    Code::ValueWrongType
                };
                return Some(self.fail(code, "type"));
            }
        }
        if let Some(e) = &self.enumeration
            && !e.contains(cell)
        {
            return Some(self.fail(Code::ValueNotInList, "enum"));
        }
        if let Some(c) = &self.constant
            && !c.contains(cell)
        {
            return Some(self.fail(Code::ValueNotInList, "const"));
        }
        match cell {
            Cell::Str(s) => {
                if let Some(f) = self.format {
                    let ok = match f {
                        Format::Date => is_valid_date(s),
                        Format::DateTime => is_valid_datetime(s),
                    };
                    if !ok {
                        return Some(self.fail(Code::ValueBadDate, "format"));
                    }
                }
                if let Some(p) = &self.pattern
                    && !p.is_match(s)
                {
                    return Some(self.fail(Code::ValuePattern, "pattern"));
                }
                // A string of b bytes has between b/4 (rounded up) and b code points: they are
                // counted only when the bytes leave a bound undecided.
                let bytes = s.len() as u64;
                let count = || s.chars().count() as u64;
                if self
                    .min_length
                    .is_some_and(|m| bytes < m || (bytes.div_ceil(4) < m && count() < m))
                {
                    return Some(self.fail(Code::ValueLength, "minLength"));
                }
                if self.max_length.is_some_and(|m| bytes > m && count() > m) {
                    return Some(self.fail(Code::ValueLength, "maxLength"));
                }
            }
            Cell::Num(n, exact) => {
                use std::cmp::Ordering::{Greater, Less};
                let cmp = |limit: f64| match exact {
                    Some(i) => cmp_i64_f64(i, limit),
                    None => n.partial_cmp(&limit).unwrap_or(std::cmp::Ordering::Equal),
                };
                // (bound, keyword, the comparison of value to bound that breaks it, negated?)
                let checks = [
                    (self.minimum, "minimum", Less, false),
                    (self.maximum, "maximum", Greater, false),
                    (self.exclusive_minimum, "exclusiveMinimum", Greater, true),
                    (self.exclusive_maximum, "exclusiveMaximum", Less, true),
                ];
                for (bound, keyword, ordering, negated) in checks {
                    if let Some(limit) = bound
                        && (cmp(limit) == ordering) != negated
                    {
                        return Some(self.fail(Code::ValueOutOfRange, keyword));
                    }
                }
            }
            Cell::Null | Cell::Bool(_) => {}
        }
        if !self.any_of.is_empty() {
            let mut first = None;
            for branch in &self.any_of {
                match branch.check(cell) {
                    None => return None,
                    Some(v) => {
                        first.get_or_insert(v);
                    }
                }
            }
            return first;
        }
        None
    }
}

/// Compares a whole number with a float exactly (as `jsonschema` does), even beyond 2^53.
fn cmp_i64_f64(v: i64, limit: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    if limit >= 9_223_372_036_854_775_808.0 {
        return Ordering::Less;
    }
    if limit < -9_223_372_036_854_775_808.0 {
        return Ordering::Greater;
    }
    let floor = limit.floor();
    match v.cmp(&(floor as i64)) {
        Ordering::Equal if limit > floor => Ordering::Less,
        other => other,
    }
}

fn two_digits(b: &[u8]) -> Option<u32> {
    (b[0].is_ascii_digit() && b[1].is_ascii_digit())
        .then(|| u32::from(b[0] - b'0') * 10 + u32::from(b[1] - b'0'))
}

/// RFC 3339 `full-date`, exactly as `jsonschema` checks it.
pub fn is_valid_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !b[..4].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let year: u32 = b[..4].iter().fold(0, |a, d| a * 10 + u32::from(d - b'0'));
    let (Some(month), Some(day)) = (two_digits(&b[5..7]), two_digits(&b[8..10])) else {
        return false;
    };
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    let max = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=max).contains(&day)
}

/// RFC 3339 `full-time` (with the leap-second rule), exactly as `jsonschema` checks it.
fn is_valid_time(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 9 || b[2] != b':' || b[5] != b':' {
        return false;
    }
    let (Some(hour), Some(minute), Some(second)) = (
        two_digits(&b[..2]),
        two_digits(&b[3..5]),
        two_digits(&b[6..8]),
    ) else {
        return false;
    };
    if hour > 23 || minute > 59 || second > 60 {
        return false;
    }
    let mut i = 8;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return false;
        }
        i += digits;
    }
    let Some(&sign) = b.get(i) else { return false };
    match sign {
        b'Z' | b'z' => i == b.len() - 1 && (second != 60 || (hour == 23 && minute == 59)),
        b'+' | b'-' => {
            if b.len() - i != 6 || b[i + 3] != b':' {
                return false;
            }
            let (Some(oh), Some(om)) = (two_digits(&b[i + 1..i + 3]), two_digits(&b[i + 4..i + 6]))
            else {
                return false;
            };
            if oh > 23 || om > 59 {
                return false;
            }
            if second != 60 {
                return true;
            }
            // A leap second must fall at 23:59 UTC.
            let local = i32::try_from(hour * 60 + minute).unwrap_or(0);
            let offset = i32::try_from(oh * 60 + om).unwrap_or(0);
            let utc = if sign == b'+' {
                local - offset
            } else {
                local + offset
            };
            utc.rem_euclid(24 * 60) == 23 * 60 + 59
        }
        _ => false,
    }
}

/// RFC 3339 `date-time` (`T` or `t` between date and time), exactly as `jsonschema` checks it.
pub fn is_valid_datetime(s: &str) -> bool {
    match s.bytes().position(|c| c == b'T' || c == b't') {
        Some(t) => is_valid_date(&s[..t]) && is_valid_time(&s[t + 1..]),
        None => false,
    }
}

/// The compiled columnar plan of a record schema.
pub struct Plan {
    nodes: Vec<Option<Node>>,
    /// The reference validator, when some construct is not covered by the plan.
    fallback: Option<jsonschema::Validator>,
}

impl Plan {
    /// Compiles the plan; constructs it cannot express are left to `jsonschema`.
    pub fn compile(schema: &RecordSchema) -> Result<Plan, String> {
        let nodes: Vec<Option<Node>> = schema
            .properties
            .iter()
            .map(|p| {
                Node::compile(
                    &p.schema,
                    &format!("/properties/{}", escape_pointer(&p.name)),
                )
            })
            .collect();
        let root_covered = schema.resolved.as_object().is_some_and(|o| {
            o.iter().all(|(k, v)| {
                is_annotation(k)
                    || matches!(k.as_str(), "$schema" | "$id" | "properties" | "required")
                    || (k == "type" && v == "object")
                    // Rows hold only the schema's own properties, so this can never fail.
                    || k == "additionalProperties"
            })
        });
        let fallback = if root_covered && nodes.iter().all(Option::is_some) {
            None
        } else {
            Some(schema.compile_reference()?)
        };
        Ok(Plan { nodes, fallback })
    }

    /// Whether every row also goes through `jsonschema`.
    pub fn uses_fallback(&self) -> bool {
        self.fallback.is_some()
    }

    /// Checks one cell of a property the plan covers.
    pub fn check_cell(
        &self,
        property: usize,
        types: TypeSet,
        text: Option<&str>,
    ) -> Option<Violation> {
        self.check_read(property, read_cell(types, text))
    }

    /// Checks a cell already read (see [`read_cell`]).
    fn check_read(&self, property: usize, cell: Cell<'_>) -> Option<Violation> {
        self.nodes[property].as_ref().and_then(|n| n.check(cell))
    }
}

fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Where the upload came from: what force and period its rows must belong to.
#[derive(Debug, Clone, Default)]
pub struct UploadScope {
    /// The force's canonical id, from the upload folder.
    pub force: Option<String>,
    /// The period, from the upload folder.
    pub period: Option<Period>,
    /// When the upload is processed (the caller's clock): records dated later are in the future.
    pub now: Option<DateTime<Utc>>,
}

/// A file-level error when the upload's month has not begun at the time of processing.
pub fn period_not_begun(scope: &UploadScope) -> Option<Finding> {
    let (period, now) = (scope.period?, scope.now?);
    let starts = period
        .first_day()
        .and_time(chrono::NaiveTime::MIN)
        .and_utc();
    (starts > now).then(|| {
        Finding::new(
            Code::PeriodNotBegun,
            format!(
                "the file was uploaded for {period}, a month that has not begun yet (it is {} UTC)",
                now.format("%Y-%m-%d %H:%M")
            ),
            "period begun",
        )
        .with_value(period.to_string())
    })
}

/// Counts and rates per property, for the report.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ColumnStats {
    /// Property name.
    pub property: String,
    /// The header spelling, or `None` when the column was not sent.
    pub header: Option<String>,
    /// Blank cells among decoded rows.
    pub blanks: u64,
    /// Share of blank cells.
    pub blank_rate: f64,
    /// Cells with an error.
    pub errors: u64,
}

/// What checking an upload takes from its pipeline: the schema, the rules it declares, how
/// cells are read, the blank-rate thresholds, and how findings turn into a decision. The
/// service builds it from the pipeline file (`pipeline::check_settings`); `force-returns validate
/// --schema` builds it from a schema alone ([`CheckSettings::schema_only`]).
#[derive(Debug, Clone)]
pub struct CheckSettings {
    /// The record schema.
    pub schema: Arc<RecordSchema>,
    /// The declared plausibility rules, compiled against the schema.
    pub rules: Arc<RuleSet>,
    /// How cell values are read.
    pub reading: ReadingSettings,
    /// Blank-rate thresholds by property name.
    pub blank_rates: BTreeMap<String, BlankThreshold>,
    /// Share of rows with errors that may be left out of the snapshot (0 = any error rejects).
    pub max_error_row_share: f64,
    /// Examples of each code kept in the report.
    pub examples_per_code: usize,
    /// Findings of each code listed one by one in the findings CSV and table.
    pub findings_per_code: u64,
    /// Severity overrides by finding code.
    pub severity_overrides: BTreeMap<Code, Severity>,
    /// The checks across rows of an aggregate return against the metric catalogue.
    pub table: Option<Arc<TableCheck>>,
}

impl CheckSettings {
    /// Checking a file against `schema` alone: no declared rules, no blank-rate thresholds,
    /// placeholders read as by default, any error rejects.
    pub fn schema_only(schema: RecordSchema) -> CheckSettings {
        CheckSettings {
            schema: Arc::new(schema),
            rules: Arc::new(RuleSet::default()),
            reading: ReadingSettings::default(),
            blank_rates: BTreeMap::new(),
            max_error_row_share: 0.0,
            examples_per_code: crate::finding::DEFAULT_EXAMPLES_PER_CODE,
            findings_per_code: crate::finding::DEFAULT_LISTED_PER_CODE,
            severity_overrides: BTreeMap::new(),
            table: None,
        }
    }
}

/// Checks batches of one upload in turn, keeping the cross-row state.
pub struct Checker<'p> {
    settings: &'p CheckSettings,
    plan: Plan,
    scope: UploadScope,
    /// The upload's period as its token (`2020-01`, `2024-Q1`) and as days.
    period: Option<(String, DaySpan)>,
    rules: UploadRules<'p>,
    header: HeaderMap,
    blanks: Vec<u64>,
    cell_errors: Vec<u64>,
    rows_checked: u64,
    error_rows: Bitset,
    repeated_rows: RepeatFinder,
    unique: Vec<Option<RepeatFinder>>,
    /// Readings of values as Excel writes them, and their counts.
    normaliser: Normaliser,
    /// The rows of an aggregate return, for the checks against the metric catalogue.
    table: Option<TableRows<'p>>,
}

/// One distinct value of a column as judged: its finding, its reading (an index into the
/// column's readings) and its number (`Distinct::BLANK` when it is read as blank).
struct Memo {
    outcome: Option<Judged>,
    reading: Option<u32>,
    number: u32,
}

/// Distinct values remembered per column and batch before the memo gives up on that column
/// (an identifier or a timestamp never repeats; a code list always does, and a year of dates
/// within a batch does too).
const MEMO_LIMIT: usize = 1024;

/// What is wrong with one cell value.
#[derive(Debug, Clone)]
enum Judged {
    /// A schema keyword or a check against the upload, at its code's severity.
    Broken(Code, Violation),
    /// A rule the pipeline declares, at the rule's severity.
    Declared(rules::Hit),
}

/// What the checker concluded.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The decision.
    pub decision: Decision,
    /// Rows checked against the schema (decoded rows).
    pub rows_checked: u64,
    /// Rows with at least one error, including rows that could not be decoded.
    pub error_rows: u64,
    /// Per-column counts.
    pub columns: Vec<ColumnStats>,
    /// For an aggregate return, its figures given as numbers, by metric and breakdown.
    pub figures: Figures,
}

impl<'p> Checker<'p> {
    /// A checker for one upload whose header decoded as `header`.
    pub fn new(
        settings: &'p CheckSettings,
        scope: UploadScope,
        header: HeaderMap,
    ) -> Result<Self, String> {
        let schema = &settings.schema;
        let n = schema.properties.len();
        let unique = schema
            .properties
            .iter()
            .map(|p| p.unique.then(|| RepeatFinder::new(true)))
            .collect();
        let normaliser = Normaliser::new(schema, &settings.reading, scope.period);
        let table = settings
            .table
            .as_deref()
            .map(|t| t.rows(|p| header.column_name(schema, p)));
        Ok(Checker {
            settings,
            plan: Plan::compile(schema)?,
            period: scope.period.map(|p| (p.to_string(), DaySpan::of(p))),
            rules: UploadRules::new(&settings.rules, schema, scope.period, scope.now),
            normaliser,
            scope,
            header,
            blanks: vec![0; n],
            cell_errors: vec![0; n],
            rows_checked: 0,
            error_rows: Bitset::default(),
            repeated_rows: RepeatFinder::new(false),
            unique,
            table,
        })
    }

    /// Checks a batch; returns which of its rows are free of errors. Fails only when the local
    /// temporary files used to find repeats cannot be written.
    pub fn check_batch(
        &mut self,
        batch: &mut Batch,
        log: &mut FindingLog<'_>,
    ) -> std::io::Result<BooleanArray> {
        let mut row_ok = vec![true; batch.len()];
        self.rows_checked += batch.len() as u64;
        let mut distinct = Vec::with_capacity(batch.columns.len());
        let mut read_columns = Vec::new();
        for (slot, &p) in batch.properties.iter().enumerate() {
            let column = &batch.columns[slot];
            self.blanks[p] += column.null_count() as u64;
            let (numbering, read) = self.check_column(p, column, batch, &mut row_ok, log)?;
            distinct.push(numbering);
            read_columns.extend(read.map(|c| (slot, c)));
        }
        // Cells read otherwise than sent are replaced before anything else reads the batch.
        for (slot, column) in read_columns {
            batch.columns[slot] = column;
        }
        batch.distinct = distinct;
        if self.rules.has_row_rules() {
            self.check_rows(batch, &mut row_ok, log);
        }
        if let Some(fallback) = self.plan.fallback.take() {
            self.check_with_reference(&fallback, batch, &mut row_ok, log);
            self.plan.fallback = Some(fallback);
        }
        self.remember_rows(batch)?;
        if self.table.is_some() {
            self.check_table_rows(batch, &mut row_ok, log);
        }
        for (i, ok) in row_ok.iter().enumerate() {
            if !ok {
                self.error_rows.set(batch.rows[i] - 2);
            }
        }
        Ok(BooleanArray::from(row_ok))
    }

    /// Hands the rows the schema accepted to the table checks; a row they find an error in
    /// is left out like any other.
    fn check_table_rows(&mut self, batch: &Batch, row_ok: &mut [bool], log: &mut FindingLog<'_>) {
        let (Some(check), Some(rows)) = (self.settings.table.as_deref(), self.table.as_mut())
        else {
            return;
        };
        let column = |p: Option<usize>| p.and_then(|p| batch.column(p));
        let metric = column(Some(check.metric));
        let value = column(Some(check.value));
        let numerator = column(check.numerator);
        let denominator = column(check.denominator);
        let dimensions: Vec<Option<&StringArray>> = check
            .dimensions
            .iter()
            .map(|d| column(Some(d.property)))
            .collect();
        let mut cells_of_dimensions = vec![None; dimensions.len()];
        let mut found = table::Found::default();
        for (i, ok) in row_ok.iter_mut().enumerate() {
            if !*ok {
                continue;
            }
            for (slot, c) in cells_of_dimensions.iter_mut().zip(&dimensions) {
                *slot = text(*c, i);
            }
            let before = found.0.len();
            rows.push(
                Cells {
                    row: batch.rows[i],
                    metric: text(metric, i),
                    dimensions: &cells_of_dimensions,
                    value: text(value, i),
                    numerator: text(numerator, i),
                    denominator: text(denominator, i),
                },
                &mut found,
            );
            let overrides = &self.settings.severity_overrides;
            if found.0[before..]
                .iter()
                .any(|f| table_severity(overrides, f) == Severity::Error)
            {
                *ok = false;
            }
        }
        for f in found.0 {
            Self::record_table_finding(f, log);
        }
    }

    fn record_table_finding(f: table::TableFinding, log: &mut FindingLog<'_>) {
        if f.declared {
            log.push_declared(f.finding);
        } else {
            log.push(f.finding);
        }
    }

    /// Checks one column of a batch: its findings, its values numbered, and, when some cells
    /// are read otherwise than sent ([`Normaliser`]), the column as read.
    fn check_column(
        &mut self,
        p: usize,
        column: &StringArray,
        batch: &Batch,
        row_ok: &mut [bool],
        log: &mut FindingLog<'_>,
    ) -> std::io::Result<(Option<Distinct>, Option<StringArray>)> {
        let prop = &self.settings.schema.properties[p];
        let header = self.header.column_name(&self.settings.schema, p).to_owned();
        // Each distinct value is judged once per batch while the column keeps repeating itself
        // (code lists do); a column of distinct values (ids, times) skips the memo. The values
        // are numbered as they come, which the snapshot writer uses (`Batch::distinct`).
        let mut memo: HashMap<&str, u32, foldhash::fast::FixedState> =
            HashMap::with_capacity_and_hasher(MEMO_LIMIT, foldhash::fast::FixedState::default());
        let mut judged: Vec<Memo> = Vec::new();
        let mut distinct = Some(Distinct {
            of_row: Vec::with_capacity(batch.len()),
            first: Vec::new(),
        });
        let mut readings: Vec<Reading> = Vec::new();
        let mut read_rows: Vec<(usize, u32)> = Vec::new();
        let blank = self.judge(p, prop, None);
        for (i, (ok, &row)) in row_ok.iter_mut().zip(&batch.rows).enumerate() {
            let text = crate::ingest::cell(column, i);
            let (outcome, reading) = match (text, distinct.as_mut()) {
                (None, numbering) => {
                    if let Some(numbering) = numbering {
                        numbering.of_row.push(Distinct::BLANK);
                    }
                    (blank.clone(), None)
                }
                (Some(t), Some(numbering)) => {
                    if let Some(&k) = memo.get(t) {
                        let j = &judged[k as usize];
                        numbering.of_row.push(j.number);
                        (j.outcome.clone(), j.reading)
                    } else {
                        let (o, r) = self.judge_sent(p, prop, t, &mut readings);
                        if memo.len() < MEMO_LIMIT {
                            let number =
                                if r.is_some_and(|r| readings[r as usize] == Reading::Blank) {
                                    Distinct::BLANK
                                } else {
                                    numbering.first.push(i as u32);
                                    numbering.first.len() as u32 - 1
                                };
                            memo.insert(t, judged.len() as u32);
                            judged.push(Memo {
                                outcome: o.clone(),
                                reading: r,
                                number,
                            });
                            numbering.of_row.push(number);
                        } else {
                            distinct = None;
                        }
                        (o, r)
                    }
                }
                (Some(t), None) => self.judge_sent(p, prop, t, &mut readings),
            };
            let reading = reading.map(|r| (r, &readings[r as usize]));
            if let (Some((r, read)), Some(t)) = (reading, text)
                && read.rewritten().is_some()
            {
                read_rows.push((i, r));
                self.normaliser.count(p, read, t, row);
            }
            let read = reading.map(|(_, read)| read);
            match outcome {
                Some(Judged::Broken(code, v)) => {
                    let finding = self
                        .describe_read(prop, &header, text, read, code, &v)
                        .at_row(row);
                    if log.severity_of(finding.code) == Severity::Error {
                        *ok = false;
                        self.cell_errors[p] += 1;
                    }
                    log.push(finding);
                }
                Some(Judged::Declared(hit)) => {
                    if hit.severity == Severity::Error {
                        *ok = false;
                        self.cell_errors[p] += 1;
                    }
                    log.push_declared(hit.finding(&header, text).at_row(row));
                }
                None => {}
            }
            let value = match reading.and_then(|(_, read)| read.rewritten()) {
                Some(read) => read,
                None => text,
            };
            if let (Some(t), true) = (value, prop.unique) {
                let key = twox_hash::XxHash3_128::oneshot(t.as_bytes());
                if let Some(finder) = self.unique[p].as_mut() {
                    finder.add(key, row, t.as_bytes())?;
                }
            }
        }
        if read_rows.is_empty() {
            return Ok((distinct, None));
        }
        let (read, blanks) = crate::normalise::read_column(column, &read_rows, &readings);
        self.blanks[p] += blanks;
        Ok((distinct, Some(read)))
    }

    /// The finding and the reading of a value sent (not blank): a value its column refuses is
    /// read as Excel and records systems write values, where a reading passes ([`Normaliser`]);
    /// a placeholder is read as blank. A reading is added to `readings`.
    fn judge_sent(
        &self,
        p: usize,
        prop: &Property,
        text: &str,
        readings: &mut Vec<Reading>,
    ) -> (Option<Judged>, Option<u32>) {
        let passes = |t: &str| self.plan.check_cell(p, prop.types, Some(t)).is_none();
        let index = readings.len() as u32;
        if self.normaliser.is_blank(p, text, || passes(text)) {
            readings.push(Reading::Blank);
            return (self.judge(p, prop, None), Some(index));
        }
        let outcome = self.judge(p, prop, Some(text));
        let refused = outcome.as_ref().is_some_and(|judged| {
            matches!(
                judged,
                Judged::Broken(
                    Code::ValueWrongType
                        | Code::ValueNotInList
                        | Code::ValueBadDate
                        | Code::ValuePattern
                        | Code::ValueOutOfRange
                        | Code::ValueLength,
                    _
                )
            )
        });
        if !refused {
            return (outcome, None);
        }
        let Some(reading) = self.normaliser.read(p, prop, text, passes) else {
            return (outcome, None);
        };
        let outcome = match &reading {
            Reading::Ambiguous { .. } => Some(Judged::Broken(
                Code::ValueAmbiguousDate,
                Violation {
                    code: Code::ValueAmbiguousDate,
                    rule: "date reading".into(),
                    schema_path: String::new(),
                },
            )),
            read => self.judge(p, prop, read.rewritten().flatten()),
        };
        readings.push(reading);
        (outcome, Some(index))
    }

    /// [`Checker::describe`] for a cell read otherwise than sent: the message says what the
    /// cell held and how it was read (for personal columns, only the reading is shown).
    fn describe_read(
        &self,
        prop: &Property,
        header: &str,
        text: Option<&str>,
        reading: Option<&Reading>,
        code: Code,
        v: &Violation,
    ) -> Finding {
        let sent = text.unwrap_or("");
        match reading {
            None => self.describe(prop, header, text, code, v),
            Some(Reading::Blank) => {
                let mut f = self.describe(prop, header, None, code, v);
                f.message = format!("{} (the cell held `{sent}`, a placeholder for no value)", f.message);
                f.with_value(sent)
            }
            Some(Reading::Value { text: read, .. }) => {
                let mut f = self.describe(prop, header, Some(read), code, v);
                if !prop.pii.masked() {
                    f.message = format!("{} (the cell held `{sent}`, read as `{read}`)", f.message);
                    f = f.with_value(sent);
                }
                f
            }
            Some(Reading::Ambiguous {
                day_first,
                month_first,
            }) => Finding::new(
                code,
                format!(
                    "`{sent}` in {} is {day_first} read day first, as UK dates are written, which is outside {}, the {} of this upload; read month first it is {month_first}: neither is chosen",
                    prop.title,
                    self.scope.period.map(|p| p.to_string()).unwrap_or_default(),
                    self.scope.period.map_or("period", |p| p.cadence().word())
                ),
                v.rule.clone(),
            )
            .in_column(header)
            .with_value(sent),
        }
    }

    /// What is wrong with one cell value, or `None` when it is fine.
    fn judge(&self, p: usize, prop: &Property, text: Option<&str>) -> Option<Judged> {
        let cell = read_cell(prop.types, text);
        if let Some(v) = self.plan.check_read(p, cell) {
            return Some(Judged::Broken(v.code, v));
        }
        let text = text?;
        if prop.in_period
            && !self.settings.rules.governs_period(p)
            && let Some((_, days)) = &self.period
            && !days.holds(text)
            && (is_valid_date(text) || is_valid_datetime(text))
        {
            return Some(Judged::Broken(
                Code::DateOutOfPeriod,
                Violation {
                    code: Code::DateOutOfPeriod,
                    rule: "x-in-period".into(),
                    schema_path: String::new(),
                },
            ));
        }
        match prop.upload_context {
            Some(UploadContext::Force) => {
                if let (Some(force), Some(list)) = (&self.scope.force, &prop.codelist)
                    && let Some((i, _)) = list.lookup(text)
                    && &list.codes[i as usize].code != force
                {
                    return Some(Judged::Broken(
                        Code::ForceMismatch,
                        Violation {
                            code: Code::ForceMismatch,
                            rule: "x-upload-context".into(),
                            schema_path: String::new(),
                        },
                    ));
                }
            }
            Some(UploadContext::Period) => {
                if let Some((token, _)) = &self.period
                    && text != token
                {
                    return Some(Judged::Broken(
                        Code::PeriodMismatch,
                        Violation {
                            code: Code::PeriodMismatch,
                            rule: "x-upload-context".into(),
                            schema_path: String::new(),
                        },
                    ));
                }
            }
            None => {}
        }
        let number = match cell {
            Cell::Num(n, _) => Some(n),
            _ => None,
        };
        if let Some(hit) = self.rules.judge(p, text, number) {
            return Some(Judged::Declared(hit));
        }
        if let Some(list) = &prop.codelist
            && let Some((_, Spelling::Legacy)) = list.lookup(text)
        {
            return Some(Judged::Broken(
                Code::ValueLegacySpelling,
                Violation {
                    code: Code::ValueLegacySpelling,
                    rule: "x-codelist legacy".into(),
                    schema_path: String::new(),
                },
            ));
        }
        None
    }

    /// Runs the pipeline's consistency rules over a batch, reading the columns' numbering.
    fn check_rows(&mut self, batch: &Batch, row_ok: &mut [bool], log: &mut FindingLog<'_>) {
        let schema = &self.settings.schema;
        let mut columns: Vec<Option<rules::Column<'_>>> = std::iter::repeat_with(|| None)
            .take(schema.properties.len())
            .collect();
        for (slot, &p) in batch.properties.iter().enumerate() {
            columns[p] = Some(rules::Column {
                values: &batch.columns[slot],
                header: self.header.column_name(schema, p),
                numbered: batch
                    .distinct
                    .get(slot)
                    .and_then(Option::as_ref)
                    .map(|d| (d.of_row.as_slice(), d.first.as_slice())),
            });
        }
        self.rules
            .check_rows(&columns, &batch.rows, row_ok, &mut self.cell_errors, log);
    }

    fn describe(
        &self,
        prop: &Property,
        header: &str,
        text: Option<&str>,
        code: Code,
        v: &Violation,
    ) -> Finding {
        let name = &prop.title;
        let shown = text.unwrap_or("");
        let message = match code {
            Code::ValueRequired => format!("{name} is blank but must have a value"),
            Code::ValueWrongType => {
                format!("`{shown}` is not {} for {name}", type_words(prop.types))
            }
            Code::ValueNotInList => match &prop.codelist {
                Some(list) => format!(
                    "`{shown}` is not in the code list for {name} ({})",
                    list.title
                ),
                None => format!("`{shown}` is not an allowed value of {name}"),
            },
            Code::ValueBadDate => format!("`{shown}` is not a real date and time in ISO 8601 form"),
            Code::ValuePattern => format!(
                "`{shown}` does not have the required shape for {name} (pattern {})",
                prop.schema
                    .get("pattern")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
            ),
            Code::ValueOutOfRange => format!(
                "{shown} is outside the allowed range for {name} ({} to {})",
                bound(&prop.schema, "minimum", "exclusiveMinimum"),
                bound(&prop.schema, "maximum", "exclusiveMaximum")
            ),
            Code::ValueLength => format!("`{shown}` is too short or too long for {name}"),
            Code::DateOutOfPeriod => format!(
                "{shown} is not in {}, the {} this file was uploaded for",
                self.scope.period.map(|p| p.to_string()).unwrap_or_default(),
                self.scope.period.map_or("period", |p| p.cadence().word())
            ),
            Code::ForceMismatch => format!(
                "the row names force `{shown}`, but the file was uploaded by `{}`",
                self.scope.force.as_deref().unwrap_or("?")
            ),
            Code::PeriodMismatch => format!(
                "the row names period `{shown}`, but the file was uploaded for {}",
                self.scope.period.map(|p| p.to_string()).unwrap_or_default()
            ),
            Code::ValueLegacySpelling => {
                let canonical = prop
                    .codelist
                    .as_ref()
                    .and_then(|l| {
                        l.lookup(shown)
                            .map(|(i, _)| l.codes[i as usize].code.clone())
                    })
                    .unwrap_or_default();
                format!("`{shown}` is a legacy spelling in {name}; it is stored as `{canonical}`")
            }
            _ => format!("`{shown}` breaks the rule `{}` of {name}", v.rule),
        };
        let mut f = Finding::new(code, message, v.rule.clone()).in_column(header);
        if text.is_some() {
            f = f.with_value(shown);
        }
        if !v.schema_path.is_empty() {
            f = f.with_schema_path(v.schema_path.clone());
        }
        f
    }

    fn check_with_reference(
        &mut self,
        validator: &jsonschema::Validator,
        batch: &Batch,
        row_ok: &mut [bool],
        log: &mut FindingLog<'_>,
    ) {
        let schema = &self.settings.schema;
        for (i, ok) in row_ok.iter_mut().enumerate() {
            let object = row_object(schema, batch, i);
            for error in validator.iter_errors(&object) {
                let pointer = error.instance_path().to_string();
                let name = pointer.trim_start_matches('/');
                let Some(p) = schema.properties.iter().position(|q| q.name == name) else {
                    continue;
                };
                // Cells the plan covers were already reported by it.
                if self.plan.nodes[p].is_some() {
                    continue;
                }
                let header = self.header.column_name(schema, p).to_owned();
                let text = batch
                    .column(p)
                    .and_then(|c| crate::ingest::cell(c, i))
                    .map(str::to_owned);
                let mut f = Finding::new(
                    Code::ValueSchema,
                    format!("{}: {}", schema.properties[p].title, error.masked()),
                    "schema",
                )
                .at_row(batch.rows[i])
                .in_column(header)
                .with_schema_path(error.schema_path().to_string());
                if let Some(t) = text {
                    f = f.with_value(t);
                }
                if log.severity_of(Code::ValueSchema) == Severity::Error {
                    *ok = false;
                    self.cell_errors[p] += 1;
                }
                log.push(f);
            }
        }
    }

    /// Remembers each row's hash so that repeated rows are found at the end.
    fn remember_rows(&mut self, batch: &Batch) -> std::io::Result<()> {
        for (&hash, &row) in batch.row_hashes.iter().zip(&batch.rows) {
            self.repeated_rows.add(hash, row, &[])?;
        }
        Ok(())
    }

    /// Reports repeated rows and repeated values of `x-unique` columns, found in bounded memory.
    fn report_repeats(&mut self, log: &mut FindingLog<'_>) -> std::io::Result<()> {
        let repeated_rows = std::mem::replace(&mut self.repeated_rows, RepeatFinder::new(false));
        let row_is_error = log.severity_of(Code::DuplicateRow) == Severity::Error;
        repeated_rows.finish(|repeat| {
            let first = repeat.rows[0];
            for &row in &repeat.rows[1..] {
                log.push(
                    Finding::new(
                        Code::DuplicateRow,
                        format!("the row is identical in every cell to row {first}"),
                        "distinct rows",
                    )
                    .at_row(row),
                );
                if row_is_error {
                    self.error_rows.set(row - 2);
                }
            }
        })?;
        let unique_is_error = log.severity_of(Code::ValueNotUnique) == Severity::Error;
        for p in 0..self.unique.len() {
            let Some(finder) = self.unique[p].take() else {
                continue;
            };
            let prop = &self.settings.schema.properties[p];
            let header = self.header.column_name(&self.settings.schema, p).to_owned();
            finder.finish(|repeat| {
                let value = String::from_utf8_lossy(repeat.value.unwrap_or_default());
                for &row in repeat.rows {
                    log.push(not_unique(prop, &header, &value, repeat.rows, row));
                    if unique_is_error {
                        self.error_rows.set(row - 2);
                        self.cell_errors[p] += 1;
                    }
                }
            })?;
        }
        Ok(())
    }

    /// Ends the upload: blank rates, the decision and the column statistics. `decode_rejected`
    /// is how many rows could not be decoded (they count as error rows).
    pub fn finish(
        mut self,
        decode_rejected: u64,
        log: &mut FindingLog<'_>,
    ) -> std::io::Result<Verdict> {
        self.report_repeats(log)?;
        let mut figures = Figures::new();
        if let Some(rows) = self.table.take() {
            let mut found = table::Found::default();
            figures = rows.finish(&mut found);
            for f in found.0 {
                if let Some(row) = f.finding.row
                    && table_severity(&self.settings.severity_overrides, &f) == Severity::Error
                {
                    self.error_rows.set(row - 2);
                }
                Self::record_table_finding(f, log);
            }
        }
        let schema = &self.settings.schema;
        for note in self
            .normaliser
            .notes(schema, |p| self.header.column_name(schema, p))
        {
            log.push(note);
        }
        let rows = self.rows_checked;
        let mut columns = Vec::new();
        for (p, prop) in schema.properties.iter().enumerate() {
            let header = self.header.property_column[p].map(|c| self.header.headers[c].clone());
            let rate = if rows == 0 {
                0.0
            } else {
                self.blanks[p] as f64 / rows as f64
            };
            if header.is_some()
                && rows > 0
                && let Some(t) = self.settings.blank_rates.get(&prop.name)
            {
                let (severity, limit, key) = match (t.error_above, t.warn_above) {
                    (Some(e), _) if rate > e => (Severity::Error, e, "error_above"),
                    (_, Some(w)) if rate > w => (Severity::Warning, w, "warn_above"),
                    _ => (Severity::Info, 0.0, ""),
                };
                if severity > Severity::Info {
                    let held = match self.normaliser.placeholders_in(p) {
                        (0, _) | (_, None) => String::new(),
                        (n, Some(first)) => {
                            format!(", {n} of them holding a placeholder such as `{first}`")
                        }
                    };
                    log.push(
                        Finding::new(
                            Code::BlankRate,
                            format!(
                                "{} is blank in {} of {rows} rows ({:.1}%{held}), above the {} threshold of {:.1}%",
                                prop.title,
                                self.blanks[p],
                                rate * 100.0,
                                severity,
                                limit * 100.0
                            ),
                            format!("blank_rates.{}.{key}", prop.name),
                        )
                        .in_column(header.clone().unwrap_or_default())
                        .with_value(format!("{rate:.4}"))
                        .with_severity(severity),
                    );
                }
            }
            columns.push(ColumnStats {
                property: prop.name.clone(),
                header,
                blanks: self.blanks[p],
                blank_rate: rate,
                errors: self.cell_errors[p],
            });
        }
        let error_rows = self.error_rows.count() + decode_rejected;
        let total = rows + decode_rejected;
        let decision = if log.has_file_error() {
            Decision::Rejected
        } else if error_rows > 0 {
            let share = error_rows as f64 / total.max(1) as f64;
            if share > self.settings.max_error_row_share {
                Decision::Rejected
            } else {
                log.push(Finding::new(
                    Code::RowsExcluded,
                    format!(
                        "{error_rows} of {total} rows ({:.2}%) have errors and were left out of the snapshot",
                        share * 100.0
                    ),
                    "max_error_row_share",
                ));
                Decision::AcceptedWithWarnings
            }
        } else if log.has_at_least(Severity::Warning) {
            Decision::AcceptedWithWarnings
        } else {
            Decision::Accepted
        };
        Ok(Verdict {
            decision,
            rows_checked: rows,
            error_rows,
            columns,
            figures,
        })
    }
}

/// The text of row `i` of a column the upload may not have.
fn text(c: Option<&StringArray>, i: usize) -> Option<&str> {
    c.and_then(|c| crate::ingest::cell(c, i))
}

/// The severity a table finding has once the pipeline's overrides are applied (a catalogue
/// rule's own severity stands).
fn table_severity(overrides: &BTreeMap<Code, Severity>, f: &table::TableFinding) -> Severity {
    match overrides.get(&f.finding.code) {
        Some(&s) if !f.declared => s,
        _ => f.finding.severity,
    }
}

fn not_unique(prop: &Property, header: &str, value: &str, rows: &[u64], at: u64) -> Finding {
    let shown: Vec<String> = rows.iter().take(5).map(ToString::to_string).collect();
    let more = if rows.len() > 5 { ", ..." } else { "" };
    Finding::new(
        Code::ValueNotUnique,
        format!(
            "`{value}` appears {} times in {} (rows {}{more})",
            rows.len(),
            prop.title,
            shown.join(", ")
        ),
        "x-unique",
    )
    .at_row(at)
    .in_column(header)
    .with_value(value)
    .with_schema_path(format!(
        "/properties/{}/x-unique",
        escape_pointer(&prop.name)
    ))
}

fn type_words(t: TypeSet) -> &'static str {
    if t.integer && !t.number {
        "a whole number"
    } else if t.number {
        "a number"
    } else if t.boolean {
        "True or False"
    } else {
        "text"
    }
}

fn bound(schema: &Value, inclusive: &str, exclusive: &str) -> String {
    schema
        .get(inclusive)
        .or_else(|| schema.get(exclusive))
        .map_or_else(|| "any".to_owned(), ToString::to_string)
}

/// The JSON object of row `i` of a batch (what `jsonschema` validates).
pub fn row_object(schema: &RecordSchema, batch: &Batch, i: usize) -> Value {
    let mut map = serde_json::Map::new();
    for (slot, &p) in batch.properties.iter().enumerate() {
        let prop = &schema.properties[p];
        map.insert(
            prop.name.clone(),
            cell_to_json(prop.types, crate::ingest::cell(&batch.columns[slot], i)),
        );
    }
    Value::Object(map)
}

/// A growable set of row indexes.
#[derive(Default)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn set(&mut self, i: u64) {
        let word = (i / 64) as usize;
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (i % 64);
    }

    fn count(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::schema::CodeLists;

    /// A schema using every keyword the plan covers, with the edge cases that differ between
    /// naive implementations (integers written as floats, exclusive bounds, code points).
    const KEYWORDS: &str = r#"{
        "type": "object",
        "required": ["s"],
        "properties": {
            "s": {"type": "string", "minLength": 2, "maxLength": 4},
            "e": {"type": ["string", "null"], "enum": ["A", "b", "Ω", null]},
            "c": {"const": "fixed"},
            "n": {"type": ["number", "null"], "minimum": -1.5, "exclusiveMaximum": 10},
            "i": {"type": "integer", "exclusiveMinimum": 0, "maximum": 100},
            "f": {"type": ["number", "null"], "maximum": 9007199254740992},
            "b": {"type": ["boolean", "null"]},
            "p": {"type": "string", "pattern": "^\\d{4}-(0[1-9]|1[0-2])$"},
            "w": {"type": ["string", "null"], "pattern": "\\w+\\s"},
            "d": {"type": "string", "format": "date"},
            "t": {"type": ["string", "null"], "anyOf": [{"format": "date-time"}, {"format": "date"}]},
            "m": {"enum": [1, 2.5, true, "1"]},
            "any": {}
        }
    }"#;

    fn cell() -> impl Strategy<Value = Option<String>> {
        let fixed = prop::sample::select(vec![
            "",
            "A",
            "a",
            "b",
            "Ω",
            "ΩΩ",
            "fixed",
            "Fixed",
            "ab",
            "abcd",
            "abcde",
            "a\u{301}",
            "𝄞𝄞",
            "0",
            "-0",
            "5",
            "05",
            "5.0",
            "1e1",
            "10",
            "9.999",
            "-1.5",
            "-1.6",
            "100",
            "105",
            "2.5",
            "0.5",
            "1.25",
            "+5",
            ".5",
            "5.",
            "9007199254740993",
            "9007199254740992",
            "-9223372036854775808",
            "NaN",
            "inf",
            "-inf",
            "1e999",
            " 5",
            "5 ",
            "1",
            "true",
            "TRUE",
            "False",
            "yes",
            "2020-01",
            "2020-13",
            "２０２０-01",
            "2020-1",
            "word ",
            "word",
            "x y",
            "é ",
            "2020-02-29",
            "2019-02-29",
            "2020-02-30",
            "2020-04-31",
            "0000-01-01",
            "2020-1-01",
            "2020-01-01T00:00:00Z",
            "2020-01-01t00:00:00z",
            "2020-01-01T00:00:00+00:00",
            "2020-01-01T24:00:00Z",
            "2020-01-01T23:59:60Z",
            "2020-01-01T22:59:60-01:00",
            "2020-01-01T23:59:60+01:00",
            "2020-01-01T00:00:00.123+05:30",
            "2020-01-01T00:00:00.Z",
            "2020-01-01T00:00:00",
            "2020-01-01 00:00:00Z",
            "2020-01-01T00:00:00+5:30",
            "31/01/2020",
        ])
        .prop_map(str::to_owned);
        prop_oneof![
            3 => fixed.prop_map(|s| if s.is_empty() { None } else { Some(s) }),
            1 => "[0-9a-zA-Z:.+TZ -]{1,12}".prop_map(Some),
            1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| Some(f.to_string())),
            1 => (-20i64..120).prop_map(|i| Some(i.to_string())),
        ]
    }

    fn agree(schema: &RecordSchema, rows: &[Vec<Option<String>>]) {
        let plan = Plan::compile(schema).unwrap();
        assert!(!plan.uses_fallback(), "the plan should cover this schema");
        let reference = schema.compile_reference().unwrap();
        for row in rows {
            let mut object = serde_json::Map::new();
            let mut plan_bad = std::collections::BTreeSet::new();
            for (p, prop) in schema.properties.iter().enumerate() {
                let text = row[p % row.len()].as_deref();
                object.insert(prop.name.clone(), cell_to_json(prop.types, text));
                if plan.check_cell(p, prop.types, text).is_some() {
                    plan_bad.insert(prop.name.clone());
                }
            }
            let object = Value::Object(object);
            let reference_bad: std::collections::BTreeSet<String> = reference
                .iter_errors(&object)
                .map(|e| {
                    e.instance_path()
                        .to_string()
                        .trim_start_matches('/')
                        .split('/')
                        .next()
                        .unwrap_or("")
                        .to_owned()
                })
                .collect();
            assert_eq!(plan_bad, reference_bad, "row {object}");
        }
    }

    fn stop_search_schema() -> RecordSchema {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let project = crate::config::Project::load(root).unwrap();
        (*project.pipeline("stop_search").unwrap().schema).clone()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn plan_agrees_with_jsonschema_on_every_keyword(rows in prop::collection::vec(prop::collection::vec(cell(), 13), 1..8)) {
            let schema = RecordSchema::parse("keywords", KEYWORDS, &CodeLists::default()).unwrap();
            agree(&schema, &rows);
        }
    }

    fn stop_search_cell(schema: &RecordSchema) -> impl Strategy<Value = Vec<Option<String>>> {
        // Mostly real spellings from the code lists, mixed with near misses and noise.
        let mut pool: Vec<String> = schema
            .properties
            .iter()
            .filter_map(|p| p.codelist.as_ref())
            .flat_map(|l| {
                l.spellings()
                    .into_iter()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        pool.extend(
            [
                "white",
                "W 1",
                "Arrest ",
                "2020-01-31T10:00:00+00:00",
                "2020-01-31",
                "53.4",
                "-1.5",
                "60.1",
                "True",
                "false",
                "2020-01",
                "Jan-2020",
            ]
            .map(String::from),
        );
        pool.push("x".repeat(201));
        let n = schema.properties.len();
        prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(pool).prop_map(Some),
                1 => cell(),
            ],
            n,
        )
    }

    #[test]
    fn plan_agrees_with_jsonschema_on_the_stop_search_schema() {
        let schema = stop_search_schema();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 3000,
            ..ProptestConfig::default()
        });
        runner
            .run(
                &prop::collection::vec(stop_search_cell(&schema), 1..6),
                |rows| {
                    agree(&schema, &rows);
                    Ok(())
                },
            )
            .unwrap();
    }

    #[test]
    fn unsupported_keywords_fall_back_to_jsonschema() {
        let schema = RecordSchema::parse(
            "x",
            r#"{"type":"object","properties":{"a":{"type":"string","format":"email"},"n":{"multipleOf":0.5}}}"#,
            &CodeLists::default(),
        )
        .unwrap();
        assert!(Plan::compile(&schema).unwrap().uses_fallback());
    }

    proptest::proptest! {
        #[test]
        fn short_decimals_read_as_str_parse_reads_them(
            text in "[-+]?[0-9]{0,17}(\\.[0-9]{0,17})?",
            x in proptest::num::f64::ANY,
        ) {
            for text in [text, x.to_string(), format!("{x:.6}")] {
                let expected = text.parse::<f64>().ok();
                proptest::prop_assert_eq!(parse_f64(&text).map(f64::to_bits), expected.map(f64::to_bits), "{}", text);
            }
        }
    }

    #[test]
    fn formats_follow_rfc_3339() {
        assert!(is_valid_datetime("2020-01-01T00:00:00+00:00"));
        assert!(
            is_valid_datetime("2016-12-31T23:59:60Z"),
            "leap second at 23:59 UTC"
        );
        assert!(!is_valid_datetime("2016-12-31T22:59:60Z"));
        assert!(!is_valid_datetime("2020-01-01 00:00:00Z"));
        assert!(is_valid_date("2020-02-29"));
        assert!(!is_valid_date("2019-02-29"));
    }
}
