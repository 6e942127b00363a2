//! Gaps and anomalies: who is missing, what is incomplete, what looks wrong.
//!
//! A file can pass every field check and still be wrong: a force misses a month, sends half a
//! month, stops recording a category after a system change, or its numbers jump fourfold. This
//! module finds those and explains them, for every record-level return the same way: it reads
//! the observations `crate::observe` gathers as a profile's `[observe]` declares them, and
//! names no field of any return. It is pure: functions over observations, histories and a
//! clock-supplied `now`,
//! returning rows and [`Anomaly`]s; `pipeline` does the IO.
//!
//! - [`metrics`]: the derived metrics table (records by category and day, the declared
//!   subset, category metrics, shares and agreements, blank rates, rates per 1,000 and
//!   disparity ratios) and observations read back from it;
//! - [`detect`]: gaps inside a submission and anomalies against the force's own history and
//!   its peers, each with observed value, expected range, method, history and message;
//! - [`reconcile`]: an aggregate return's counts against the records of the record-level
//!   return they can be computed from, for the same force and period;
//! - [`status`]: expected returns and their status (`accepted` … `overdue`);
//! - [`summary`]: the per-force monthly summary's values (`feedback` renders it);
//! - [`tables`]: the metrics, anomalies and status tables as Parquet;
//! - [`stats`]: medians, MADs, Poisson and binomial tails.
//!
//! The settings come from `crate::model::analysis` and `crate::model::observe` (parsed by
//! `config`) and the population
//! reference from `crate::schema::population`.
//!
//! Rules: nothing here reads the bucket or the clock; bad or missing data gives fewer
//! findings, never a panic; every threshold comes from the pipeline file. Nothing here imports
//! `pipeline`, `feedback` or `config`.

pub mod detect;
pub mod metrics;
pub mod reconcile;
pub mod stats;
pub mod status;
pub mod summary;
pub mod tables;

pub use crate::observe::{Observations, ObservationsBuilder};
pub use detect::{Anomaly, Input, Labels, detect, usual_figures, usual_records};
pub use metrics::{MetricRow, Rates, metric_rows};
pub use status::{Status, StatusRow};

use crate::finding::Code;

/// The finding codes the analysis reports (the rest come from checking the file).
pub const CODES: &[Code] = &[
    Code::GapDaysWithoutRecords,
    Code::BlankRateVsHistory,
    Code::AnomalyVolume,
    Code::AnomalyLevelShift,
    Code::AnomalyCategoryShare,
    Code::AnomalyCategoryVanished,
    Code::AnomalyRecordingShare,
    Code::AnomalyPeerShare,
    Code::AnomalyResentRecords,
    Code::AnomalyDistributionShift,
    Code::AnomalyFieldsAgree,
    Code::AnomalyFigure,
    Code::AnomalyFiguresResent,
];
