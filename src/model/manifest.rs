//! The manifest of a dataset's snapshots: which accepted submission is current for each
//! force × period, and the ones later uploads replaced. [`Manifest::apply`] is the pure rule for
//! supersession; `state` commits it under the dataset's commit lock, in parts (one per year of
//! periods) that [`Manifest::merge`] puts together and [`Manifest::split`] takes apart.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::period::Period;

/// One accepted submission in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Force id.
    pub force_id: String,
    /// Period.
    pub period: String,
    /// Submission id.
    pub submission_id: String,
    /// Snapshot key.
    pub snapshot_key: String,
    /// Upload key.
    pub source_key: String,
    /// SHA-256 of the upload.
    pub sha256: String,
    /// Rows in the snapshot.
    pub rows: u64,
    /// Schema id.
    pub schema_id: String,
    /// When the upload arrived (RFC 3339); the later upload of a force × period is current.
    pub uploaded_at: String,
    /// When it was accepted (RFC 3339).
    pub accepted_at: String,
    /// The submission that replaced this one, for superseded entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
}

/// Which submission is current for each force × period of a dataset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Dataset id.
    pub dataset: String,
    /// When it was last changed (RFC 3339).
    pub updated_at: String,
    /// The current submission of each force × period, sorted by period then force.
    pub current: Vec<ManifestEntry>,
    /// Submissions replaced by a later upload, kept for audit.
    pub superseded: Vec<ManifestEntry>,
}

/// What [`Manifest::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestChange {
    /// The submission was already recorded (a retry): nothing changed.
    AlreadyRecorded,
    /// It became current; it replaced this submission, if any.
    Current {
        /// The submission it superseded.
        superseded: Option<String>,
    },
    /// A later upload was already current: it is recorded as superseded.
    AlreadySuperseded {
        /// The current submission.
        by: String,
    },
}

impl Manifest {
    /// Records an accepted submission. The later upload (by `uploaded_at`, then source key) of
    /// a force × period is current; the other is superseded. Applying the same entry twice
    /// changes nothing.
    pub fn apply(&mut self, entry: ManifestEntry, now: &str) -> ManifestChange {
        let seen = self
            .current
            .iter()
            .chain(&self.superseded)
            .any(|e| e.submission_id == entry.submission_id);
        if seen {
            return ManifestChange::AlreadyRecorded;
        }
        now.clone_into(&mut self.updated_at);
        let existing = self
            .current
            .iter()
            .position(|e| e.force_id == entry.force_id && e.period == entry.period);
        let change = self.place(entry, existing);
        self.sort();
        change
    }

    /// Puts an entry not yet held beside the current entry of its force × period (at
    /// `existing`, if any): the later upload (by `uploaded_at`, then source key) is current.
    fn place(&mut self, entry: ManifestEntry, existing: Option<usize>) -> ManifestChange {
        let order = |e: &ManifestEntry| (e.uploaded_at.clone(), e.source_key.clone());
        match existing {
            None => {
                self.current.push(entry);
                ManifestChange::Current { superseded: None }
            }
            Some(i) if order(&self.current[i]) <= order(&entry) => {
                let mut old = std::mem::replace(&mut self.current[i], entry);
                old.superseded_by = Some(self.current[i].submission_id.clone());
                let id = old.submission_id.clone();
                self.superseded.push(old);
                ManifestChange::Current {
                    superseded: Some(id),
                }
            }
            Some(i) => {
                let by = self.current[i].submission_id.clone();
                let mut entry = entry;
                entry.superseded_by = Some(by.clone());
                self.superseded.push(entry);
                ManifestChange::AlreadySuperseded { by }
            }
        }
    }

    fn sort(&mut self) {
        self.current
            .sort_by(|a, b| (&a.period, &a.force_id).cmp(&(&b.period, &b.force_id)));
    }

    /// Takes in another manifest of the same dataset (a part, or a manifest written before
    /// parts): each current entry by the rule of [`Manifest::apply`], each superseded one as
    /// it is; entries already held change nothing. `updated_at` is the later of the two.
    pub fn merge(&mut self, other: Manifest) {
        let mut seen: HashSet<String> = self
            .current
            .iter()
            .chain(&self.superseded)
            .map(|e| e.submission_id.clone())
            .collect();
        let mut at: HashMap<(String, String), usize> = self
            .current
            .iter()
            .enumerate()
            .map(|(i, e)| ((e.force_id.clone(), e.period.clone()), i))
            .collect();
        for entry in other.current {
            if !seen.insert(entry.submission_id.clone()) {
                continue;
            }
            let slot = (entry.force_id.clone(), entry.period.clone());
            let existing = at.get(&slot).copied();
            self.place(entry, existing);
            if existing.is_none() {
                at.insert(slot, self.current.len() - 1);
            }
        }
        for entry in other.superseded {
            if seen.insert(entry.submission_id.clone()) {
                self.superseded.push(entry);
            }
        }
        if other.updated_at > self.updated_at {
            self.updated_at = other.updated_at;
        }
        self.sort();
    }

