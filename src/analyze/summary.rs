//! The per-force monthly summary's values: for one force and month, the status of its returns
//! over the last year, the gaps and anomalies found in the month, and its headline figures.
//! `feedback::summary` renders them as JSON and as a self-contained HTML page
//! (`feedback/<force>/summary-<YYYY-MM>.{json,html}`); the pipeline gathers the inputs from the
//! bucket.

use serde::{Deserialize, Serialize};

use super::detect::{Anomaly, Unit};
use super::metrics::{MetricRow, find};
use super::status::StatusRow;
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
