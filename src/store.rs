//! Object storage: the only code that reads or writes the bucket.
//!
//! [`ObjectStore`] is a small trait: list, get, download to a file (hashing it, and feeding it
//! to a reader as it arrives), put (with a mode for create-only and compare-and-swap writes),
//! copy and delete. [`LocalStore`] keeps a bucket in a local directory and is the embedded
//! default; [`S3Store`] (in `store/s3.rs`) talks to S3 and S3-compatible stores. [`open`]
//! picks the backend from a URL.
//!
//! Rules every backend keeps:
//! - a put is atomic: readers see the old object or the new one, never part of one; a writer
//!   killed mid-put leaves nothing visible (the local store's next opening removes its
//!   temporary file);
//! - [`PutMode::Create`] succeeds for exactly one of several racing writers;
//! - [`PutMode::Update`] succeeds only if the object still has the etag the caller read;
//! - an etag names one write: `get` and `download` return the bytes and the etag of the same
//!   write, and two writes never share an etag (the local store tells its files apart by inode
//!   and a modification time it stamps to the nanosecond);
//! - errors name the bucket and key.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::workdir::WorkRoot;

mod s3;

pub use s3::{
    ENDPOINT_ENV, PATH_STYLE_ENV, PresignedPut, RetryReason, S3Location, S3Observer, S3Options,
    S3Store,
};

/// What went wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No object at that key.
    #[error("{location} does not exist")]
    NotFound {
        /// `file:///...` or `s3://bucket/key`.
        location: String,
    },
    /// A create-only write found an object already there.
    #[error("{location} already exists")]
    AlreadyExists {
        /// Where.
        location: String,
    },
    /// A compare-and-swap write found the object changed since it was read.
    #[error("{location} changed since it was read")]
    Changed {
        /// Where.
        location: String,
    },
    /// The key is not a valid object key.
    #[error("invalid object key `{key}`: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// A store setting (URL, environment) is not usable.
    #[error("invalid {setting}: {message}")]
    Config {
        /// Which setting.
        setting: String,
        /// What is wrong with it.
        message: String,
    },
    /// An IO or backend failure.
    #[error("failed to {action} {location}: {message}")]
    Backend {
        /// What was being done (`read`, `write`, `list`...).
        action: &'static str,
        /// Where.
        location: String,
        /// The underlying error, printed.
        message: String,
    },
}

/// Result of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// What the store knows about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// A tag that changes whenever the object's content is replaced.
    pub etag: String,
    /// When it was last written.
    pub last_modified: DateTime<Utc>,
}

/// A downloaded object: what the store said of it, and the SHA-256 of the bytes written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// The object's metadata.
    pub meta: ObjectMeta,
    /// SHA-256 of the local file's content, lowercase hex.
    pub sha256: String,
}

/// Lowercase hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// One message of a [`Feed`].
#[derive(Debug)]
pub enum FeedItem {
    /// The next bytes of the object.
    Bytes(Vec<u8>),
    /// Every byte was sent and the download is complete.
    End,
}

/// Where a download sends the object's bytes as they arrive, so that a reader can check the
/// object while it is still downloading. A closed feed is not an error: the download goes on.
pub type Feed = tokio::sync::mpsc::Sender<FeedItem>;

/// A feed and the blocking reader at its other end, holding at most `chunks` chunks between
/// them.
pub fn feed(chunks: usize) -> (Feed, FeedReader) {
    let (tx, rx) = tokio::sync::mpsc::channel(chunks.max(1));
    (
        tx,
        FeedReader {
            rx,
            chunk: Vec::new(),
            at: 0,
            ended: false,
        },
    )
}

/// Reads a download's bytes from its [`Feed`] (blocking: use it off the async runtime). A feed
/// that closes without [`FeedItem::End`] is a read error, never a short file.
#[derive(Debug)]
pub struct FeedReader {
    rx: tokio::sync::mpsc::Receiver<FeedItem>,
    chunk: Vec<u8>,
    at: usize,
    ended: bool,
}

impl Read for FeedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(FeedItem::Bytes(bytes)) => {
                    self.chunk = bytes;
                    self.at = 0;
                }
                Some(FeedItem::End) => self.ended = true,
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the download stopped before the end of the object",
                    ));
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Copies `input` into a new file at `dest`, forwarding each chunk to `feed`, and returns the
/// SHA-256 of the bytes: one read of the data, hashed on this thread while a second thread
/// writes it out and feeds it on.
fn copy_hashing(mut input: impl Read, dest: &Path, feed: Option<Feed>) -> std::io::Result<String> {
    const CHUNK: usize = 1 << 20;
    let mut out = std::fs::File::create(dest)?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> std::io::Result<Option<Feed>> {
            let mut feed = feed;
            for chunk in rx {
                out.write_all(&chunk)?;
                if feed
                    .as_ref()
                    .is_some_and(|f| f.blocking_send(FeedItem::Bytes(chunk)).is_err())
                {
                    feed = None;
                }
            }
            out.flush()?;
            Ok(feed)
        });
        let mut hasher = Sha256::new();
        let read = loop {
            // Filled without zeroing first; `read_to_end` retries interrupted reads.
            let mut buf = Vec::with_capacity(CHUNK);
            match (&mut input).take(CHUNK as u64).read_to_end(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
            hasher.update(&buf);
            if tx.send(buf).is_err() {
                break Ok(());
            }
        };
        drop(tx);
        let feed = writer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the file writer panicked")));
        read?;
        if let Some(feed) = feed? {
            let _ = feed.blocking_send(FeedItem::End);
        }
        Ok(hex(&hasher.finalize()))
    })
}

