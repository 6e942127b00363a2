//! Leases: an exclusive, expiring hold on a name, built from create-only writes alone.
//!
//! Workers claim uploads and lock shared state with leases. A lease on `<base>` is a chain of
//! generation objects `<base>.<n>.json`, each holding who took it, a token unique to that
//! taking, and when it expires:
//!
//! 1. **take**: create generation `n` with a create-only write (`If-None-Match: *` on S3),
//!    where `n` is one past the newest generation, and that generation has expired (a worker
//!    that died leaves one), or `0` when there is none. Of several workers creating the same
//!    generation exactly one succeeds. A create refused because the object exists is read
//!    back: if it holds this taking's token, the write was this worker's own (its response was
//!    lost and the client's retry found the object), and the lease is held;
//! 2. **check**: list the generations again; the taker holds the lease only if its own is still
//!    the newest (a generation below a live one, recreated after its owner released it, must
//!    not count);
//! 3. **renew**: the holder creates generation `n+1` with the same token and a later expiry,
//!    then deletes `n`. A renewal is a create-only write like a take, so a holder that let its
//!    lease expire and was taken over finds `n+1` created by another token, and knows it has
//!    lost the lease: there is no last-writer-wins;
//! 4. **release**: delete the generation held. A finished job clears every generation.
//!
//! A worker that took a lease over (generation `n` > 0) deletes the expired generations below
//! its own once it holds the lease: their holders died, or outlived their expiry and have lost
//! the lease, and nobody else would ever delete them.
//!
//! No step overwrites or deletes another worker's live generation, so two workers never both
//! hold a lease unless one outlived its expiry without renewing. Nothing here needs a
//! compare-and-swap (`If-Match`), which some S3-compatible stores and test servers lack or do
//! not make atomic.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::layout::{generation_key, parse_generation_key};
use crate::model::new_token;
use crate::store::{ObjectStore, PutMode, StoreError};

/// Rounds of take-and-check before reporting the lease as held by another (each lost round
/// means another worker made progress).
const ROUNDS: usize = 8;

/// What a generation object holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// What the lease is for (an upload key, a manifest).
    pub subject: String,
    /// The worker holding it.
    pub holder: String,
    /// Unique to one taking of the lease, kept by its renewals: how a worker recognises its
    /// own generations.
    #[serde(default)]
    pub token: String,
    /// When it was taken or last renewed (RFC 3339).
    pub taken_at: String,
    /// When it expires (RFC 3339); after that another worker may take it over.
    pub expires_at: String,
}

impl LeaseRecord {
    fn live_at(&self, now: DateTime<Utc>) -> bool {
        DateTime::parse_from_rfc3339(&self.expires_at).is_ok_and(|t| t > now)
    }
}

/// A lease this worker holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lease's name.
    pub base: String,
    /// The generation object's key.
    pub key: String,
    /// Its generation.
    pub generation: u64,
    /// This taking's token.
    pub token: String,
    /// When the generation held expires.
    pub expires_at: DateTime<Utc>,
}

/// The result of trying to take a lease.
#[derive(Debug)]
pub enum Taken {
    /// This worker holds the lease.
    Held(Lease),
    /// Another worker holds it, until its expiry.
    Busy {
        /// The other holder, when known.
        holder: Option<String>,
    },
}

