//! Value types that several layers share, at the bottom of the crate. Any module may import
//! `model`; `model` imports only the other bottom modules ([`crate::period`]), so a value that
//! two layers exchange lives here rather than in either of them, and no import cycle can pass
//! through it.
//!
//! - [`Decision`]: what checking a whole upload found;
//! - [`analysis`]: the `[anomalies]` and `[population]` settings of a pipeline;
//! - [`observe`]: what a record-level return's records yield (`[observe]`), and the
//!   [`Observations`](observe::Observations) of one submission;
//! - [`upload`]: the limits of reading an upload, how cells are read, blank-rate thresholds;
//! - [`fingerprint`]: which records a submission holds, in a bounded sketch, and how much two
//!   submissions share;
//! - [`identity`]: the identity of a submission (upload, force, dataset, period), declared once;
//! - [`manifest`]: which accepted submission is current for each force × period;
//! - [`receipt`]: one row per processed upload, the state the status of returns comes from;
//! - [`series`]: observations of current submissions by force and period, and each force's
//!   latest, kept so that an analysis reads them in one request (a cache of the metrics files);
//! - [`token`]: tokens unique to one taking (leases, work folders).

pub mod analysis;
pub mod fingerprint;
pub mod identity;
pub mod manifest;
pub mod observe;
pub mod receipt;
pub mod series;
pub mod token;
pub mod upload;

pub use identity::{Identity, Place, Received, STATE_FORMAT, Upload};
pub use manifest::{Manifest, ManifestChange, ManifestEntry};
pub use receipt::{Receipt, Receipts};
pub use token::new_token;
pub use upload::{BlankThreshold, DEFAULT_MAX_COLUMNS, Limits, ReadingSettings};

/// What checking a whole upload found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// No warnings or errors.
    Accepted,
    /// Accepted; the report lists warnings.
    AcceptedWithWarnings,
    /// Not accepted; the force must fix and resubmit.
    Rejected,
}

impl Decision {
    /// The name used in reports and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Accepted => "accepted",
            Decision::AcceptedWithWarnings => "accepted_with_warnings",
            Decision::Rejected => "rejected",
        }
    }
}