/// How a put treats an existing object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Replace whatever is there.
    Overwrite,
    /// Only if nothing is there.
    Create,
    /// Only if the object still has this etag.
    Update(String),
}

/// A bucket of objects addressed by `/`-separated keys.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// The location of a key, for messages (`file:///data/bucket/incoming/...`).
    fn location(&self, key: &str) -> String;
    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;
    /// A small object's bytes and metadata.
    async fn get(&self, key: &str) -> Result<(Vec<u8>, ObjectMeta)>;
    /// Copies an object into a local file, streaming, and hashes the bytes written. With a
    /// `feed`, each chunk is also sent there once written, then [`FeedItem::End`] once the
    /// whole object is in the file.
    async fn download(&self, key: &str, dest: &Path, feed: Option<Feed>) -> Result<Downloaded>;
    /// [`ObjectStore::download`] of the version with `etag` only: [`StoreError::Changed`]
    /// when the object now has another, so that bytes of a replaced object are never taken for
    /// the version listed. A backend that can (S3, with `If-Match`) refuses before reading;
    /// the default compares the etag of the bytes read, which every backend returns with them.
    async fn download_version(
        &self,
        key: &str,
        etag: &str,
        dest: &Path,
        feed: Option<Feed>,
    ) -> Result<Downloaded> {
        let got = self.download(key, dest, feed).await?;
        if got.meta.etag != etag {
            return Err(StoreError::Changed {
                location: self.location(key),
            });
        }
        Ok(got)
    }
    /// Writes bytes. The metadata returned carries the new etag; its `last_modified` is the
    /// store's where the store reports it on a write, otherwise the writer's clock.
    async fn put(&self, key: &str, bytes: Vec<u8>, mode: PutMode) -> Result<ObjectMeta>;
    /// Writes a local file's content, streaming (in parts, for a large file on S3).
    async fn put_file(&self, key: &str, src: &Path, mode: PutMode) -> Result<ObjectMeta>;
    /// [`ObjectStore::put_file`] for a sealed file, one nobody will write to again: the store
    /// may share the file's storage instead of copying it (the local store hard-links it when
    /// both are on one file system).
    async fn put_sealed_file(&self, key: &str, src: &Path, mode: PutMode) -> Result<ObjectMeta> {
        self.put_file(key, src, mode).await
    }
    /// Copies an object inside the bucket.
    async fn copy(&self, from: &str, to: &str) -> Result<ObjectMeta>;
    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Deletes the object only while it is the version with `etag`: a newer version written
    /// under the key is [`StoreError::Changed`] and stays. A missing object is not an error.
    async fn delete_version(&self, key: &str, etag: &str) -> Result<()>;
}

/// Checks that a key is a clean relative path: no empty, `.` or `..` segments, no backslashes,
/// no leading dot-directory (those are the local store's own).
pub fn check_key(key: &str) -> Result<()> {
    let bad = |reason| {
        Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() || key.starts_with('/') || key.ends_with('/') {
        return bad("keys are relative, non-empty and do not end with /");
    }
    if key.contains('\\') || key.contains('\0') {
        return bad("keys may not hold backslashes or NUL");
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return bad("keys may not hold empty, `.` or `..` segments");
    }
    if key.starts_with('.') {
        return bad("keys may not start with a dot");
    }
    Ok(())
}

/// The store's own hidden folder: the compare-and-swap locks of keys, and under `writes/` each
/// open store's folder of temporary files ([`WorkRoot`]).
const TMP_DIR: &str = ".force-returns-tmp";
const LOCK_STALE: Duration = Duration::from_secs(30);

/// A bucket in a local directory (the embedded default).
///
/// Every write goes to a temporary file in this store's own folder under
/// `.force-returns-tmp/writes/`, then is moved into place. A process killed mid-write leaves
/// its temporary files there, out of every listing; the next store opened over the bucket
/// removes them.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    /// This store's folder of temporary files, removed when the last clone is dropped.
    writes: Arc<WorkRoot>,
}

