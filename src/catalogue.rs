//! The metric catalogue: what forces report as aggregate metrics, declared as data.
//!
//! A catalogue (`schemas/catalogue/v<N>.json`) lists metrics — counts, headcounts, rates per
//! 1,000, ratios and percentages — each with its unit, cadence, source dataset, dimensions (each
//! naming a code list), numerator and denominator where it is a rate or ratio, whether a return
//! must report it and in which breakdowns, its alignment with the published requirements (ADR,
//! HMICFRS, the Police Race Action Plan, the national performance framework) and the rules its
//! values must keep. This module parses one catalogue from its text against its JSON Schema
//! (`schemas/catalogue/catalogue.schema.json`) and checks what a schema cannot say: code lists
//! exist, one dimension name means one code list everywhere, numerators and denominators name
//! metrics with the dimensions they are fixed at, rules name the metric's dimensions, no metric
//! is its own numerator or denominator however far down. The rules a unit implies (counts are
//! never negative, a rate per 1,000 is at most 1,000, a rate agrees with its parts) are added
//! here, so every reader sees the same list. It does no IO: `config` reads the files.

pub mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::finding::Severity;
use crate::layout::edit_distance;
use crate::schema::{CodeLists, SchemaProblem};

/// What a metric's values are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// A number of events or records.
    Count,
    /// A number of people.
    Headcount,
    /// Full-time equivalent people.
    Fte,
    /// Numerator per 1,000 of the denominator.
    #[serde(rename = "rate_per_1000")]
    RatePer1000,
    /// Numerator divided by denominator.
    Ratio,
    /// Numerator per 100 of the denominator.
    Percent,
}

impl Unit {
    /// Its name in the catalogue.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "count",
            Unit::Headcount => "headcount",
            Unit::Fte => "fte",
            Unit::RatePer1000 => "rate_per_1000",
            Unit::Ratio => "ratio",
            Unit::Percent => "percent",
        }
    }

    /// Whether values add up (parts to a total): counts, headcounts and FTE.
    pub fn additive(self) -> bool {
        matches!(self, Unit::Count | Unit::Headcount | Unit::Fte)
    }

    /// What the numerator over the denominator is multiplied by, for the units that are one.
    pub fn scale(self) -> Option<f64> {
        match self {
            Unit::RatePer1000 => Some(1000.0),
            Unit::Percent => Some(100.0),
            Unit::Ratio => Some(1.0),
            Unit::Count | Unit::Headcount | Unit::Fte => None,
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One dimension of a metric: the column of a return that holds it, and its code list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dimension {
    /// The column name (one code list per name across the catalogue).
    pub name: String,
    /// The code list's id.
    pub codelist: String,
    /// The list's codes, in its order.
    pub codes: Vec<String>,
}

/// A numerator or denominator: another metric, at fixed codes of some of its dimensions
/// (summed where several are given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The metric's id.
    pub metric: String,
    /// Dimension name → the codes it is fixed at.
    pub at: BTreeMap<String, Vec<String>>,
}

impl Part {
    /// Its fixed codes in words, `ethnicity = White; tactic = CED + AEP` (empty when none).
    pub fn fixed(&self) -> String {
        self.at
            .iter()
            .map(|(name, codes)| format!("{name} = {}", codes.join(" + ")))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Where a metric lines up with a published requirement.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// The requirement as published (table, section, commitment or measure).
    #[serde(rename = "ref")]
    pub reference: String,
    /// False where the source could not be read to check it.
    pub verified: bool,
    /// Where it is published.
    #[serde(default)]
    pub url: Option<String>,
}

/// A metric's alignment with the four published frameworks (`None`: not part of it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alignment {
    /// The Home Office Annual Data Requirement.
    pub adr: Option<Reference>,
    /// HMICFRS inspection (PEEL) area.
    pub hmicfrs: Option<Reference>,
    /// The Police Race Action Plan.
    pub prap: Option<Reference>,
    /// The national performance framework.
    pub framework: Option<Reference>,
}

impl Alignment {
    /// The four, by the names the catalogue uses.
    pub fn entries(&self) -> [(&'static str, Option<&Reference>); 4] {
        [
            ("adr", self.adr.as_ref()),
            ("hmicfrs", self.hmicfrs.as_ref()),
            ("prap", self.prap.as_ref()),
            ("framework", self.framework.as_ref()),
        ]
    }
}

/// What a rule checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// The values at each code of `dimension` add up to the value with that dimension blank
    /// (the total), within `tolerance`.
    PartsAddToTotal {
        /// The dimension whose codes are the parts.
        dimension: String,
        /// The largest difference taken as rounding.
        tolerance: f64,
    },
    /// No value above `value`.
    AtMost {
        /// The greatest value allowed.
        value: f64,
    },
    /// No value below zero.
    NotNegative,
    /// Values are whole numbers.
    WholeNumber,
    /// A row's numerator is not above its denominator.
    NumeratorWithinDenominator,
    /// The value agrees with its numerator over its denominator (scaled by the unit), within
    /// `tolerance` of the value (relative).
    AgreesWithParts {
        /// The largest relative difference taken as rounding.
        tolerance: f64,
    },
}

impl Check {
    /// The rule's name in the catalogue.
    pub fn name(&self) -> &'static str {
        match self {
            Check::PartsAddToTotal { .. } => "parts_add_to_total",
            Check::AtMost { .. } => "at_most",
            Check::NotNegative => "not_negative",
            Check::WholeNumber => "whole_number",
            Check::NumeratorWithinDenominator => "numerator_within_denominator",
            Check::AgreesWithParts { .. } => "agrees_with_parts",
        }
    }

    /// The same rule for another (a rule of each name is declared once per metric, except
    /// `parts_add_to_total`, once per dimension).
    fn same_rule(&self, other: &Check) -> bool {
        match (self, other) {
            (
                Check::PartsAddToTotal { dimension: a, .. },
                Check::PartsAddToTotal { dimension: b, .. },
            ) => a == b,
            _ => self.name() == other.name(),
        }
    }
}

