//! The per-force monthly summary: for one force and month, the status of its returns over the
//! last year, the gaps and anomalies found in the month, and its headline figures, as JSON and
//! as a self-contained HTML page (`feedback/<force>/summary-<YYYY-MM>.{json,html}`).
//!
//! Rendering is pure; the pipeline gathers the inputs from the bucket.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use super::detect::{Anomaly, Unit, format_value, month_name, percent, thousands};
use super::metrics::{MetricRow, find};
use super::status::{Status, StatusRow};
use crate::feedback::{escape, write_page_head};
use crate::period::Period;

/// One headline figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Headline {
    /// What it is.
    pub label: String,
    /// Its value.
    pub value: f64,
    /// How to read it.
    pub unit: Unit,
}

/// One dataset's part of the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetSummary {
    /// Dataset id.
    pub dataset: String,
    /// Dataset title.
    pub title: String,
    /// The status of this month's return.
    pub status: Option<StatusRow>,
    /// The status of the last twelve months' returns up to this one, oldest first.
    pub recent: Vec<StatusRow>,
    /// Gaps and anomalies of this month's current submission.
    pub anomalies: Vec<Anomaly>,
    /// Headline figures of this month's current submission.
    pub headlines: Vec<Headline>,
    /// The submission's report (HTML), when there is one.
    pub report: Option<String>,
}

/// The summary of one force's month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForceSummary {
    /// Version of this JSON shape.
    pub summary_version: u32,
    /// Force id.
    pub force_id: String,
    /// The force's name.
    pub force_name: Option<String>,
    /// The month.
    pub period: Period,
    /// When it was written (RFC 3339).
    pub generated_at: String,
    /// One part per dataset.
    pub datasets: Vec<DatasetSummary>,
}

/// The headline figures among a submission's metric rows.
pub fn headlines(rows: &[MetricRow]) -> Vec<Headline> {
    let mut out = Vec::new();
    let mut add = |label: &str, metric: &str, dimension: &str, category: &str, unit: Unit| {
        if let Some(r) = find(rows, metric, dimension, category) {
            out.push(Headline {
                label: label.to_owned(),
                value: r.value,
                unit,
            });
        }
    };
    add("Searches", "searches", "", "", Unit::Count);
    add("Arrest rate", "arrest_rate", "", "", Unit::Share);
    add(
        "Outcome linked to the object of search",
        "outcome_linked_rate",
        "",
        "",
        Unit::Share,
    );
    add(
        "More thorough searches (more than outer clothing removed)",
        "more_thorough_searches",
        "",
        "",
        Unit::Count,
    );
    add(
        "Self-defined ethnicity not stated or blank",
        "not_stated_share",
        "",
        "",
        Unit::Share,
    );
    add(
        "Times exactly at midnight or missing",
        "midnight_share",
        "",
        "",
        Unit::Share,
    );
    let group = "self_defined_ethnicity_group";
    if let Some(r) = find(rows, "rate_per_1000", "", "") {
        out.push(Headline {
            label: "Person searches per 1,000 residents (all)".into(),
            value: r.value,
            unit: Unit::Count,
        });
    }
    for r in rows
        .iter()
        .filter(|r| r.metric == "rate_per_1000" && r.dimension == group)
    {
        out.push(Headline {
            label: format!("Person searches per 1,000 residents ({})", r.category),
            value: r.value,
            unit: Unit::Count,
        });
    }
    for r in rows
        .iter()
        .filter(|r| r.metric == "disparity_ratio" && r.dimension == group)
    {
        out.push(Headline {
            label: format!("Disparity ratio, {} to White", r.category),
            value: r.value,
            unit: Unit::Count,
        });
    }
    out
}

/// The summary as pretty JSON.
pub fn render_json(summary: &ForceSummary) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(summary).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Words for a status.
pub fn status_words(s: Status) -> &'static str {
    match s {
        Status::Accepted => "Accepted",
        Status::AcceptedWithWarnings => "Accepted with warnings",
        Status::Late => "Accepted, late",
        Status::Rejected => "Rejected: awaiting a corrected file",
        Status::Due => "Due",
        Status::Overdue => "Overdue",
    }
}