impl LocalStore {
    /// A store rooted at `root` (created when missing). Removes the temporary files of stores
    /// whose processes have ended.
    pub fn new(root: impl Into<PathBuf>) -> Result<LocalStore> {
        let root = root.into();
        let failed = |e: std::io::Error| StoreError::Backend {
            action: "create",
            location: format!("file://{}", root.display()),
            message: e.to_string(),
        };
        std::fs::create_dir_all(root.join(TMP_DIR)).map_err(failed)?;
        let writes = WorkRoot::open(&root.join(TMP_DIR).join("writes")).map_err(failed)?;
        let root = root.canonicalize().unwrap_or(root);
        Ok(LocalStore {
            root,
            writes: Arc::new(writes),
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn io_err(&self, action: &'static str, key: &str, e: &std::io::Error) -> StoreError {
        if e.kind() == std::io::ErrorKind::NotFound {
            StoreError::NotFound {
                location: self.location(key),
            }
        } else {
            StoreError::Backend {
                action,
                location: self.location(key),
                message: e.to_string(),
            }
        }
    }

    fn meta(&self, key: &str, path: &Path) -> Result<ObjectMeta> {
        let m = std::fs::metadata(path).map_err(|e| self.io_err("stat", key, &e))?;
        Ok(Self::meta_of(key, &m))
    }

    /// The metadata of a file as a store object. The etag names one write: every write makes
    /// a new file (a new inode) and stamps it with a time of its own ([`write_stamp`]), so two
    /// writes of equal length within one tick of the file system's clock differ too.
    fn meta_of(key: &str, m: &std::fs::Metadata) -> ObjectMeta {
        use std::os::unix::fs::MetadataExt;
        let modified = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let nanos = modified
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        ObjectMeta {
            key: key.to_owned(),
            size: m.len(),
            etag: format!("{:x}-{nanos:x}-{:x}", m.len(), m.ino()),
            last_modified: DateTime::<Utc>::from(modified),
        }
    }

    fn temp_file(&self, key: &str) -> Result<tempfile::NamedTempFile> {
        tempfile::NamedTempFile::new_in(self.writes.dir())
            .map_err(|e| self.io_err("write", key, &e))
    }

    /// Moves a finished temporary file into place according to `mode`.
    fn commit<F>(
        &self,
        key: &str,
        tmp: tempfile::NamedTempFile<F>,
        mode: &PutMode,
    ) -> Result<ObjectMeta> {
        let dest = self.path(key)?;
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| self.io_err("write", key, &e))?;
        }
        // The object's metadata is the new file's, taken before it is in place: once it is,
        // another writer may already have replaced it.
        let written = std::fs::File::open(tmp.path())
            .and_then(|f| {
                f.set_modified(write_stamp())?;
                f.metadata()
            })
            .map_err(|e| self.io_err("write", key, &e))?;
        let meta = Self::meta_of(key, &written);
        match mode {
            PutMode::Overwrite => {
                tmp.persist(&dest)
                    .map_err(|e| self.io_err("write", key, &e.error))?;
            }
            PutMode::Create => {
                // A hard link fails if the destination exists, atomically, across processes.
                std::fs::hard_link(tmp.path(), &dest).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        StoreError::AlreadyExists {
                            location: self.location(key),
                        }
                    } else {
                        self.io_err("write", key, &e)
                    }
                })?;
            }
            PutMode::Update(etag) => {
                let _lock = KeyLock::acquire(&self.root.join(TMP_DIR), key)
                    .map_err(|e| self.io_err("lock", key, &e))?;
                let current = match self.meta(key, &dest) {
                    Err(StoreError::NotFound { .. }) => None,
                    other => Some(other?),
                };
                if current.is_none_or(|c| &c.etag != etag) {
                    return Err(StoreError::Changed {
                        location: self.location(key),
                    });
                }
                tmp.persist(&dest)
                    .map_err(|e| self.io_err("write", key, &e.error))?;
            }
        }
        Ok(meta)
    }

    /// [`ObjectStore::delete_version`] without a lock: the file is first moved aside (a
    /// rename, atomic, which keeps its inode and time, so its etag), then judged. Not the
    /// version asked for, it is linked back unless a newer write already took its place, in
    /// which case it was overwritten anyway.
    fn delete_version_sync(&self, key: &str, etag: &str) -> Result<()> {
        let dest = self.path(key)?;
        let aside = self.temp_file(key)?.into_temp_path();
        match std::fs::rename(&dest, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io_err("delete", key, &e)),
        }
        if self.meta(key, &aside)?.etag == etag {
            return Ok(());
        }
        match std::fs::hard_link(&aside, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(self.io_err("delete", key, &e)),
        }
        Err(StoreError::Changed {
            location: self.location(key),
        })
    }

    fn list_sync(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        // Walk only the deepest directory the prefix names.
        let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.root.join(dir_part)
        };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io_err("list", prefix, &e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.io_err("list", prefix, &e))?;
                let path = entry.path();
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                // On Unix a backslash is an ordinary character of a name, as it is in an S3
                // key: the key is the path as it is.
                let key = rel.to_string_lossy().into_owned();
                if key.starts_with('.') {
                    continue;
                }
                let file_type = entry
                    .file_type()
                    .map_err(|e| self.io_err("list", &key, &e))?;
                if file_type.is_dir() {
                    // Only a folder that may hold keys with the prefix (a prefix need not end
                    // at a folder: `a/b` lists `a/b.json` and `a/b/c.json`, not all of `a/`).
                    let folder = format!("{key}/");
                    if folder.starts_with(prefix) || prefix.starts_with(&folder) {
                        stack.push(path);
                    }
                } else if file_type.is_file() && key.starts_with(prefix) {
                    match self.meta(&key, &path) {
                        Ok(meta) => out.push(meta),
                        // Deleted since the folder was read: as if listed a moment later.
                        Err(StoreError::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

/// A modification time for a new file: now, to the nanosecond, and later than every stamp
/// this process gave before. The file system's own times move in ticks of a few milliseconds,
/// too coarse to tell two quick writes apart.
fn write_stamp() -> SystemTime {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return SystemTime::UNIX_EPOCH + Duration::from_nanos(next),
            Err(seen) => last = seen,
        }
    }
}

/// An exclusive lock on one key for a compare-and-swap, held by a lock file in the store's
/// own hidden folder (so that no object name is taken for it).
struct KeyLock(PathBuf);

impl KeyLock {
    fn acquire(tmp: &Path, key: &str) -> std::io::Result<KeyLock> {
        let path = tmp.join(format!(
            "{}.lock",
            hex(&Sha256::digest(key.as_bytes())[..16])
        ));
        let deadline = std::time::Instant::now() + LOCK_STALE * 2;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(KeyLock(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A lock left by a crashed process expires.
                    let stale = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t.elapsed().unwrap_or_default() > LOCK_STALE);
                    if stale {
                        let _ = std::fs::remove_file(&path);
                    } else if std::time::Instant::now() > deadline {
                        return Err(e);
                    } else {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StoreError::Backend {
            action: "run",
            location: String::new(),
            message: e.to_string(),
        })
    })
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn location(&self, key: &str) -> String {
        format!("file://{}/{key}", self.root.display())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let this = self.clone();
        let prefix = prefix.to_owned();
        blocking(move || this.list_sync(&prefix)).await
    }

    async fn get(&self, key: &str) -> Result<(Vec<u8>, ObjectMeta)> {
        let this = self.clone();
        let key = key.to_owned();
        blocking(move || {
            // The metadata comes from the file read, not from a second look at its name: a
            // write in between would give these bytes the etag of other content.
            let mut file =
                std::fs::File::open(this.path(&key)?).map_err(|e| this.io_err("read", &key, &e))?;
            let stat = file.metadata().map_err(|e| this.io_err("stat", &key, &e))?;
            let mut bytes = Vec::with_capacity(usize::try_from(stat.len()).unwrap_or(0));
            file.read_to_end(&mut bytes)
                .map_err(|e| this.io_err("read", &key, &e))?;
            Ok((bytes, Self::meta_of(&key, &stat)))
        })
        .await
    }

    async fn download(&self, key: &str, dest: &Path, feed: Option<Feed>) -> Result<Downloaded> {
        let this = self.clone();
        let key = key.to_owned();
        let dest = dest.to_owned();
        blocking(move || {
            let path = this.path(&key)?;
            let file = std::fs::File::open(&path).map_err(|e| this.io_err("read", &key, &e))?;
            let stat = file.metadata().map_err(|e| this.io_err("stat", &key, &e))?;
            let meta = Self::meta_of(&key, &stat);
            let sha256 =
                copy_hashing(file, &dest, feed).map_err(|e| this.io_err("read", &key, &e))?;
            Ok(Downloaded { meta, sha256 })
        })
        .await
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, mode: PutMode) -> Result<ObjectMeta> {
        let this = self.clone();
        let key = key.to_owned();
        blocking(move || {
            this.path(&key)?;
            let mut tmp = this.temp_file(&key)?;
            tmp.write_all(&bytes)
                .map_err(|e| this.io_err("write", &key, &e))?;
            this.commit(&key, tmp, &mode)
        })
        .await
    }

    async fn put_file(&self, key: &str, src: &Path, mode: PutMode) -> Result<ObjectMeta> {
        let this = self.clone();
        let key = key.to_owned();
        let src = src.to_owned();
        blocking(move || {
            this.path(&key)?;
            let tmp = this.temp_file(&key)?;
            std::fs::copy(&src, tmp.path()).map_err(|e| this.io_err("write", &key, &e))?;
            this.commit(&key, tmp, &mode)
        })
        .await
    }

    async fn put_sealed_file(&self, key: &str, src: &Path, mode: PutMode) -> Result<ObjectMeta> {
        let this = self.clone();
        let key = key.to_owned();
        let src = src.to_owned();
        blocking(move || {
            this.path(&key)?;
            let linked = tempfile::Builder::new()
                .make_in(this.writes.dir(), |path| std::fs::hard_link(&src, path));
            // Another file system, or one without links: copy instead.
            if let Ok(tmp) = linked {
                this.commit(&key, tmp, &mode)
            } else {
                let tmp = this.temp_file(&key)?;
                std::fs::copy(&src, tmp.path()).map_err(|e| this.io_err("write", &key, &e))?;
                this.commit(&key, tmp, &mode)
            }
        })
        .await
    }

    async fn copy(&self, from: &str, to: &str) -> Result<ObjectMeta> {
        let this = self.clone();
        let (from, to) = (from.to_owned(), to.to_owned());
        blocking(move || {
            let src = this.path(&from)?;
            this.path(&to)?;
            let tmp = this.temp_file(&to)?;
            std::fs::copy(&src, tmp.path()).map_err(|e| this.io_err("read", &from, &e))?;
            this.commit(&to, tmp, &PutMode::Overwrite)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let this = self.clone();
        let key = key.to_owned();
        blocking(move || match std::fs::remove_file(this.path(&key)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(this.io_err("delete", &key, &e)),
        })
        .await
    }

    async fn delete_version(&self, key: &str, etag: &str) -> Result<()> {
        let this = self.clone();
        let (key, etag) = (key.to_owned(), etag.to_owned());
        blocking(move || this.delete_version_sync(&key, &etag)).await
    }
}

/// Opens the store a URL or path names: `s3://bucket/prefix` is S3 (settings from the
/// environment, [`S3Options::from_env`]); anything else is a local directory (`data/bucket`,
/// `file:///srv/bucket`).
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn ObjectStore>> {
    open_observed(url, Vec::new()).await
}

/// [`open`], with observers of the S3 client's retries and failed requests (the local store
/// has neither).
pub async fn open_observed(
    url: &str,
    observers: Vec<std::sync::Arc<dyn S3Observer>>,
) -> Result<std::sync::Arc<dyn ObjectStore>> {
    if url.starts_with("s3://") {
        let location = S3Location::parse(url)?;
        let options = S3Options {
            observers,
            ..S3Options::from_env()?
        };
        let store = S3Store::connect(location, options).await?;
        return Ok(std::sync::Arc::new(store));
    }
    let path = url.strip_prefix("file://").unwrap_or(url);
    Ok(std::sync::Arc::new(LocalStore::new(path)?))
}

#[cfg(test)]
pub mod conformance {
    //! The behaviour every backend must show; run against each backend.

    use std::sync::Arc;

    use super::*;

    /// Size of the large file: above the multipart and copy thresholds the S3 tests set
    /// (8 MiB), with a last part shorter than the others.
    pub const LARGE: usize = 12 * 1024 * 1024 + 4321;

    /// Runs every conformance check against `store`, which must be empty.
    pub async fn check_all(store: Arc<dyn ObjectStore>) {
        put_get_list(store.as_ref()).await;
        create_has_one_winner(store.as_ref()).await;
        racing_creates_have_one_winner(&store).await;
        update_is_compare_and_swap(store.as_ref()).await;
        delete_version_spares_a_newer_write(store.as_ref()).await;
        files_and_copies(store.as_ref()).await;
        bad_keys_are_refused(store.as_ref()).await;
    }

    async fn put_get_list(store: &dyn ObjectStore) {
        let put = store
            .put("a/b/one.txt", b"1".to_vec(), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!((put.key.as_str(), put.size), ("a/b/one.txt", 1));
        store
            .put("a/b/two.txt", b"22".to_vec(), PutMode::Overwrite)
            .await
            .unwrap();
        store
            .put("a/c.txt", b"333".to_vec(), PutMode::Overwrite)
            .await
            .unwrap();
        let listed = store.list("a/b/").await.unwrap();
        let keys: Vec<_> = listed.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, ["a/b/one.txt", "a/b/two.txt"]);
        assert_eq!(
            (listed[0].size, &listed[0].etag),
            (1, &put.etag),
            "list reports the size and the etag the put returned"
        );
        let all = store.list("a/").await.unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(
            store.list("a/b/t").await.unwrap().len(),
            1,
            "prefixes need not end at a /"
        );
        let (bytes, meta) = store.get("a/c.txt").await.unwrap();
        assert_eq!((bytes.as_slice(), meta.size), (&b"333"[..], 3));
        let (_, one) = store.get("a/b/one.txt").await.unwrap();
        assert_eq!(one.etag, put.etag, "get reports the etag the put returned");
        let missing = store.get("a/nope").await;
        assert!(
            matches!(&missing, Err(StoreError::NotFound { location }) if location == &store.location("a/nope")),
            "{missing:?}"
        );
        store.delete("a/c.txt").await.unwrap();
        store.delete("a/c.txt").await.unwrap();
        assert_eq!(store.list("a/").await.unwrap().len(), 2);
        assert!(store.list("nothing/").await.unwrap().is_empty());
    }

    async fn create_has_one_winner(store: &dyn ObjectStore) {
        let first = store.put("claims/x", b"me".to_vec(), PutMode::Create).await;
        assert!(first.is_ok());
        let second = store
            .put("claims/x", b"you".to_vec(), PutMode::Create)
            .await;
        assert!(
            matches!(second, Err(StoreError::AlreadyExists { .. })),
            "{second:?}"
        );
        assert_eq!(store.get("claims/x").await.unwrap().0, b"me");
    }

    async fn racing_creates_have_one_winner(store: &Arc<dyn ObjectStore>) {
        for round in 0..3 {
            let key = format!("race/claim-{round}");
            let mut tasks = Vec::new();
            for i in 0..16 {
                let s = Arc::clone(store);
                let key = key.clone();
                tasks.push(tokio::spawn(async move {
                    match s
                        .put(&key, format!("{i}").into_bytes(), PutMode::Create)
                        .await
                    {
                        Ok(_) => Some(i),
                        Err(StoreError::AlreadyExists { .. }) => None,
                        Err(e) => panic!("a racing create failed otherwise: {e}"),
                    }
                }));
            }
            let mut winners = Vec::new();
            for t in tasks {
                winners.extend(t.await.unwrap());
            }
            assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
            let (bytes, _) = store.get(&key).await.unwrap();
            assert_eq!(bytes, format!("{}", winners[0]).into_bytes());
        }
    }

    async fn update_is_compare_and_swap(store: &dyn ObjectStore) {
        let v1 = store
            .put("m.json", b"v1".to_vec(), PutMode::Create)
            .await
            .unwrap();
        let v2 = store
            .put("m.json", b"v2".to_vec(), PutMode::Update(v1.etag.clone()))
            .await
            .unwrap();
        assert_ne!(v1.etag, v2.etag);
        let stale = store
            .put("m.json", b"v3".to_vec(), PutMode::Update(v1.etag.clone()))
            .await;
        assert!(
            matches!(stale, Err(StoreError::Changed { .. })),
            "{stale:?}"
        );
        assert_eq!(store.get("m.json").await.unwrap().0, b"v2");
        let gone = store
            .put("absent.json", b"v1".to_vec(), PutMode::Update(v1.etag))
            .await;
        assert!(
            matches!(gone, Err(StoreError::Changed { .. })),
            "an update of a missing object: {gone:?}"
        );
        assert!(matches!(
            store.get("absent.json").await,
            Err(StoreError::NotFound { .. })
        ));
    }

    async fn delete_version_spares_a_newer_write(store: &dyn ObjectStore) {
        let old = store
            .put("inbox/r.csv", b"old".to_vec(), PutMode::Overwrite)
            .await
            .unwrap();
        let new = store
            .put("inbox/r.csv", b"new".to_vec(), PutMode::Overwrite)
            .await
            .unwrap();
        let refused = store.delete_version("inbox/r.csv", &old.etag).await;
        assert!(
            matches!(refused, Err(StoreError::Changed { .. })),
            "{refused:?}"
        );
        let (kept, meta) = store.get("inbox/r.csv").await.unwrap();
        assert_eq!(
            (kept.as_slice(), meta.etag),
            (&b"new"[..], new.etag.clone())
        );
        store
            .delete_version("inbox/r.csv", &new.etag)
            .await
            .unwrap();
        assert!(store.list("inbox/").await.unwrap().is_empty());
        store
            .delete_version("inbox/r.csv", &new.etag)
            .await
            .expect("a missing object is not an error");
    }

    async fn files_and_copies(store: &dyn ObjectStore) {
        let dir = tempfile::tempdir().unwrap();
        for (name, len) in [("small", 300_000), ("large", LARGE)] {
            let src = dir.path().join(format!("{name}.bin"));
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            std::fs::write(&src, &data).unwrap();
            let key = format!("big/{name}.bin");
            let put = store.put_file(&key, &src, PutMode::Create).await.unwrap();
            assert_eq!(put.size, len as u64);
            let again = store.put_file(&key, &src, PutMode::Create).await;
            assert!(
                matches!(again, Err(StoreError::AlreadyExists { .. })),
                "{name}: {again:?}"
            );
            let stale = store
                .put_file(&key, &src, PutMode::Update("\"stale\"".into()))
                .await;
            assert!(
                matches!(stale, Err(StoreError::Changed { .. })),
                "{name}: {stale:?}"
            );
            let replaced = store
                .put_file(&key, &src, PutMode::Update(put.etag.clone()))
                .await
                .unwrap();
            let copy_key = format!("big/{name} copy (1).bin");
            let copied = store.copy(&key, &copy_key).await.unwrap();
            assert_eq!(copied.size, len as u64);
            let dest = dir.path().join(format!("{name}.out"));
            let got = store.download(&copy_key, &dest, None).await.unwrap();
            assert_eq!(got.meta.size, len as u64);
            assert_eq!(got.sha256, hex(&Sha256::digest(&data)), "{name}");
            assert!(
                std::fs::read(&dest).unwrap() == data,
                "{name}: the copy differs"
            );
            // A fed download: the reader sees every byte, in order, while the file is written.
            let (tx, mut rx) = feed(2);
            let reading = tokio::task::spawn_blocking(move || {
                let mut seen = Vec::new();
                rx.read_to_end(&mut seen).map(|_| seen)
            });
            let got = store.download(&key, &dest, Some(tx)).await.unwrap();
            assert!(
                reading.await.unwrap().unwrap() == data,
                "{name}: the feed differs"
            );
            assert_eq!(got.meta.etag, replaced.etag);
            assert!(
                std::fs::read(&dest).unwrap() == data,
                "{name}: the download differs"
            );
            let sealed_key = format!("big/{name} sealed.bin");
            let sealed = store
                .put_sealed_file(&sealed_key, &dest, PutMode::Create)
                .await
                .unwrap();
            assert_eq!(sealed.size, len as u64);
            assert!(matches!(
                store
                    .put_sealed_file(&sealed_key, &dest, PutMode::Create)
                    .await,
                Err(StoreError::AlreadyExists { .. })
            ));
            std::fs::remove_file(&dest).unwrap();
            // A reader that gives up early does not stop the download.
            let (tx, rx) = feed(1);
            drop(rx);
            let got = store.download(&sealed_key, &dest, Some(tx)).await.unwrap();
            assert_eq!(got.sha256, hex(&Sha256::digest(&data)), "{name}: sealed");
        }
        let missing = store
            .download("big/none", &dir.path().join("none"), None)
            .await;
        assert!(
            matches!(missing, Err(StoreError::NotFound { .. })),
            "{missing:?}"
        );
        let missing = store.copy("big/none", "big/none2").await;
        assert!(
            matches!(missing, Err(StoreError::NotFound { .. })),
            "{missing:?}"
        );
    }

    async fn bad_keys_are_refused(store: &dyn ObjectStore) {
        for key in ["../escape", "a//b", "/abs", "a/./b", "", ".hidden/x"] {
            let r = store.put(key, vec![], PutMode::Overwrite).await;
            assert!(
                matches!(r, Err(StoreError::InvalidKey { .. })),
                "{key}: {r:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn local_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        conformance::check_all(std::sync::Arc::new(store)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn local_racing_updates_have_exactly_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(LocalStore::new(dir.path()).unwrap());
        let v1 = store
            .put("m.json", b"v1".to_vec(), PutMode::Create)
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let s = std::sync::Arc::clone(&store);
            let etag = v1.etag.clone();
            tasks.push(tokio::spawn(async move {
                s.put("m.json", format!("{i}").into_bytes(), PutMode::Update(etag))
                    .await
                    .is_ok()
            }));
        }
        let mut winners = 0;
        for t in tasks {
            winners += usize::from(t.await.unwrap());
        }
        assert_eq!(winners, 1);
    }

    #[tokio::test]
    async fn temporary_files_a_killed_writer_left_are_removed_when_the_bucket_is_next_opened() {
        let dir = tempfile::tempdir().unwrap();
        // What a process killed mid-write leaves: its folder of temporary files, with a file
        // half written, and its lock file, which nobody holds any more.
        let writes = dir.path().join(TMP_DIR).join("writes");
        let dead = format!("999-{}", "d".repeat(32));
        std::fs::create_dir_all(writes.join(&dead)).unwrap();
        std::fs::write(writes.join(&dead).join(".tmpAbCd"), b"half a snapshot").unwrap();
        std::fs::write(writes.join(format!("{dead}.lock")), b"").unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        assert!(!writes.join(&dead).exists(), "the dead writer's files");
        assert!(!writes.join(format!("{dead}.lock")).exists());
        store
            .put("a/b.json", b"{}".to_vec(), PutMode::Create)
            .await
            .unwrap();
        assert_eq!(store.get("a/b.json").await.unwrap().0, b"{}");
        drop(store);
        let left: Vec<_> = std::fs::read_dir(&writes).unwrap().collect();
        assert!(left.is_empty(), "a store dropped leaves nothing: {left:?}");
    }

    #[tokio::test]
    async fn a_sealed_file_is_linked_not_copied_on_one_file_system() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("bucket")).unwrap();
        let src = dir.path().join("upload");
        std::fs::write(&src, b"a,b\n1,2\n").unwrap();
        store
            .put_sealed_file("archive/x/upload", &src, PutMode::Overwrite)
            .await
            .unwrap();
        let kept = store.root().join("archive/x/upload");
        assert_eq!(std::fs::read(&kept).unwrap(), b"a,b\n1,2\n");
        assert_eq!(
            std::fs::metadata(&kept).unwrap().ino(),
            std::fs::metadata(&src).unwrap().ino()
        );
        // Removing the worker's own name for it leaves the stored object whole.
        std::fs::remove_file(&src).unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), b"a,b\n1,2\n");
    }

    /// Increments a counter object `rounds` times by compare-and-swap, from `tasks` tasks at once.
    async fn count_by_compare_and_swap(
        store: &std::sync::Arc<LocalStore>,
        tasks: usize,
        rounds: usize,
    ) {
        store
            .put("counter", b"0".to_vec(), PutMode::Create)
            .await
            .unwrap();
        let mut running = Vec::new();
        for _ in 0..tasks {
            let store = std::sync::Arc::clone(store);
            running.push(tokio::spawn(async move {
                for _ in 0..rounds {
                    loop {
                        let (bytes, meta) = store.get("counter").await.unwrap();
                        let n: u64 = String::from_utf8(bytes).unwrap().parse().unwrap();
                        let next = (n + 1).to_string().into_bytes();
                        match store.put("counter", next, PutMode::Update(meta.etag)).await {
                            Ok(_) => break,
                            Err(StoreError::Changed { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            }));
        }
        for task in running {
            task.await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_receipt_is_never_lost_to_a_get_whose_etag_belongs_to_a_newer_write() {
        // The lost receipt: `get` read the bytes, then looked the file up again for its etag;
        // a write in between gave old bytes the new etag, and the compare-and-swap that
        // followed overwrote the other writer's change.
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(LocalStore::new(dir.path()).unwrap());
        count_by_compare_and_swap(&store, 4, 150).await;
        let (bytes, _) = store.get("counter").await.unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "600",
            "an update was lost"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_listing_survives_objects_deleted_while_it_walks() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(LocalStore::new(dir.path()).unwrap());
        let churn = {
            let store = std::sync::Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..3000 {
                    let key = format!("locks/x.{}.json", i % 7);
                    let _ = store.put(&key, b"{}".to_vec(), PutMode::Create).await;
                    store.delete(&key).await.unwrap();
                }
            })
        };
        while !churn.is_finished() {
            store
                .list("locks/x.")
                .await
                .expect("a listing fails when an object goes while it walks");
        }
        churn.await.unwrap();
    }

    #[tokio::test]
    async fn writes_of_equal_length_in_quick_succession_get_different_etags() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let mut etags = std::collections::BTreeSet::new();
        for i in 0..50u8 {
            let meta = store
                .put("r.json", vec![b'a' + i % 26; 8], PutMode::Overwrite)
                .await
                .unwrap();
            assert!(
                etags.insert(meta.etag.clone()),
                "write {i} repeated {}",
                meta.etag
            );
            assert_eq!(store.get("r.json").await.unwrap().1.etag, meta.etag);
        }
    }

    #[tokio::test]
    async fn names_with_backslashes_and_lock_suffixes_are_listed_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let folder = dir.path().join("incoming/kent/stop_search/2020-01");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("a\\b.csv"), b"x").unwrap();
        std::fs::write(folder.join("return.lock"), b"y").unwrap();
        store
            .put("m.json", b"v1".to_vec(), PutMode::Create)
            .await
            .unwrap();
        let (_, meta) = store.get("m.json").await.unwrap();
        store
            .put("m.json", b"v2".to_vec(), PutMode::Update(meta.etag))
            .await
            .unwrap();
        let keys: Vec<String> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(
            keys,
            [
                "incoming/kent/stop_search/2020-01/a\\b.csv",
                "incoming/kent/stop_search/2020-01/return.lock",
                "m.json"
            ]
        );
    }

    #[test]
    fn a_feed_closed_without_its_end_is_a_read_error() {
        let (tx, mut rx) = feed(4);
        tx.try_send(FeedItem::Bytes(b"a,b\n1,".to_vec())).unwrap();
        drop(tx);
        let mut seen = Vec::new();
        let err = rx.read_to_end(&mut seen).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert_eq!(seen, b"a,b\n1,");

        let (tx, mut rx) = feed(4);
        tx.try_send(FeedItem::Bytes(b"a,b\n".to_vec())).unwrap();
        tx.try_send(FeedItem::End).unwrap();
        let mut seen = Vec::new();
        rx.read_to_end(&mut seen).unwrap();
        assert_eq!(seen, b"a,b\n");
    }
}
