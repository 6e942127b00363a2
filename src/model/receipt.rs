//! Receipts: one row per processed upload with a valid location (force, period, decision,
//! arrival time), the state a dataset's status table is computed from. `state` keeps them in
//! `_state/receipts/<dataset>/<year>.json`, a part per year of periods ([`Receipts::split`],
//! [`Receipts::merge`]); `analyze::status` reads them.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Decision;
use super::Identity;
use super::identity::{STATE_FORMAT, first_format};
use crate::period::Period;

/// One processed upload with a valid location, as the status needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// The submission: upload, force, dataset and period.
    #[serde(flatten)]
    pub identity: Identity,
    /// The decision.
    pub decision: Decision,
    /// Records read.
    pub rows: u64,
}

impl Receipt {
    /// Its force id.
    pub fn force_id(&self) -> &str {
        self.identity.force_id()
    }

    /// Its period.
    pub fn period(&self) -> Period {
        self.identity.period()
    }

    /// Its submission id.
    pub fn submission_id(&self) -> &str {
        self.identity.submission_id()
    }

    /// When the upload arrived.
    pub fn uploaded_at(&self) -> DateTime<Utc> {
        self.identity.upload.uploaded_at
    }
}

/// Every receipt of a dataset: the state the status table is computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipts {
    /// The version of this document's shape: [`STATE_FORMAT`] when written, 1 for documents
    /// written before each receipt carried a whole [`Identity`].
    #[serde(default = "first_format")]
    pub format_version: u32,
    /// Dataset id.
    pub dataset: String,
    /// Receipts, by period, force and upload time.
    pub receipts: Vec<Receipt>,
}

impl Receipts {
    /// No receipts of `dataset`, in today's format.
    pub fn new(dataset: &str) -> Receipts {
        Receipts {
            format_version: STATE_FORMAT,
            dataset: dataset.to_owned(),
            receipts: Vec::new(),
        }
    }

    /// Brings receipts read from the bucket to today's format: receipts written before they
    /// carried their dataset take the document's.
    pub fn upgrade(&mut self) {
        for r in &mut self.receipts {
            r.identity.adopt_dataset(&self.dataset);
        }
        self.format_version = STATE_FORMAT;
    }

    /// Adds a receipt; `false` when its submission was already recorded (a retry).
    pub fn add(&mut self, receipt: Receipt) -> bool {
        if self
            .receipts
            .iter()
            .any(|r| r.submission_id() == receipt.submission_id())
        {
            return false;
        }
        self.receipts.push(receipt);
        self.sort();
        true
    }

    fn sort(&mut self) {
        fn order(r: &Receipt) -> (Period, &str, DateTime<Utc>, &str) {
            (
                r.period(),
                r.force_id(),
                r.uploaded_at(),
                &r.identity.upload.source_key,
            )
        }
        self.receipts.sort_by(|a, b| order(a).cmp(&order(b)));
    }

    /// Takes in the receipts of another part (or of the receipts written before parts); a
    /// submission already held is not added twice.
    pub fn merge(&mut self, other: Receipts) {
        let mut seen: HashSet<String> = self
            .receipts
            .iter()
            .map(|r| r.submission_id().to_owned())
            .collect();
        self.receipts.extend(
            other
                .receipts
                .into_iter()
                .filter(|r| seen.insert(r.submission_id().to_owned())),
        );
        self.sort();
    }

    /// Takes the receipts apart by the calendar year their periods begin in.
    pub fn split(self) -> BTreeMap<i32, Receipts> {
        let mut parts: BTreeMap<i32, Receipts> = BTreeMap::new();
        for r in self.receipts {
            parts
                .entry(r.period().year())
                .or_insert_with(|| Receipts::new(&self.dataset))
                .receipts
                .push(r);
        }
        parts
    }
}
