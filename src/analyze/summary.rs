//! The per-force monthly summary's values: for one force and month, the status of its returns
//! over the last year, the gaps and anomalies found in the month, and its headline figures.
//! `feedback::summary` renders them as JSON and as a self-contained HTML page
//! (`feedback/<force>/summary-<YYYY-MM>.{json,html}`); the pipeline gathers the inputs from the
//! bucket.

use serde::{Deserialize, Serialize};

use super::detect::{Anomaly, Unit};
use super::metrics::{MetricRow, find};
use super::status::StatusRow;
use crate::model::observe::{HeadlineDecl, HeadlineUnit};
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

/// The headline figures a profile declares, among a submission's metric rows; a headline
/// whose metric the submission lacks is left out.
pub fn headlines(rows: &[MetricRow], declared: &[HeadlineDecl]) -> Vec<Headline> {
    let mut out = Vec::new();
    for h in declared {
        let unit = match h.unit {
            HeadlineUnit::Count => Unit::Count,
            HeadlineUnit::Share => Unit::Share,
        };
        match &h.dimension {
            None => out.extend(find(rows, &h.metric, "", "").map(|r| Headline {
                label: h.label.clone(),
                value: r.value,
                unit,
            })),
            Some(dimension) => out.extend(
                rows.iter()
                    .filter(|r| r.metric == h.metric && &r.dimension == dimension)
                    .map(|r| Headline {
                        label: h.label.replace("{category}", &r.category),
                        value: r.value,
                        unit,
                    }),
            ),
        }
    }
    out
}
