//! The commit protocol over the store: every object several workers share, and the only code
//! that writes one.
//!
//! - **Claims** (`_state/claims/<marker>.<n>.json`): a worker processes an upload only while it
//!   holds the upload's claim, a [`lease`]. The claim is renewed while the upload is processed
//!   ([`State::keep_alive`]), so its time to live can be short: a killed worker's uploads are
//!   taken over soon after, and a slow upload is not.
//! - **The ledger** of finished uploads: a done-marker `_state/done/<marker>.json`, created
//!   (create-only) as an upload's last step, says it is finished. Compaction
//!   ([`State::compact`]) folds done-markers into the next generation of an index,
//!   `_state/done-index/<n>.json`, created create-only under the `ledger` lock, then deletes
//!   them; the newest generation holds every upload ever finished. A tick reads the few
//!   markers not yet folded and, only when a new generation has appeared, the index: its
//!   requests do not grow with the uploads processed. Before folding, compaction checks that
//!   each upload's receipt is recorded and repairs any that is missing from its done-marker.
//! - **Per dataset, the manifest and the receipts**, each kept in one part per calendar year of
//!   periods ([`Parted`]): a part is read, changed and written back only under the dataset's
//!   commit lock `_state/locks/commit-<dataset>` (a lease), with `If-Match` as a second guard
//!   should the lock have expired under a stalled holder. A commit rewrites only its upload's
//!   year; readers take the years they need ([`Years`]), sixteen parts at a time, and a part
//!   listed with the etag it had when this worker last read or wrote it is not read again. The
//!   one document each was before parts is read with them until a commit folds it in and
//!   deletes it.
//! - **Per dataset, the series** ([`series`]): each force's observations by period and every
//!   force's latest period, a cache of the metrics files that an analysis reads first. An
//!   entry counts only for the submission it names; a series is written back with `If-Match`
//!   on the etag read (create-only when absent) after a commit, and a lost update only costs a
//!   read of the metrics files.
//!
//! Rules:
//! - every write of shared state is create-only, made under the lease that owns it, or (a
//!   series, a cache) a compare-and-swap on the etag read; no state object is overwritten by
//!   whoever writes last;
//! - an index generation and a marker are deleted only once a newer generation holds what they
//!   held, so a reader that lists markers and then the index sees every finished upload;
//! - locks are taken in one order (`ledger`, then `commit-<dataset>`), so two workers never
//!   wait on each other.

pub mod lease;
pub mod series;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::layout::{
    CLAIMS, DONE, DONE_INDEX, Parted, done_index_key, done_key, lock_base, parse_done_index_key,
    parse_done_key, parse_generation_key,
};
use crate::model::Decision;
use crate::model::{Manifest, ManifestChange, ManifestEntry, Receipt, Receipts};
use crate::store::{ObjectStore, PutMode, StoreError};
use lease::{Lease, Taken};
pub use series::SeriesObject;

/// A failure of the shared state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Object storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A state object does not parse.
    #[error("{location} is not valid state: {message}")]
    Corrupt {
        /// Where.
        location: String,
        /// The parse error.
        message: String,
    },
    /// Another worker held a lock for longer than its time to live allows.
    #[error("{lock} is still held by {holder}")]
    Locked {
        /// The lock's location.
        lock: String,
        /// Its holder.
        holder: String,
    },
    /// A claim expired and another worker took the upload over.
    #[error("the claim {claim} was lost: it expired and another worker took the upload over")]
    ClaimLost {
        /// The claim's location.
        claim: String,
    },
    /// An object kept changing while it was read and written.
    #[error("{location} kept changing under the lock; the next run tries again")]
    Unsettled {
        /// Where.
        location: String,
    },
}

/// Settings of the shared state.
#[derive(Debug, Clone)]
pub struct StateOptions {
    /// This worker's name, written into claims and locks.
    pub holder: String,
    /// How long a claim holds unless renewed; it is renewed every third of that.
    pub claim_ttl: Duration,
    /// How long a lock on shared state holds.
    pub lock_ttl: Duration,
    /// Done-markers waiting before a tick folds them into the ledger's index.
    pub compact_after: usize,
}

/// What the ledger records of a finished upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoneRecord {
    /// The upload's key.
    pub key: String,
    /// Its etag.
    pub etag: String,
    /// Its submission id.
    pub submission_id: String,
    /// The decision.
    pub decision: Decision,
    /// When it was processed (RFC 3339).
    pub processed_at: String,
    /// Its dataset, for an upload whose key had a place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Its receipt, kept in the done-marker until compaction has checked that the dataset's
    /// receipts hold it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
}

