//! Feedback: the report back to the submitting force, as JSON (for machines), a self-contained
//! HTML page (for a force analyst to read and print) and CSV (the findings one per line, for
//! Excel; [`crate::finding::FindingLog`] caps how many of each code reach it).
//!
//! The report shows offending values as the force sent them: it goes only to that force.
//! Central tables mask personal values (see `snapshot`). Rendering is pure: it takes a
//! [`Report`] and returns bytes; the CSV of row findings streams through [`CsvFindingSink`].

pub mod summary;

use std::cmp::Reverse;
use std::fmt::{self, Write as _};
use std::io::Write;

use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};

use crate::finding::{Code, CodeSummary, Finding, FindingSink, Severity};
use crate::model::{Decision, Received};
use crate::validate::ColumnStats;

/// The version of the report's JSON shape. 2: the upload's identity as the manifest and
/// receipts write it (`uploaded_at` always given, `etag` added, no `dataset` or `period` for a
/// key with no place; `force_folder` for its force).
pub const REPORT_VERSION: u32 = 2;

/// Everything the force is told about one submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Version of this report's JSON shape ([`REPORT_VERSION`]).
    pub report_version: u32,
    /// The upload and its place (`source_key`, `etag`, `sha256`, `submission_id`,
    /// `uploaded_at`; `force_id`, `dataset`, `period` when its key has a place, else
    /// `force_folder` when it names a force).
    #[serde(flatten)]
    pub received: Received,
    /// Dataset title.
    pub dataset_title: String,
    /// The force's name, when known.
    pub force_name: Option<String>,
    /// The uploaded file's name.
    pub file_name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// When it was processed (RFC 3339).
    pub processed_at: String,
    /// Schema id, for example `stop_search/v1`.
    pub schema_id: String,
    /// The decision.
    pub decision: Decision,
    /// Records read after the header.
    pub rows_read: u64,
    /// Rows written to the snapshot (0 when rejected).
    pub rows_accepted: u64,
    /// Rows with at least one error.
    pub error_rows: u64,
    /// Findings by code, worst first, with counts in full and capped examples.
    pub findings: Vec<CodeSummary>,
    /// Per-column blank counts and rates.
    pub columns: Vec<ColumnStats>,
    /// Keys of what was written for this submission.
    pub outputs: Outputs,
}

/// Keys written for a submission.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outputs {
    /// Archived copy of the upload.
    pub archive: Option<String>,
    /// Parquet snapshot, when accepted.
    pub snapshot: Option<String>,
    /// This report as JSON.
    pub report_json: Option<String>,
    /// This report as HTML.
    pub report_html: Option<String>,
    /// The findings as CSV, capped per code.
    pub findings_csv: Option<String>,
}

impl Report {
    /// Count of findings of a severity.
    pub fn count(&self, severity: Severity) -> u64 {
        self.findings
            .iter()
            .filter(|s| s.severity == severity)
            .map(|s| s.count)
            .sum()
    }
}

/// The report as pretty JSON.
pub fn render_json(report: &Report) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(report).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Writes each finding it is given as one CSV line:
/// `row,column,severity,code,message,value,rule,schema_path,hint,cell` (`cell`: `data!D17` for a
/// workbook upload).
pub struct CsvFindingSink<W: Write> {
    out: W,
}

impl<W: Write> CsvFindingSink<W> {
    /// A sink writing to `out`, starting with the header line (with a UTF-8 BOM so Excel reads
    /// accents and symbols correctly).
    pub fn new(mut out: W) -> std::io::Result<Self> {
        out.write_all(
            b"\xef\xbb\xbfrow,column,severity,code,message,value,rule,schema_path,hint,cell\r\n",
        )?;
        Ok(CsvFindingSink { out })
    }

