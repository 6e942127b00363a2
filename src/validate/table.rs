//! Aggregate returns against the metric catalogue: the checks that look across rows.
//!
//! An aggregate return is long form: one row per metric and breakdown, a column per catalogue
//! dimension (blank: the total over it), the value, and optionally the numerator and
//! denominator it was computed from. [`TableCheck`] is compiled once per pipeline from the
//! catalogue and the columns its profile names; [`TableRows`] takes the rows the schema
//! accepted, batch by batch, keeping a few numbers per row (at most the return's row limit),
//! and judges each row as it comes (an unknown metric or code, a dimension the metric does not
//! have, a value that is neither a number nor a suppression marker, a negative count, a rate
//! above its limit, a row repeated) and the whole table at the end: parts that do not add up
//! to their total, rates that disagree with their numerator and denominator, a numerator above
//! its denominator, and each mandatory metric and breakdown the return left out. Suppressed
//! cells (`..`, `[c]`, ...) are counted and never read as numbers: a total with a suppressed
//! part can only be checked to be at least the parts that are given.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::catalogue::{Check, Metric, MetricCatalogue, Part, did_you_mean, nearest};
use crate::finding::{Code, Finding};
use crate::model::observe::{Figures, breakdown_key};
use crate::schema::CodeList;

/// The suppression markers of official statistics, read as such unless a profile lists others:
/// `..` not available, `-` nil or rounds to zero, `*` and `[c]` confidential, `[x]` not
/// applicable or not available, `[z]` not applicable.
pub const DEFAULT_MARKERS: [&str; 6] = ["..", "-", "*", "[c]", "[x]", "[z]"];

/// How many missing breakdowns one `metric_missing` finding names before it only counts.
const NAMED_MISSING: usize = 5;

/// One dimension column of the return.
#[derive(Debug)]
pub struct DimensionColumn {
    /// The catalogue's dimension name, which is the column's property name.
    pub name: String,
    /// The property's index in the record schema.
    pub property: usize,
    /// Its code list.
    pub list: Arc<CodeList>,
}

/// Where the return's columns are and what the catalogue says: compiled once per pipeline.
#[derive(Debug)]
pub struct TableCheck {
    /// The catalogue.
    pub catalogue: Arc<MetricCatalogue>,
    /// The cadence of the return: mandatory metrics of this cadence must be in it.
    pub cadence: String,
    /// The property holding the metric's id.
    pub metric: usize,
    /// The property holding the value.
    pub value: usize,
    /// The property holding the numerator, where the return has one.
    pub numerator: Option<usize>,
    /// The property holding the denominator, where the return has one.
    pub denominator: Option<usize>,
    /// The catalogue's dimensions, each a column of the return, in catalogue order.
    pub dimensions: Vec<DimensionColumn>,
    /// The suppression markers.
    pub markers: Vec<String>,
}

/// A value as read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Figure {
    Number(f64),
    /// The index of the marker.
    Suppressed(u8),
    /// Blank, or neither a number nor a marker: the row is there (it is no duplicate, and the
    /// metric's breakdown is not missing), but its figure, already an error, is not used.
    Unreadable,
}

/// A finding of the table checks, and whether its severity is the catalogue's rule's (which a
/// pipeline's overrides by code leave alone) rather than its code's.
#[derive(Debug)]
pub struct TableFinding {
    /// The finding.
    pub finding: Finding,
    /// True when a catalogue rule chose its severity.
    pub declared: bool,
}

/// The findings of the table checks, in the order found.
#[derive(Debug, Default)]
pub struct Found(pub Vec<TableFinding>);

impl Found {
    fn plain(&mut self, finding: Finding) {
        self.0.push(TableFinding {
            finding,
            declared: false,
        });
    }

    fn declared(&mut self, finding: Finding) {
        self.0.push(TableFinding {
            finding,
            declared: true,
        });
    }
}

/// The breakdown of a row: per catalogue dimension, the code's index in its list, or `None`
/// for the total over that dimension.
type Key = Vec<Option<u32>>;

/// One row kept for the table checks.
#[derive(Debug)]
struct Row {
    row: u64,
    figure: Figure,
}