/// One generation of the ledger's index, `_state/done-index/<n>.json`: every upload finished
/// when it was made.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Index {
    /// Its generation (`n` of its key).
    pub generation: u64,
    /// The finished uploads, by marker.
    pub records: BTreeMap<String, DoneRecord>,
}

/// The uploads the ledger knows are finished.
#[derive(Debug, Default)]
pub struct Done {
    /// Their markers.
    pub markers: HashSet<String>,
    /// How many of them are done-markers not yet folded into the index.
    pub unfolded: usize,
}

/// A claim this worker holds on an upload.
#[derive(Debug)]
pub struct Claim {
    subject: String,
    took_over: bool,
    held: tokio::sync::Mutex<Held>,
}

#[derive(Debug)]
struct Held {
    lease: Lease,
    /// Released or cleared: nothing renews it any more.
    finished: bool,
}

impl Claim {
    /// Whether the claim was taken over from a worker whose claim had expired.
    pub fn took_over(&self) -> bool {
        self.took_over
    }
}

/// What [`State::commit`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The submission the manifest entry superseded, if any.
    pub superseded: Option<String>,
}

/// The shared state of one bucket, as one worker sees it.
pub struct State {
    store: Arc<dyn ObjectStore>,
    clock: Arc<dyn Clock>,
    options: StateOptions,
    /// The newest index generation read.
    index: tokio::sync::Mutex<Arc<Index>>,
    /// The manifest and receipts parts this worker read or wrote.
    parts: PartCache,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl State {
    /// The state of the bucket `store`.
    pub fn new(store: Arc<dyn ObjectStore>, clock: Arc<dyn Clock>, options: StateOptions) -> State {
        State {
            store,
            clock,
            options,
            index: tokio::sync::Mutex::new(Arc::new(Index::default())),
            parts: PartCache::default(),
        }
    }

    async fn read_json<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, String)>, StateError> {
        match self.store.get(key).await {
            Ok((bytes, meta)) => serde_json::from_slice(&bytes)
                .map(|v| Some((v, meta.etag)))
                .map_err(|e| StateError::Corrupt {
                    location: self.store.location(key),
                    message: e.to_string(),
                }),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A part of the manifest or receipts (or the object written before parts), in today's
    /// format.
    async fn read_part<T: PartedState>(
        &self,
        key: &str,
    ) -> Result<Option<(T, String)>, StateError> {
        read_state(Arc::clone(&self.store), key.to_owned()).await
    }

    // -----------------------------------------------------------------------------------------
    // Claims

    /// Claims the upload whose claim is `base` (`subject` names it in the claim); `None` when
    /// another worker holds a live claim.
    pub async fn claim(&self, base: &str, subject: &str) -> Result<Option<Claim>, StateError> {
        let taken = lease::take(
            self.store.as_ref(),
            base,
            subject,
            &self.options.holder,
            self.clock.now(),
            chrono_of(self.options.claim_ttl),
        )
        .await?;
        match taken {
            Taken::Held(lease) => Ok(Some(Claim {
                subject: subject.to_owned(),
                took_over: lease.generation > 0,
                held: tokio::sync::Mutex::new(Held {
                    lease,
                    finished: false,
                }),
            })),
            Taken::Busy { holder } => {
                info!(
                    holder = holder.as_deref().unwrap_or("unknown"),
                    "another worker holds the claim; skipped"
                );
                Ok(None)
            }
        }
    }

    /// Renews `claim` now; `false` when it was lost.
    async fn renew(&self, claim: &Claim) -> Result<bool, StateError> {
        let mut held = claim.held.lock().await;
        if held.finished {
            return Ok(true);
        }
        let renewed = held
            .lease
            .renew(
                self.store.as_ref(),
                &claim.subject,
                &self.options.holder,
                self.clock.now(),
                chrono_of(self.options.claim_ttl),
            )
            .await?;
        if !renewed {
            return Ok(false);
        }
        // A generation above ours means the claim was taken over, then renewed by its new
        // holder, before ours was created in the gap its renewal left.
        let newest = lease::generations(self.store.as_ref(), &held.lease.base)
            .await?
            .last()
            .copied();
        if newest.is_some_and(|n| n > held.lease.generation) {
            held.lease.release(self.store.as_ref()).await?;
            return Ok(false);
        }
        debug!(
            step = "claim renewed",
            generation = held.lease.generation,
            "claim renewed"
        );
        Ok(true)
    }

    fn lost(&self, claim: &Held) -> StateError {
        StateError::ClaimLost {
            claim: self.store.location(&claim.lease.base),
        }
    }

    /// Renews `claim` every third of its time to live, for as long as it is polled (run it
    /// beside the work it guards). Returns only when the claim is lost: taken over by another
    /// worker after it expired, or past its expiry with every renewal failing.
    pub async fn keep_alive(&self, claim: &Claim) -> StateError {
        let every = self.options.claim_ttl / 3;
        let mut wait = every;
        loop {
            tokio::time::sleep(wait).await;
            match self.renew(claim).await {
                Ok(true) => wait = every,
                Ok(false) => return self.lost(&*claim.held.lock().await),
                Err(e) => {
                    let held = claim.held.lock().await;
                    if self.clock.now() >= held.lease.expires_at {
                        return self.lost(&held);
                    }
                    warn!(error = %e, "failed to renew a claim; trying again");
                    wait = (every / 4).max(Duration::from_millis(100));
                }
            }
        }
    }

    /// Makes sure `claim` is held for at least half its time to live before a step that
    /// commits: renewed now if less is left, an error if it was lost.
    pub async fn ensure_held(&self, claim: &Claim) -> Result<(), StateError> {
        let left = claim.held.lock().await.lease.expires_at - self.clock.now();
        if left >= chrono_of(self.options.claim_ttl / 2) {
            return Ok(());
        }
        if self.renew(claim).await? {
            Ok(())
        } else {
            Err(self.lost(&*claim.held.lock().await))
        }
    }

    /// Gives `claim` back without finishing the upload, so any worker may take it at once.
    pub async fn release(&self, claim: &Claim) -> Result<(), StateError> {
        let mut held = claim.held.lock().await;
        held.finished = true;
        held.lease.release(self.store.as_ref()).await?;
        Ok(())
    }

    /// Clears every generation of `claim`: the upload is finished and its done-marker written.
    pub async fn finish(&self, claim: &Claim) -> Result<(), StateError> {
        let mut held = claim.held.lock().await;
        held.finished = true;
        lease::clear(self.store.as_ref(), &held.lease.base).await?;
        Ok(())
    }

    /// Deletes the claims of uploads in `done`: left by a worker killed between its
    /// done-marker and clearing its claim, or by one that outlived its claim. Returns how many.
    pub async fn sweep_claims(&self, done: &HashSet<String>) -> Result<usize, StateError> {
        let mut swept = 0;
        for meta in self.store.list(CLAIMS).await? {
            let finished = parse_generation_key(&meta.key)
                .and_then(|(base, _)| base.strip_prefix(CLAIMS))
                .is_some_and(|marker| done.contains(marker));
            if finished {
                self.store.delete(&meta.key).await?;
                swept += 1;
            }
        }
        if swept > 0 {
            info!(
                claims = swept,
                "deleted claims left beside finished uploads"
            );
        }
        Ok(swept)
    }

    // -----------------------------------------------------------------------------------------
    // Locks

    /// Takes the lock `name`, waiting while another worker holds it (a lock left by a dead
    /// worker expires after the lock time to live).
    async fn lock(&self, name: &str) -> Result<Lease, StateError> {
        let base = lock_base(name);
        let give_up = tokio::time::Instant::now() + self.options.lock_ttl * 3;
        let mut wait = Duration::from_millis(10);
        loop {
            match self.try_lock(&base).await? {
                Taken::Held(lock) => return Ok(lock),
                Taken::Busy { .. } if tokio::time::Instant::now() < give_up => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(500));
                }
                Taken::Busy { holder } => {
                    return Err(StateError::Locked {
                        lock: self.store.location(&base),
                        holder: holder.unwrap_or_else(|| "unknown".into()),
                    });
                }
            }
        }
    }

