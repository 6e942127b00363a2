//! The series objects of a dataset (`model::series`): a force's observations by period,
//! `_state/series/<dataset>/force=<force>.json`, and each force's latest period,
//! `_state/series/<dataset>/latest.json`.
//!
//! They are a cache of the metrics files, shared by every worker. A series is read with its
//! etag; after a commit it is changed and written back only if it still has that etag
//! (`If-Match`, or create-only when there was none), and read again and changed again when
//! another worker wrote in between. Should that keep failing, the update is given up: a lost
//! update costs the next reader a read of the metrics file, never a wrong answer, since an
//! entry counts only for the submission it names. An object of a later format version is left
//! as it is; one that does not parse is replaced.

use tracing::{debug, warn};

use super::{State, StateError};
use crate::model::series::{SERIES_VERSION, Series, version_of};
use crate::store::{PutMode, StoreError};

/// Writes of one series tried before its update is given up.
const ATTEMPTS: usize = 4;

/// A series object as read: its key, and what was there.
#[derive(Debug, Clone)]
pub struct SeriesObject {
    key: String,
    found: Found,
}

#[derive(Debug, Clone)]
enum Found {
    Absent,
    /// A series of this build's version, and its etag.
    Usable(Series, String),
    /// A series of a later version: neither read nor written.
    Later,
    /// Something that does not parse as a series of this version (or an earlier one), and its
    /// etag: not read, and replaced by the next update.
    Unusable(String),
}

impl SeriesObject {
    /// The series, when there is one of this build's version.
    pub fn series(&self) -> Option<&Series> {
        match &self.found {
            Found::Usable(series, _) => Some(series),
            _ => None,
        }
    }
}

impl State {
    /// Reads the series object at `key` (built by `layout::series_key` or
    /// `layout::latest_series_key`).
    pub async fn series(&self, key: &str) -> Result<SeriesObject, StateError> {
        let found = match self.store.get(key).await {
            Ok((bytes, meta)) => match version_of(&bytes) {
                Some(v) if v > SERIES_VERSION => Found::Later,
                Some(SERIES_VERSION) => match serde_json::from_slice::<Series>(&bytes) {
                    Ok(series) => Found::Usable(series, meta.etag),
                    Err(e) => {
                        warn!(object = %self.store.location(key), error = %e, "a series does not parse; it is not used, and the next update replaces it");
                        Found::Unusable(meta.etag)
                    }
                },
                _ => Found::Unusable(meta.etag),
            },
            Err(StoreError::NotFound { .. }) => Found::Absent,
            Err(e) => return Err(e.into()),
        };
        Ok(SeriesObject {
            key: key.to_owned(),
            found,
        })
    }

    /// Changes the series `read` (as read earlier) with `change` and writes it back if it
    /// still has the etag read; reads it again and repeats when another writer changed it.
    /// `change` says whether it changed anything (nothing is written when not). Returns whether
    /// the change was written; `false` also when it was given up (logged), or when the object
    /// is of a later version.
    pub async fn update_series(
        &self,
        dataset: &str,
        read: SeriesObject,
        mut change: impl FnMut(&mut Series) -> bool,
    ) -> Result<bool, StateError> {
        let key = read.key.clone();
        let mut read = Some(read);
        for _ in 0..ATTEMPTS {
            let object = match read.take() {
                Some(object) => object,
                None => self.series(&key).await?,
            };
            let (mut series, mode) = match object.found {
                Found::Later => return Ok(false),
                Found::Absent => (Series::empty(dataset), PutMode::Create),
                Found::Unusable(etag) => (Series::empty(dataset), PutMode::Update(etag)),
                Found::Usable(series, etag) => (series, PutMode::Update(etag)),
            };
            if !change(&mut series) {
                return Ok(false);
            }
            let body = serde_json::to_vec(&series).map_err(|e| StateError::Corrupt {
                location: self.store.location(&key),
                message: e.to_string(),
            })?;
            match self.store.put(&key, body, mode).await {
                Ok(_) => return Ok(true),
                Err(StoreError::Changed { .. } | StoreError::AlreadyExists { .. }) => {
                    debug!(object = %self.store.location(&key), "a series changed since it was read; reading it again");
                }
                Err(e) => return Err(e.into()),
            }
        }
        warn!(
            object = %self.store.location(&key),
            "a series kept changing under its update; given up (the next analysis reads the metrics files it lacks)"
        );
        Ok(false)
    }
}