/// A rule a metric's values keep.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// What it checks.
    pub check: Check,
    /// The severity of a finding when it fails.
    pub severity: Severity,
    /// True when the metric's unit implies it rather than the catalogue declaring it.
    pub implied: bool,
}

impl Rule {
    /// The rule as the catalogue's JSON shows it.
    pub fn to_json(&self) -> Value {
        let mut out = json!({"rule": self.check.name(), "severity": self.severity.as_str()});
        match &self.check {
            Check::PartsAddToTotal {
                dimension,
                tolerance,
            } => {
                out["dimension"] = json!(dimension);
                out["tolerance"] = json!(tolerance);
            }
            Check::AtMost { value } => out["value"] = json!(value),
            Check::AgreesWithParts { tolerance } => out["tolerance"] = json!(tolerance),
            Check::NotNegative | Check::WholeNumber | Check::NumeratorWithinDenominator => {}
        }
        out["implied"] = json!(self.implied);
        out
    }
}

/// One metric of the catalogue.
#[derive(Debug, Clone)]
pub struct Metric {
    /// Its id (`stop_search_rate_per_1000`).
    pub id: String,
    /// Its title.
    pub title: String,
    /// What it counts, in words.
    pub definition: String,
    /// Its unit.
    pub unit: Unit,
    /// How often it is reported (`month`, `quarter`, `financial_year`, `snapshot`).
    pub cadence: String,
    /// The return it describes (`stop_search`, `workforce`, or `reference` for data the
    /// service ships).
    pub dataset: String,
    /// Its dimensions, in column order.
    pub dimensions: Vec<Dimension>,
    /// The numerator, for rates, ratios and percentages.
    pub numerator: Option<Part>,
    /// The denominator, for rates, ratios and percentages.
    pub denominator: Option<Part>,
    /// Codes the metric is never given for, by dimension name (a rate per 1,000 for ethnicity
    /// not stated has no population).
    pub not_for: BTreeMap<String, Vec<String>>,
    /// Whether a return must report it.
    pub mandatory: bool,
    /// For a count, the record-level return it can be computed from.
    pub computed_from: Option<ComputedFrom>,
    /// The breakdowns a return must report when mandatory: each a set of dimension names,
    /// every combination of their codes one row (`[]` is the total).
    pub breakdowns: Vec<Vec<String>>,
    /// Where it lines up with published requirements.
    pub alignment: Alignment,
    /// Its rules: those declared, then those its unit implies.
    pub rules: Vec<Rule>,
}

impl Metric {
    /// Its dimension of this name.
    pub fn dimension(&self, name: &str) -> Option<&Dimension> {
        self.dimensions.iter().find(|d| d.name == name)
    }

    /// Whether the metric is never given for `code` of dimension `name`.
    pub fn excludes(&self, name: &str, code: &str) -> bool {
        self.not_for
            .get(name)
            .is_some_and(|codes| codes.iter().any(|c| c == code))
    }