    async fn try_lock(&self, base: &str) -> Result<Taken, StateError> {
        Ok(lease::take(
            self.store.as_ref(),
            base,
            base,
            &self.options.holder,
            self.clock.now(),
            chrono_of(self.options.lock_ttl),
        )
        .await?)
    }

    async fn unlock(&self, lock: &Lease) {
        if let Err(e) = lock.release(self.store.as_ref()).await {
            warn!(lock = %lock.key, error = %e, "failed to release a lock; it will expire");
        }
    }

    // -----------------------------------------------------------------------------------------
    // The manifest and the receipts

    /// A dataset's manifest (the entries of `years`), if it has one.
    pub async fn manifest(
        &self,
        dataset: &str,
        years: Years,
    ) -> Result<Option<Manifest>, StateError> {
        self.read_parted(Parted::Manifest, dataset, years).await
    }

    /// A dataset's receipts (those of `years`).
    pub async fn receipts(&self, dataset: &str, years: Years) -> Result<Receipts, StateError> {
        Ok(self
            .read_parted(Parted::Receipts, dataset, years)
            .await?
            .unwrap_or_else(|| Receipts::empty(dataset)))
    }

    /// The parts of a dataset's `parted` state, by year, and whether the object written before
    /// parts is still there.
    async fn list_parts(
        &self,
        parted: Parted,
        dataset: &str,
    ) -> Result<(BTreeMap<i32, (String, String)>, bool), StateError> {
        let mut parts = BTreeMap::new();
        let mut legacy = false;
        for m in self.store.list(&parted.prefix(dataset)).await? {
            match parted.read_key(dataset, &m.key) {
                Some(Some(year)) => {
                    parts.insert(year, (m.key, m.etag));
                }
                Some(None) => legacy = true,
                None => {}
            }
        }
        Ok((parts, legacy))
    }