    /// Flushes and returns the writer.
    pub fn into_inner(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Whether a spreadsheet could take the cell for a formula: it starts with a tab or carriage
/// return, or its first character after any white space or invisible format character is `=`,
/// `+`, `-` or `@`, or the full-width or small form of one (spreadsheets fold those to ASCII).
fn is_formula_like(s: &str) -> bool {
    if s.starts_with(['\t', '\r']) {
        return true;
    }
    // White space (`trim_start`), control characters and zero-width ones, in any mix.
    let mut rest = s;
    loop {
        let next = rest.trim_start().trim_start_matches(|c: char| {
            c.is_control() || matches!(c, '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}')
        });
        if next.len() == rest.len() {
            break;
        }
        rest = next;
    }
    matches!(
        rest.chars().next(),
        Some(
            '=' | '+'
                | '-'
                | '@'
                | '\u{ff1d}'
                | '\u{ff0b}'
                | '\u{ff0d}'
                | '\u{ff20}'
                | '\u{fe66}'
                | '\u{fe62}'
                | '\u{fe63}'
                | '\u{fe6b}'
        )
    )
}

fn csv_field(out: &mut impl Write, s: &str) -> std::io::Result<()> {
    // Cells that a spreadsheet would run as a formula are prefixed with a quote mark.
    let risky = is_formula_like(s);
    if risky || s.contains([',', '"', '\n', '\r']) {
        out.write_all(b"\"")?;
        if risky {
            out.write_all(b"'")?;
        }
        out.write_all(s.replace('"', "\"\"").as_bytes())?;
        out.write_all(b"\"")
    } else {
        out.write_all(s.as_bytes())
    }
}

impl<W: Write> FindingSink for CsvFindingSink<W> {
    fn accept(&mut self, f: &Finding) -> std::io::Result<()> {
        let row = f.row.map(|r| r.to_string()).unwrap_or_default();
        let fields = [
            row.as_str(),
            f.column.as_deref().unwrap_or(""),
            f.severity.as_str(),
            f.code.as_str(),
            &f.message,
            f.value.as_deref().unwrap_or(""),
            &f.rule,
            f.schema_path.as_deref().unwrap_or(""),
            &f.hint,
            f.cell.as_deref().unwrap_or(""),
        ];
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                self.out.write_all(b",")?;
            }
            csv_field(&mut self.out, field)?;
        }
        self.out.write_all(b"\r\n")
    }
}

/// The report as one self-contained HTML page for a force analyst to read on screen or print.
///
/// The page loads nothing (no scripts, stylesheets, fonts or images) and forbids loading
/// anything through its content security policy. Every piece of text taken from the report is
/// escaped, because values and file names come from the uploaded file and may hold markup.
pub fn render_html(report: &Report) -> String {
    let mut out = String::with_capacity(32 * 1024);
    // Writing to a `String` cannot fail, so the `fmt::Result` carries nothing worth handling.
    let _ = write_page(&mut out, report);
    out
}

/// The page's stylesheet: screen first, then phone and print adjustments.
const STYLE: &str = include_str!("feedback/report.css");

fn write_page(out: &mut String, r: &Report) -> fmt::Result {
    let force = force_label(r);
    let period = r
        .received
        .place
        .as_ref()
        .map_or_else(|| "period not known".to_owned(), |p| p.period.to_string());
    let period = period.as_str();
    let decision = r.decision;
    let title = format!(
        "{} {} — {} — {}",
        r.dataset_title,
        period,
        force,
        decision_label(decision).to_lowercase()
    );
    write_page_head(out, &title, STYLE)?;
    writeln!(out, "</head>")?;
    writeln!(out, "<body>")?;
    write_summary(out, r, force, period)?;
    writeln!(out, "<main>")?;
    write_counts(out, r)?;
    write_findings(out, r)?;
    write_columns(out, r)?;
    writeln!(out, "</main>")?;
    write_footer(out, r)?;
    writeln!(out, "</body>")?;
    writeln!(out, "</html>")
}

fn write_summary(out: &mut String, r: &Report, force: &str, period: &str) -> fmt::Result {
    writeln!(out, "<header>")?;
    writeln!(out, "<p class=\"dataset\">{}</p>", escape(&r.dataset_title))?;
    writeln!(out, "<h1>{} — {}</h1>", escape(force), escape(period))?;
    writeln!(out, "<div class=\"decision\">")?;
    writeln!(
        out,
        "<span class=\"badge {}\">{}</span>",
        decision_class(r.decision),
        decision_label(r.decision)
    )?;
    writeln!(out, "<p>{}</p>", escape(&decision_explanation(r)))?;
    writeln!(out, "</div>")?;

    let upload = &r.received.upload;
    let force_cell = match (&r.force_name, r.received.force()) {
        (Some(name), Some(id)) => format!("{} (<code>{}</code>)", escape(name), escape(id)),
        (Some(name), None) => escape(name).to_string(),
        (None, Some(id)) => format!("<code>{}</code>", escape(id)),
        (None, None) => not_known(),
    };
    let size = format!(
        "{} {}",
        thousands(r.bytes),
        plural(r.bytes, "byte", "bytes")
    );
    let place = r.received.place.as_ref();
    let facts = [
        (
            "Dataset",
            match place {
                Some(p) => format!(
                    "{} (<code>{}</code>)",
                    escape(&r.dataset_title),
                    escape(&p.dataset)
                ),
                None => escape(&r.dataset_title).to_string(),
            },
        ),
        ("Force", force_cell),
        (
            "Period",
            place.map_or_else(not_known, |p| escape(&p.period.to_string()).to_string()),
        ),
        ("File", format!("<code>{}</code>", escape(&r.file_name))),
        (
            "Uploaded to",
            format!("<code>{}</code>", escape(&upload.source_key)),
        ),
        (
            "Submission id",
            format!("<code>{}</code>", escape(&upload.submission_id)),
        ),
        (
            "Received",
            escape(
                &upload
                    .uploaded_at
                    .to_rfc3339_opts(SecondsFormat::AutoSi, true),
            )
            .to_string(),
        ),
        ("Processed", escape(&r.processed_at).to_string()),
        ("Schema", format!("<code>{}</code>", escape(&r.schema_id))),
        (
            "SHA-256",
            format!("<code>{}</code>", escape(&upload.sha256)),
        ),
        ("Size", size),
    ];
    writeln!(out, "<div class=\"table-wrap\"><table class=\"facts\">")?;
    for (label, value) in facts {
        writeln!(
            out,
            "<tr><th scope=\"row\">{label}</th><td>{value}</td></tr>"
        )?;
    }
    writeln!(out, "</table></div>")?;
    writeln!(out, "</header>")
}

