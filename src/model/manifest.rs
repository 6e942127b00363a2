//! The manifest of a dataset's snapshots: which accepted submission is current for each
//! force × period, and the ones later uploads replaced. [`Manifest::apply`] is the pure rule for
//! supersession; `state` commits it under the dataset's commit lock, in parts (one per year of
//! periods) that [`Manifest::merge`] puts together and [`Manifest::split`] takes apart.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Identity;
use super::identity::{STATE_FORMAT, first_format};
use crate::period::Period;

/// One accepted submission in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The submission: upload, force, dataset and period.
    #[serde(flatten)]
    pub identity: Identity,
    /// Snapshot key.
    pub snapshot_key: String,
    /// Rows in the snapshot.
    pub rows: u64,
    /// Schema id.
    pub schema_id: String,
    /// When it was accepted (RFC 3339).
    pub accepted_at: String,
    /// The submission that replaced this one, for superseded entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
}

impl ManifestEntry {
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

    /// The later upload of a force × period is current: by arrival, then by key.
    fn order(&self) -> (DateTime<Utc>, &str) {
        (
            self.identity.upload.uploaded_at,
            &self.identity.upload.source_key,
        )
    }
}

/// Which submission is current for each force × period of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The version of this document's shape: [`STATE_FORMAT`] when written, 1 for documents
    /// written before each entry carried a whole [`Identity`].
    #[serde(default = "first_format")]
    pub format_version: u32,
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
    /// An empty manifest of `dataset`, in today's format.
    pub fn new(dataset: &str) -> Manifest {
        Manifest {
            format_version: STATE_FORMAT,
            dataset: dataset.to_owned(),
            updated_at: String::new(),
            current: Vec::new(),
            superseded: Vec::new(),
        }
    }

    /// Records an accepted submission. The later upload (by `uploaded_at`, then source key) of
    /// a force × period is current; the other is superseded. Applying the same entry twice
    /// changes nothing.
    pub fn apply(&mut self, entry: ManifestEntry, now: &str) -> ManifestChange {
        let seen = self
            .current
            .iter()
            .chain(&self.superseded)
            .any(|e| e.submission_id() == entry.submission_id());
        if seen {
            return ManifestChange::AlreadyRecorded;
        }
        now.clone_into(&mut self.updated_at);
        let existing = self
            .current
            .iter()
            .position(|e| e.force_id() == entry.force_id() && e.period() == entry.period());
        let change = self.place(entry, existing);
        self.sort();
        change
    }

    /// Puts an entry not yet held beside the current entry of its force × period (at
    /// `existing`, if any): the later upload (by `uploaded_at`, then source key) is current.
    fn place(&mut self, entry: ManifestEntry, existing: Option<usize>) -> ManifestChange {
        match existing {
            None => {
                self.current.push(entry);
                ManifestChange::Current { superseded: None }
            }
            Some(i) if self.current[i].order() <= entry.order() => {
                let mut old = std::mem::replace(&mut self.current[i], entry);
                old.superseded_by = Some(self.current[i].submission_id().to_owned());
                let id = old.submission_id().to_owned();
                self.superseded.push(old);
                ManifestChange::Current {
                    superseded: Some(id),
                }
            }
            Some(i) => {
                let by = self.current[i].submission_id().to_owned();
                let mut entry = entry;
                entry.superseded_by = Some(by.clone());
                self.superseded.push(entry);
                ManifestChange::AlreadySuperseded { by }
            }
        }
    }

    /// Brings a manifest read from the bucket to today's format: entries written before they
    /// carried their dataset take the manifest's.
    pub fn upgrade(&mut self) {
        for e in self.current.iter_mut().chain(&mut self.superseded) {
            e.identity.adopt_dataset(&self.dataset);
        }
        self.format_version = STATE_FORMAT;
    }

    fn sort(&mut self) {
        self.current
            .sort_by(|a, b| (a.period(), a.force_id()).cmp(&(b.period(), b.force_id())));
    }

    /// Takes in another manifest of the same dataset (a part, or a manifest written before
    /// parts): each current entry by the rule of [`Manifest::apply`], each superseded one as
    /// it is; entries already held change nothing. `updated_at` is the later of the two.
    pub fn merge(&mut self, other: Manifest) {
        let mut seen: HashSet<String> = self
            .current
            .iter()
            .chain(&self.superseded)
            .map(|e| e.submission_id().to_owned())
            .collect();
        let mut at: HashMap<(String, Period), usize> = self
            .current
            .iter()
            .enumerate()
            .map(|(i, e)| ((e.force_id().to_owned(), e.period()), i))
            .collect();
        for entry in other.current {
            if !seen.insert(entry.submission_id().to_owned()) {
                continue;
            }
            let slot = (entry.force_id().to_owned(), entry.period());
            let existing = at.get(&slot).copied();
            self.place(entry, existing);
            if existing.is_none() {
                at.insert(slot, self.current.len() - 1);
            }
        }
        for entry in other.superseded {
            if seen.insert(entry.submission_id().to_owned()) {
                self.superseded.push(entry);
            }
        }
        if other.updated_at > self.updated_at {
            self.updated_at = other.updated_at;
        }
        self.sort();
    }

    /// Takes the manifest apart by the calendar year its entries' periods begin in, each part
    /// a manifest of the same dataset and `updated_at`.
    pub fn split(self) -> BTreeMap<i32, Manifest> {
        let mut parts: BTreeMap<i32, Manifest> = BTreeMap::new();
        let empty = |m: &Manifest| Manifest {
            updated_at: m.updated_at.clone(),
            ..Manifest::new(&m.dataset)
        };
        for (entry, current) in self
            .current
            .iter()
            .map(|e| (e, true))
            .chain(self.superseded.iter().map(|e| (e, false)))
        {
            let year = entry.period().year();
            let part = parts.entry(year).or_insert_with(|| empty(&self));
            if current {
                part.current.push(entry.clone());
            } else {
                part.superseded.push(entry.clone());
            }
        }
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Place, Upload};

    fn entry(id: &str, at: &str) -> ManifestEntry {
        ManifestEntry {
            identity: Identity {
                upload: Upload {
                    source_key: format!("incoming/kent/x/2020-01/{id}.csv"),
                    etag: String::new(),
                    sha256: String::new(),
                    submission_id: id.into(),
                    uploaded_at: at.parse().unwrap(),
                },
                place: Place {
                    force_id: "kent".into(),
                    dataset: "x".into(),
                    period: "2020-01".parse().unwrap(),
                },
            },
            snapshot_key: format!("snapshots/x/{id}.parquet"),
            rows: 1,
            schema_id: "x/v1".into(),
            accepted_at: at.into(),
            superseded_by: None,
        }
    }

    #[test]
    fn later_upload_supersedes_and_retries_change_nothing() {
        let mut m = Manifest::new("x");
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
        assert_eq!(m.current[0].submission_id(), "b");
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
        let mut whole = Manifest::new("x");
        for (id, period, at) in [
            ("a", "2019-12", "2020-01-05T00:00:00Z"),
            ("b", "2020-01", "2020-02-01T00:00:00Z"),
            ("c", "2020-01", "2020-02-03T00:00:00Z"),
            ("d", "2020-02", "2020-03-01T00:00:00Z"),
        ] {
            let mut e = entry(id, at);
            e.identity.place.period = period.parse().unwrap();
            whole.apply(e, at);
        }
        let parts = whole.clone().split();
        assert_eq!(parts.keys().copied().collect::<Vec<_>>(), [2019, 2020]);
        assert_eq!(parts[&2020].current.len(), 2);
        assert_eq!(parts[&2020].superseded.len(), 1);
        let mut merged = Manifest::new("x");
        for part in parts.into_values().rev() {
            merged.merge(part);
        }
        assert_eq!(merged, whole);
        // Merging what is held changes nothing; a later upload merged in supersedes.
        merged.merge(whole.clone());
        assert_eq!(merged, whole);
        let mut later = entry("e", "2020-03-02T00:00:00Z");
        later.identity.place.period = "2020-02".parse().unwrap();
        merged.merge(Manifest {
            current: vec![later],
            ..Manifest::new("x")
        });
        assert_eq!(merged.current.last().unwrap().submission_id(), "e");
        assert_eq!(merged.superseded.last().unwrap().submission_id(), "d");
    }

    #[test]
    fn a_manifest_written_before_identities_reads_and_upgrades() {
        let old = serde_json::json!({
            "dataset": "x",
            "updated_at": "t",
            "current": [{
                "force_id": "kent",
                "period": "2020-01",
                "submission_id": "a",
                "snapshot_key": "snapshots/x/a.parquet",
                "source_key": "incoming/kent/x/2020-01/a.csv",
                "sha256": "",
                "rows": 1,
                "schema_id": "x/v1",
                "uploaded_at": "2020-02-01T00:00:00.000000Z",
                "accepted_at": "2020-02-01T00:00:00Z"
            }],
            "superseded": []
        });
        let mut read: Manifest = serde_json::from_value(old).unwrap();
        assert_eq!(read.format_version, 1);
        assert_eq!(read.current[0].identity.place.dataset, "");
        read.upgrade();
        assert_eq!(read.format_version, STATE_FORMAT);
        let mut expected = entry("a", "2020-02-01T00:00:00Z");
        expected.accepted_at = "2020-02-01T00:00:00Z".into();
        assert_eq!(read.current, [expected]);
        let written = serde_json::to_value(&read).unwrap();
        assert_eq!(written["format_version"], STATE_FORMAT);
        assert_eq!(written["current"][0]["dataset"], "x");
    }
}