    /// Reads the parts of `years` at once (and the object written before parts, while it is
    /// there) and puts them together; `None` when there is nothing.
    async fn read_parted<T: PartedState>(
        &self,
        parted: Parted,
        dataset: &str,
        years: Years,
    ) -> Result<Option<T>, StateError> {
        let (parts, legacy) = self.list_parts(parted, dataset).await?;
        let first = parts.keys().next().copied();
        let mut read = Vec::new();
        let mut unread = Vec::new();
        for (key, etag) in parts
            .iter()
            .filter(|(year, _)| years.holds(**year, first))
            .map(|(_, part)| part)
        {
            match self.remembered::<T>(key, etag) {
                Some(part) => read.push((key.clone(), Some(part))),
                None => unread.push(key.clone()),
            }
        }
        if legacy {
            unread.push(parted.legacy_key(dataset));
        }
        for (key, got) in self.each(unread, read_state::<T>).await? {
            if let Some((part, etag)) = &got
                && key != parted.legacy_key(dataset)
            {
                self.remember(&key, etag, part);
            }
            read.push((key, got.map(|(part, _)| part)));
        }
        read.sort_by(|a, b| a.0.cmp(&b.0));
        let mut whole: Option<T> = None;
        for (key, value) in read {
            // A part deleted since it was listed (none is, but the object written before parts
            // is once it has been folded in, and then its parts hold it).
            let Some(value) = value else { continue };
            let value = if key == parted.legacy_key(dataset) {
                let pieces = value.split();
                let first = parts.keys().chain(pieces.keys()).min().copied();
                let mut kept = T::empty(dataset);
                for (year, piece) in pieces {
                    if years.holds(year, first) {
                        kept.merge(piece);
                    }
                }
                kept
            } else {
                value
            };
            match &mut whole {
                Some(w) => w.merge(value),
                None => whole = Some(value),
            }
        }
        Ok(whole)
    }

    /// Records an accepted submission's manifest entry and receipts in a dataset's state,
    /// under its commit lock. A retry changes nothing: both ignore a submission they hold.
    pub async fn commit(
        &self,
        dataset: &str,
        entry: Option<&ManifestEntry>,
        receipts: &[Receipt],
    ) -> Result<Committed, StateError> {
        let mut committed = Committed::default();
        let mut entry = entry;
        for _ in 0..5 {
            let lock = self.lock(&format!("commit-{dataset}")).await?;
            let result = self.apply(dataset, entry, receipts, &mut committed).await;
            self.unlock(&lock).await;
            match result {
                Ok(()) => return Ok(committed),
                Err(Step::Manifest(StoreError::Changed { .. })) => {}
                // The manifest is written: only the receipts are left to do.
                Err(Step::Receipts(StoreError::Changed { .. })) => entry = None,
                Err(Step::Manifest(e) | Step::Receipts(e)) => return Err(e.into()),
                Err(Step::Other(e)) => return Err(e),
            }
            warn!(
                dataset,
                "the dataset's state changed under its lock; committing again"
            );
        }
        Err(StateError::Unsettled {
            location: self
                .store
                .location(&lock_base(&format!("commit-{dataset}"))),
        })
    }