/// The cells of one row, as text (`None`: blank), in the order of the check's columns.
#[derive(Debug, Clone, Copy)]
pub struct Cells<'a> {
    /// The spreadsheet row.
    pub row: u64,
    /// The metric's id.
    pub metric: Option<&'a str>,
    /// Per dimension column of the check.
    pub dimensions: &'a [Option<&'a str>],
    /// The value.
    pub value: Option<&'a str>,
    /// The numerator, where the return gives it.
    pub numerator: Option<&'a str>,
    /// The denominator, where the return gives it.
    pub denominator: Option<&'a str>,
}

/// The rows of one upload, judged as they come and as a table at the end.
pub struct TableRows<'c> {
    check: &'c TableCheck,
    metric_header: String,
    value_header: String,
    dimension_headers: Vec<String>,
    /// Per metric (catalogue index), its rows by breakdown.
    rows: Vec<HashMap<Key, Row>>,
    markers: Vec<u64>,
}

impl TableCheck {
    /// Starts the rows of one upload; `header` names a property's column as the upload's
    /// header spells it.
    pub fn rows<'h>(&self, header: impl Fn(usize) -> &'h str) -> TableRows<'_> {
        TableRows {
            check: self,
            metric_header: header(self.metric).to_owned(),
            value_header: header(self.value).to_owned(),
            dimension_headers: self
                .dimensions
                .iter()
                .map(|d| header(d.property).to_owned())
                .collect(),
            rows: (0..self.catalogue.metrics.len())
                .map(|_| HashMap::new())
                .collect(),
            markers: vec![0; self.markers.len()],
        }
    }

    fn dimension_index(&self, name: &str) -> Option<usize> {
        self.dimensions.iter().position(|d| d.name == name)
    }
}

/// A figure as a number: as written, or with thousands separators (`1,234`, as spreadsheets
/// format counts).
fn number(text: &str) -> Option<f64> {
    let text = text.trim();
    super::parse_f64(text)
        .or_else(|| crate::normalise::without_thousands(text).and_then(|t| super::parse_f64(&t)))
        .filter(|v| v.is_finite())
}

