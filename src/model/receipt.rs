//! Receipts: one row per processed upload with a valid location (force, period, decision,
//! arrival time), the state a dataset's status table is computed from. `state` keeps them in
//! `_state/receipts/<dataset>/<year>.json`, a part per year of periods ([`Receipts::split`],
//! [`Receipts::merge`]); `analyze::status` reads them.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Decision;
use crate::period::Period;

/// One processed upload with a valid location, as the status needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// Force id.
    pub force_id: String,
    /// The period.
    pub period: Period,
    /// Submission id.
    pub submission_id: String,
    /// The upload key (orders uploads with the same time, as the manifest does).
    pub source_key: String,
    /// The decision.
    pub decision: Decision,
    /// When the upload arrived.
    pub uploaded_at: DateTime<Utc>,
    /// Records read.
    pub rows: u64,
}

/// Every receipt of a dataset: the state the status table is computed from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Receipts {
    /// Dataset id.
    pub dataset: String,
    /// Receipts, by period, force and upload time.
    pub receipts: Vec<Receipt>,
}

impl Receipts {
    /// Adds a receipt; `false` when its submission was already recorded (a retry).
    pub fn add(&mut self, receipt: Receipt) -> bool {
        if self
            .receipts
            .iter()
            .any(|r| r.submission_id == receipt.submission_id)
        {
            return false;
        }
        self.receipts.push(receipt);
        self.sort();
        true
    }

    fn sort(&mut self) {
        self.receipts.sort_by(|a, b| {
            (&a.period, &a.force_id, a.uploaded_at, &a.source_key).cmp(&(
                &b.period,
                &b.force_id,
                b.uploaded_at,
                &b.source_key,
            ))
        });
    }

    /// Takes in the receipts of another part (or of the receipts written before parts); a
    /// submission already held is not added twice.
    pub fn merge(&mut self, other: Receipts) {
        let mut seen: HashSet<String> = self
            .receipts
            .iter()
            .map(|r| r.submission_id.clone())
            .collect();
        self.receipts.extend(
            other
                .receipts
                .into_iter()
                .filter(|r| seen.insert(r.submission_id.clone())),
        );
        self.sort();
    }

    /// Takes the receipts apart by the calendar year their periods begin in.
    pub fn split(self) -> BTreeMap<i32, Receipts> {
        let mut parts: BTreeMap<i32, Receipts> = BTreeMap::new();
        for r in self.receipts {
            parts
                .entry(r.period.year())
                .or_insert_with(|| Receipts {
                    dataset: self.dataset.clone(),
                    receipts: Vec::new(),
                })
                .receipts
                .push(r);
        }
        parts
    }
}