fn write_counts(out: &mut String, r: &Report) -> fmt::Result {
    writeln!(out, "<section id=\"counts\">")?;
    writeln!(out, "<h2>Counts</h2>")?;
    writeln!(out, "<dl class=\"counts\">")?;
    let counts = [
        ("Rows read", r.rows_read),
        ("Rows accepted", r.rows_accepted),
        ("Rows with errors", r.error_rows),
        ("Errors", r.count(Severity::Error)),
        ("Warnings", r.count(Severity::Warning)),
        ("Info", r.count(Severity::Info)),
    ];
    for (label, n) in counts {
        writeln!(out, "<div><dt>{label}</dt><dd>{}</dd></div>", thousands(n))?;
    }
    writeln!(out, "</dl>")?;
    writeln!(out, "</section>")
}

fn write_findings(out: &mut String, r: &Report) -> fmt::Result {
    writeln!(out, "<section id=\"findings\">")?;
    writeln!(out, "<h2>What to fix</h2>")?;
    if r.findings.is_empty() {
        writeln!(
            out,
            "<p>Nothing: no errors, warnings or notes were found.</p>"
        )?;
        return writeln!(out, "</section>");
    }
    let csv_name = csv_file_name(r);
    let mut summaries: Vec<&CodeSummary> = r.findings.iter().collect();
    // A stable sort keeps the report's order within each severity.
    summaries.sort_by_key(|s| Reverse(s.severity));
    for s in summaries {
        write_code_block(out, s, csv_name)?;
    }
    writeln!(out, "</section>")
}

fn write_code_block(out: &mut String, s: &CodeSummary, csv_name: Option<&str>) -> fmt::Result {
    let severity = s.severity.as_str();
    writeln!(
        out,
        "<section class=\"finding finding-{severity}\" id=\"code-{}\">",
        s.code
    )?;
    writeln!(
        out,
        "<h3><code>{}</code> <span class=\"sev sev-{severity}\">{severity}</span> <span class=\"count\">{}</span></h3>",
        s.code,
        count_phrase(s)
    )?;
    let hint = s
        .examples
        .first()
        .map_or_else(|| crate::finding::hint(s.code), |f| f.hint.as_str());
    writeln!(
        out,
        "<p class=\"hint\"><strong>How to fix:</strong> {}</p>",
        escape(hint)
    )?;

    let shown = s.examples.len() as u64;
    if shown < s.count {
        let file = match csv_name {
            Some(name) => format!(
                "the CSV file <a href=\"{}\">{}</a>",
                escape(&href_segment(name)),
                escape(name)
            ),
            None => "the CSV file".to_owned(),
        };
        let where_all = if s.listed < s.count {
            format!("{file} lists the first {}", thousands(s.listed))
        } else {
            format!("every finding is in {file}")
        };
        if shown == 0 {
            writeln!(
                out,
                "<p class=\"note\">No examples were kept; {where_all}.</p>"
            )?;
        } else {
            writeln!(
                out,
                "<p class=\"note\">Showing the first {} of {}; {where_all}.</p>",
                thousands(shown),
                thousands(s.count)
            )?;
        }
    }
    if !s.examples.is_empty() {
        writeln!(out, "<div class=\"table-wrap\"><table class=\"examples\">")?;
        writeln!(
            out,
            "<thead><tr><th scope=\"col\" class=\"num\">Row</th><th scope=\"col\">Column</th><th scope=\"col\">Value</th><th scope=\"col\">Message</th></tr></thead>"
        )?;
        writeln!(out, "<tbody>")?;
        for f in &s.examples {
            let row = f.row.map_or_else(dash, thousands);
            let column = match (f.column.as_deref(), f.cell.as_deref()) {
                (None, _) => dash(),
                (Some(c), None) => escape(c).to_string(),
                (Some(c), Some(cell)) => format!(
                    "{} <span class=\"muted\">({})</span>",
                    escape(c),
                    escape(cell)
                ),
            };
            let value = match f.value.as_deref() {
                None => dash(),
                Some("") => "<span class=\"muted\">(blank)</span>".to_owned(),
                Some(v) => format!("<code>{}</code>", escape(v)),
            };
            writeln!(
                out,
                "<tr><td class=\"num\">{row}</td><td>{column}</td><td class=\"value\">{value}</td><td>{}</td></tr>",
                escape(&f.message)
            )?;
        }
        writeln!(out, "</tbody>")?;
        writeln!(out, "</table></div>")?;
    }
    writeln!(out, "</section>")
}

