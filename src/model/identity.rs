//! The identity of a submission, declared once: which object was received ([`Upload`]: key,
//! etag, content hash, submission id, arrival time) and, when its key has a place in the layout,
//! whose return of which period it is ([`Place`]: force, dataset, period). [`Identity`] is both.
//!
//! Every record written about a submission carries these fields under the same names, flattened
//! into its JSON: the manifest entry and the receipt hold an [`Identity`]; the report and the run's
//! submission summary hold a [`Received`]: the [`Upload`] and, when the key had a place, its
//! [`Place`] (an upload whose key has no place is still reported); the snapshot's lineage holds
//! an [`Identity`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::period::Period;

/// The version of the shape of the state documents (manifest and receipts parts) written
/// today. 1: before each entry carried a whole [`Identity`] (no etag, and no dataset).
pub const STATE_FORMAT: u32 = 2;

/// The format of a state document that does not say (written before formats were numbered).
pub(crate) fn first_format() -> u32 {
    1
}

/// The object received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    /// The upload's key (`incoming/...`).
    pub source_key: String,
    /// The store's tag for the content processed. Empty in records written before it was kept.
    #[serde(default)]
    pub etag: String,
    /// SHA-256 of the bytes processed, hex. Empty in receipts written before it was kept, and in
    /// the report of an upload that could not be read.
    #[serde(default)]
    pub sha256: String,
    /// The deterministic submission id: a hash of key and etag.
    pub submission_id: String,
    /// When the upload arrived (the object's last-modified time); of two uploads of a force ×
    /// period, the later is current.
    pub uploaded_at: DateTime<Utc>,
}

/// Whose return of which period: what the key's folders say, every part valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// Canonical force id (the folder).
    pub force_id: String,
    /// Dataset id. Records written before it was kept in each entry take their document's.
    #[serde(default)]
    pub dataset: String,
    /// The period.
    pub period: Period,
}

/// A submission with a place: the upload and whose return of which period it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The object received.
    #[serde(flatten)]
    pub upload: Upload,
    /// Whose return of which period.
    #[serde(flatten)]
    pub place: Place,
}

impl Identity {
    /// Its force id.
    pub fn force_id(&self) -> &str {
        &self.place.force_id
    }

    /// Its period.
    pub fn period(&self) -> Period {
        self.place.period
    }

    /// Its submission id.
    pub fn submission_id(&self) -> &str {
        &self.upload.submission_id
    }

    /// Sets the dataset of a record written before each entry kept it.
    pub(crate) fn adopt_dataset(&mut self, dataset: &str) {
        if self.place.dataset.is_empty() {
            dataset.clone_into(&mut self.place.dataset);
        }
    }
}

/// An upload as a report speaks of it: the object, its place when its key has one, and
/// otherwise the force its folder names (the report went to that force), if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    /// The object received.
    #[serde(flatten)]
    pub upload: Upload,
    /// Whose return of which period, when the key has a place (absent otherwise).
    #[serde(flatten)]
    pub place: Option<Place>,
    /// For a key with no place: the valid force folder it names, which the report went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_folder: Option<String>,
}

impl Received {
    /// The period, when the key has a place.
    pub fn period(&self) -> Option<Period> {
        self.place.as_ref().map(|p| p.period)
    }

    /// The dataset, when the key has a place.
    pub fn dataset(&self) -> Option<&str> {
        self.place.as_ref().map(|p| p.dataset.as_str())
    }

    /// The force reported to: the place's, or the folder's of a key with no place.
    pub fn force(&self) -> Option<&str> {
        self.place
            .as_ref()
            .map(|p| p.force_id.as_str())
            .or(self.force_folder.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            upload: Upload {
                source_key: "incoming/kent/stop_search/2024-03/march.csv".to_owned(),
                etag: "\"abc\"".to_owned(),
                sha256: "00ff".to_owned(),
                submission_id: "0123456789abcdef01234567".to_owned(),
                uploaded_at: "2024-04-03T10:00:00Z".parse().unwrap(),
            },
            place: Place {
                force_id: "kent".to_owned(),
                dataset: "stop_search".to_owned(),
                period: "2024-03".parse().unwrap(),
            },
        }
    }

    #[test]
    fn an_identity_is_written_as_flat_fields_and_read_back() {
        let json = serde_json::to_value(identity()).unwrap();
        let object = json.as_object().unwrap();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "dataset",
                "etag",
                "force_id",
                "period",
                "sha256",
                "source_key",
                "submission_id",
                "uploaded_at"
            ]
        );
        assert_eq!(object["period"], "2024-03");
        let back: Identity = serde_json::from_value(json).unwrap();
        assert_eq!(back, identity());
    }

    #[test]
    fn a_record_written_before_etag_hash_and_dataset_were_kept_still_reads() {
        let old = serde_json::json!({
            "force_id": "kent",
            "period": "2024-03",
            "submission_id": "0123456789abcdef01234567",
            "source_key": "incoming/kent/stop_search/2024-03/march.csv",
            "uploaded_at": "2024-04-03T10:00:00.000000Z",
        });
        let mut read: Identity = serde_json::from_value(old).unwrap();
        assert_eq!(read.upload.etag, "");
        assert_eq!(read.upload.sha256, "");
        read.adopt_dataset("stop_search");
        assert_eq!(read.place.dataset, "stop_search");
        read.adopt_dataset("other");
        assert_eq!(read.place.dataset, "stop_search");
    }

    #[test]
    fn an_upload_without_a_place_is_reported_without_place_fields() {
        let placed = Received {
            upload: identity().upload,
            place: Some(identity().place),
            force_folder: None,
        };
        let json = serde_json::to_value(&placed).unwrap();
        assert_eq!(json["force_id"], "kent");
        assert_eq!(serde_json::from_value::<Received>(json).unwrap(), placed);
        let odd = Received {
            upload: identity().upload,
            place: None,
            force_folder: Some("kent".to_owned()),
        };
        let json = serde_json::to_value(&odd).unwrap();
        assert!(json.get("period").is_none() && json.get("force_id").is_none());
        assert_eq!(json["force_folder"], "kent");
        let back: Received = serde_json::from_value(json).unwrap();
        assert_eq!(back, odd);
        assert_eq!(back.force(), Some("kent"));
        assert_eq!(placed.force(), Some("kent"));
    }
}
