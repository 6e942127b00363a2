//! Declared rules: the plausibility checks a pipeline states in its profile (`[[rules]]` in
//! `pipelines/<dataset>.toml`), applied by one engine to every dataset.
//!
//! The record schema says what a value *can* be; a rule says what is *plausible*, with its own
//! threshold and severity. Four kinds (`docs/pipelines.md` documents every key):
//!
//! - `range`: a number outside `min` to `max` (`value_implausible`);
//! - `date_window`: a date outside the upload's month by less than `tolerance_hours`
//!   (`date_near_period`, at `near_severity`) or by more (`date_out_of_period`, at
//!   `far_severity`);
//! - `not_in_future`: a date later than the time of processing plus `tolerance_hours`
//!   (`date_in_future`);
//! - `consistency`: where every `when` condition holds, the `then` condition must hold too
//!   (`fields_inconsistent`).
//!
//! Its rules:
//!
//! - [`RuleSet::compile`] checks a profile's rules against the schema and returns every problem
//!   at once, each with the span of the key at fault (`config` turns spans into lines); what
//!   can be checked then is never left to run time.
//! - A rule's finding has the rule's severity, whatever `[decision.severity]` says; a row is
//!   left out of the snapshot only when that severity is `error`.
//! - One-field rules judge one value ([`UploadRules::judge`]): `validate` asks once per distinct
//!   value of a batch while its memo holds. A value is reported under the first rule it breaks,
//!   in the order of the file. Consistency rules run over a batch's columns
//!   ([`UploadRules::check_rows`]), evaluating each condition once per distinct value where the
//!   column is numbered; nothing is allocated per row but the findings.
//! - Time is given, never read: the time of processing comes from the caller.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, StringArray};
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use serde::Deserialize;
use toml::Spanned;

use crate::finding::{Code, Finding, FindingLog, Severity};
use crate::period::{DaySpan, Period};
use crate::schema::{CodeList, Property, RecordSchema};

/// The codes whose severity each rule sets (so `[decision.severity]` may not name them).
/// `date_out_of_period` is not among them: without a `date_window` rule, `x-in-period` gives it.
pub const DECLARED_CODES: &[Code] = &[
    Code::ValueImplausible,
    Code::DateNearPeriod,
    Code::DateInFuture,
    Code::FieldsInconsistent,
];

/// One `[[rules]]` entry as written in a pipeline file. Which keys a kind takes is checked by
/// [`RuleSet::compile`], so that every problem is reported at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDecl {
    /// A short identifier, unique in the file (`a-z`, `0-9`, `_`): findings name it as their rule.
    pub name: Spanned<String>,
    /// `range`, `date_window`, `not_in_future` or `consistency`.
    pub kind: Spanned<String>,
    /// The property a one-field rule checks.
    #[serde(default)]
    pub field: Option<Spanned<String>>,
    /// `range`: the smallest plausible value.
    #[serde(default)]
    pub min: Option<Spanned<f64>>,
    /// `range`: the largest plausible value.
    #[serde(default)]
    pub max: Option<Spanned<f64>>,
    /// `date_window`: how far outside the month is near it; `not_in_future`: how far after the
    /// time of processing is still allowed (clocks and time zones differ).
    #[serde(default)]
    pub tolerance_hours: Option<Spanned<f64>>,
    /// The severity of the rule's findings (every kind but `date_window`).
    #[serde(default)]
    pub severity: Option<Spanned<String>>,
    /// `date_window`: the severity of a date near the month.
    #[serde(default)]
    pub near_severity: Option<Spanned<String>>,
    /// `date_window`: the severity of a date further out.
    #[serde(default)]
    pub far_severity: Option<Spanned<String>>,
    /// `consistency`: conditions that must all hold for the rule to apply.
    #[serde(default)]
    pub when: Option<Spanned<Vec<ConditionDecl>>>,
    /// `consistency`: the condition that must then hold too.
    #[serde(default)]
    pub then: Option<Spanned<ConditionDecl>>,
    /// Why the rule exists, in plain words for forces; it ends the finding's message.
    #[serde(default)]
    pub why: Option<Spanned<String>>,
}

/// A condition on one field of a record: exactly one of `in`, `not_in` and `blank`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionDecl {
    /// The property.
    pub field: Spanned<String>,
    /// The value is one of these (a blank cell is not).
    #[serde(default, rename = "in")]
    pub is_in: Option<Spanned<Vec<Literal>>>,
    /// The value is none of these (a blank cell is none of them).
    #[serde(default)]
    pub not_in: Option<Spanned<Vec<Literal>>>,
    /// The cell is blank (`true`) or filled in (`false`).
    #[serde(default)]
    pub blank: Option<Spanned<bool>>,
}

/// A value in a condition: text (any spelling of a code-list value, or the exact text of a
/// free-text field) or a boolean.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Literal {
    /// Text.
    Text(String),
    /// A boolean.
    Bool(bool),
}

/// A problem with a pipeline's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RuleProblem {
    /// Where in the pipeline file, when known (byte offsets).
    pub span: Option<Range<usize>>,
    /// What is wrong.
    pub message: String,
}

/// A pipeline's rules, compiled against its schema.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Per property, its one-field rules (indexes into `rules`), in file order.
    by_property: Vec<Vec<usize>>,
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    why: Option<String>,
    check: Check,
}

#[derive(Debug, Clone)]
enum Check {
    Range {
        property: usize,
        min: Option<f64>,
        max: Option<f64>,
        severity: Severity,
    },
    DateWindow {
        property: usize,
        tolerance: Duration,
        near: Severity,
        far: Severity,
    },
    NotInFuture {
        property: usize,
        tolerance: Duration,
        severity: Severity,
    },
    Consistency {
        when: Vec<Condition>,
        then: Condition,
        severity: Severity,
        /// The `when` conditions in words (`Age range is "under 10"`).
        described: String,
    },
}