fn write_columns(out: &mut String, r: &Report) -> fmt::Result {
    writeln!(out, "<section id=\"columns\">")?;
    writeln!(out, "<h2>Columns</h2>")?;
    if r.columns.is_empty() {
        writeln!(out, "<p>No columns were checked.</p>")?;
        return writeln!(out, "</section>");
    }
    writeln!(out, "<div class=\"table-wrap\"><table class=\"columns\">")?;
    writeln!(
        out,
        "<thead><tr><th scope=\"col\">Column</th><th scope=\"col\">Header in file</th><th scope=\"col\" class=\"num\">Blank cells</th><th scope=\"col\" class=\"num\">Blank rate</th><th scope=\"col\" class=\"num\">Cells with errors</th></tr></thead>"
    )?;
    writeln!(out, "<tbody>")?;
    for c in &r.columns {
        let (class, header) = match c.header.as_deref() {
            Some(h) => ("", escape(h).to_string()),
            None => (
                " class=\"missing\"",
                "<span class=\"muted\">not in file</span>".to_owned(),
            ),
        };
        writeln!(
            out,
            "<tr{class}><td><code>{}</code></td><td>{header}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&c.property),
            thousands(c.blanks),
            percent(c.blank_rate),
            thousands(c.errors)
        )?;
    }
    writeln!(out, "</tbody>")?;
    writeln!(out, "</table></div>")?;
    writeln!(out, "</section>")
}

fn write_footer(out: &mut String, r: &Report) -> fmt::Result {
    writeln!(out, "<footer>")?;
    let o = &r.outputs;
    let written = [
        ("Archived copy of the upload", o.archive.as_deref()),
        ("Snapshot", o.snapshot.as_deref()),
        ("This report as JSON", o.report_json.as_deref()),
        ("This report as HTML", o.report_html.as_deref()),
        ("The findings as CSV", o.findings_csv.as_deref()),
    ];
    writeln!(out, "<p>Written for this submission:</p>")?;
    writeln!(out, "<ul>")?;
    for (label, key) in written {
        match key {
            Some(k) => writeln!(out, "<li>{label}: <code>{}</code></li>", escape(k))?,
            None if label == "Snapshot" => {
                writeln!(out, "<li>Snapshot: none (no rows were stored)</li>")?;
            }
            None => {}
        }
    }
    writeln!(out, "</ul>")?;
    writeln!(
        out,
        "<p>This report shows values as your force sent them and is for your force only.</p>"
    )?;
    writeln!(
        out,
        "<p>Produced by force-returns, report version {}, at {}.</p>",
        r.report_version,
        escape(&r.processed_at)
    )?;
    writeln!(out, "</footer>")
}

/// The force's name, else its id, else a placeholder.
fn force_label(r: &Report) -> &str {
    r.force_name
        .as_deref()
        .or(r.received.force())
        .unwrap_or("unknown force")
}

/// The decision as the badge shows it.
fn decision_label(d: Decision) -> &'static str {
    match d {
        Decision::Accepted => "Accepted",
        Decision::AcceptedWithWarnings => "Accepted with warnings",
        Decision::Rejected => "Rejected",
    }
}

/// The badge's CSS class, which gives its colour.
fn decision_class(d: Decision) -> &'static str {
    match d {
        Decision::Accepted => "badge-accepted",
        Decision::AcceptedWithWarnings => "badge-accepted-with-warnings",
        Decision::Rejected => "badge-rejected",
    }
}