    /// The rows one of its breakdowns asks for: every combination of the codes of the
    /// breakdown's dimensions (the last fastest), less the codes the metric is never given
    /// for. A row holds, for each dimension of the breakdown in its order, the dimension and
    /// the code's position in its list. The total (`[]`) is one empty row.
    pub fn breakdown_rows(&self, breakdown: &[String]) -> Vec<Vec<(&Dimension, usize)>> {
        let dims: Vec<&Dimension> = breakdown
            .iter()
            .filter_map(|name| self.dimension(name))
            .collect();
        let mut rows = vec![Vec::new()];
        for d in dims {
            let given: Vec<usize> = (0..d.codes.len())
                .filter(|&c| !self.excludes(&d.name, &d.codes[c]))
                .collect();
            rows = rows
                .into_iter()
                .flat_map(|row: Vec<(&Dimension, usize)>| {
                    given.iter().map(move |&c| {
                        let mut row = row.clone();
                        row.push((d, c));
                        row
                    })
                })
                .collect();
        }
        rows
    }
}

/// The record-level return a count can be computed from, to reconcile the two.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ComputedFrom {
    /// The record-level dataset.
    pub dataset: String,
    /// The metric's dimension → the record-level return's dimension (a code-list property,
    /// or `<property>_<attribute>`) whose categories are the same codes.
    pub dimensions: BTreeMap<String, String>,
    /// The metric's dimension → the code that records with no value in it count under.
    #[serde(default)]
    pub blank: BTreeMap<String, String>,
}

/// A checked catalogue.
#[derive(Debug, Clone)]
pub struct MetricCatalogue {
    /// Its version (the N of `vN.json`).
    pub version: u32,
    /// Its title.
    pub title: String,
    /// What it is, in words.
    pub description: String,
    /// Its metrics in file order.
    pub metrics: Vec<Metric>,
}

#[derive(Deserialize)]
struct CatalogueFile {
    version: String,
    title: String,
    #[serde(default)]
    description: String,
    metrics: Vec<MetricFile>,
}

