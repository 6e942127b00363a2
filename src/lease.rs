//! Leases: an exclusive, expiring hold on a name, built from create-only writes alone.
//!
//! Workers claim uploads and lock the manifest with leases. A lease on `<base>` is a chain of
//! generation objects `<base>.<n>.json`, each holding who took it and when it expires:
//!
//! 1. **take**: create generation `n` with a create-only write (`If-None-Match: *` on S3),
//!    where `n` is one past the newest generation, and that generation has expired (a worker
//!    that died leaves one), or `0` when there is none. Of several workers creating the same
//!    generation exactly one succeeds;
//! 2. **check**: list the generations again; the taker holds the lease only if its own is still
//!    the newest (a generation below a live one, recreated after its owner released it, must
//!    not count);
//! 3. **release**: delete the generation taken. A finished job clears every generation.
//!
//! No step overwrites or deletes another worker's live generation, so two workers never both
//! hold a lease unless one outlived its expiry: choose the time to live well above the work's
//! duration. Nothing here needs a compare-and-swap (`If-Match`), which some S3-compatible
//! stores and test servers lack or do not make atomic.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::store::{ObjectStore, PutMode, StoreError};

/// Rounds of take-and-check before reporting the lease as held (each lost round means another
/// worker made progress).
const ROUNDS: usize = 8;

/// What a generation object holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// What the lease is for (an upload key, a manifest).
    pub subject: String,
    /// The worker holding it.
    pub holder: String,
    /// When it was taken (RFC 3339).
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
    /// The generation object's key.
    pub key: String,
    /// Its generation.
    pub generation: u64,
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

fn generation_key(base: &str, n: u64) -> String {
    format!("{base}.{n}.json")
}

/// The generations of `base` in the store, newest last.
async fn generations(store: &dyn ObjectStore, base: &str) -> Result<Vec<u64>, StoreError> {
    let prefix = format!("{base}.");
    let mut found: Vec<u64> = store
        .list(&prefix)
        .await?
        .iter()
        .filter_map(|m| {
            m.key
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(".json"))
                .and_then(|n| n.parse().ok())
        })
        .collect();
    found.sort_unstable();
    Ok(found)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
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
    let record = LeaseRecord {
        subject: subject.to_owned(),
        holder: holder.to_owned(),
        taken_at: rfc3339(now),
        expires_at: rfc3339(now + ttl),
    };
    let body = serde_json::to_vec(&record).unwrap_or_default();
    // Most leases are free and never taken before: try generation 0 without listing first.
    let mut next = Some(0);
    for _ in 0..ROUNDS {
        let n = match next.take() {
            Some(n) => n,
            None => match generations(store, base).await?.last() {
                None => 0,
                Some(&newest) => match store.get(&generation_key(base, newest)).await {
                    Ok((bytes, _)) => {
                        let current = serde_json::from_slice::<LeaseRecord>(&bytes).ok();
                        match current {
                            Some(c) if c.live_at(now) => {
                                return Ok(Taken::Busy {
                                    holder: Some(c.holder),
                                });
                            }
                            // Expired, or unreadable (a torn write cannot happen: a put is
                            // atomic, so this is not ours to read): take the next one.
                            _ => newest + 1,
                        }
                    }
                    // Released while we looked: look again.
                    Err(StoreError::NotFound { .. }) => continue,
                    Err(e) => return Err(e),
                },
            },
        };
        let key = generation_key(base, n);
        match store.put(&key, body.clone(), PutMode::Create).await {
            Ok(_) => {}
            Err(StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e),
        }
        let newest = generations(store, base).await?.last().copied();
        if newest.is_some_and(|newest| newest > n) {
            // A newer generation exists: ours filled a hole below a live lease. Withdraw.
            store.delete(&key).await?;
            continue;
        }
        return Ok(Taken::Held(Lease { key, generation: n }));
    }
    Ok(Taken::Busy { holder: None })
}

impl Lease {
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
    use std::sync::Arc;

    use super::*;
    use crate::store::LocalStore;

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
}