/// What the decision means for the force and what to do next, in one sentence.
fn decision_explanation(r: &Report) -> String {
    match r.decision {
        Decision::Rejected => "Nothing from this file was stored. Fix the errors below and upload \
                               the corrected file to the same folder."
            .to_owned(),
        Decision::AcceptedWithWarnings => {
            let left_out = r.rows_read.saturating_sub(r.rows_accepted);
            if left_out == 0 {
                "Your file was stored; please look at the warnings below and correct them in \
                 future returns."
                    .to_owned()
            } else {
                format!(
                    "Your file was stored without its {} {} with errors; please look at the \
                     findings below, correct those rows and upload the return again.",
                    thousands(left_out),
                    plural(left_out, "row", "rows")
                )
            }
        }
        Decision::Accepted => "Your file was stored; there is nothing for you to do.".to_owned(),
    }
}

/// How many times a code occurred, in the unit it counts: file-level codes count occurrences,
/// row-shape codes count rows and the rest count cells (one row may hold several).
fn count_phrase(s: &CodeSummary) -> String {
    let n = s.count;
    if s.code.is_file_level() {
        return match n {
            1 => "once".to_owned(),
            _ => format!("{} times", thousands(n)),
        };
    }
    let (one, many) = match s.code {
        Code::RowTooFewFields | Code::RowTooManyFields | Code::DuplicateRow => ("row", "rows"),
        _ => ("cell", "cells"),
    };
    format!("{} {}", thousands(n), plural(n, one, many))
}

/// The file name of the findings CSV (the last segment of its key), for a relative link.
fn csv_file_name(r: &Report) -> Option<&str> {
    r.outputs
        .findings_csv
        .as_deref()
        .and_then(|key| key.rsplit('/').next())
        .filter(|name| !name.is_empty() && *name != "." && *name != "..")
}

/// Percent-encodes a file name for use as a relative link, so that characters such as `:`,
/// `?` or `#` can never turn it into a scheme, a query or a fragment.
fn href_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Text made safe for HTML element content and quoted attribute values.
pub(crate) struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// Escapes `& < > " '` in text taken from a report (every page the service writes uses this).
pub(crate) fn escape(s: &str) -> Escaped<'_> {
    Escaped(s)
}

/// Opens a self-contained page: doctype, charset, viewport, a content security policy that
/// allows nothing but the page's own inline style (so even a value that slipped past escaping
/// could neither run a script nor load anything), the escaped title and the style. The caller
/// writes the `<body>`.
pub(crate) fn write_page_head(out: &mut impl fmt::Write, title: &str, style: &str) -> fmt::Result {
    writeln!(out, "<!DOCTYPE html>")?;
    writeln!(out, "<html lang=\"en\">")?;
    writeln!(out, "<head>")?;
    writeln!(out, "<meta charset=\"utf-8\">")?;
    writeln!(
        out,
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    )?;
    writeln!(
        out,
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
    )?;
    writeln!(out, "<title>{}</title>", escape(title))?;
    writeln!(out, "<style>\n{style}</style>")
}

/// `1204` → `1,204`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A share as a percentage with one decimal, `0.1234` → `12.3%`.
fn percent(share: f64) -> String {
    if share.is_finite() {
        format!("{:.1}%", share * 100.0)
    } else {
        "—".to_owned()
    }
}

fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

fn not_known() -> String {
    "<span class=\"muted\">not known</span>".to_owned()
}