impl Check {
    fn property(&self) -> Option<usize> {
        match self {
            Check::Range { property, .. }
            | Check::DateWindow { property, .. }
            | Check::NotInFuture { property, .. } => Some(*property),
            Check::Consistency { .. } => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Condition {
    property: usize,
    title: String,
    test: Test,
}

#[derive(Debug, Clone)]
enum Test {
    In(Values),
    NotIn(Values),
    Blank(bool),
}

#[derive(Debug, Clone)]
enum Values {
    /// Codes of a code list, by index; any spelling of a code matches it.
    Codes {
        list: Arc<CodeList>,
        member: Vec<bool>,
    },
    /// `false` and `true`, read as the schema reads booleans (any case).
    Bools([bool; 2]),
    /// Exact texts.
    Texts(HashSet<String>),
}

impl Values {
    fn contains(&self, text: &str) -> bool {
        match self {
            Values::Codes { list, member } => {
                list.lookup(text).is_some_and(|(i, _)| member[i as usize])
            }
            Values::Bools(b) => read_bool(text).is_some_and(|v| b[usize::from(v)]),
            Values::Texts(t) => t.contains(text),
        }
    }
}

fn read_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

impl Test {
    fn holds(&self, text: Option<&str>) -> bool {
        match self {
            Test::In(v) => text.is_some_and(|t| v.contains(t)),
            Test::NotIn(v) => !text.is_some_and(|t| v.contains(t)),
            Test::Blank(blank) => text.is_none() == *blank,
        }
    }
}

/// Collects problems while compiling.
struct Problems(Vec<RuleProblem>);

impl Problems {
    fn at<T>(&mut self, spanned: &Spanned<T>, message: String) {
        self.0.push(RuleProblem {
            span: Some(spanned.span()),
            message,
        });
    }
}

fn severity(problems: &mut Problems, rule: &str, key: &str, value: &Spanned<String>) -> Severity {
    match value.get_ref().as_str() {
        "error" => Severity::Error,
        "warning" => Severity::Warning,
        "info" => Severity::Info,
        other => {
            problems.at(
                value,
                format!(
                    "rule `{rule}`: {key} `{other}` is not a severity (error, warning or info)"
                ),
            );
            Severity::Warning
        }
    }
}

/// Whether a (sub)schema states a `date` or `date-time` format anywhere (`anyOf` included).
fn states_date_format(schema: &serde_json::Value) -> bool {
    match schema {
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| {
            (k == "format" && matches!(v.as_str(), Some("date" | "date-time")))
                || states_date_format(v)
        }),
        serde_json::Value::Array(a) => a.iter().any(states_date_format),
        _ => false,
    }
}

impl RuleSet {
    /// Compiles a pipeline's rules against its schema, or returns every problem found.
    pub fn compile(decls: &[RuleDecl], schema: &RecordSchema) -> Result<RuleSet, Vec<RuleProblem>> {
        let mut problems = Problems(Vec::new());
        let mut names = HashSet::new();
        let mut rules = Vec::new();
        for decl in decls {
            let name = decl.name.get_ref().as_str();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                problems.at(
                    &decl.name,
                    format!("rule name `{name}` must be lower-case letters, digits and `_`"),
                );
            }
            if !names.insert(name) {
                problems.at(&decl.name, format!("rule name `{name}` is used twice"));
            }
            if let Some(check) = compile_check(decl, schema, &mut problems) {
                rules.push(Rule {
                    name: name.to_owned(),
                    why: decl.why.as_ref().map(|w| w.get_ref().trim().to_owned()),
                    check,
                });
            }
        }
        if !problems.0.is_empty() {
            return Err(problems.0);
        }
        let mut by_property = vec![Vec::new(); schema.properties.len()];
        for (i, rule) in rules.iter().enumerate() {
            if let Some(p) = rule.check.property() {
                by_property[p].push(i);
            }
        }
        Ok(RuleSet { rules, by_property })
    }

    /// Whether the set has no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// How many rules the set has.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether a `date_window` rule judges this property (its `x-in-period` check then defers
    /// to the rule's tolerance and severities).
    pub fn governs_period(&self, property: usize) -> bool {
        self.by_property.get(property).is_some_and(|rules| {
            rules
                .iter()
                .any(|&i| matches!(self.rules[i].check, Check::DateWindow { .. }))
        })
    }
}

/// Which keys each kind takes (besides `name`, `kind` and `why`).
const KEYS: &[(&str, &[&str])] = &[
    ("range", &["field", "min", "max", "severity"]),
    (
        "date_window",
        &["field", "tolerance_hours", "near_severity", "far_severity"],
    ),
    ("not_in_future", &["field", "tolerance_hours", "severity"]),
    ("consistency", &["when", "then", "severity"]),
];

fn compile_check(decl: &RuleDecl, schema: &RecordSchema, problems: &mut Problems) -> Option<Check> {
    let rule = decl.name.get_ref().as_str();
    let kind = decl.kind.get_ref().as_str();
    let Some((_, allowed)) = KEYS.iter().find(|(k, _)| *k == kind) else {
        problems.at(
            &decl.kind,
            format!(
                "rule `{rule}`: kind `{kind}` is not one of range, date_window, not_in_future, consistency"
            ),
        );
        return None;
    };
    let given: [(&str, Option<Range<usize>>); 10] = [
        ("field", decl.field.as_ref().map(Spanned::span)),
        ("min", decl.min.as_ref().map(Spanned::span)),
        ("max", decl.max.as_ref().map(Spanned::span)),
        (
            "tolerance_hours",
            decl.tolerance_hours.as_ref().map(Spanned::span),
        ),
        ("severity", decl.severity.as_ref().map(Spanned::span)),
        (
            "near_severity",
            decl.near_severity.as_ref().map(Spanned::span),
        ),
        (
            "far_severity",
            decl.far_severity.as_ref().map(Spanned::span),
        ),
        ("when", decl.when.as_ref().map(Spanned::span)),
        ("then", decl.then.as_ref().map(Spanned::span)),
        ("why", decl.why.as_ref().map(Spanned::span)),
    ];
    let mut complete = true;
    for (key, span) in &given {
        if *key != "why" && span.is_some() && !allowed.contains(key) {
            problems.0.push(RuleProblem {
                span: span.clone(),
                message: format!("rule `{rule}`: `{key}` does not apply to a `{kind}` rule"),
            });
        }
    }
    for key in *allowed {
        let optional = kind == "range" && matches!(*key, "min" | "max");
        if !optional && given.iter().any(|(k, s)| k == key && s.is_none()) {
            problems.at(
                &decl.kind,
                format!("rule `{rule}`: a `{kind}` rule needs `{key}`"),
            );
            complete = false;
        }
    }
    let field = decl
        .field
        .as_ref()
        .filter(|_| allowed.contains(&"field"))
        .and_then(|f| property(schema, f, rule, problems));
    let severity_of = |problems: &mut Problems, key: &str, value: &Option<Spanned<String>>| {
        value
            .as_ref()
            .map_or(Severity::Warning, |v| severity(problems, rule, key, v))
    };
    let tolerance = decl.tolerance_hours.as_ref().and_then(|t| {
        let hours = *t.get_ref();
        if hours.is_finite() && (0.0..=24.0 * 366.0).contains(&hours) {
            Some(Duration::seconds((hours * 3600.0).round() as i64))
        } else {
            problems.at(
                t,
                format!("rule `{rule}`: tolerance_hours must be between 0 and 8784 (a year), not {hours}"),
            );
            None
        }
    });
    match kind {
        "range" => {
            let severity = severity_of(problems, "severity", &decl.severity);
            let (min, max) = (decl.min.as_ref(), decl.max.as_ref());
            if min.is_none() && max.is_none() {
                problems.at(
                    &decl.kind,
                    format!("rule `{rule}`: a `range` rule needs `min`, `max` or both"),
                );
            }
            for bound in [min, max].into_iter().flatten() {
                if !bound.get_ref().is_finite() {
                    problems.at(
                        bound,
                        format!("rule `{rule}`: a bound must be a finite number"),
                    );
                }
            }
            if let (Some(lo), Some(hi)) = (min, max)
                && lo.get_ref() > hi.get_ref()
            {
                problems.at(
                    lo,
                    format!(
                        "rule `{rule}`: min {} is above max {}",
                        lo.get_ref(),
                        hi.get_ref()
                    ),
                );
            }
            let property = field?;
            let prop = &schema.properties[property];
            if !prop.types.reads_numbers() {
                problems.at(
                    decl.field.as_ref()?,
                    format!(
                        "rule `{rule}`: field `{}` is not a number in the schema, so a range cannot apply",
                        prop.name
                    ),
                );
            }
            Some(Check::Range {
                property,
                min: min.map(|m| *m.get_ref()),
                max: max.map(|m| *m.get_ref()),
                severity,
            })
        }
        "date_window" | "not_in_future" => {
            let near = severity_of(problems, "near_severity", &decl.near_severity);
            let far = severity_of(problems, "far_severity", &decl.far_severity);
            let severity = severity_of(problems, "severity", &decl.severity);
            let property = field?;
            let prop = &schema.properties[property];
            if !states_date_format(&prop.schema) {
                problems.at(
                    decl.field.as_ref()?,
                    format!(
                        "rule `{rule}`: field `{}` is not a date (its schema states no `date` or `date-time` format)",
                        prop.name
                    ),
                );
            }
            let tolerance = tolerance?;
            if !complete {
                return None;
            }
            Some(if kind == "date_window" {
                Check::DateWindow {
                    property,
                    tolerance,
                    near,
                    far,
                }
            } else {
                Check::NotInFuture {
                    property,
                    tolerance,
                    severity,
                }
            })
        }
        _ => {
            let severity = severity_of(problems, "severity", &decl.severity);
            if let Some(w) = decl.when.as_ref().filter(|w| w.get_ref().is_empty()) {
                problems.at(
                    w,
                    format!("rule `{rule}`: `when` needs at least one condition"),
                );
            }
            let when: Vec<Condition> = decl
                .when
                .iter()
                .flat_map(Spanned::get_ref)
                .filter_map(|c| condition(schema, c, rule, problems))
                .collect();
            let then = decl
                .then
                .as_ref()
                .and_then(|t| condition(schema, t.get_ref(), rule, problems));
            if !complete || when.len() != decl.when.as_ref().map_or(0, |w| w.get_ref().len()) {
                return None;
            }
            let described = when.iter().map(describe).collect::<Vec<_>>().join(" and ");
            Some(Check::Consistency {
                when,
                then: then?,
                severity,
                described,
            })
        }
    }
}

fn property(
    schema: &RecordSchema,
    field: &Spanned<String>,
    rule: &str,
    problems: &mut Problems,
) -> Option<usize> {
    let name = field.get_ref();
    let found = schema.properties.iter().position(|p| &p.name == name);
    if found.is_none() {
        problems.at(
            field,
            format!(
                "rule `{rule}`: field `{name}` is not a property of schema `{}`",
                schema.id
            ),
        );
    }
    found
}

fn condition(
    schema: &RecordSchema,
    decl: &ConditionDecl,
    rule: &str,
    problems: &mut Problems,
) -> Option<Condition> {
    let property = property(schema, &decl.field, rule, problems);
    let given = [
        decl.is_in.is_some(),
        decl.not_in.is_some(),
        decl.blank.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        problems.at(
            &decl.field,
            format!(
                "rule `{rule}`: the condition on `{}` needs exactly one of `in`, `not_in` and `blank`",
                decl.field.get_ref()
            ),
        );
        return None;
    }
    let prop = &schema.properties[property?];
    let test = if let Some(blank) = &decl.blank {
        Test::Blank(*blank.get_ref())
    } else if let Some(values) = &decl.is_in {
        Test::In(values_of(prop, values, rule, problems)?)
    } else {
        Test::NotIn(values_of(prop, decl.not_in.as_ref()?, rule, problems)?)
    };
    Some(Condition {
        property: property?,
        title: prop.title.clone(),
        test,
    })
}

fn values_of(
    prop: &Property,
    values: &Spanned<Vec<Literal>>,
    rule: &str,
    problems: &mut Problems,
) -> Option<Values> {
    let list = values.get_ref();
    if list.is_empty() {
        problems.at(
            values,
            format!(
                "rule `{rule}`: the list of values for `{}` is empty",
                prop.name
            ),
        );
        return None;
    }
    let before = problems.0.len();
    let out = if let Some(codes) = &prop.codelist {
        let mut member = vec![false; codes.codes.len()];
        for v in list {
            match v {
                Literal::Text(t) => match codes.lookup(t) {
                    Some((i, _)) => member[i as usize] = true,
                    None => problems.at(
                        values,
                        format!(
                            "rule `{rule}`: `{t}` is not in the code list of `{}` ({})",
                            prop.name, codes.id
                        ),
                    ),
                },
                Literal::Bool(b) => problems.at(
                    values,
                    format!(
                        "rule `{rule}`: `{b}` is not in the code list of `{}` ({})",
                        prop.name, codes.id
                    ),
                ),
            }
        }
        Values::Codes {
            list: Arc::clone(codes),
            member,
        }
    } else if prop.types.boolean && !prop.types.string && !prop.types.reads_numbers() {
        let mut b = [false; 2];
        for v in list {
            match v {
                Literal::Bool(x) => b[usize::from(*x)] = true,
                Literal::Text(t) => match read_bool(t) {
                    Some(x) => b[usize::from(x)] = true,
                    None => problems.at(
                        values,
                        format!(
                            "rule `{rule}`: `{t}` is not true or false, as `{}` is",
                            prop.name
                        ),
                    ),
                },
            }
        }
        Values::Bools(b)
    } else if prop.types.string {
        let mut texts = HashSet::new();
        for v in list {
            match v {
                Literal::Text(t) => {
                    texts.insert(t.clone());
                }
                Literal::Bool(b) => problems.at(
                    values,
                    format!("rule `{rule}`: `{b}` is not text, as `{}` is", prop.name),
                ),
            }
        }
        Values::Texts(texts)
    } else {
        problems.at(
            values,
            format!(
                "rule `{rule}`: `{}` has no code list and is neither text nor true/false, so `in` and `not_in` cannot apply (use `blank`, or a `range` rule)",
                prop.name
            ),
        );
        return None;
    };
    (problems.0.len() == before).then_some(out)
}

/// A condition in words, for messages (values come from the rule, not from a record).
fn describe(c: &Condition) -> String {
    let values = |v: &Values| -> Vec<String> {
        match v {
            Values::Codes { list, member } => list
                .codes
                .iter()
                .zip(member)
                .filter(|(_, m)| **m)
                .map(|(c, _)| format!("`{}`", c.code))
                .collect(),
            Values::Bools(b) => [false, true]
                .into_iter()
                .filter(|x| b[usize::from(*x)])
                .map(|x| format!("`{x}`"))
                .collect(),
            Values::Texts(t) => {
                let mut all: Vec<String> = t.iter().map(|s| format!("`{s}`")).collect();
                all.sort();
                all
            }
        }
    };
    let list = |v: &Values, negated: bool| {
        let all = values(v);
        let verb = match (all.len(), negated) {
            (1, false) => "is",
            (1, true) => "is not",
            (_, false) => "is one of",
            (_, true) => "is none of",
        };
        format!("{} {verb} {}", c.title, all.join(", "))
    };
    match &c.test {
        Test::In(v) => list(v, false),
        Test::NotIn(v) => list(v, true),
        Test::Blank(true) => format!("{} is blank", c.title),
        Test::Blank(false) => format!("{} is filled in", c.title),
    }
}

/// What a rule found wrong with a value.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The finding code.
    pub code: Code,
    /// The rule's severity for it.
    pub severity: Severity,
    /// The rule's name.
    pub rule: String,
    /// What is wrong, in plain words.
    pub message: String,
}

