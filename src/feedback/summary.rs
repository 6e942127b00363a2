//! The force's monthly summary as JSON and as one self-contained HTML page
//! (`feedback/<force>/summary-<YYYY-MM>.{json,html}`), from the values `analyze::summary`
//! gathers. Rendering is pure.

use std::fmt::{self, Write as _};

use super::{escape, write_page_head};
use crate::analyze::detect::{Unit, format_value, percent, period_name, thousands};
use crate::analyze::status::Status;
use crate::analyze::summary::{DatasetSummary, ForceSummary};

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
    let name = period_name(s.period);
    let every = s.period.cadence().adjective();
    write_page_head(out, &format!("{force} — {every} summary — {name}"), STYLE)?;
    writeln!(out, "</head>\n<body>")?;
    writeln!(out, "<h1>{} — {}</h1>", escape(force), escape(&name))?;
    let mut title = every.to_owned();
    title[..1].make_ascii_uppercase();
    writeln!(
        out,
        "<p class=\"muted\">{title} summary of returns, gaps and anomalies, written {}.</p>",
        escape(&s.generated_at)
    )?;
    for d in &s.datasets {
        write_dataset(out, d, s.period.cadence().word())?;
    }
    writeln!(out, "</body>\n</html>")
}

fn write_dataset(out: &mut String, d: &DatasetSummary, word: &str) -> fmt::Result {
    writeln!(out, "<section>\n<h2>{}</h2>", escape(&d.title))?;
    match &d.status {
        Some(row) => writeln!(
            out,
            "<p>This {word}'s return: <strong class=\"s-{}\">{}</strong>{}.</p>",
            row.status.as_str(),
            status_words(row.status),
            if row.zero_report {
                format!(" (a zero report: no events this {word})")
            } else {
                String::new()
            }
        )?,
        None => writeln!(out, "<p>This {word}'s return is not expected yet.</p>")?,
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
            "<p>None found: the {word} is in line with your own history and with other forces.</p>"
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
                Unit::Figure => format!("{:.2}", h.value),
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
            escape(&period_name(row.period)),
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
    use crate::analyze::detect::Anomaly;
    use crate::analyze::status::StatusRow;
    use crate::analyze::summary::Headline;
    use crate::finding::{Code, Severity};
    use crate::period::Period;

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