/// The generations of `base` in the store, oldest first.
pub async fn generations(store: &dyn ObjectStore, base: &str) -> Result<Vec<u64>, StoreError> {
    let mut found: Vec<u64> = store
        .list(&format!("{base}."))
        .await?
        .iter()
        .filter_map(|m| parse_generation_key(&m.key))
        .filter(|(b, _)| *b == base)
        .map(|(_, n)| n)
        .collect();
    found.sort_unstable();
    Ok(found)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Reads a generation; `None` when it is gone.
async fn read(store: &dyn ObjectStore, key: &str) -> Result<Option<LeaseRecord>, StoreError> {
    match store.get(key).await {
        // A put is atomic, so an unreadable generation was not written by this code: it is
        // treated as expired.
        Ok((bytes, _)) => Ok(Some(serde_json::from_slice(&bytes).unwrap_or(
            LeaseRecord {
                subject: String::new(),
                holder: String::new(),
                token: String::new(),
                taken_at: String::new(),
                expires_at: String::new(),
            },
        ))),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates generation `n` of `base` holding `record`: `true` when it is this taking's
/// (created now, or created by an earlier attempt whose response was lost).
async fn create(
    store: &dyn ObjectStore,
    base: &str,
    n: u64,
    record: &LeaseRecord,
) -> Result<bool, StoreError> {
    let key = generation_key(base, n);
    let body = serde_json::to_vec(record).unwrap_or_default();
    match store.put(&key, body, PutMode::Create).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists { .. }) => Ok(read(store, &key)
            .await?
            .is_some_and(|r| r.token == record.token)),
        Err(e) => Err(e),
    }
}

/// Tries to take the lease on `base` for `holder` until `now + ttl`.
pub async fn take(
    store: &dyn ObjectStore,
    base: &str,
    subject: &str,
    holder: &str,
    now: DateTime<Utc>,
    ttl: chrono::Duration,
) -> Result<Taken, StoreError> {
    let expires_at = now + ttl;
    let record = LeaseRecord {
        subject: subject.to_owned(),
        holder: holder.to_owned(),
        token: new_token(),
        taken_at: rfc3339(now),
        expires_at: rfc3339(expires_at),
    };
    // Most leases are free and never taken before: try generation 0 without listing first.
    let mut next = Some(0);
    for _ in 0..ROUNDS {
        let n = match next.take() {
            Some(n) => n,
            None => match generations(store, base).await?.last() {
                None => 0,
                Some(&newest) => match read(store, &generation_key(base, newest)).await? {
                    Some(current) if current.live_at(now) => {
                        return Ok(Taken::Busy {
                            holder: Some(current.holder),
                        });
                    }
                    Some(_) => newest + 1,
                    // Released while we looked: look again.
                    None => continue,
                },
            },
        };
        if !create(store, base, n, &record).await? {
            continue;
        }
        let key = generation_key(base, n);
        let newest = generations(store, base).await?.last().copied();
        if newest.is_some_and(|newest| newest > n) {
            // A newer generation exists: ours filled a hole below a live lease. Withdraw.
            store.delete(&key).await?;
            continue;
        }
        if n > 0 {
            delete_expired_below(store, base, n, now).await;
        }
        return Ok(Taken::Held(Lease {
            base: base.to_owned(),
            key,
            generation: n,
            token: record.token,
            expires_at,
        }));
    }
    Ok(Taken::Busy { holder: None })
}

/// Deletes the generations of `base` below `held` that have expired at `now`: left by a holder
/// that died (or stalled past its expiry, and has lost the lease), they would otherwise stay
/// for good, since their holder never releases them and this one releases only its own. A
/// generation below `held` that is live is another worker's attempt to fill a hole, which it
/// withdraws itself. A failure leaves a stale generation that later takes list past.
async fn delete_expired_below(store: &dyn ObjectStore, base: &str, held: u64, now: DateTime<Utc>) {
    let below = match generations(store, base).await {
        Ok(found) => found.into_iter().filter(|n| *n < held),
        Err(e) => {
            tracing::warn!(lease = %base, error = %e, "failed to list a lease's generations");
            return;
        }
    };
    for n in below {
        let key = generation_key(base, n);
        let expired = match read(store, &key).await {
            Ok(record) => record.is_some_and(|r| !r.live_at(now)),
            Err(e) => {
                tracing::warn!(lease = %key, error = %e, "failed to read an older generation");
                continue;
            }
        };
        if expired && let Err(e) = store.delete(&key).await {
            tracing::warn!(lease = %key, error = %e, "failed to delete an expired generation");
        }
    }
}

impl Lease {
    /// Extends the lease to `now + ttl` by creating the next generation with this taking's
    /// token. `false` when the lease was lost: it expired and another worker took it over.
    pub async fn renew(
        &mut self,
        store: &dyn ObjectStore,
        subject: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> Result<bool, StoreError> {
        let expires_at = now + ttl;
        let record = LeaseRecord {
            subject: subject.to_owned(),
            holder: holder.to_owned(),
            token: self.token.clone(),
            taken_at: rfc3339(now),
            expires_at: rfc3339(expires_at),
        };
        let next = self.generation + 1;
        if !create(store, &self.base, next, &record).await? {
            return Ok(false);
        }
        let old = std::mem::replace(&mut self.key, generation_key(&self.base, next));
        self.generation = next;
        self.expires_at = expires_at;
        // The older generation is ours and no longer the newest: a failed delete leaves only
        // a stale generation the next take lists past.
        if let Err(e) = store.delete(&old).await {
            tracing::warn!(lease = %old, error = %e, "failed to delete a renewed lease's older generation");
        }
        Ok(true)
    }

    /// Gives the lease up.
    pub async fn release(&self, store: &dyn ObjectStore) -> Result<(), StoreError> {
        store.delete(&self.key).await
    }
}

/// Deletes every generation of `base`: the work the lease guarded is finished and recorded, so
/// a worker that takes the lease afterwards will find it done.
pub async fn clear(store: &dyn ObjectStore, base: &str) -> Result<(), StoreError> {
    for n in generations(store, base).await? {
        store.delete(&generation_key(base, n)).await?;
    }
    Ok(())
}

/// The generation objects of every lease under `prefix` (for tests and operators).
pub async fn records(
    store: &dyn ObjectStore,
    prefix: &str,
) -> Result<Vec<(String, LeaseRecord)>, StoreError> {
    let mut out = Vec::new();
    for meta in store.list(prefix).await? {
        match store.get(&meta.key).await {
            Ok((bytes, _)) => {
                if let Ok(record) = serde_json::from_slice(&bytes) {
                    out.push((meta.key, record));
                }
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::store::{self, LocalStore, ObjectMeta};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn store() -> (tempfile::TempDir, Arc<dyn ObjectStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::new(dir.path()).unwrap());
        (dir, store)
    }

    async fn take_at(store: &dyn ObjectStore, who: &str, now: &str) -> Taken {
        take(
            store,
            "locks/x",
            "x",
            who,
            at(now),
            chrono::Duration::minutes(15),
        )
        .await
        .unwrap()
    }

    /// Found by the `keys` fuzz target: `locks/x.01.json` was read as generation 1, whose key
    /// `locks/x.1.json` does not exist, so every take looked again and the lease stayed busy.
    #[tokio::test]
    async fn an_object_that_spells_a_generation_otherwise_does_not_hold_the_lease() {
        let (_dir, store) = store();
        store
            .put("locks/x.01.json", b"{}".to_vec(), PutMode::Create)
            .await
            .unwrap();
        let taken = take_at(store.as_ref(), "a", "2020-01-01T00:00:00Z").await;
        assert!(matches!(taken, Taken::Held(_)), "{taken:?}");
    }

    #[tokio::test]
    async fn a_live_lease_is_busy_and_an_expired_one_is_taken_over_by_the_next_generation() {
        let (_dir, store) = store();
        let Taken::Held(first) = take_at(store.as_ref(), "a", "2020-01-01T00:00:00Z").await else {
            panic!("a free lease is taken");
        };
        assert_eq!(first.generation, 0);
        let second = take_at(store.as_ref(), "b", "2020-01-01T00:10:00Z").await;
        assert!(
            matches!(&second, Taken::Busy { holder: Some(h) } if h == "a"),
            "{second:?}"
        );
        let Taken::Held(third) = take_at(store.as_ref(), "c", "2020-01-01T00:16:00Z").await else {
            panic!("an expired lease is taken over");
        };
        assert_eq!(
            (third.generation, third.key.as_str()),
            (1, "locks/x.1.json")
        );
        // The first holder, late, releases only its own generation; c still holds.
        first.release(store.as_ref()).await.unwrap();
        let fourth = take_at(store.as_ref(), "d", "2020-01-01T00:17:00Z").await;
        assert!(
            matches!(&fourth, Taken::Busy { holder: Some(h) } if h == "c"),
            "a hole below a live generation does not count: {fourth:?}"
        );
        assert_eq!(
            generations(store.as_ref(), "locks/x").await.unwrap(),
            [1],
            "the withdrawn hole is gone"
        );
        third.release(store.as_ref()).await.unwrap();
        let Taken::Held(fifth) = take_at(store.as_ref(), "e", "2020-01-01T00:18:00Z").await else {
            panic!("a released lease is free");
        };
        assert_eq!(fifth.generation, 0);
        clear(store.as_ref(), "locks/x").await.unwrap();
        assert!(store.list("locks/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_lease_taken_over_from_a_dead_holder_leaves_no_generation_once_released() {
        let (_dir, store) = store();
        // The first holder dies holding the lease (a commit lock, a claim).
        let Taken::Held(_) = take_at(store.as_ref(), "dead", "2020-01-01T00:00:00Z").await else {
            panic!("free");
        };
        let Taken::Held(next) = take_at(store.as_ref(), "b", "2020-01-01T00:16:00Z").await else {
            panic!("an expired lease is taken over");
        };
        assert_eq!(next.generation, 1);
        next.release(store.as_ref()).await.unwrap();
        assert_eq!(
            generations(store.as_ref(), "locks/x").await.unwrap(),
            [0u64; 0],
            "the dead holder's generation is gone too"
        );
        let Taken::Held(again) = take_at(store.as_ref(), "c", "2020-01-01T00:17:00Z").await else {
            panic!("a released lease is free");
        };
        assert_eq!(again.generation, 0);
    }

    #[tokio::test]
    async fn a_take_over_deletes_only_expired_generations_below_its_own() {
        let (_dir, store) = store();
        let record = |holder: &str, expires_at: &str| {
            serde_json::to_vec(&LeaseRecord {
                subject: "x".into(),
                holder: holder.into(),
                token: holder.into(),
                taken_at: "2020-01-01T00:00:00Z".into(),
                expires_at: expires_at.into(),
            })
            .unwrap()
        };
        // Generation 1 of a dead holder, and below it a live generation 0: another worker's
        // attempt to fill a hole, between its create and its check.
        for (n, holder, expires_at) in [
            (1, "dead", "2020-01-01T00:15:00Z"),
            (0, "filling", "2020-01-01T01:00:00Z"),
        ] {
            store
                .put(
                    &generation_key("locks/x", n),
                    record(holder, expires_at),
                    PutMode::Create,
                )
                .await
                .unwrap();
        }
        let Taken::Held(taken) = take_at(store.as_ref(), "b", "2020-01-01T00:16:00Z").await else {
            panic!("an expired lease is taken over");
        };
        assert_eq!(taken.generation, 2);
        assert_eq!(
            generations(store.as_ref(), "locks/x").await.unwrap(),
            [0, 2],
            "the live generation is left to its worker, the expired one deleted"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn of_workers_racing_for_an_expired_lease_exactly_one_wins() {
        let (_dir, store) = store();
        let Taken::Held(_) = take_at(store.as_ref(), "dead", "2020-01-01T00:00:00Z").await else {
            panic!("free");
        };
        for round in 0..4 {
            let now = format!("2020-01-01T0{}:00:00Z", round + 1);
            let mut tasks = Vec::new();
            for i in 0..16 {
                let store = Arc::clone(&store);
                let now = now.clone();
                tasks.push(tokio::spawn(async move {
                    matches!(
                        take_at(store.as_ref(), &format!("w{i}"), &now).await,
                        Taken::Held(_)
                    )
                }));
            }
            let mut winners = 0;
            for t in tasks {
                winners += usize::from(t.await.unwrap());
            }
            assert_eq!(winners, 1, "round {round}");
        }
    }

    #[tokio::test]
    async fn a_renewed_lease_outlives_its_first_expiry_and_a_lapsed_one_is_lost() {
        let (_dir, store) = store();
        let ttl = chrono::Duration::minutes(15);
        let Taken::Held(mut lease) = take_at(store.as_ref(), "a", "2020-01-01T00:00:00Z").await
        else {
            panic!("free");
        };
        let renewed = lease
            .renew(store.as_ref(), "x", "a", at("2020-01-01T00:10:00Z"), ttl)
            .await
            .unwrap();
        assert!(renewed);
        assert_eq!(lease.generation, 1);
        assert_eq!(generations(store.as_ref(), "locks/x").await.unwrap(), [1]);
        // Past the first expiry, before the renewed one: still held.
        let other = take_at(store.as_ref(), "b", "2020-01-01T00:20:00Z").await;
        assert!(
            matches!(&other, Taken::Busy { holder: Some(h) } if h == "a"),
            "{other:?}"
        );
        // The holder stalls past its expiry; another worker takes the lease over.
        let Taken::Held(taken_over) = take_at(store.as_ref(), "b", "2020-01-01T00:26:00Z").await
        else {
            panic!("a lapsed lease is taken over");
        };
        assert_eq!(taken_over.generation, 2);
        let renewed = lease
            .renew(store.as_ref(), "x", "a", at("2020-01-01T00:27:00Z"), ttl)
            .await
            .unwrap();
        assert!(!renewed, "a renewal after a take-over must not win");
        // The loser gives back only what is its own.
        lease.release(store.as_ref()).await.unwrap();
        assert_eq!(generations(store.as_ref(), "locks/x").await.unwrap(), [2]);
    }

    /// A store whose first create-only write of a lease generation is done but answered as
    /// if another writer had got there first: what a client sees when the response to its
    /// PUT is lost and its retry meets `412 Precondition Failed`.
    #[derive(Debug)]
    struct LostResponse {
        inner: LocalStore,
        lost: AtomicBool,
    }

    #[async_trait]
    impl ObjectStore for LostResponse {
        fn location(&self, key: &str) -> String {
            self.inner.location(key)
        }
        async fn list(&self, prefix: &str) -> store::Result<Vec<ObjectMeta>> {
            self.inner.list(prefix).await
        }
        async fn get(&self, key: &str) -> store::Result<(Vec<u8>, ObjectMeta)> {
            self.inner.get(key).await
        }
        async fn download(
            &self,
            key: &str,
            dest: &Path,
            feed: Option<store::Feed>,
        ) -> store::Result<store::Downloaded> {
            self.inner.download(key, dest, feed).await
        }
        async fn put(&self, key: &str, bytes: Vec<u8>, mode: PutMode) -> store::Result<ObjectMeta> {
            let create = mode == PutMode::Create;
            let meta = self.inner.put(key, bytes, mode).await?;
            if create && !self.lost.swap(true, Ordering::SeqCst) {
                return Err(StoreError::AlreadyExists {
                    location: self.location(key),
                });
            }
            Ok(meta)
        }
        async fn put_file(
            &self,
            key: &str,
            src: &Path,
            mode: PutMode,
        ) -> store::Result<ObjectMeta> {
            self.inner.put_file(key, src, mode).await
        }
        async fn copy(&self, from: &str, to: &str) -> store::Result<ObjectMeta> {
            self.inner.copy(from, to).await
        }
        async fn delete(&self, key: &str) -> store::Result<()> {
            self.inner.delete(key).await
        }

        async fn delete_version(&self, key: &str, etag: &str) -> store::Result<()> {
            self.inner.delete_version(key, etag).await
        }
    }

    #[tokio::test]
    async fn a_worker_whose_create_was_answered_already_exists_recognises_its_own_lease() {
        let dir = tempfile::tempdir().unwrap();
        let store = LostResponse {
            inner: LocalStore::new(dir.path()).unwrap(),
            lost: AtomicBool::new(false),
        };
        let taken = take_at(&store, "a", "2020-01-01T00:00:00Z").await;
        let Taken::Held(lease) = taken else {
            panic!("its own claim was taken for another's: {taken:?}");
        };
        assert_eq!(lease.generation, 0);
        let records = records(&store, "locks/").await.unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].1.token, lease.token);
        assert_ne!(new_token(), new_token());
    }
}