impl Hit {
    /// The finding, in `column` (its header spelling), about `value` as sent.
    pub fn finding(&self, column: &str, value: Option<&str>) -> Finding {
        let mut f = Finding::new(self.code, self.message.clone(), self.rule.clone())
            .in_column(column)
            .with_severity(self.severity);
        if let Some(v) = value {
            f = f.with_value(v);
        }
        f
    }
}

/// A batch column as the consistency rules read it.
pub struct Column<'a> {
    /// The cells (null where blank).
    pub values: &'a StringArray,
    /// The header spelling of the column.
    pub header: &'a str,
    /// The column's values as `validate` numbered them in this batch, when it did: per row the
    /// number of its value (a number with no first row is a blank), and per number the first
    /// row holding it.
    pub numbered: Option<(&'a [u32], &'a [u32])>,
}

/// A rule set prepared for one upload: its month and the time it is processed.
pub struct UploadRules<'r> {
    set: &'r RuleSet,
    titles: Vec<&'r str>,
    period: Option<Period>,
    days: Option<DaySpan>,
    start: NaiveDateTime,
    end: NaiveDateTime,
    now: Option<DateTime<Utc>>,
    /// No date of the month (in any time zone) can be later than now: the month ended over a
    /// day ago.
    month_settled: bool,
}