#[derive(Deserialize)]
struct DimensionFile {
    name: String,
    codelist: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PartFile {
    Id(String),
    At {
        metric: String,
        #[serde(default)]
        at: BTreeMap<String, Vec<String>>,
    },
}

#[derive(Deserialize)]
struct RuleFile {
    rule: String,
    #[serde(default)]
    severity: Option<Severity>,
    #[serde(default)]
    dimension: Option<String>,
    #[serde(default)]
    tolerance: Option<f64>,
    #[serde(default)]
    value: Option<f64>,
}

#[derive(Deserialize)]
struct MetricFile {
    id: String,
    title: String,
    definition: String,
    unit: Unit,
    cadence: String,
    dataset: String,
    dimensions: Vec<DimensionFile>,
    #[serde(default)]
    numerator: Option<PartFile>,
    #[serde(default)]
    denominator: Option<PartFile>,
    #[serde(default)]
    not_for: BTreeMap<String, Vec<String>>,
    mandatory: bool,
    #[serde(default)]
    computed_from: Option<ComputedFrom>,
    #[serde(default)]
    breakdowns: Option<Vec<Vec<String>>>,
    alignment: Alignment,
    #[serde(default)]
    rules: Vec<RuleFile>,
}

/// The relative difference between a rate and its parts taken as rounding unless a metric's
/// `agrees_with_parts` says otherwise: published figures carry one decimal or three
/// significant figures.
pub const DEFAULT_RATE_TOLERANCE: f64 = 0.01;

impl MetricCatalogue {
    /// Parses and checks a catalogue. `stem` is its file name without `.json` (`v1`);
    /// `meta_schema` is the catalogue's JSON Schema; `code_lists` the reference lists its
    /// dimensions name. Every problem is returned, each with the line of the metric it is in.
    pub fn parse(
        stem: &str,
        text: &str,
        meta_schema: &Value,
        code_lists: &CodeLists,
    ) -> Result<MetricCatalogue, Vec<SchemaProblem>> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            vec![SchemaProblem {
                message: format!("not valid JSON: {e}"),
                line: Some(e.line()),
            }]
        })?;
        let validator = crate::schema::reference_options()
            .build(meta_schema)
            .map_err(|e| {
                vec![SchemaProblem {
                    message: format!("the catalogue's own schema does not compile: {e}"),
                    line: None,
                }]
            })?;
        let shape: Vec<SchemaProblem> = validator
            .iter_errors(&value)
            .map(|e| {
                let path = e.instance_path().as_str().to_owned();
                SchemaProblem {
                    line: line_of_path(text, &value, &path),
                    message: format!("{}: {e}", if path.is_empty() { "/" } else { path.as_str() }),
                }
            })
            .collect();
        if !shape.is_empty() {
            return Err(shape);
        }
        let file: CatalogueFile = serde_json::from_value(value).map_err(|e| {
            vec![SchemaProblem {
                message: format!("does not read as a catalogue: {e}"),
                line: None,
            }]
        })?;
        Checker::new(text, code_lists).check(stem, file)
    }

    /// The metric of this id.
    pub fn metric(&self, id: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.id == id)
    }

    /// Every dimension name the catalogue uses, in first-use order, with its code list: the
    /// columns of an aggregate return.
    pub fn dimensions(&self) -> Vec<&Dimension> {
        let mut seen = BTreeSet::new();
        self.metrics
            .iter()
            .flat_map(|m| &m.dimensions)
            .filter(|d| seen.insert(d.name.as_str()))
            .collect()
    }

    /// The ids closest in spelling to `wanted`, best first (at most `n`), for a message naming
    /// the nearest valid ones.
    pub fn nearest_ids(&self, wanted: &str, n: usize) -> Vec<&str> {
        nearest(self.metrics.iter().map(|m| m.id.as_str()), wanted, n)
    }

    /// The catalogue as `force-returns catalogue --format json` prints it.
    pub fn to_json(&self) -> Value {
        let part = |p: &Option<Part>| match p {
            None => Value::Null,
            Some(p) => json!(p.metric),
        };
        let part_at = |p: &Option<Part>| match p {
            Some(p) if !p.at.is_empty() => json!(p.at),
            _ => Value::Null,
        };
        let metrics: Vec<Value> = self
            .metrics
            .iter()
            .map(|m| {
                let alignment: serde_json::Map<String, Value> =
                    m.alignment
                        .entries()
                        .into_iter()
                        .map(|(name, r)| {
                            let v = r.map_or(Value::Null, |r| {
                            json!({"ref": r.reference, "verified": r.verified, "url": r.url})
                        });
                            (name.to_owned(), v)
                        })
                        .collect();
                json!({
                    "id": m.id,
                    "title": m.title,
                    "definition": m.definition,
                    "unit": m.unit.as_str(),
                    "cadence": m.cadence,
                    "dataset": m.dataset,
                    "dimensions": m.dimensions.iter().map(|d| json!({
                        "name": d.name, "codelist": d.codelist, "codes": d.codes,
                    })).collect::<Vec<_>>(),
                    "numerator": part(&m.numerator),
                    "numerator_at": part_at(&m.numerator),
                    "denominator": part(&m.denominator),
                    "denominator_at": part_at(&m.denominator),
                    "not_for": m.not_for,
                    "mandatory": m.mandatory,
                    "computed_from": m.computed_from.as_ref().map(|c| json!({
                        "dataset": c.dataset, "dimensions": c.dimensions, "blank": c.blank,
                    })),
                    "breakdowns": m.breakdowns,
                    "alignment": alignment,
                    "rules": m.rules.iter().map(Rule::to_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "version": self.version.to_string(),
            "title": self.title,
            "metrics": metrics,
        })
    }
}

/// Up to `n` of `candidates` closest to `wanted` by edit distance (ignoring case), best first:
/// those within one edit of the best, and none further than a third of the wanted word's length
/// (at least two edits).
pub fn nearest<'a>(
    candidates: impl Iterator<Item = &'a str>,
    wanted: &str,
    n: usize,
) -> Vec<&'a str> {
    let wanted_lower = wanted.to_lowercase();
    let limit = (wanted.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, &str)> = candidates
        .map(|c| (edit_distance(&c.to_lowercase(), &wanted_lower), c))
        .filter(|&(d, _)| d <= limit)
        .collect();
    scored.sort_unstable();
    let best = scored.first().map_or(0, |&(d, _)| d);
    scored
        .into_iter()
        .take_while(|&(d, _)| d <= best + 1)
        .take(n)
        .map(|(_, c)| c)
        .collect()
}

/// The line of the innermost metric an instance path (`/metrics/3/unit`) points into.
fn line_of_path(text: &str, value: &Value, path: &str) -> Option<usize> {
    let index: usize = path
        .strip_prefix("/metrics/")?
        .split('/')
        .next()?
        .parse()
        .ok()?;
    let id = value["metrics"][index]["id"].as_str()?;
    line_of_metric(text, id)
}

/// The line of `"id": "<id>"` in the catalogue's text.
fn line_of_metric(text: &str, id: &str) -> Option<usize> {
    let needle = format!("\"{id}\"");
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with("\"id\"") && l.contains(&needle)
        })
        .map(|i| i + 1)
}

struct Checker<'a> {
    text: &'a str,
    code_lists: &'a CodeLists,
    problems: Vec<SchemaProblem>,
}