fn show(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

impl TableRows<'_> {
    /// Judges one row and keeps what the table checks need.
    pub fn push(&mut self, cells: Cells<'_>, found: &mut Found) {
        let check = self.check;
        let at = |code: Code, message: String, rule: &str| {
            Finding::new(code, message, rule).at_row(cells.row)
        };
        let Some(metric_id) = cells.metric.map(str::trim).filter(|m| !m.is_empty()) else {
            found.plain(
                at(
                    Code::MetricUnknown,
                    "the metric is blank: every row names the metric it reports".into(),
                    "catalogue",
                )
                .in_column(&self.metric_header),
            );
            return;
        };
        let Some(index) = check
            .catalogue
            .metrics
            .iter()
            .position(|m| m.id == metric_id)
        else {
            let near = check.catalogue.nearest_ids(metric_id, 3);
            found.plain(
                at(
                    Code::MetricUnknown,
                    format!(
                        "`{metric_id}` is not a metric of catalogue v{}{}",
                        check.catalogue.version,
                        did_you_mean(&near)
                    ),
                    "catalogue",
                )
                .in_column(&self.metric_header)
                .with_value(metric_id),
            );
            return;
        };
        let metric = &check.catalogue.metrics[index];
        let mut key: Key = vec![None; check.dimensions.len()];
        let mut usable = true;
        for (((column, header), cell), slot) in check
            .dimensions
            .iter()
            .zip(&self.dimension_headers)
            .zip(cells.dimensions)
            .zip(key.iter_mut())
        {
            let Some(text) = cell.map(str::trim).filter(|t| !t.is_empty()) else {
                continue;
            };
            if metric.dimension(&column.name).is_none() {
                found.plain(
                    at(
                        Code::MetricDimensionUnknown,
                        format!(
                            "`{}` has no {} breakdown, but this row gives {} `{text}`: leave {} blank for this metric",
                            metric.id, column.name, column.name, header
                        ),
                        "catalogue",
                    )
                    .in_column(header)
                    .with_value(text),
                );
                usable = false;
                continue;
            }
            match column.list.lookup(text) {
                Some((code, _))
                    if metric.excludes(&column.name, &column.list.codes[code as usize].code) =>
                {
                    found.plain(
                        at(
                            Code::MetricDimensionUnknown,
                            format!(
                                "`{}` is never given for {} `{text}` (the catalogue's not_for): leave the row out",
                                metric.id, column.name
                            ),
                            "catalogue",
                        )
                        .in_column(header)
                        .with_value(text),
                    );
                    usable = false;
                }
                Some((code, _)) => *slot = Some(code),
                None => {
                    let codes = column.list.codes.iter().map(|c| c.code.as_str());
                    let near = nearest(codes, text, 3);
                    found.plain(
                        at(
                            Code::MetricDimensionUnknown,
                            format!(
                                "`{text}` is not a code of {} (code list `{}`){}",
                                column.name,
                                column.list.id,
                                did_you_mean(&near)
                            ),
                            "catalogue",
                        )
                        .in_column(header)
                        .with_value(text),
                    );
                    usable = false;
                }
            }
        }
        let figure = match cells.value.map(str::trim).filter(|v| !v.is_empty()) {
            None => {
                found.plain(
                    at(
                        Code::MetricValueInvalid,
                        format!(
                            "the value of `{}` is blank: give the figure, or a suppression marker ({})",
                            metric.id,
                            check.markers.join(" ")
                        ),
                        "catalogue",
                    )
                    .in_column(&self.value_header),
                );
                Figure::Unreadable
            }
            Some(text) => {
                if let Some(m) = check.markers.iter().position(|m| m == text) {
                    self.markers[m] += 1;
                    Figure::Suppressed(m as u8)
                } else if let Some(v) = number(text) {
                    Figure::Number(v)
                } else {
                    found.plain(
                        at(
                            Code::MetricValueInvalid,
                            format!(
                                "the value of `{}` is `{text}`, neither a number nor a suppression marker ({})",
                                metric.id,
                                check.markers.join(" ")
                            ),
                            "catalogue",
                        )
                        .in_column(&self.value_header)
                        .with_value(text),
                    );
                    Figure::Unreadable
                }
            }
        };
        if let Figure::Number(v) = figure {
            self.judge_value(metric, v, &cells, found);
        }
        if !usable {
            return;
        }
        if let Some(first) = self.rows[index].get(&key) {
            found.plain(
                at(
                    Code::MetricDuplicate,
                    format!(
                        "`{}` {} is given twice: here and in row {}",
                        metric.id,
                        self.breakdown(&key),
                        first.row
                    ),
                    "catalogue",
                )
                .in_column(&self.metric_header)
                .with_value(metric_id),
            );
            return;
        }
        self.rows[index].insert(
            key,
            Row {
                row: cells.row,
                figure,
            },
        );
    }

    /// The rules of one value on its own and with the numerator and denominator of its row.
    fn judge_value(&self, metric: &Metric, v: f64, cells: &Cells<'_>, found: &mut Found) {
        let header = &self.value_header;
        let parts = (
            cells.numerator.and_then(number),
            cells.denominator.and_then(number),
        );
        for rule in &metric.rules {
            let broken = match &rule.check {
                Check::NotNegative if v < 0.0 => Some(format!(
                    "`{}` is {}, below zero",
                    metric.id,
                    show(v)
                )),
                Check::WholeNumber if v.fract() != 0.0 => Some(format!(
                    "`{}` is {}, which is a {} and so a whole number",
                    metric.id,
                    show(v),
                    metric.unit
                )),
                Check::AtMost { value } if v > *value => Some(format!(
                    "`{}` is {}, above {} (a {})",
                    metric.id,
                    show(v),
                    show(*value),
                    metric.unit
                )),
                Check::NumeratorWithinDenominator => match parts {
                    (Some(n), Some(d)) if n > d => Some(format!(
                        "the numerator of `{}` ({}) is above its denominator ({})",
                        metric.id,
                        show(n),
                        show(d)
                    )),
                    _ => None,
                },
                Check::AgreesWithParts { tolerance } => match (parts, metric.unit.scale()) {
                    ((Some(n), Some(d)), Some(scale)) if d != 0.0 => {
                        disagreement(v, n / d * scale, *tolerance).map(|expected| {
                            format!(
                                "`{}` is {}, but its numerator {} over its denominator {} gives {expected}",
                                metric.id,
                                show(v),
                                show(n),
                                show(d)
                            )
                        })
                    }
                    _ => None,
                },
                _ => None,
            };
            if let Some(message) = broken {
                let code = match rule.check {
                    Check::NumeratorWithinDenominator => Code::MetricNumeratorAboveDenominator,
                    Check::AgreesWithParts { .. } => Code::MetricDisagreesWithParts,
                    _ => Code::MetricOutOfRange,
                };
                found.declared(
                    Finding::new(code, message, format!("catalogue: {}", rule.check.name()))
                        .at_row(cells.row)
                        .in_column(header)
                        .with_value(show(v))
                        .with_severity(rule.severity),
                );
            }
        }
    }

    /// `by ethnicity = Black, tactic = CED`, or `(the total)`.
    fn breakdown(&self, key: &Key) -> String {
        let parts: Vec<String> = key
            .iter()
            .zip(&self.check.dimensions)
            .filter_map(|(code, d)| {
                code.map(|c| format!("{} = {}", d.name, d.list.codes[c as usize].code))
            })
            .collect();
        if parts.is_empty() {
            "(the total)".to_owned()
        } else {
            format!("by {}", parts.join(", "))
        }
    }

    /// The table's checks, once every row is in; returns the figures given as numbers, for
    /// the return's observations.
    pub fn finish(self, found: &mut Found) -> Figures {
        let used: Vec<String> = self
            .check
            .markers
            .iter()
            .zip(&self.markers)
            .filter(|&(_, &n)| n > 0)
            .map(|(m, n)| format!("`{m}` {n}"))
            .collect();
        if !used.is_empty() {
            let total: u64 = self.markers.iter().sum();
            found.plain(
                Finding::new(
                    Code::MetricSuppressed,
                    format!(
                        "{} suppression markers, not figures ({}); totals that include them are checked only to be at least their other parts",
                        if total == 1 {
                            "1 value is one of the".to_owned()
                        } else {
                            format!("{total} values are")
                        },
                        used.join(", ")
                    ),
                    "suppression markers",
                )
                .in_column(&self.value_header),
            );
        }
        for (index, metric) in self.check.catalogue.metrics.iter().enumerate() {
            for rule in &metric.rules {
                match &rule.check {
                    Check::PartsAddToTotal {
                        dimension,
                        tolerance,
                    } => self.parts_add_up(index, dimension, *tolerance, rule.severity, found),
                    Check::AgreesWithParts { tolerance } => {
                        self.agrees_across_rows(index, *tolerance, rule.severity, found);
                    }
                    Check::NumeratorWithinDenominator => {
                        self.within_across_rows(index, rule.severity, found);
                    }
                    _ => {}
                }
            }
            if metric.mandatory && metric.cadence == self.check.cadence {
                self.mandatory(index, found);
            }
        }
        self.figures()
    }

    /// Every figure given as a number, by metric and breakdown.
    fn figures(&self) -> Figures {
        let mut out = Figures::new();
        for (metric, rows) in self.check.catalogue.metrics.iter().zip(&self.rows) {
            for (key, row) in rows {
                let Figure::Number(v) = row.figure else {
                    continue;
                };
                let cells = key
                    .iter()
                    .zip(&self.check.dimensions)
                    .filter_map(|(code, d)| {
                        code.map(|c| (d.name.as_str(), d.list.codes[c as usize].code.as_str()))
                    });
                out.entry(metric.id.clone())
                    .or_default()
                    .insert(breakdown_key(cells), v);
            }
        }
        out
    }

    fn parts_add_up(
        &self,
        index: usize,
        dimension: &str,
        tolerance: f64,
        severity: crate::finding::Severity,
        found: &mut Found,
    ) {
        let Some(d) = self.check.dimension_index(dimension) else {
            return;
        };
        let metric = &self.check.catalogue.metrics[index];
        let rows = &self.rows[index];
        let codes = self.check.dimensions[d].list.codes.len() as u32;
        let mut totals: Vec<(&Key, &Row)> = rows.iter().filter(|(k, _)| k[d].is_none()).collect();
        totals.sort_by_key(|(_, r)| r.row);
        for (key, total) in totals {
            let Figure::Number(total_value) = total.figure else {
                continue;
            };
            let mut sum = 0.0;
            let mut given = 0;
            let mut complete = true;
            let mut part = key.clone();
            for c in 0..codes {
                part[d] = Some(c);
                match rows.get(&part).map(|r| r.figure) {
                    Some(Figure::Number(v)) => {
                        sum += v;
                        given += 1;
                    }
                    Some(Figure::Suppressed(_) | Figure::Unreadable) | None => complete = false,
                }
            }
            if given == 0 {
                continue;
            }
            let (broken, relation) = if complete {
                ((sum - total_value).abs() > tolerance + 1e-9, "add up to")
            } else {
                (
                    sum > total_value + tolerance + 1e-9,
                    "(those given) already exceed",
                )
            };
            if broken {
                found.declared(
                    Finding::new(
                        Code::MetricPartsTotal,
                        format!(
                            "`{}` {}: the values by {dimension} {relation} {}, not the total {}{}",
                            metric.id,
                            self.breakdown(key),
                            show(sum),
                            show(total_value),
                            if tolerance > 0.0 {
                                format!(" (tolerance {})", show(tolerance))
                            } else {
                                String::new()
                            }
                        ),
                        "catalogue: parts_add_to_total",
                    )
                    .at_row(total.row)
                    .in_column(&self.value_header)
                    .with_value(show(total_value))
                    .with_severity(severity),
                );
            }
        }
    }

    /// The sum of a part (numerator or denominator) for the row of `metric` at `key`: `None`
    /// when a row it needs is missing or suppressed.
    fn part_value(&self, metric: &Metric, part: &Part, key: &Key) -> Option<f64> {
        let target = self
            .check
            .catalogue
            .metrics
            .iter()
            .position(|m| m.id == part.metric)?;
        let target_metric = &self.check.catalogue.metrics[target];
        let mut keys: Vec<Key> = vec![vec![None; self.check.dimensions.len()]];
        for (d, column) in self.check.dimensions.iter().enumerate() {
            if target_metric.dimension(&column.name).is_none() {
                continue;
            }
            if let Some(codes) = part.at.get(&column.name) {
                let indexes: Vec<u32> = codes
                    .iter()
                    .filter_map(|c| column.list.lookup(c).map(|(i, _)| i))
                    .collect();
                keys = keys
                    .into_iter()
                    .flat_map(|k| {
                        indexes.iter().map(move |&i| {
                            let mut k = k.clone();
                            k[d] = Some(i);
                            k
                        })
                    })
                    .collect();
            } else if metric.dimension(&column.name).is_some() {
                for k in &mut keys {
                    k[d] = key[d];
                }
            }
        }
        keys.iter()
            .map(|k| match self.rows[target].get(k)?.figure {
                Figure::Number(v) => Some(v),
                Figure::Suppressed(_) | Figure::Unreadable => None,
            })
            .sum()
    }

    fn agrees_across_rows(
        &self,
        index: usize,
        tolerance: f64,
        severity: crate::finding::Severity,
        found: &mut Found,
    ) {
        let metric = &self.check.catalogue.metrics[index];
        let (Some(num), Some(den), Some(scale)) =
            (&metric.numerator, &metric.denominator, metric.unit.scale())
        else {
            return;
        };
        let mut rows: Vec<(&Key, &Row)> = self.rows[index].iter().collect();
        rows.sort_by_key(|(_, r)| r.row);
        for (key, row) in rows {
            let Figure::Number(v) = row.figure else {
                continue;
            };
            let (Some(n), Some(d)) = (
                self.part_value(metric, num, key),
                self.part_value(metric, den, key),
            ) else {
                continue;
            };
            if d == 0.0 {
                continue;
            }
            if let Some(expected) = disagreement(v, n / d * scale, tolerance) {
                found.declared(
                    Finding::new(
                        Code::MetricDisagreesWithParts,
                        format!(
                            "`{}` {} is {}, but {} over {} in this return gives {expected} ({} over {})",
                            metric.id,
                            self.breakdown(key),
                            show(v),
                            part_name(num),
                            part_name(den),
                            show(n),
                            show(d)
                        ),
                        "catalogue: agrees_with_parts",
                    )
                    .at_row(row.row)
                    .in_column(&self.value_header)
                    .with_value(show(v))
                    .with_severity(severity),
                );
            }
        }
    }

    fn within_across_rows(
        &self,
        index: usize,
        severity: crate::finding::Severity,
        found: &mut Found,
    ) {
        let metric = &self.check.catalogue.metrics[index];
        let (Some(num), Some(den)) = (&metric.numerator, &metric.denominator) else {
            return;
        };
        let mut rows: Vec<(&Key, &Row)> = self.rows[index].iter().collect();
        rows.sort_by_key(|(_, r)| r.row);
        for (key, row) in rows {
            let (Some(n), Some(d)) = (
                self.part_value(metric, num, key),
                self.part_value(metric, den, key),
            ) else {
                continue;
            };
            if n > d {
                found.declared(
                    Finding::new(
                        Code::MetricNumeratorAboveDenominator,
                        format!(
                            "`{}` {}: its numerator {} ({}) is above its denominator {} ({}) in this return",
                            metric.id,
                            self.breakdown(key),
                            part_name(num),
                            show(n),
                            part_name(den),
                            show(d)
                        ),
                        "catalogue: numerator_within_denominator",
                    )
                    .at_row(row.row)
                    .in_column(&self.metric_header)
                    .with_value(&metric.id)
                    .with_severity(severity),
                );
            }
        }
    }

    /// A finding per mandatory breakdown with rows missing, naming the first few.
    fn mandatory(&self, index: usize, found: &mut Found) {
        let metric = &self.check.catalogue.metrics[index];
        for breakdown in &metric.breakdowns {
            let rows = metric.breakdown_rows(breakdown);
            let expected = rows.len() as u64;
            let missing: Vec<Key> = rows
                .into_iter()
                .filter_map(|row| {
                    let mut key: Key = vec![None; self.check.dimensions.len()];
                    for (d, code) in row {
                        key[self.check.dimension_index(&d.name)?] = Some(code as u32);
                    }
                    (!self.rows[index].contains_key(&key)).then_some(key)
                })
                .collect();
            if missing.is_empty() {
                continue;
            }
            let what = if breakdown.is_empty() {
                "its total".to_owned()
            } else {
                format!("its breakdown by {}", breakdown.join(" × "))
            };
            let mut message = if missing.len() as u64 == expected {
                format!(
                    "`{}` ({}) is mandatory, and {what} is missing",
                    metric.id, metric.title
                )
            } else {
                format!(
                    "`{}` ({}) is mandatory by {}: {} of its {expected} rows are missing",
                    metric.id,
                    metric.title,
                    breakdown.join(" × "),
                    missing.len()
                )
            };
            if !breakdown.is_empty() && (missing.len() as u64) < expected {
                let named: Vec<String> = missing
                    .iter()
                    .take(NAMED_MISSING)
                    .map(|k| self.breakdown(k))
                    .collect();
                let _ = write!(message, ", {}", named.join("; "));
                if missing.len() > NAMED_MISSING {
                    let _ = write!(message, " and {} more", missing.len() - NAMED_MISSING);
                }
            }
            found.plain(
                Finding::new(Code::MetricMissing, message, "catalogue: mandatory")
                    .in_column(&self.metric_header)
                    .with_value(&metric.id),
            );
        }
    }
}