const STYLE: &str = "\
body{margin:0 auto;max-width:64rem;padding:1rem;font-family:system-ui,-apple-system,\"Segoe UI\",Roboto,Helvetica,Arial,sans-serif;line-height:1.45;color:#1f2328;background:#fff}
h1{font-size:1.6rem}h2{font-size:1.3rem;margin-top:2rem;border-bottom:2px solid #d0d7de}
table{border-collapse:collapse;width:100%}th,td{padding:.35rem .6rem;text-align:left;vertical-align:top;border-bottom:1px solid #d0d7de}
.num{text-align:right;font-variant-numeric:tabular-nums}
.s-accepted{color:#1a7f37}.s-accepted_with_warnings,.s-late{color:#6b4a00}.s-rejected,.s-overdue{color:#c62828;font-weight:600}.s-due{color:#57606a}
.anomaly{margin:1rem 0;padding:.2rem 0 .2rem .9rem;border-left:.35rem solid #f2b600}
.anomaly-info{border-left-color:#3b6fb6}
.muted{color:#57606a}
";

/// The summary as one self-contained HTML page (no scripts, nothing loaded).
pub fn render_html(summary: &ForceSummary) -> String {
    let mut out = String::with_capacity(16 * 1024);
    // Writing to a `String` cannot fail.
    let _ = write_html(&mut out, summary);
    out
}

fn write_html(out: &mut String, s: &ForceSummary) -> fmt::Result {
    let force = s.force_name.as_deref().unwrap_or(&s.force_id);
    let month = month_name(s.period);
    write_page_head(out, &format!("{force} — monthly summary — {month}"), STYLE)?;
    writeln!(out, "</head>\n<body>")?;
    writeln!(out, "<h1>{} — {}</h1>", escape(force), escape(&month))?;
    writeln!(
        out,
        "<p class=\"muted\">Monthly summary of returns, gaps and anomalies, written {}.</p>",
        escape(&s.generated_at)
    )?;
    for d in &s.datasets {
        write_dataset(out, d)?;
    }
    writeln!(out, "</body>\n</html>")
}

fn write_dataset(out: &mut String, d: &DatasetSummary) -> fmt::Result {
    writeln!(out, "<section>\n<h2>{}</h2>", escape(&d.title))?;
    match &d.status {
        Some(row) => writeln!(
            out,
            "<p>This month's return: <strong class=\"s-{}\">{}</strong>{}.</p>",
            row.status.as_str(),
            status_words(row.status),
            if row.zero_report {
                " (a zero report: no events this month)"
            } else {
                ""
            }
        )?,
        None => writeln!(out, "<p>This month's return is not expected yet.</p>")?,
    }
    if let Some(report) = &d.report {
        writeln!(
            out,
            "<p>The full report on the file is <code>{}</code>.</p>",
            escape(report)
        )?;
    }
    writeln!(out, "<h3>Gaps and anomalies</h3>")?;
    if d.anomalies.is_empty() {
        writeln!(
            out,
            "<p>None found: the month is in line with your own history and with other forces.</p>"
        )?;
    }
    for a in &d.anomalies {
        let class = if a.severity == crate::finding::Severity::Info {
            "anomaly anomaly-info"
        } else {
            "anomaly"
        };
        writeln!(
            out,
            "<div class=\"{class}\"><p><code>{}</code> ({}) — {}</p><p>{}</p><p class=\"muted\">Method: {}</p></div>",
            a.code,
            a.severity,
            escape(&a.series),
            escape(&a.message),
            escape(&a.method)
        )?;
    }
    if !d.headlines.is_empty() {
        writeln!(out, "<h3>Headline figures</h3>\n<table><tbody>")?;
        for h in &d.headlines {
            let value = match h.unit {
                Unit::Share => percent(h.value),
                Unit::Count | Unit::Days if h.value.fract() == 0.0 => thousands(h.value),
                Unit::Count | Unit::Days => format!("{:.3}", h.value),
            };
            writeln!(
                out,
                "<tr><th scope=\"row\">{}</th><td class=\"num\">{}</td></tr>",
                escape(&h.label),
                escape(&value)
            )?;
        }
        writeln!(out, "</tbody></table>")?;
    }
    writeln!(out, "<h3>Returns over the last year</h3>\n<table>")?;
    writeln!(
        out,
        "<thead><tr><th>Month</th><th>Status</th><th>Due by the end of</th><th class=\"num\">Records</th></tr></thead><tbody>"
    )?;
    for row in &d.recent {
        writeln!(
            out,
            "<tr><td>{}</td><td class=\"s-{}\">{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            escape(&month_name(row.period)),
            row.status.as_str(),
            status_words(row.status),
            // The deadline is the first instant after the last day allowed.
            (row.deadline - chrono::Duration::seconds(1)).format("%Y-%m-%d"),
            row.rows
                .map_or_else(|| "—".to_owned(), |n| format_value(n as f64, Unit::Count))
        )?;
    }
    writeln!(out, "</tbody></table>\n</section>")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::detect::Unit;
    use crate::finding::{Code, Severity};

    #[test]
    fn page_escapes_text_and_shows_status_anomalies_and_figures() {
        let period: Period = "2020-01".parse().unwrap();
        let row = StatusRow {
            dataset: "stop_search".into(),
            force_id: "kent".into(),
            period,
            status: Status::Late,
            deadline: "2020-02-29T00:00:00Z".parse().unwrap(),
            decision: None,
            submission_id: None,
            received_at: None,
            uploads: 1,
            rows: Some(1234),
            zero_report: false,
        };
        let anomaly = Anomaly {
            code: Code::AnomalyVolume,
            severity: Severity::Warning,
            force_id: "kent".into(),
            period,
            submission_id: "s".into(),
            series: "searches <b>".into(),
            dimension: None,
            category: None,
            column: None,
            unit: Unit::Count,
            observed: 1.0,
            expected: 2.0,
            lower: 1.5,
            upper: 2.5,
            probability: 0.0,
            method: "m".into(),
            history_months: 6,
            history_from: None,
            history_to: None,
            since: None,
            message: "far lower".into(),
        };
        let summary = ForceSummary {
            summary_version: 1,
            force_id: "kent".into(),
            force_name: Some("Kent Police".into()),
            period,
            generated_at: "2020-03-01T00:00:00Z".into(),
            datasets: vec![DatasetSummary {
                dataset: "stop_search".into(),
                title: "Stop and search return".into(),
                status: Some(row.clone()),
                recent: vec![row],
                anomalies: vec![anomaly],
                headlines: vec![Headline {
                    label: "Arrest rate".into(),
                    value: 0.125,
                    unit: Unit::Share,
                }],
                report: None,
            }],
        };
        let html = render_html(&summary);
        assert!(html.contains("<h1>Kent Police — January 2020</h1>"));
        assert!(html.contains("Accepted, late"));
        assert!(html.contains("searches &lt;b&gt;"));
        assert!(!html.contains("<b>"));
        assert!(html.contains("12.5%"));
        assert!(html.contains("1,234"));
        assert!(html.contains("<td>2020-02-28</td>"), "the last day allowed");
        let json: serde_json::Value = serde_json::from_slice(&render_json(&summary)).unwrap();
        assert_eq!(json["datasets"][0]["status"]["status"], "late");
    }
}