impl<'a> Checker<'a> {
    fn new(text: &'a str, code_lists: &'a CodeLists) -> Self {
        Checker {
            text,
            code_lists,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, metric: &str, message: impl fmt::Display) {
        self.problems.push(SchemaProblem {
            line: line_of_metric(self.text, metric),
            message: format!("metric `{metric}`: {message}"),
        });
    }

    fn check(
        mut self,
        stem: &str,
        file: CatalogueFile,
    ) -> Result<MetricCatalogue, Vec<SchemaProblem>> {
        let version = match stem.strip_prefix('v').and_then(|n| n.parse::<u32>().ok()) {
            Some(n) if n.to_string() == file.version => n,
            _ => {
                self.problems.push(SchemaProblem {
                    line: None,
                    message: format!(
                        "version `{}` does not match the file name `{stem}.json` (version N is in vN.json)",
                        file.version
                    ),
                });
                0
            }
        };
        let mut ids = BTreeSet::new();
        for m in &file.metrics {
            if !ids.insert(m.id.as_str()) {
                self.problem(&m.id, "is defined twice");
            }
        }
        let mut codelist_of: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut metrics: Vec<Metric> = Vec::with_capacity(file.metrics.len());
        for m in &file.metrics {
            let dimensions = self.dimensions(m, &mut codelist_of);
            let numerator = m.numerator.as_ref().map(part);
            let denominator = m.denominator.as_ref().map(part);
            let breakdowns = m.breakdowns.clone().unwrap_or_else(|| vec![Vec::new()]);
            for b in &breakdowns {
                for name in b {
                    if !dimensions.iter().any(|d| &d.name == name) {
                        self.problem(
                            &m.id,
                            format!("breakdown names `{name}`, which is not one of its dimensions"),
                        );
                    }
                }
            }
            for (name, codes) in &m.not_for {
                match dimensions.iter().find(|d| &d.name == name) {
                    None => self.problem(
                        &m.id,
                        format!("not_for names `{name}`, which is not one of its dimensions"),
                    ),
                    Some(d) => {
                        for code in codes.iter().filter(|c| !d.codes.contains(c)) {
                            self.problem(
                                &m.id,
                                format!(
                                    "not_for gives `{code}`, which is not a code of `{}`",
                                    d.codelist
                                ),
                            );
                        }
                    }
                }
            }
            if let Some(c) = &m.computed_from {
                if !matches!(m.unit, Unit::Count | Unit::Headcount) {
                    self.problem(
                        &m.id,
                        format!(
                            "computed_from is for counts of records; a {} is checked against its numerator and denominator instead",
                            m.unit
                        ),
                    );
                }
                for name in c.dimensions.keys().chain(c.blank.keys()) {
                    if !dimensions.iter().any(|d| &d.name == name) {
                        self.problem(
                            &m.id,
                            format!(
                                "computed_from names `{name}`, which is not one of its dimensions"
                            ),
                        );
                    }
                }
                for (name, code) in &c.blank {
                    if let Some(d) = dimensions.iter().find(|d| &d.name == name)
                        && !d.codes.contains(code)
                    {
                        self.problem(
                            &m.id,
                            format!(
                                "computed_from.blank gives `{code}`, which is not a code of `{}`",
                                d.codelist
                            ),
                        );
                    }
                }
            }
            let rules = self.rules(m, &dimensions);
            metrics.push(Metric {
                id: m.id.clone(),
                title: m.title.clone(),
                definition: m.definition.clone(),
                unit: m.unit,
                cadence: m.cadence.clone(),
                dataset: m.dataset.clone(),
                dimensions,
                numerator,
                denominator,
                not_for: m.not_for.clone(),
                mandatory: m.mandatory,
                computed_from: m.computed_from.clone(),
                breakdowns,
                alignment: m.alignment.clone(),
                rules,
            });
        }
        for m in &metrics {
            self.parts(m, &metrics);
        }
        self.cycles(&metrics);
        if self.problems.is_empty() {
            Ok(MetricCatalogue {
                version,
                title: file.title,
                description: file.description,
                metrics,
            })
        } else {
            Err(self.problems)
        }
    }

    fn dimensions(
        &mut self,
        m: &MetricFile,
        codelist_of: &mut BTreeMap<String, (String, String)>,
    ) -> Vec<Dimension> {
        let mut out: Vec<Dimension> = Vec::new();
        for d in &m.dimensions {
            if out.iter().any(|o| o.name == d.name) {
                self.problem(&m.id, format!("dimension `{}` is listed twice", d.name));
                continue;
            }
            match codelist_of.get(&d.name) {
                Some((list, first)) if list != &d.codelist => {
                    let message = format!(
                        "dimension `{}` uses code list `{}`, but metric `{first}` uses `{list}` for it: a dimension name is one column of a return, with one code list",
                        d.name, d.codelist
                    );
                    self.problem(&m.id, message);
                }
                Some(_) => {}
                None => {
                    codelist_of.insert(d.name.clone(), (d.codelist.clone(), m.id.clone()));
                }
            }
            let codes = if let Some(list) = self.code_lists.get(&d.codelist) {
                list.codes.iter().map(|c| c.code.clone()).collect()
            } else {
                self.problem(
                    &m.id,
                    format!(
                        "dimension `{}` names code list `{}`, which is not in schemas/reference/",
                        d.name, d.codelist
                    ),
                );
                Vec::new()
            };
            out.push(Dimension {
                name: d.name.clone(),
                codelist: d.codelist.clone(),
                codes,
            });
        }
        out
    }

    fn rules(&mut self, m: &MetricFile, dimensions: &[Dimension]) -> Vec<Rule> {
        let mut rules: Vec<Rule> = Vec::new();
        for r in &m.rules {
            let check = match r.rule.as_str() {
                "parts_add_to_total" => {
                    let dimension = r.dimension.clone().unwrap_or_default();
                    if !dimensions.iter().any(|d| d.name == dimension) {
                        self.problem(
                            &m.id,
                            format!("rule parts_add_to_total names `{dimension}`, which is not one of its dimensions"),
                        );
                    }
                    if !m.unit.additive() {
                        self.problem(
                            &m.id,
                            format!("rule parts_add_to_total is for counts, headcounts and FTE; a {} does not add up", m.unit),
                        );
                    }
                    Check::PartsAddToTotal {
                        dimension,
                        tolerance: r.tolerance.unwrap_or(0.0),
                    }
                }
                "at_most" => Check::AtMost {
                    value: r.value.unwrap_or(f64::INFINITY),
                },
                "agrees_with_parts" => Check::AgreesWithParts {
                    tolerance: r.tolerance.unwrap_or(DEFAULT_RATE_TOLERANCE),
                },
                "not_negative" => Check::NotNegative,
                "whole_number" => Check::WholeNumber,
                _ => Check::NumeratorWithinDenominator,
            };
            if rules.iter().any(|o| o.check.same_rule(&check)) {
                self.problem(&m.id, format!("rule {} is declared twice", check.name()));
            }
            rules.push(Rule {
                check,
                severity: r.severity.unwrap_or(Severity::Error),
                implied: false,
            });
        }
        for check in implied(m.unit, m.numerator.is_some() && m.denominator.is_some()) {
            if !rules.iter().any(|o| o.check.same_rule(&check)) {
                let severity = match check {
                    Check::AgreesWithParts { .. } | Check::AtMost { .. } => Severity::Warning,
                    _ => Severity::Error,
                };
                rules.push(Rule {
                    check,
                    severity,
                    implied: true,
                });
            }
        }
        rules
    }

    /// Checks a metric's numerator and denominator against the metrics they name.
    fn parts(&mut self, m: &Metric, all: &[Metric]) {
        match (m.unit.scale(), &m.numerator, &m.denominator) {
            (Some(_), Some(_), Some(_)) | (None, None, None) => {}
            (Some(_), _, _) => self.problem(
                &m.id,
                format!("a {} needs both a numerator and a denominator", m.unit),
            ),
            (None, _, _) => self.problem(
                &m.id,
                format!(
                    "a {} has no numerator or denominator; make it a rate, ratio or percent",
                    m.unit
                ),
            ),
        }
        for (role, part) in [("numerator", &m.numerator), ("denominator", &m.denominator)] {
            let Some(part) = part else { continue };
            let Some(target) = all.iter().find(|t| t.id == part.metric) else {
                let near = nearest(all.iter().map(|t| t.id.as_str()), &part.metric, 3);
                self.problem(
                    &m.id,
                    format!(
                        "its {role} `{}` is not a metric of the catalogue{}",
                        part.metric,
                        did_you_mean(&near)
                    ),
                );
                continue;
            };
            for (name, codes) in &part.at {
                let Some(d) = target.dimension(name) else {
                    self.problem(
                        &m.id,
                        format!("its {role} is fixed at `{name}`, which metric `{}` has no dimension of", target.id),
                    );
                    continue;
                };
                for code in codes {
                    if !d.codes.contains(code) {
                        let near = nearest(d.codes.iter().map(String::as_str), code, 3);
                        self.problem(
                            &m.id,
                            format!(
                                "its {role} is fixed at `{name}` = `{code}`, which is not a code of `{}`{}",
                                d.codelist,
                                did_you_mean(&near)
                            ),
                        );
                    }
                }
            }
            if role == "numerator" {
                for d in &m.dimensions {
                    match target.dimension(&d.name) {
                        Some(t) if !part.at.contains_key(&d.name) && t.codelist == d.codelist => {}
                        _ => self.problem(
                            &m.id,
                            format!(
                                "dimension `{}` is not a free dimension of its numerator `{}`, so its breakdowns cannot be computed",
                                d.name, target.id
                            ),
                        ),
                    }
                }
            }
        }
    }

    /// Reports a metric that is its own numerator or denominator, however far down.
    fn cycles(&mut self, metrics: &[Metric]) {
        let index: BTreeMap<&str, &Metric> = metrics.iter().map(|m| (m.id.as_str(), m)).collect();
        for m in metrics {
            let mut stack: Vec<&str> = m
                .numerator
                .iter()
                .chain(&m.denominator)
                .map(|p| p.metric.as_str())
                .collect();
            let mut seen = BTreeSet::new();
            while let Some(id) = stack.pop() {
                if id == m.id {
                    self.problem(
                        &m.id,
                        "is its own numerator or denominator, through the metrics those name",
                    );
                    break;
                }
                if !seen.insert(id) {
                    continue;
                }
                if let Some(next) = index.get(id) {
                    stack.extend(
                        next.numerator
                            .iter()
                            .chain(&next.denominator)
                            .map(|p| p.metric.as_str()),
                    );
                }
            }
        }
    }
}

fn part(p: &PartFile) -> Part {
    match p {
        PartFile::Id(metric) => Part {
            metric: metric.clone(),
            at: BTreeMap::new(),
        },
        PartFile::At { metric, at } => Part {
            metric: metric.clone(),
            at: at.clone(),
        },
    }
}

/// The rules a unit implies: counts are whole and never negative, FTE never negative, a rate
/// per 1,000 at most 1,000 (a warning: a force area's residents are not everyone it searches),
/// a percentage between 0 and 100 with its numerator within its denominator, and a rate, ratio
/// or percentage with its parts agrees with them.
fn implied(unit: Unit, has_parts: bool) -> Vec<Check> {
    let mut out = vec![Check::NotNegative];
    match unit {
        Unit::Count | Unit::Headcount => out.push(Check::WholeNumber),
        Unit::RatePer1000 => out.push(Check::AtMost { value: 1000.0 }),
        Unit::Percent => out.push(Check::AtMost { value: 100.0 }),
        Unit::Fte | Unit::Ratio => {}
    }
    if has_parts {
        if unit == Unit::Percent {
            out.push(Check::NumeratorWithinDenominator);
        }
        out.push(Check::AgreesWithParts {
            tolerance: DEFAULT_RATE_TOLERANCE,
        });
    }
    out
}

/// ` (did you mean `a` or `b`?)`, or nothing.
pub fn did_you_mean(near: &[&str]) -> String {
    match near {
        [] => String::new(),
        [one] => format!(" (did you mean `{one}`?)"),
        [rest @ .., last] => format!(
            " (did you mean {} or `{last}`?)",
            rest.iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::CodeList;

    fn code_lists() -> CodeLists {
        let mut lists = CodeLists::default();
        for (id, codes) in [
            ("group", "[\"A\", \"B\", \"W\"]"),
            ("sex", "[\"F\", \"M\"]"),
        ] {
            let entries: Vec<Value> = serde_json::from_str::<Vec<String>>(codes)
                .unwrap()
                .into_iter()
                .map(|c| json!({"code": c, "label": c}))
                .collect();
            let text = json!({"id": id, "title": id, "codes": entries}).to_string();
            lists.insert(CodeList::parse(id, &text).unwrap());
        }
        lists
    }

    fn meta() -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("schemas/catalogue/catalogue.schema.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn metric(id: &str, unit: &str, dims: &Value) -> Value {
        json!({
            "id": id, "title": id, "definition": "d", "unit": unit, "cadence": "financial_year",
            "dataset": "d", "dimensions": dims, "mandatory": true,
            "alignment": {"adr": null, "hmicfrs": null, "prap": null, "framework": null}
        })
    }

    fn parse(metrics: &[Value]) -> Result<MetricCatalogue, Vec<SchemaProblem>> {
        let text = serde_json::to_string_pretty(&json!({
            "version": "1", "title": "t", "metrics": metrics
        }))
        .unwrap();
        MetricCatalogue::parse("v1", &text, &meta(), &code_lists())
    }

    fn messages(r: Result<MetricCatalogue, Vec<SchemaProblem>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|p| p.message).collect()
    }

    #[test]
    fn a_rate_gets_the_rules_its_unit_implies_and_keeps_its_declared_severity() {
        let by_group = json!([{"name": "group", "codelist": "group"}]);
        let count = metric("n", "count", &by_group);
        let mut pop = metric("pop", "count", &by_group);
        pop["mandatory"] = json!(false);
        let mut rate = metric("rate", "rate_per_1000", &by_group);
        rate["numerator"] = json!("n");
        rate["denominator"] = json!("pop");
        rate["rules"] = json!([{"rule": "at_most", "value": 2000, "severity": "info"}]);
        let mut share = metric("share", "percent", &json!([]));
        share["numerator"] = json!({"metric": "n", "at": {"group": ["A", "B"]}});
        share["denominator"] = json!("n");
        let c = parse(&[count, pop, rate, share]).unwrap();
        let rate = c.metric("rate").unwrap();
        let names: Vec<(&str, Severity, bool)> = rate
            .rules
            .iter()
            .map(|r| (r.check.name(), r.severity, r.implied))
            .collect();
        assert_eq!(
            names,
            [
                ("at_most", Severity::Info, false),
                ("not_negative", Severity::Error, true),
                ("agrees_with_parts", Severity::Warning, true),
            ]
        );
        assert_eq!(rate.rules[0].check, Check::AtMost { value: 2000.0 });
        let share = c.metric("share").unwrap();
        assert!(
            share
                .rules
                .iter()
                .any(|r| r.check == Check::NumeratorWithinDenominator
                    && r.severity == Severity::Error)
        );
        assert_eq!(share.numerator.as_ref().unwrap().at["group"], ["A", "B"]);
        assert_eq!(c.dimensions().len(), 1);
        assert_eq!(c.metric("n").unwrap().breakdowns, [Vec::<String>::new()]);
    }

    #[test]
    fn parts_must_name_metrics_codes_and_free_dimensions_and_never_themselves() {
        let by_group = json!([{"name": "group", "codelist": "group"}]);
        let count = metric("n", "count", &by_group);
        let mut ratio_a = metric("a", "ratio", &by_group);
        ratio_a["numerator"] = json!("b");
        ratio_a["denominator"] = json!("n");
        let mut ratio_b = metric("b", "ratio", &by_group);
        ratio_b["numerator"] = json!("a");
        ratio_b["denominator"] = json!({"metric": "n", "at": {"group": ["Z"], "sex": ["F"]}});
        let mut by_sex = metric("c", "ratio", &json!([{"name": "sex", "codelist": "sex"}]));
        by_sex["numerator"] = json!("n");
        by_sex["denominator"] = json!("n");
        let mut other_list = metric("d", "count", &json!([{"name": "group", "codelist": "sex"}]));
        other_list["numerator"] = json!("n");
        let m = messages(parse(&[count, ratio_a, ratio_b, by_sex, other_list]));
        let expected = [
            "metric `b`: its denominator is fixed at `group` = `Z`, which is not a code of `group`",
            "metric `b`: its denominator is fixed at `sex`, which metric `n` has no dimension of",
            "metric `c`: dimension `sex` is not a free dimension of its numerator `n`",
            "metric `d`: dimension `group` uses code list `sex`, but metric `n` uses `group` for it",
            "metric `d`: a count has no numerator or denominator",
            "metric `d`: dimension `group` is not a free dimension of its numerator `n`",
            "metric `a`: is its own numerator or denominator",
            "metric `b`: is its own numerator or denominator",
        ];
        for e in expected {
            assert!(m.iter().any(|x| x.starts_with(e)), "{e}\n{m:#?}");
        }
        assert_eq!(m.len(), expected.len(), "{m:#?}");
    }

    #[test]
    fn the_file_must_keep_the_catalogues_schema_and_its_version_matches_its_name() {
        let m = messages(parse(&[metric("n", "dozens", &json!([]))]));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].starts_with("/metrics/0/unit: \"dozens\""), "{m:?}");
        let text =
            json!({"version": "2", "title": "t", "metrics": [metric("n", "count", &json!([]))]})
                .to_string();
        let m = MetricCatalogue::parse("v1", &text, &meta(), &code_lists()).unwrap_err();
        assert!(
            m[0].message
                .contains("version `2` does not match the file name `v1.json`")
        );
    }

    #[test]
    fn the_nearest_ids_are_the_closest_spellings_within_reach() {
        let ids = ["stop_search_searches", "arrests", "arrest_rate_per_1000"];
        assert_eq!(
            nearest(ids.into_iter(), "stop_search_serches", 3),
            ["stop_search_searches"]
        );
        assert_eq!(nearest(ids.into_iter(), "arests", 3), ["arrests"]);
        assert!(nearest(ids.into_iter(), "workforce", 3).is_empty());
        assert_eq!(
            did_you_mean(&["a", "b", "c"]),
            " (did you mean `a`, `b` or `c`?)"
        );
        assert_eq!(did_you_mean(&[]), "");
    }
}