    /// Read, change and write back, under the commit lock, the parts the upload's period falls
    /// in; `If-Match` refuses a write should the lock have expired and another worker have
    /// written meanwhile. State written before parts is folded into them first.
    async fn apply(
        &self,
        dataset: &str,
        entry: Option<&ManifestEntry>,
        receipts: &[Receipt],
        committed: &mut Committed,
    ) -> Result<(), Step> {
        if let Some(entry) = entry {
            let year = entry.period().year();
            let mut change = None;
            self.update_parts::<Manifest>(Parted::Manifest, dataset, &[year], |_, manifest| {
                let applied = manifest.apply(entry.clone(), &rfc3339(self.clock.now()));
                let changed = applied != ManifestChange::AlreadyRecorded;
                change = Some(applied);
                changed
            })
            .await
            .map_err(|e| e.at(Step::Manifest))?;
            if let Some(ManifestChange::Current { superseded }) = change {
                committed.superseded = superseded;
            }
            debug!(step = "manifest committed", "manifest committed");
        }
        if !receipts.is_empty() {
            let years: Vec<i32> = receipts.iter().map(|r| r.period().year()).collect();
            self.update_parts::<Receipts>(Parted::Receipts, dataset, &years, |year, part| {
                let mut changed = false;
                for r in receipts.iter().filter(|r| r.period().year() == year) {
                    changed |= part.add(r.clone());
                }
                changed
            })
            .await
            .map_err(|e| e.at(Step::Receipts))?;
            debug!(step = "receipt recorded", "receipt recorded");
        }
        Ok(())
    }

    /// Under the commit lock: folds the object written before parts into the parts (then
    /// deletes it), and changes the part of each of `years` with `change`, writing back those
    /// it says it changed.
    async fn update_parts<T: PartedState>(
        &self,
        parted: Parted,
        dataset: &str,
        years: &[i32],
        mut change: impl FnMut(i32, &mut T) -> bool,
    ) -> Result<(), Failed> {
        let (mut listed, legacy) = self.list_parts(parted, dataset).await?;
        if legacy {
            self.fold_legacy::<T>(parted, dataset).await?;
            listed = self.list_parts(parted, dataset).await?.0;
        }
        let years: std::collections::BTreeSet<i32> = years.iter().copied().collect();
        for year in years {
            let key = parted.part_key(dataset, year);
            // The part as listed, from memory when this worker last read or wrote that version
            // (the write's `If-Match` refuses it should it have changed since the listing).
            let known = listed
                .get(&year)
                .and_then(|(_, etag)| Some((self.remembered::<T>(&key, etag)?, etag.clone())));
            let known = match known {
                Some(known) => Some(known),
                None => self.read_part::<T>(&key).await?,
            };
            let (mut part, mode) = match known {
                Some((p, etag)) => (p, PutMode::Update(etag)),
                None => (T::empty(dataset), PutMode::Create),
            };
            if change(year, &mut part) {
                self.write_part(&key, &part, mode).await?;
            }
        }
        Ok(())
    }

    async fn write_part<T: PartedState>(
        &self,
        key: &str,
        part: &T,
        mode: PutMode,
    ) -> Result<(), Failed> {
        let body = json_body(key, serde_json::to_vec_pretty(part))?;
        let written = self
            .store
            .put(key, body, mode)
            .await
            .map_err(|e| Failed::Write(normalise(e)))?;
        self.remember(key, &written.etag, part);
        Ok(())
    }

    /// The part at `key` as this worker last read or wrote it, if that was the version `etag`
    /// (an etag names one content of one object: an MD5 on S3, a write of its own locally).
    fn remembered<T: PartedState>(&self, key: &str, etag: &str) -> Option<T> {
        let cache = T::cache(&self.parts)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .get(key)
            .filter(|(known, _)| known == etag)
            .map(|(_, part)| part.clone())
    }