impl<'r> UploadRules<'r> {
    /// Prepares `set` (compiled against `schema`) for an upload of `period`, processed at `now`.
    pub fn new(
        set: &'r RuleSet,
        schema: &'r RecordSchema,
        period: Option<Period>,
        now: Option<DateTime<Utc>>,
    ) -> Self {
        let start = period.map_or(NaiveDateTime::MIN, |p| {
            p.first_day().and_time(chrono::NaiveTime::MIN)
        });
        let end = period.map_or(NaiveDateTime::MAX, |p| {
            p.next().first_day().and_time(chrono::NaiveTime::MIN)
        });
        let month_settled = match (period, now) {
            (Some(_), Some(now)) => end + Duration::days(1) <= now.naive_utc(),
            _ => false,
        };
        UploadRules {
            set,
            titles: schema.properties.iter().map(|p| p.title.as_str()).collect(),
            period,
            days: period.map(DaySpan::of),
            start,
            end,
            now,
            month_settled,
        }
    }

    /// Whether the set has consistency rules to run over batches.
    pub fn has_row_rules(&self) -> bool {
        self.set
            .rules
            .iter()
            .any(|r| matches!(r.check, Check::Consistency { .. }))
    }

    /// The first one-field rule, in file order, that a value of `property` breaks. `number` is
    /// the value read as a number, when the schema reads it as one.
    pub fn judge(&self, property: usize, text: &str, number: Option<f64>) -> Option<Hit> {
        let rules = self.set.by_property.get(property)?;
        rules.iter().find_map(|&i| {
            let rule = &self.set.rules[i];
            let (code, severity, message) = match &rule.check {
                Check::Range {
                    min, max, severity, ..
                } => {
                    let n = number?;
                    if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                        let bounds = match (min, max) {
                            (Some(lo), Some(hi)) => format!("{lo} to {hi}"),
                            (Some(lo), None) => format!("{lo} or more"),
                            (None, _) => format!("{} or less", max.unwrap_or_default()),
                        };
                        (
                            Code::ValueImplausible,
                            *severity,
                            format!(
                                "{text} is outside the plausible range of {} ({bounds})",
                                self.titles[property]
                            ),
                        )
                    } else {
                        return None;
                    }
                }
                Check::DateWindow {
                    tolerance,
                    near,
                    far,
                    ..
                } => self.window(text, *tolerance, *near, *far)?,
                Check::NotInFuture {
                    tolerance,
                    severity,
                    ..
                } => {
                    let now = self.now?;
                    if self.month_settled && self.in_period(text) {
                        return None;
                    }
                    let when = read_when(text)?;
                    if when.utc <= now + *tolerance {
                        return None;
                    }
                    (
                        Code::DateInFuture,
                        *severity,
                        format!(
                            "{text} is later than the time this file was processed ({} UTC)",
                            now.format("%Y-%m-%d %H:%M")
                        ),
                    )
                }
                Check::Consistency { .. } => return None,
            };
            Some(Hit {
                code,
                severity,
                rule: rule.name.clone(),
                message: with_why(message, rule.why.as_deref()),
            })
        })
    }

    fn in_period(&self, text: &str) -> bool {
        self.days.is_some_and(|d| d.holds(text))
    }

    fn window(
        &self,
        text: &str,
        tolerance: Duration,
        near: Severity,
        far: Severity,
    ) -> Option<(Code, Severity, String)> {
        let period = self.period?;
        if self.in_period(text) {
            return None;
        }
        let when = read_when(text)?;
        let (distance, side) = if when.to <= self.start {
            (self.start - when.to, "before")
        } else if when.from >= self.end {
            (when.from - self.end, "after")
        } else {
            return None;
        };
        if distance < tolerance {
            let how_far = if when.day {
                format!("the day {side}")
            } else {
                format!("{} {side}", span_words(distance))
            };
            let edge = if side == "before" { "begins" } else { "ends" };
            Some((
                Code::DateNearPeriod,
                near,
                format!(
                    "{text} is {how_far} {period} {edge}, the {word} this file was uploaded for; \
                     the pipeline takes up to {} either side of a {word} as near it",
                    span_words(tolerance),
                    word = period.cadence().word()
                ),
            ))
        } else {
            Some((
                Code::DateOutOfPeriod,
                far,
                format!(
                    "{text} is not in {period}, the {} this file was uploaded for",
                    period.cadence().word()
                ),
            ))
        }
    }

    /// Runs the consistency rules over a batch. `columns` is indexed by property (`None` where
    /// the file has no such column: a rule naming one does not apply). A finding with severity
    /// `error` marks its row as an error row and counts against the `then` column.
    pub fn check_rows(
        &self,
        columns: &[Option<Column<'_>>],
        rows: &[u64],
        row_ok: &mut [bool],
        cell_errors: &mut [u64],
        log: &mut FindingLog<'_>,
    ) {
        for rule in &self.set.rules {
            let Check::Consistency {
                when,
                then,
                severity,
                described,
            } = &rule.check
            else {
                continue;
            };
            let Some(evals) = when
                .iter()
                .map(|c| Some(Eval::new(c, columns.get(c.property)?.as_ref()?)))
                .collect::<Option<Vec<_>>>()
            else {
                continue;
            };
            let Some(then_column) = columns.get(then.property).and_then(Option::as_ref) else {
                continue;
            };
            let then_eval = Eval::new(then, then_column);
            for (i, &row) in rows.iter().enumerate() {
                if !evals.iter().all(|e| e.holds(i)) || then_eval.holds(i) {
                    continue;
                }
                let value = then_column
                    .values
                    .is_valid(i)
                    .then(|| then_column.values.value(i));
                let mut message = match value {
                    Some(v) => format!("{} is `{v}` where {described}", then.title),
                    None => format!("{} is blank where {described}", then.title),
                };
                if rule.why.as_deref().is_none_or(str::is_empty) {
                    let _ = write!(message, " (expected: {})", describe(then));
                }
                let hit = Hit {
                    code: Code::FieldsInconsistent,
                    severity: *severity,
                    rule: rule.name.clone(),
                    message: with_why(message, rule.why.as_deref()),
                };
                if *severity == Severity::Error {
                    row_ok[i] = false;
                    cell_errors[then.property] += 1;
                }
                log.push_declared(hit.finding(then_column.header, value).at_row(row));
            }
        }
    }
}