    /// Takes the manifest apart by the calendar year its entries' periods begin in, each part
    /// a manifest of the same dataset and `updated_at`. `Err` names a period that does not read.
    pub fn split(self) -> Result<BTreeMap<i32, Manifest>, String> {
        let mut parts: BTreeMap<i32, Manifest> = BTreeMap::new();
        let empty = |m: &Manifest| Manifest {
            dataset: m.dataset.clone(),
            updated_at: m.updated_at.clone(),
            ..Manifest::default()
        };
        for (entry, current) in self
            .current
            .iter()
            .map(|e| (e, true))
            .chain(self.superseded.iter().map(|e| (e, false)))
        {
            let year = year_of(&entry.period)?;
            let part = parts.entry(year).or_insert_with(|| empty(&self));
            if current {
                part.current.push(entry.clone());
            } else {
                part.superseded.push(entry.clone());
            }
        }
        Ok(parts)
    }
}

/// The calendar year a period written as a manifest writes it begins in.
pub fn year_of(period: &str) -> Result<i32, String> {
    period
        .parse::<Period>()
        .map(Period::year)
        .map_err(|e| format!("the period {period:?} does not read: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, at: &str) -> ManifestEntry {
        ManifestEntry {
            force_id: "kent".into(),
            period: "2020-01".into(),
            submission_id: id.into(),
            snapshot_key: format!("snapshots/x/{id}.parquet"),
            source_key: format!("incoming/kent/x/2020-01/{id}.csv"),
            sha256: String::new(),
            rows: 1,
            schema_id: "x/v1".into(),
            uploaded_at: at.into(),
            accepted_at: at.into(),
            superseded_by: None,
        }
    }

    #[test]
    fn later_upload_supersedes_and_retries_change_nothing() {
        let mut m = Manifest::default();
        assert_eq!(
            m.apply(entry("a", "2020-02-01T00:00:00Z"), "t1"),
            ManifestChange::Current { superseded: None }
        );
        assert_eq!(
            m.apply(entry("b", "2020-02-03T00:00:00Z"), "t2"),
            ManifestChange::Current {
                superseded: Some("a".into())
            }
        );
        assert_eq!(
            m.apply(entry("b", "2020-02-03T00:00:00Z"), "t3"),
            ManifestChange::AlreadyRecorded
        );
        assert_eq!(m.updated_at, "t2");
        // An older upload processed late does not take over.
        assert_eq!(
            m.apply(entry("c", "2020-02-02T00:00:00Z"), "t4"),
            ManifestChange::AlreadySuperseded { by: "b".into() }
        );
        assert_eq!(m.current.len(), 1);
        assert_eq!(m.current[0].submission_id, "b");
        assert_eq!(
            m.superseded
                .iter()
                .map(|e| e.superseded_by.as_deref())
                .collect::<Vec<_>>(),
            [Some("b"), Some("b")]
        );
    }

    #[test]
    fn parts_split_and_merge_back_to_the_whole() {
        let mut whole = Manifest::default();
        for (id, period, at) in [
            ("a", "2019-12", "2020-01-05T00:00:00Z"),
            ("b", "2020-01", "2020-02-01T00:00:00Z"),
            ("c", "2020-01", "2020-02-03T00:00:00Z"),
            ("d", "2020-02", "2020-03-01T00:00:00Z"),
        ] {
            let mut e = entry(id, at);
            e.period = period.into();
            whole.apply(e, at);
        }
        let parts = whole.clone().split().unwrap();
        assert_eq!(parts.keys().copied().collect::<Vec<_>>(), [2019, 2020]);
        assert_eq!(parts[&2020].current.len(), 2);
        assert_eq!(parts[&2020].superseded.len(), 1);
        let mut merged = Manifest::default();
        for part in parts.into_values().rev() {
            merged.merge(part);
        }
        assert_eq!(merged, whole);
        // Merging what is held changes nothing; a later upload merged in supersedes.
        merged.merge(whole.clone());
        assert_eq!(merged, whole);
        let mut later = entry("e", "2020-03-02T00:00:00Z");
        later.period = "2020-02".into();
        merged.merge(Manifest {
            current: vec![later],
            ..Manifest::default()
        });
        assert_eq!(merged.current.last().unwrap().submission_id, "e");
        assert_eq!(merged.superseded.last().unwrap().submission_id, "d");
        assert_eq!(year_of("FY2023-24"), Ok(2023));
        assert!(year_of("2020-13").is_err());
    }
}