    fn remember<T: PartedState>(&self, key: &str, etag: &str, part: &T) {
        T::cache(&self.parts)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.to_owned(), (etag.to_owned(), part.clone()));
    }

    /// Moves a dataset's state written before parts into its parts, merged with what they
    /// hold, then deletes it (only the version read: one written since is folded next time).
    async fn fold_legacy<T: PartedState>(
        &self,
        parted: Parted,
        dataset: &str,
    ) -> Result<(), Failed> {
        let key = parted.legacy_key(dataset);
        let Some((whole, etag)) = self.read_part::<T>(&key).await? else {
            return Ok(());
        };
        let pieces = whole.split();
        let count = pieces.len();
        for (year, piece) in pieces {
            let part_key = parted.part_key(dataset, year);
            let (mut part, mode) = match self.read_part::<T>(&part_key).await? {
                Some((p, etag)) => (p, PutMode::Update(etag)),
                None => (T::empty(dataset), PutMode::Create),
            };
            part.merge(piece);
            self.write_part(&part_key, &part, mode).await?;
        }
        self.store
            .delete_version(&key, &etag)
            .await
            .map_err(|e| Failed::Write(normalise(e)))?;
        info!(
            dataset,
            from = %self.store.location(&key),
            parts = count,
            "state written before parts folded into one part a year"
        );
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // The ledger

    /// Every upload the ledger knows is finished. Done-markers are listed before the index is
    /// read: a marker is deleted only after a generation holding it exists, so none is missed.
    pub async fn done(&self) -> Result<Done, StateError> {
        let listed: Vec<String> = self
            .store
            .list(DONE)
            .await?
            .iter()
            .filter_map(|m| parse_done_key(&m.key).map(str::to_owned))
            .collect();
        let index = self.newest_index().await?;
        let unfolded = listed.len();
        let mut markers: HashSet<String> = listed.into_iter().collect();
        markers.extend(index.records.keys().cloned());
        Ok(Done { markers, unfolded })
    }

    /// Whether the upload with `marker` is finished (looked up now, not from a listing).
    pub async fn is_done(&self, marker: &str) -> Result<bool, StateError> {
        match self.store.get(&done_key(marker)).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound { .. }) => {
                Ok(self.newest_index().await?.records.contains_key(marker))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Records the upload with `marker` as finished (create-only); `false` when it already
    /// was, by a worker that outlived its claim.
    pub async fn mark_done(&self, marker: &str, record: &DoneRecord) -> Result<bool, StateError> {
        let key = done_key(marker);
        let body = json_body(&key, serde_json::to_vec_pretty(record))?;
        match self.store.put(&key, body, PutMode::Create).await {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every finished upload's record, by marker (for tests and operators: it reads every
    /// done-marker not yet folded).
    pub async fn done_records(&self) -> Result<BTreeMap<String, DoneRecord>, StateError> {
        let mut records = self.newest_index().await?.records.clone();
        for meta in self.store.list(DONE).await? {
            let Some(marker) = parse_done_key(&meta.key) else {
                continue;
            };
            if let Some((record, _)) = self.read_json::<DoneRecord>(&meta.key).await? {
                records.insert(marker.to_owned(), record);
            }
        }
        Ok(records)
    }

    /// The newest generation of the index, read again only when a newer one has appeared.
    async fn newest_index(&self) -> Result<Arc<Index>, StateError> {
        for _ in 0..5 {
            let newest = self
                .store
                .list(DONE_INDEX)
                .await?
                .iter()
                .filter_map(|m| parse_done_index_key(&m.key))
                .max();
            let mut cached = self.index.lock().await;
            let Some(newest) = newest else {
                return Ok(Arc::clone(&cached));
            };
            if cached.generation == newest {
                return Ok(Arc::clone(&cached));
            }
            // Deleted by a later compaction since the listing: list again.
            if let Some((index, _)) = self.read_json::<Index>(&done_index_key(newest)).await? {
                *cached = Arc::new(index);
                return Ok(Arc::clone(&cached));
            }
        }
        Err(StateError::Unsettled {
            location: self.store.location(DONE_INDEX),
        })
    }

    /// Folds the done-markers into a new generation of the index when at least
    /// `compact_after` are waiting and no other worker is compacting; returns how many were
    /// folded. Each marker's receipt is checked first, and repaired if missing.
    pub async fn compact(&self) -> Result<Option<usize>, StateError> {
        let listed: Vec<String> = self
            .store
            .list(DONE)
            .await?
            .iter()
            .filter_map(|m| parse_done_key(&m.key).map(str::to_owned))
            .collect();
        if listed.len() < self.options.compact_after.max(1) {
            return Ok(None);
        }
        let Taken::Held(lock) = self.try_lock(&lock_base("ledger")).await? else {
            return Ok(None);
        };
        let result = self.fold(&listed).await;
        self.unlock(&lock).await;
        result
    }

    async fn fold(&self, listed: &[String]) -> Result<Option<usize>, StateError> {
        let index = self.newest_index().await?;
        let unread: Vec<String> = listed
            .iter()
            .filter(|m| !index.records.contains_key(*m))
            .cloned()
            .collect();
        let mut folded = Vec::new();
        for (marker, read) in self.each(unread, read_marker).await? {
            if let Some(record) = read {
                folded.push((marker, record));
            } else {
                warn!(
                    marker,
                    "a done-marker vanished while the ledger was compacted"
                );
            }
        }
        self.repair_receipts(&folded).await?;
        let mut records = index.records.clone();
        let count = folded.len();
        for (marker, mut record) in folded {
            // Checked above: the dataset's receipts hold it.
            record.receipt = None;
            records.insert(marker, record);
        }
        let next = Index {
            generation: index.generation + 1,
            records,
        };
        let key = done_index_key(next.generation);
        let body = json_body(&key, serde_json::to_vec(&next))?;
        match self.store.put(&key, body, PutMode::Create).await {
            Ok(_) => {}
            Err(StoreError::AlreadyExists { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let generations: Vec<u64> = self
            .store
            .list(DONE_INDEX)
            .await?
            .iter()
            .filter_map(|m| parse_done_index_key(&m.key))
            .collect();
        if generations.iter().any(|g| *g > next.generation) {
            // A compactor that outlived the ledger lock made a newer one: ours is not the
            // newest, so nothing may be deleted on its strength.
            self.store.delete(&key).await?;
            return Ok(None);
        }
        self.each(listed.to_vec(), delete_marker).await?;
        for g in generations.into_iter().filter(|g| *g < next.generation) {
            self.store.delete(&done_index_key(g)).await?;
        }
        info!(
            folded = count,
            generation = next.generation,
            uploads = next.records.len(),
            "ledger compacted"
        );
        *self.index.lock().await = Arc::new(next);
        Ok(Some(count))
    }

    /// Runs `step` on every item, [`CONCURRENT_REQUESTS`] at a time: compaction's reads and
    /// deletes are independent, and one at a time they would take a request's latency each.
    async fn each<T, F, Fut>(
        &self,
        items: Vec<String>,
        step: F,
    ) -> Result<Vec<(String, T)>, StateError>
    where
        T: Send + 'static,
        F: Fn(Arc<dyn ObjectStore>, String) -> Fut,
        Fut: Future<Output = Result<T, StateError>> + Send + 'static,
    {
        let mut out = Vec::with_capacity(items.len());
        let mut running = tokio::task::JoinSet::new();
        let mut items = items.into_iter();
        loop {
            while running.len() < CONCURRENT_REQUESTS {
                let Some(item) = items.next() else { break };
                let work = step(Arc::clone(&self.store), item.clone());
                running.spawn(async move { work.await.map(|t| (item, t)) });
            }
            let Some(done) = running.join_next().await else {
                return Ok(out);
            };
            out.push(done.map_err(|e| StateError::Unsettled {
                location: format!("a compaction task: {e}"),
            })??);
        }
    }

    /// Records any receipt a done-marker holds that its dataset's receipts lack.
    async fn repair_receipts(&self, folded: &[(String, DoneRecord)]) -> Result<(), StateError> {
        let mut by_dataset: BTreeMap<&str, Vec<&Receipt>> = BTreeMap::new();
        for (_, record) in folded {
            if let (Some(dataset), Some(receipt)) = (&record.dataset, &record.receipt) {
                by_dataset.entry(dataset).or_default().push(receipt);
            }
        }
        for (dataset, wanted) in by_dataset {
            let have: HashSet<String> = self
                .receipts(dataset, Years::All)
                .await?
                .receipts
                .into_iter()
                .map(|r| r.identity.upload.submission_id)
                .collect();
            let missing: Vec<Receipt> = wanted
                .into_iter()
                .filter(|r| !have.contains(r.submission_id()))
                .map(|r| {
                    let mut r = r.clone();
                    r.identity.adopt_dataset(dataset);
                    r
                })
                .collect();
            if missing.is_empty() {
                continue;
            }
            for r in &missing {
                warn!(
                    dataset,
                    submission = %r.submission_id(),
                    key = %r.identity.upload.source_key,
                    "a finished upload had no receipt; repaired from its done-marker"
                );
            }
            self.commit(dataset, None, &missing).await?;
        }
        Ok(())
    }
}

/// Requests compaction makes at once.
const CONCURRENT_REQUESTS: usize = 16;

async fn read_marker(
    store: Arc<dyn ObjectStore>,
    marker: String,
) -> Result<Option<DoneRecord>, StateError> {
    let key = done_key(&marker);
    match store.get(&key).await {
        Ok((bytes, _)) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StateError::Corrupt {
                    location: store.location(&key),
                    message: e.to_string(),
                })
        }
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn delete_marker(store: Arc<dyn ObjectStore>, marker: String) -> Result<(), StateError> {
    Ok(store.delete(&done_key(&marker)).await?)
}

/// Which write of a commit failed.
enum Step {
    Manifest(StoreError),
    Receipts(StoreError),
    Other(StateError),
}

/// How changing a dataset's parts failed: a write (which the commit may try again), or
/// anything else.
enum Failed {
    Write(StoreError),
    Other(StateError),
}

impl From<StateError> for Failed {
    fn from(e: StateError) -> Failed {
        Failed::Other(e)
    }
}

impl From<StoreError> for Failed {
    fn from(e: StoreError) -> Failed {
        Failed::Other(e.into())
    }
}

impl Failed {
    /// The commit's step, a write failing as `write`.
    fn at(self, write: fn(StoreError) -> Step) -> Step {
        match self {
            Failed::Write(e) => write(e),
            Failed::Other(e) => Step::Other(e),
        }
    }
}

/// Which years of a dataset's manifest or receipts to read (the year a period begins in).
#[derive(Debug, Clone)]
pub enum Years {
    /// Every year.
    All,
    /// These years.
    Range(RangeInclusive<i32>),
    /// These years and the earliest year held (which holds the earliest period).
    RangeAndFirst(RangeInclusive<i32>),
}

impl Years {
    fn holds(&self, year: i32, first: Option<i32>) -> bool {
        match self {
            Years::All => true,
            Years::Range(r) => r.contains(&year),
            Years::RangeAndFirst(r) => r.contains(&year) || first == Some(year),
        }
    }
}

/// The parts of manifests and receipts a worker read or wrote, by key, with their etags: a part
/// listed with the etag remembered is not read again.
#[derive(Default)]
struct PartCache {
    manifests: std::sync::Mutex<HashMap<String, (String, Manifest)>>,
    receipts: std::sync::Mutex<HashMap<String, (String, Receipts)>>,
}

/// State kept in one part a year: the manifest and the receipts.
trait PartedState: Serialize + DeserializeOwned + Clone + Send + 'static {
    fn cache(parts: &PartCache) -> &std::sync::Mutex<HashMap<String, (String, Self)>>;
    fn empty(dataset: &str) -> Self;
    fn merge(&mut self, other: Self);
    fn split(self) -> BTreeMap<i32, Self>;
    fn upgrade(&mut self);
}

impl PartedState for Manifest {
    fn cache(parts: &PartCache) -> &std::sync::Mutex<HashMap<String, (String, Self)>> {
        &parts.manifests
    }
    fn empty(dataset: &str) -> Self {
        Manifest::new(dataset)
    }
    fn merge(&mut self, other: Self) {
        Manifest::merge(self, other);
    }
    fn split(self) -> BTreeMap<i32, Self> {
        Manifest::split(self)
    }
    fn upgrade(&mut self) {
        Manifest::upgrade(self);
    }
}

impl PartedState for Receipts {
    fn cache(parts: &PartCache) -> &std::sync::Mutex<HashMap<String, (String, Self)>> {
        &parts.receipts
    }
    fn empty(dataset: &str) -> Self {
        Receipts::new(dataset)
    }
    fn merge(&mut self, other: Self) {
        Receipts::merge(self, other);
    }
    fn split(self) -> BTreeMap<i32, Self> {
        Receipts::split(self)
    }
    fn upgrade(&mut self) {
        Receipts::upgrade(self);
    }
}

/// A part of the manifest or receipts (or the object written before parts), in today's format.
async fn read_state<T: PartedState>(
    store: Arc<dyn ObjectStore>,
    key: String,
) -> Result<Option<(T, String)>, StateError> {
    match store.get(&key).await {
        Ok((bytes, meta)) => serde_json::from_slice::<T>(&bytes)
            .map(|mut v| {
                v.upgrade();
                Some((v, meta.etag))
            })
            .map_err(|e| StateError::Corrupt {
                location: store.location(&key),
                message: e.to_string(),
            }),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The bytes of the state object at `key`, as serialised. State types hold strings, numbers
/// and string-keyed maps, which always serialise; were one not to, the write fails rather than
/// replacing the object with nothing.
fn json_body(key: &str, bytes: serde_json::Result<Vec<u8>>) -> Result<Vec<u8>, StateError> {
    bytes.map_err(|e| StateError::Corrupt {
        location: key.to_owned(),
        message: e.to_string(),
    })
}

/// A create-only write that found an object (another worker created the file first) is, for a
/// read-modify-write, the same as a changed object: read again.
fn normalise(e: StoreError) -> StoreError {
    match e {
        StoreError::AlreadyExists { location } => StoreError::Changed { location },
        other => other,
    }
}