fn with_why(message: String, why: Option<&str>) -> String {
    match why {
        Some(w) if !w.is_empty() => format!("{message}: {w}"),
        _ => message,
    }
}

/// A condition ready for one batch column.
enum Eval<'a> {
    /// Its result per distinct value, looked up by each row's number.
    Numbered {
        of_row: &'a [u32],
        result: Vec<bool>,
        blank: bool,
    },
    /// Evaluated row by row (a column of too many distinct values to number).
    Direct {
        values: &'a StringArray,
        test: &'a Test,
    },
}

impl<'a> Eval<'a> {
    fn new(condition: &'a Condition, column: &Column<'a>) -> Eval<'a> {
        let values = column.values;
        let cell = |i: usize| values.is_valid(i).then(|| values.value(i));
        match column.numbered {
            Some((of_row, first)) => Eval::Numbered {
                of_row,
                result: first
                    .iter()
                    .map(|&row| condition.test.holds(cell(row as usize)))
                    .collect(),
                blank: condition.test.holds(None),
            },
            None => Eval::Direct {
                values,
                test: &condition.test,
            },
        }
    }

    fn holds(&self, i: usize) -> bool {
        match self {
            Eval::Numbered {
                of_row,
                result,
                blank,
            } => result.get(of_row[i] as usize).copied().unwrap_or(*blank),
            Eval::Direct { values, test } => {
                test.holds(values.is_valid(i).then(|| values.value(i)))
            }
        }
    }
}