fn dash() -> String {
    "—".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Code;
    use crate::model::{Place, Upload};

    fn example(code: Code, row: u64, column: &str, value: &str, message: &str) -> Finding {
        Finding::new(code, message, "enum")
            .at_row(row)
            .in_column(column)
            .with_value(value)
    }

    fn summary(code: Code, count: u64, examples: Vec<Finding>) -> CodeSummary {
        CodeSummary {
            code,
            severity: code.default_severity(),
            count,
            examples_omitted: count - examples.len() as u64,
            listed: count,
            examples,
        }
    }

    fn column(property: &str, header: Option<&str>, blanks: u64, rate: f64) -> ColumnStats {
        ColumnStats {
            property: property.to_owned(),
            header: header.map(str::to_owned),
            blanks,
            blank_rate: rate,
            errors: 0,
        }
    }

    /// A rejected return of South Yorkshire Police with one truncated and one complete code.
    fn report() -> Report {
        Report {
            report_version: REPORT_VERSION,
            received: Received {
                upload: Upload {
                    source_key: "incoming/south-yorkshire/stop_search/2020-01/january.csv"
                        .to_owned(),
                    etag: "\"e1\"".to_owned(),
                    sha256: "ab".repeat(32),
                    submission_id: "sub-0123abcd".to_owned(),
                    uploaded_at: "2020-02-03T09:15:00Z".parse().unwrap(),
                },
                place: Some(Place {
                    force_id: "south-yorkshire".to_owned(),
                    dataset: "stop_search".to_owned(),
                    period: "2020-01".parse().unwrap(),
                }),
                force_folder: None,
            },
            dataset_title: "Stop and search return".to_owned(),
            force_name: Some("South Yorkshire Police".to_owned()),
            file_name: "january.csv".to_owned(),
            bytes: 1_234_567,
            processed_at: "2020-02-03T09:16:02Z".to_owned(),
            schema_id: "stop_search/v1".to_owned(),
            decision: Decision::Rejected,
            rows_read: 5000,
            rows_accepted: 0,
            error_rows: 1204,
            findings: vec![
                summary(
                    Code::DuplicateRow,
                    2,
                    vec![
                        example(
                            Code::DuplicateRow,
                            10,
                            "type",
                            "Person search",
                            "same as row 9",
                        ),
                        example(
                            Code::DuplicateRow,
                            11,
                            "type",
                            "Person search",
                            "same as row 9",
                        ),
                    ],
                ),
                summary(
                    Code::ValueBadDate,
                    1204,
                    vec![
                        example(Code::ValueBadDate, 2, "Date", "31/01/2020", "not ISO 8601"),
                        example(Code::ValueBadDate, 3, "Date", "", "not ISO 8601"),
                        example(Code::ValueBadDate, 4, "Date", "30/02/2020", "not ISO 8601"),
                    ],
                ),
            ],
            columns: vec![
                column("type", Some("Type"), 0, 0.0),
                column("operation_name", None, 5000, 1.0),
                column("gender", Some("Gender"), 617, 0.1234),
            ],
            outputs: Outputs {
                archive: Some(
                    "archive/south-yorkshire/stop_search/2020-01/sub-0123abcd.csv".to_owned(),
                ),
                snapshot: None,
                report_json: Some(
                    "reports/south-yorkshire/stop_search/2020-01/sub-0123abcd/report.json"
                        .to_owned(),
                ),
                report_html: Some(
                    "reports/south-yorkshire/stop_search/2020-01/sub-0123abcd/report.html"
                        .to_owned(),
                ),
                findings_csv: Some(
                    "reports/south-yorkshire/stop_search/2020-01/sub-0123abcd/findings.csv"
                        .to_owned(),
                ),
            },
        }
    }

    #[test]
    fn page_is_self_contained_html5_with_title() {
        let html = render_html(&report());
        assert!(html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
        assert!(html.contains("<meta charset=\"utf-8\">"));
        assert!(html.contains("<meta name=\"viewport\""));
        assert!(html.contains(
            "<title>Stop and search return 2020-01 — South Yorkshire Police — rejected</title>"
        ));
        assert!(html.contains("print-color-adjust:exact"));
        assert!(html.contains("break-inside:avoid"));
        let lower = html.to_lowercase();
        for external in [
            "<script", "<link", "<img", "src=", "http://", "https://", "@import", "url(",
        ] {
            assert!(!lower.contains(external), "page holds {external}");
        }
        assert!(html.trim_end().ends_with("</html>"));
    }

    #[test]
    fn the_title_is_shown_as_the_pipeline_gives_it_never_doubled() {
        let html = render_html(&report());
        assert!(!html.contains("return return"), "{html}");
        assert!(html.contains("<p class=\"dataset\">Stop and search return</p>"));
        let mut r = report();
        r.dataset_title = "Use of force".to_owned();
        let html = render_html(&r);
        assert!(
            html.contains(
                "<title>Use of force 2020-01 — South Yorkshire Police — rejected</title>"
            )
        );
        assert!(html.contains("<p class=\"dataset\">Use of force</p>"));
    }

    #[test]
    fn markup_in_uploaded_values_is_escaped_never_raw() {
        let mut r = report();
        r.file_name = "<b>jan</b>.csv".to_owned();
        r.force_name = Some("Kent & \"Medway\" 'Police'".to_owned());
        r.columns[0].header = Some("<i>Type</i>".to_owned());
        r.findings[1].examples[0].value = Some("<script>alert(1)</script>".to_owned());
        r.findings[1].examples[1].value = Some("\"><img src=x>".to_owned());
        r.findings[1].examples[2].message = "bad <u>date</u>".to_owned();
        let html = render_html(&r);
        for raw in [
            "<script>",
            "<img src=x>",
            "\"><img",
            "<b>jan",
            "<i>Type",
            "<u>date",
        ] {
            assert!(!html.contains(raw), "raw markup {raw} in page");
        }
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&quot;&gt;&lt;img src=x&gt;"));
        assert!(html.contains("&lt;b&gt;jan&lt;/b&gt;.csv"));
        assert!(html.contains("Kent &amp; &quot;Medway&quot; &#39;Police&#39;"));
        assert!(html.contains("&lt;i&gt;Type&lt;/i&gt;"));
        assert!(html.contains("bad &lt;u&gt;date&lt;/u&gt;"));
    }

    #[test]
    fn escape_covers_the_five_characters() {
        assert_eq!(
            escape("a&b<c>d\"e'f").to_string(),
            "a&amp;b&lt;c&gt;d&quot;e&#39;f"
        );
        assert_eq!(escape("plain é text").to_string(), "plain é text");
        assert_eq!(escape("").to_string(), "");
    }

    #[test]
    fn badge_text_and_class_follow_the_decision() {
        let cases = [
            (
                Decision::Accepted,
                "badge-accepted\">Accepted<",
                "nothing for you to do",
            ),
            (
                Decision::AcceptedWithWarnings,
                "badge-accepted-with-warnings\">Accepted with warnings<",
                "look at the warnings",
            ),
            (
                Decision::Rejected,
                "badge-rejected\">Rejected<",
                "Nothing from this file was stored. Fix the errors below and upload the corrected \
                 file to the same folder.",
            ),
        ];
        for (decision, badge, explanation) in cases {
            let mut r = report();
            r.decision = decision;
            r.rows_accepted = r.rows_read;
            let html = render_html(&r);
            assert!(
                html.contains(&format!("<span class=\"badge {badge}")),
                "{decision:?}"
            );
            assert!(html.contains(explanation), "{decision:?}");
            let title_end = format!("— {}</title>", decision_label(decision).to_lowercase());
            assert!(html.contains(&title_end), "{decision:?}");
        }
    }

    #[test]
    fn accepted_with_excluded_rows_says_how_many_were_left_out() {
        let mut r = report();
        r.decision = Decision::AcceptedWithWarnings;
        r.rows_accepted = r.rows_read - 12;
        assert!(render_html(&r).contains("stored without its 12 rows with errors"));
    }

    #[test]
    fn truncation_note_only_when_examples_are_capped() {
        let html = render_html(&report());
        assert_eq!(html.matches("Showing the first").count(), 1);
        assert!(html.contains("Showing the first 3 of 1,204; every finding is in the CSV file"));
        assert!(!html.contains("of 2;"));

        let mut r = report();
        r.findings[1].count = 3;
        assert!(!render_html(&r).contains("Showing the first"));
    }

    #[test]
    fn a_listing_cut_short_says_how_many_the_csv_has() {
        let mut r = report();
        r.findings[1].listed = 1000;
        let html = render_html(&r);
        assert!(
            html.contains(
                "Showing the first 3 of 1,204; the CSV file <a href=\"findings.csv\">findings.csv</a> lists the first 1,000."
            ),
            "{html}"
        );
    }

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1204), "1,204");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
        let html = render_html(&report());
        assert!(html.contains("1,204 cells"));
        assert!(html.contains("2 rows"));
        assert!(html.contains("<dd>1,204</dd>"), "error count in counts");
        assert!(html.contains("1,234,567 bytes"));
    }

    #[test]
    fn csv_link_is_relative_file_name() {
        let html = render_html(&report());
        assert!(html.contains("<a href=\"findings.csv\">findings.csv</a>"));
        assert!(!html.contains("href=\"reports/"));
        assert!(!html.contains("href=\"/"));

        let mut r = report();
        r.outputs.findings_csv = Some("reports/x/javascript:alert(1)#.csv".to_owned());
        let html = render_html(&r);
        assert!(html.contains("href=\"javascript%3Aalert%281%29%23.csv\""));

        r.outputs.findings_csv = None;
        let html = render_html(&r);
        assert!(html.contains("every finding is in the CSV file."));
        assert!(!html.contains("<a href"));
    }

    #[test]
    fn errors_come_before_warnings_and_info() {
        let mut r = report();
        r.findings
            .push(summary(Code::ValueLegacySpelling, 1, vec![]));
        let html = render_html(&r);
        let error = html.find("id=\"code-value_bad_date\"");
        let warning = html.find("id=\"code-duplicate_row\"");
        let info = html.find("id=\"code-value_legacy_spelling\"");
        assert!(
            error < warning && warning < info,
            "{error:?} {warning:?} {info:?}"
        );
        assert!(html.contains(crate::finding::hint(Code::ValueLegacySpelling)));
    }

    #[test]
    fn columns_table_marks_missing_column_and_rates() {
        let html = render_html(&report());
        let missing = html
            .lines()
            .find(|l| l.contains("<code>operation_name</code>"))
            .expect("operation_name row");
        assert!(missing.contains("not in file"));
        assert!(missing.contains("100.0%"));
        assert!(html.contains("12.3%"));
        assert!(html.contains("0.0%"));
        assert_eq!(html.matches("not in file").count(), 1);
    }

    #[test]
    fn footer_lists_outputs_and_version() {
        let html = render_html(&report());
        let footer = &html[html.find("<footer>").expect("footer")..];
        assert!(footer.contains("archive/south-yorkshire/stop_search/2020-01/sub-0123abcd.csv"));
        assert!(footer.contains("Snapshot: none"));
        assert!(footer.contains("force-returns, report version 2"));
    }

    #[test]
    fn force_id_stands_in_for_missing_name() {
        let mut r = report();
        r.force_name = None;
        assert!(render_html(&r).contains("— south-yorkshire — rejected</title>"));
    }

    /// Splits CSV bytes into records with `csv-core`, the parser the decoder uses.
    fn parse_csv(mut input: &[u8]) -> Vec<Vec<String>> {
        use csv_core::ReadRecordResult as R;
        let mut reader = csv_core::Reader::new();
        let mut records = Vec::new();
        let mut output = vec![0; 4096];
        let mut ends = vec![0; 32];
        loop {
            let (result, nin, _nout, nend) = reader.read_record(input, &mut output, &mut ends);
            input = &input[nin..];
            match result {
                R::Record => {
                    let mut start = 0;
                    let fields = ends[..nend]
                        .iter()
                        .map(|&end| {
                            let field = String::from_utf8(output[start..end].to_vec()).unwrap();
                            start = end;
                            field
                        })
                        .collect();
                    records.push(fields);
                }
                R::End => return records,
                R::InputEmpty => {}
                R::OutputFull | R::OutputEndsFull => panic!("test buffers too small"),
            }
        }
    }

    /// The value column of a one-finding CSV, as a spreadsheet would read the cell.
    fn csv_value(value: &str) -> String {
        let finding = Finding::new(Code::ValueSchema, "m", "enum").with_value(value);
        let mut sink = CsvFindingSink::new(Vec::new()).unwrap();
        sink.accept(&finding).unwrap();
        parse_csv(&sink.into_inner().unwrap())[1][5].clone()
    }

    #[test]
    fn csv_guard_sees_formulas_behind_white_space_and_in_full_width_forms() {
        for risky in [
            "=1+1",
            " =1+1",
            "   +1",
            "\t=1+1",
            "\r=1+1",
            "\n@SUM(A1)",
            "\u{a0}-2+3",
            "\u{3000}=1",
            "\u{feff}=1",
            "\u{200b}=1",
            "\u{ff1d}1+1",
            " \u{ff1d}1+1",
            "\u{ff0b}1",
            "\u{ff0d}1",
            "\u{ff20}SUM(A1)",
            "\u{fe66}1",
            "\u{fe62}1",
            "\u{fe63}1",
            "\u{fe6b}SUM(A1)",
            "\t",
            "\r",
        ] {
            assert_eq!(csv_value(risky), format!("'{risky}"), "{risky:?}");
        }
        for plain in ["1+1", "a=b", "Arrest", "54.7", " 54.7", "x-y", ""] {
            assert_eq!(csv_value(plain), plain, "{plain:?}");
        }
    }

    #[test]
    fn csv_sink_quotes_comma_quote_newline_and_guards_formulas() {
        let message = "said \"no\", then\nleft";
        let finding = Finding::new(Code::ValueSchema, message, "enum")
            .at_row(7)
            .in_column("type")
            .with_value("=HYPERLINK(\"x\")");
        let mut sink = CsvFindingSink::new(Vec::new()).unwrap();
        sink.accept(&finding).unwrap();
        let bytes = sink.into_inner().unwrap();

        let expected = "\u{feff}row,column,severity,code,message,value,rule,schema_path,hint,cell\r\n\
             7,type,error,value_schema,\"said \"\"no\"\", then\nleft\",\"'=HYPERLINK(\"\"x\"\")\",\
             enum,,correct the value as the message says,\r\n";
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), expected);

        let records = parse_csv(&bytes);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0][0], "row");
        let row = &records[1];
        assert_eq!(row.len(), 10);
        assert_eq!(row[0], "7");
        assert_eq!(row[4], message);
        assert_eq!(row[5], "'=HYPERLINK(\"x\")");
        assert_eq!(row[7], "");
        assert_eq!(row[8], crate::finding::hint(Code::ValueSchema));
    }
}
