//! The manifest of a dataset's snapshots: which accepted submission is current for each
//! force × period, and the ones later uploads replaced. [`Manifest::apply`] is the pure rule for
//! supersession; `state` commits it under the dataset's commit lock.

use serde::{Deserialize, Serialize};

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
        let order = |e: &ManifestEntry| (e.uploaded_at.clone(), e.source_key.clone());
        let existing = self
            .current
            .iter()
            .position(|e| e.force_id == entry.force_id && e.period == entry.period);
        let change = match existing {
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
        };
        self.current
            .sort_by(|a, b| (&a.period, &a.force_id).cmp(&(&b.period, &b.force_id)));
        change
    }
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
}