/// `` `metric` ``, or `` `metric` at ethnicity = White ``.
fn part_name(part: &Part) -> String {
    if part.at.is_empty() {
        format!("`{}`", part.metric)
    } else {
        format!("`{}` at {}", part.metric, part.fixed())
    }
}

/// `Some(expected, shown)` when `value` is further from `expected` than `tolerance` of it
/// (relative), else `None`.
fn disagreement(value: f64, expected: f64, tolerance: f64) -> Option<String> {
    let allowed = tolerance * expected.abs().max(value.abs()) + 1e-9;
    ((value - expected).abs() > allowed).then(|| show((expected * 1000.0).round() / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Project;

    fn check() -> Arc<TableCheck> {
        let project = Project::load(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        Arc::clone(
            project
                .pipeline("data_pack")
                .unwrap()
                .table
                .as_ref()
                .unwrap(),
        )
    }

    /// A breakdown: (dimension, code) pairs.
    type Breakdown<'a> = &'a [(&'a str, &'a str)];
    /// A row: metric, breakdown, value.
    type Input<'a> = (&'a str, Breakdown<'a>, &'a str);
    /// A row whose breakdown it owns.
    type Owned<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);

    /// Runs rows through the checks; rows are numbered from 2.
    fn run(check: &TableCheck, rows: &[Input<'_>]) -> Vec<TableFinding> {
        let mut table = check.rows(|_| "h");
        let mut found = Found::default();
        for (i, (metric, breakdown, value)) in rows.iter().enumerate() {
            let dims: Vec<Option<&str>> = check
                .dimensions
                .iter()
                .map(|d| {
                    breakdown
                        .iter()
                        .find(|(n, _)| *n == d.name)
                        .map(|(_, c)| *c)
                })
                .collect();
            table.push(
                Cells {
                    row: i as u64 + 2,
                    metric: Some(metric),
                    dimensions: &dims,
                    value: Some(value),
                    numerator: None,
                    denominator: None,
                },
                &mut found,
            );
        }
        table.finish(&mut found);
        found.0
    }

    fn of(found: &[TableFinding], code: Code) -> Vec<&Finding> {
        found
            .iter()
            .map(|f| &f.finding)
            .filter(|f| f.code == code)
            .collect()
    }

    const SEARCHES: &str = "stop_search_searches";

    fn by_ethnicity(values: [&str; 6]) -> Vec<Owned<'_>> {
        ["Asian", "Black", "Mixed", "Other", "White", "Not stated"]
            .into_iter()
            .zip(values)
            .map(|(e, v)| (SEARCHES, vec![("ethnicity", e)], v))
            .collect()
    }

    fn rows<'a>(total: &'a str, parts: &'a [Owned<'a>]) -> Vec<Input<'a>> {
        std::iter::once((SEARCHES, &[][..], total))
            .chain(parts.iter().map(|(m, b, v)| (*m, b.as_slice(), *v)))
            .collect()
    }

    #[test]
    fn parts_must_add_up_to_their_total_and_suppressed_parts_can_only_exceed_it() {
        let check = check();
        let parts = by_ethnicity(["100", "200", "30", "50", "600", "20"]);
        assert!(of(&run(&check, &rows("1,000", &parts)), Code::MetricPartsTotal).is_empty());
        let found = run(&check, &rows("990", &parts));
        let broken = of(&found, Code::MetricPartsTotal);
        assert_eq!(broken.len(), 1, "{found:?}");
        assert_eq!(broken[0].row, Some(2));
        assert!(
            broken[0]
                .message
                .contains("the values by ethnicity add up to 1000, not the total 990"),
            "{}",
            broken[0].message
        );
        // A part withheld: the others may sum to less, never to more.
        let suppressed = by_ethnicity(["100", "200", "[c]", "50", "600", "20"]);
        let found = run(&check, &rows("1000", &suppressed));
        assert!(of(&found, Code::MetricPartsTotal).is_empty());
        let suppressed_count = of(&found, Code::MetricSuppressed);
        assert!(
            suppressed_count[0]
                .message
                .starts_with("1 value is one of the suppression markers")
        );
        let found = run(&check, &rows("900", &suppressed));
        let broken = of(&found, Code::MetricPartsTotal);
        assert!(
            broken[0]
                .message
                .contains("(those given) already exceed 970"),
            "{}",
            broken[0].message
        );
    }

    #[test]
    fn a_rate_is_checked_against_the_returns_own_numerator_and_denominator_rows() {
        let check = check();
        let rate = "stop_search_rate_per_1000";
        let found = run(
            &check,
            &[
                (SEARCHES, &[("ethnicity", "Black")], "200"),
                ("population", &[("ethnicity", "Black")], "5000"),
                (rate, &[("ethnicity", "Black")], "40"),
                (SEARCHES, &[("ethnicity", "White")], "600"),
                ("population", &[("ethnicity", "White")], "500000"),
                (rate, &[("ethnicity", "White")], "1.5"),
                (
                    "stop_search_disparity_ratio",
                    &[("ethnicity", "Black")],
                    "26.7",
                ),
            ],
        );
        let off = of(&found, Code::MetricDisagreesWithParts);
        assert_eq!(off.len(), 1, "{off:?}");
        assert_eq!(off[0].row, Some(7));
        assert!(
            off[0].message.contains("gives 1.2 (600 over 500000)"),
            "{}",
            off[0].message
        );
        // 40 / 1.5 = 26.67: the ratio agrees with the rates as given.
        assert!(off.iter().all(|f| f.row != Some(8)), "{off:?}");
        assert!(
            found
                .iter()
                .filter(|f| f.finding.code == Code::MetricDisagreesWithParts)
                .all(|f| f.declared)
        );
    }

    #[test]
    fn a_share_whose_numerator_is_above_its_denominator_is_an_error() {
        let check = check();
        let found = run(
            &check,
            &[
                (SEARCHES, &[("outcome_group", "Arrest")], "300"),
                ("arrests", &[], "200"),
                ("stop_search_arrests_share_of_arrests", &[], "150"),
            ],
        );
        let above = of(&found, Code::MetricNumeratorAboveDenominator);
        assert_eq!(above.len(), 1, "{found:?}");
        assert!(above[0].message.contains(
            "its numerator `stop_search_searches` at outcome_group = Arrest (300) is above its denominator `arrests` (200)"
        ), "{}", above[0].message);
        // The value itself is above 100, which a percentage never is.
        assert_eq!(of(&found, Code::MetricOutOfRange).len(), 1);
    }

    #[test]
    fn mandatory_breakdowns_leave_out_the_codes_a_metric_is_never_given_for() {
        let check = check();
        let found = run(
            &check,
            &[
                ("arrest_rate_per_1000", &[], "10"),
                ("arrest_rate_per_1000", &[("ethnicity", "Black")], "30"),
                ("arrest_rate_per_1000", &[("ethnicity", "Not stated")], "3"),
            ],
        );
        let missing: Vec<&str> = of(&found, Code::MetricMissing)
            .iter()
            .map(|f| f.message.as_str())
            .filter(|m| m.starts_with("`arrest_rate_per_1000`"))
            .collect();
        assert_eq!(
            missing,
            [
                "`arrest_rate_per_1000` (Arrests per 1,000 population) is mandatory by ethnicity: 4 of its 5 rows are missing, by ethnicity = Asian; by ethnicity = Mixed; by ethnicity = Other; by ethnicity = White"
            ]
        );
        let refused = of(&found, Code::MetricDimensionUnknown);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].row, Some(4));
        // Metrics of another cadence (the workforce's snapshots) are not asked of this return.
        assert!(
            of(&found, Code::MetricMissing)
                .iter()
                .all(|f| !f.message.contains("workforce"))
        );
    }

    #[test]
    fn figures_are_numbers_thousands_separated_numbers_or_markers() {
        assert_eq!(number("1,234,567.5"), Some(1_234_567.5));
        assert_eq!(number(" -12 "), Some(-12.0));
        assert_eq!(number("1,23"), None);
        assert_eq!(number("12,3456"), None);
        assert_eq!(number("[c]"), None);
        let check = check();
        let found = run(
            &check,
            &[
                (SEARCHES, &[], "lots"),
                (SEARCHES, &[("ethnicity", "Black")], ".."),
            ],
        );
        let invalid = of(&found, Code::MetricValueInvalid);
        assert_eq!(invalid.len(), 1);
        assert!(
            invalid[0]
                .message
                .contains("is `lots`, neither a number nor a suppression marker")
        );
        assert!(
            of(&found, Code::MetricSuppressed)[0]
                .message
                .contains("`..` 1")
        );
    }
}