/// A date or date-time as written: the wall-clock span it covers (an instant for a date-time,
/// the whole day for a date) and its start in UTC (a date alone is taken as midnight UTC, as
/// snapshots store it).
struct When {
    from: NaiveDateTime,
    to: NaiveDateTime,
    utc: DateTime<Utc>,
    day: bool,
}

fn read_when(text: &str) -> Option<When> {
    let day = |date: NaiveDate| {
        let from = date.and_time(chrono::NaiveTime::MIN);
        When {
            from,
            to: from + Duration::days(1),
            utc: from.and_utc(),
            day: true,
        }
    };
    if text.len() > 10
        && let Ok(t) = DateTime::parse_from_rfc3339(text)
    {
        let local = t.naive_local();
        return Some(When {
            from: local,
            to: local,
            utc: t.with_timezone(&Utc),
            day: false,
        });
    }
    // A date alone, or a date-time chrono does not read (every date-time the schema accepts
    // starts with its date): the day it names.
    NaiveDate::parse_from_str(text.get(..10)?, "%Y-%m-%d")
        .ok()
        .map(day)
}

/// A duration in words, to the minute: `30 minutes`, `2 hours 5 minutes`, `3 days`.
fn span_words(d: Duration) -> String {
    let minutes = d.num_minutes();
    let plural = |n: i64, one: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {one}s")
        }
    };
    if minutes < 1 {
        "less than a minute".to_owned()
    } else if minutes < 60 {
        plural(minutes, "minute")
    } else if minutes < 48 * 60 {
        match minutes % 60 {
            0 => plural(minutes / 60, "hour"),
            m => format!("{} {}", plural(minutes / 60, "hour"), plural(m, "minute")),
        }
    } else {
        plural(minutes / (24 * 60), "day")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::finding::{FindingSink, NoSink};
    use crate::schema::CodeLists;

    /// A schema with a number, a date, a code list with a legacy spelling, a boolean and text.
    fn schema() -> RecordSchema {
        let mut code_lists = CodeLists::default();
        code_lists.insert(
            CodeList::parse(
                "band",
                r#"{"id":"band","title":"Bands","codes":[
                    {"code":"child","label":"Child","legacy":["kid"]},
                    {"code":"adult","label":"Adult"}]}"#,
            )
            .unwrap(),
        );
        RecordSchema::parse(
            "things/v1",
            r#"{"type":"object","properties":{
                "n":{"title":"Number","type":["number","null"]},
                "d":{"title":"When","type":["string","null"],"anyOf":[{"format":"date-time"},{"format":"date"}]},
                "band":{"title":"Band","type":["string","null"],"x-codelist":"band"},
                "flag":{"title":"Flag","type":["boolean","null"]},
                "note":{"title":"Note","type":["string","null"]}}}"#,
            &code_lists,
        )
        .unwrap()
    }

    #[derive(Deserialize)]
    struct File {
        rules: Vec<RuleDecl>,
    }

    fn compile(toml_text: &str) -> Result<RuleSet, Vec<RuleProblem>> {
        let file: File = toml::from_str(toml_text).unwrap();
        RuleSet::compile(&file.rules, &schema())
    }

    fn line(text: &str, p: &RuleProblem) -> usize {
        text[..p.span.clone().unwrap().start].matches('\n').count() + 1
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    const WINDOW: &str = r#"
[[rules]]
name = "future"
kind = "not_in_future"
field = "d"
tolerance_hours = 2
severity = "error"

[[rules]]
name = "month"
kind = "date_window"
field = "d"
tolerance_hours = 1
near_severity = "warning"
far_severity = "error"
"#;

    #[test]
    fn every_problem_of_every_rule_is_reported_with_its_line() {
        let text = r#"
[[rules]]
name = "Bad Name"
kind = "range"
field = "nope"
min = 3.0
max = 1.0
severity = "fatal"

[[rules]]
name = "w"
kind = "date_window"
field = "n"
tolerance_hours = -1
near_severity = "warning"
far_severity = "error"
min = 1.0

[[rules]]
name = "c"
kind = "consistency"
when = [{ field = "band", in = ["teen"] }, { field = "flag", in = ["yes"] }]
then = { field = "note", in = ["x"], blank = true }
severity = "warning"

[[rules]]
name = "c"
kind = "sometimes"

[[rules]]
name = "r"
kind = "range"
field = "band"
severity = "info"
"#;
        let problems = compile(text).unwrap_err();
        let got: Vec<(usize, &str)> = problems
            .iter()
            .map(|p| (line(text, p), p.message.as_str()))
            .collect();
        let expected = [
            (
                3,
                "rule name `Bad Name` must be lower-case letters, digits and `_`",
            ),
            (
                5,
                "rule `Bad Name`: field `nope` is not a property of schema `things/v1`",
            ),
            (
                8,
                "rule `Bad Name`: severity `fatal` is not a severity (error, warning or info)",
            ),
            (6, "rule `Bad Name`: min 3 is above max 1"),
            (17, "rule `w`: `min` does not apply to a `date_window` rule"),
            (
                14,
                "rule `w`: tolerance_hours must be between 0 and 8784 (a year), not -1",
            ),
            (
                13,
                "rule `w`: field `n` is not a date (its schema states no `date` or `date-time` format)",
            ),
            (
                22,
                "rule `c`: `teen` is not in the code list of `band` (band)",
            ),
            (22, "rule `c`: `yes` is not true or false, as `flag` is"),
            (
                23,
                "rule `c`: the condition on `note` needs exactly one of `in`, `not_in` and `blank`",
            ),
            (27, "rule name `c` is used twice"),
            (
                28,
                "rule `c`: kind `sometimes` is not one of range, date_window, not_in_future, consistency",
            ),
            (32, "rule `r`: a `range` rule needs `min`, `max` or both"),
            (
                33,
                "rule `r`: field `band` is not a number in the schema, so a range cannot apply",
            ),
        ];
        assert_eq!(got, expected, "{got:#?}");
    }

    #[test]
    fn declared_codes_are_the_ones_rules_give() {
        for code in DECLARED_CODES {
            assert_ne!(*code, Code::DateOutOfPeriod);
        }
        let set = compile(WINDOW).unwrap();
        assert!(set.governs_period(1));
        assert!(!set.governs_period(0));
    }

    #[test]
    fn a_range_flags_values_outside_it_only() {
        let set = compile(
            r#"
[[rules]]
name = "lat"
kind = "range"
field = "n"
min = 49.8
max = 56.0
severity = "warning"
why = "the point should be in England and Wales"
"#,
        )
        .unwrap();
        let s = schema();
        let rules = UploadRules::new(&set, &s, None, None);
        for ok in [49.8, 50.0, 56.0] {
            assert!(rules.judge(0, "x", Some(ok)).is_none(), "{ok}");
        }
        assert!(
            rules.judge(0, "abc", None).is_none(),
            "not a number: the schema's business"
        );
        let hit = rules.judge(0, "57.1", Some(57.1)).unwrap();
        assert_eq!(hit.code, Code::ValueImplausible);
        assert_eq!(hit.severity, Severity::Warning);
        assert_eq!(hit.rule, "lat");
        assert_eq!(
            hit.message,
            "57.1 is outside the plausible range of Number (49.8 to 56): the point should be in England and Wales"
        );
        assert!(rules.judge(0, "-2.6", Some(-2.6)).is_some());
        assert!(
            rules.judge(2, "child", None).is_none(),
            "other fields are not judged"
        );
    }

    #[test]
    fn the_date_window_warns_near_the_month_and_errs_further_out() {
        let set = compile(WINDOW).unwrap();
        let s = schema();
        let jan = Period::new(2020, 1);
        let rules = UploadRules::new(&set, &s, jan, Some(at("2020-03-05T09:00:00Z")));
        let judged = |text: &str| rules.judge(1, text, None).map(|h| (h.code, h.severity));
        let near = Some((Code::DateNearPeriod, Severity::Warning));
        let far = Some((Code::DateOutOfPeriod, Severity::Error));
        for (text, expected) in [
            ("2020-01-01T00:00:00+00:00", None),
            ("2020-01-31T23:59:59+00:00", None),
            ("2020-01-15", None),
            ("2019-12-31T23:30:00+00:00", near),
            ("2019-12-31t23:30:00z", near),
            ("2019-12-31T23:00:01+01:00", near),
            ("2019-12-31T23:00:00+00:00", far),
            ("2019-12-31T22:59:59+00:00", far),
            ("2020-02-01T00:00:00+00:00", near),
            ("2020-02-01T00:59:59Z", near),
            ("2020-02-01T01:00:00Z", far),
            ("2019-12-31", near),
            ("2020-02-01", near),
            ("2019-12-30", far),
            ("2020-02-02", far),
            ("2016-12-31T23:59:60Z", far),
        ] {
            assert_eq!(judged(text), expected, "{text}");
        }
        let message = rules
            .judge(1, "2019-12-31T23:30:00+00:00", None)
            .unwrap()
            .message;
        assert_eq!(
            message,
            "2019-12-31T23:30:00+00:00 is 30 minutes before 2020-01 begins, the month this file \
             was uploaded for; the pipeline takes up to 1 hour either side of a month as near it"
        );
        assert!(
            rules
                .judge(1, "2020-02-01", None)
                .unwrap()
                .message
                .starts_with("2020-02-01 is the day after 2020-01 ends")
        );
    }

    #[test]
    fn dates_after_the_time_of_processing_are_in_the_future() {
        let set = compile(WINDOW).unwrap();
        let s = schema();
        let now = at("2020-01-15T12:00:00Z");
        let rules = UploadRules::new(&set, &s, Period::new(2020, 1), Some(now));
        let judged = |text: &str| rules.judge(1, text, None).map(|h| h.code);
        assert_eq!(
            judged("2020-01-15T13:59:59+00:00"),
            None,
            "within the tolerance"
        );
        assert_eq!(
            judged("2020-01-15T14:00:01+00:00"),
            Some(Code::DateInFuture)
        );
        assert_eq!(judged("2020-01-15"), None, "today, as a date");
        assert_eq!(judged("2020-01-16"), Some(Code::DateInFuture));
        // The future rule comes first in the file, so a far future date is reported by it.
        assert_eq!(judged("2099-01-01T00:00:00Z"), Some(Code::DateInFuture));
        assert_eq!(
            rules.judge(1, "2020-01-20", None).unwrap().message,
            "2020-01-20 is later than the time this file was processed (2020-01-15 12:00 UTC)"
        );
        // Without a time of processing there is no future.
        let timeless = UploadRules::new(&set, &s, Period::new(2020, 1), None);
        assert!(timeless.judge(1, "2020-01-20", None).is_none());
        // A month long over: dates in it are never in the future (and are not parsed).
        let later = UploadRules::new(
            &set,
            &s,
            Period::new(2020, 1),
            Some(at("2020-02-02T00:00:01Z")),
        );
        assert!(later.month_settled);
        assert!(later.judge(1, "2020-01-31T23:00:00-23:00", None).is_none());
        let early = UploadRules::new(
            &set,
            &s,
            Period::new(2020, 1),
            Some(at("2020-02-01T12:00:00Z")),
        );
        assert!(!early.month_settled);
        assert_eq!(
            early
                .judge(1, "2020-01-31T23:00:00-23:00", None)
                .map(|h| h.code),
            Some(Code::DateInFuture),
            "22:00 on 1 February in UTC"
        );
    }

    const CONSISTENCY: &str = r#"
[[rules]]
name = "child_flagged"
kind = "consistency"
when = [{ field = "band", in = ["child"] }, { field = "note", blank = false }]
then = { field = "flag", not_in = [true] }
severity = "error"
why = "children are never flagged"
"#;

    struct Collect(Vec<Finding>);
    impl FindingSink for Collect {
        fn accept(&mut self, f: &Finding) -> std::io::Result<()> {
            self.0.push(f.clone());
            Ok(())
        }
    }

    /// Runs the consistency rules over rows of (band, note, flag), numbered or not.
    fn run_rows(rows: &[[Option<&str>; 3]], numbered: bool) -> (Vec<bool>, Vec<u64>, Vec<Finding>) {
        let set = compile(CONSISTENCY).unwrap();
        let s = schema();
        let rules = UploadRules::new(&set, &s, None, None);
        assert!(rules.has_row_rules());
        let arrays: Vec<StringArray> = (0..3)
            .map(|c| StringArray::from(rows.iter().map(|r| r[c]).collect::<Vec<_>>()))
            .collect();
        // Numbering as validate's memo gives it: values in order of first appearance.
        let numbering: Vec<(Vec<u32>, Vec<u32>)> = arrays
            .iter()
            .map(|a| {
                let mut seen: Vec<&str> = Vec::new();
                let mut first = Vec::new();
                let of_row = (0..a.len())
                    .map(|i| {
                        if a.is_null(i) {
                            return u32::MAX;
                        }
                        let v = a.value(i);
                        seen.iter().position(|s| *s == v).unwrap_or_else(|| {
                            seen.push(v);
                            first.push(i as u32);
                            seen.len() - 1
                        }) as u32
                    })
                    .collect();
                (of_row, first)
            })
            .collect();
        let column = |c: usize, header: &'static str| {
            Some(Column {
                values: &arrays[c],
                header,
                numbered: numbered.then(|| (numbering[c].0.as_slice(), numbering[c].1.as_slice())),
            })
        };
        let columns = [
            None,
            None,
            column(0, "Band"),
            column(2, "Flag"),
            column(1, "Note"),
        ];
        let mut ok = vec![true; rows.len()];
        let mut errors = vec![0; 5];
        let mut sink = Collect(Vec::new());
        let mut log = FindingLog::new(10, BTreeMap::new(), &mut sink);
        let numbers: Vec<u64> = (2..2 + rows.len() as u64).collect();
        rules.check_rows(&columns, &numbers, &mut ok, &mut errors, &mut log);
        log.finish().unwrap();
        (ok, errors, sink.0)
    }

    #[test]
    fn consistency_rules_flag_rows_where_the_conditions_disagree() {
        let rows = [
            [Some("child"), Some("seen"), Some("True")],
            [Some("kid"), Some("seen"), Some("true")],
            [Some("Child"), Some("seen"), Some("false")],
            [Some("adult"), Some("seen"), Some("True")],
            [Some("child"), None, Some("True")],
            [None, Some("seen"), Some("True")],
            [Some("child"), Some("seen"), None],
            [Some("child"), Some("seen"), Some("TRUE")],
            [Some("teen"), Some("seen"), Some("True")],
        ];
        for numbered in [false, true] {
            let (ok, errors, findings) = run_rows(&rows, numbered);
            assert_eq!(
                ok,
                [false, false, true, true, true, true, true, false, true],
                "numbered {numbered}"
            );
            assert_eq!(errors, [0, 0, 0, 3, 0]);
            let flagged: Vec<u64> = findings.iter().filter_map(|f| f.row).collect();
            assert_eq!(flagged, [2, 3, 9]);
            let f = &findings[0];
            assert_eq!(f.code, Code::FieldsInconsistent);
            assert_eq!(
                (f.column.as_deref(), f.value.as_deref()),
                (Some("Flag"), Some("True"))
            );
            assert_eq!(f.rule, "child_flagged");
            assert_eq!(f.severity, Severity::Error);
            assert_eq!(
                f.message,
                "Flag is `True` where Band is `child` and Note is filled in: children are never flagged"
            );
        }
    }

    #[test]
    fn a_rule_naming_a_column_the_file_lacks_does_not_apply() {
        let set = compile(CONSISTENCY).unwrap();
        let s = schema();
        let rules = UploadRules::new(&set, &s, None, None);
        let band = StringArray::from(vec![Some("child")]);
        let columns = [
            None,
            None,
            Some(Column {
                values: &band,
                header: "Band",
                numbered: None,
            }),
            None,
            None,
        ];
        let mut sink = NoSink;
        let mut log = FindingLog::new(1, BTreeMap::new(), &mut sink);
        let mut ok = vec![true];
        rules.check_rows(&columns, &[2], &mut ok, &mut [0; 5], &mut log);
        assert!(ok[0]);
        assert!(log.finish().unwrap().is_empty());
    }

    /// Every example in `docs/pipelines.md`'s Rules section compiles: against the stop-and-search
    /// schema, or against a use-of-force-like schema for the shapes the next returns need.
    #[test]
    fn the_documented_examples_compile() {
        let docs = include_str!("../docs/pipelines.md");
        let section = &docs[docs.find("## Rules").unwrap()..docs.find("## The schedule").unwrap()];
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let project = crate::config::Project::load(root).unwrap();
        let stop_search = &project.pipeline("stop_search").unwrap().schema;
        let use_of_force = RecordSchema::parse(
            "use_of_force/v0",
            r#"{"type":"object","properties":{
                "taser_drawn":{"type":["boolean","null"]},
                "taser_fired":{"type":["boolean","null"]},
                "baton":{"type":["boolean","null"]},
                "baton_use":{"type":["string","null"]},
                "subject_outcome":{"type":["string","null"]},
                "subject_injured":{"type":["boolean","null"]}}}"#,
            &CodeLists::default(),
        )
        .unwrap();
        let mut blocks = 0;
        for block in section.split("```toml").skip(1) {
            let text = &block[..block.find("```").unwrap()];
            let file: File = toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            for rule in file.rules {
                let one = std::slice::from_ref(&rule);
                assert!(
                    RuleSet::compile(one, stop_search).is_ok()
                        || RuleSet::compile(one, &use_of_force).is_ok(),
                    "{}",
                    rule.name.get_ref()
                );
                blocks += 1;
            }
        }
        assert_eq!(blocks, 7);
    }

    #[test]
    fn spans_read_in_words() {
        assert_eq!(span_words(Duration::seconds(20)), "less than a minute");
        assert_eq!(span_words(Duration::minutes(1)), "1 minute");
        assert_eq!(span_words(Duration::minutes(125)), "2 hours 5 minutes");
        assert_eq!(span_words(Duration::hours(1)), "1 hour");
        assert_eq!(span_words(Duration::hours(72)), "3 days");
    }
}
