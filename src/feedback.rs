//! Feedback: the report back to the submitting force, as JSON (for machines), a self-contained
//! HTML page (for a force analyst to read and print) and CSV (every row finding, for Excel).
//!
//! The report shows offending values as the force sent them: it goes only to that force.
//! Central tables mask personal values (see `snapshot`). Rendering is pure: it takes a
//! [`Report`] and returns bytes; the CSV of row findings streams through [`CsvFindingSink`].

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::finding::{CodeSummary, Finding, FindingSink, Severity};
use crate::validate::{ColumnStats, Decision};

/// Everything the force is told about one submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Version of this report's JSON shape.
    pub report_version: u32,
    /// Dataset id.
    pub dataset: String,
    /// Dataset title.
    pub dataset_title: String,
    /// Canonical force id (from the upload folder), when known.
    pub force_id: Option<String>,
    /// The force's name, when known.
    pub force_name: Option<String>,
    /// Period `YYYY-MM`, when known.
    pub period: Option<String>,
    /// Deterministic submission id.
    pub submission_id: String,
    /// Where the upload was found (`incoming/...`).
    pub source_key: String,
    /// The uploaded file's name.
    pub file_name: String,
    /// SHA-256 of the upload, hex.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
    /// When the upload arrived (RFC 3339), when known.
    pub uploaded_at: Option<String>,
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
    /// Every row finding as CSV.
    pub findings_csv: Option<String>,
}

impl Report {
    /// Count of findings of a severity.
    pub fn count(&self, severity: Severity) -> u64 {
        self.findings.iter().filter(|s| s.severity == severity).map(|s| s.count).sum()
    }
}

/// The report as pretty JSON.
pub fn render_json(report: &Report) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(report).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Writes every finding as one CSV line: `row,column,severity,code,message,value,rule,schema_path,hint`.
pub struct CsvFindingSink<W: Write> {
    out: W,
}

impl<W: Write> CsvFindingSink<W> {
    /// A sink writing to `out`, starting with the header line (with a UTF-8 BOM so Excel reads
    /// accents and symbols correctly).
    pub fn new(mut out: W) -> std::io::Result<Self> {
        out.write_all(b"\xef\xbb\xbfrow,column,severity,code,message,value,rule,schema_path,hint\r\n")?;
        Ok(CsvFindingSink { out })
    }

    /// Flushes and returns the writer.
    pub fn into_inner(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

fn csv_field(out: &mut impl Write, s: &str) -> std::io::Result<()> {
    // Cells that a spreadsheet would run as a formula are prefixed with a quote mark.
    let risky = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
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
