//! Folders a process owns under a shared root, cleared of what dead processes left: a killed
//! process must not leave a force's upload (personal data) or half-written files on disk. The
//! pipeline downloads and checks each upload in flight in a folder of its own under the work
//! root; the local store writes each object to a temporary file in its folder under the
//! bucket's hidden `.force-returns-tmp/writes/` before moving it into place.
//!
//! A process takes `<root>/<name>.lock`, a file it creates and locks (`flock`) for as long as
//! it runs, then makes `<root>/<name>/`; a name is `<pid>-<32 hex digits>`. The kernel drops
//! the lock when the process ends, however it ends (SIGKILL included). Opening the root first
//! removes every folder so named whose lock another process can take, and every folder so
//! named without a lock file: their owners are gone. Nothing else in the root is touched, so a
//! root shared with other programs (`--work-dir /tmp`) loses nothing of theirs.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

/// This process's folder under a root, removed when dropped.
#[derive(Debug)]
pub struct WorkRoot {
    dir: PathBuf,
    lock_path: PathBuf,
    /// Held (locked) for the life of the process.
    _lock: File,
}

impl WorkRoot {
    /// Clears `root` of what dead processes left, then makes this process's folder there.
    pub fn open(root: &Path) -> io::Result<WorkRoot> {
        std::fs::create_dir_all(root)?;
        let cleared = clear_dead(root)?;
        if cleared > 0 {
            info!(root = %root.display(), folders = cleared, "removed work folders left by processes that ended");
        }
        loop {
            let name = format!("{}-{}", std::process::id(), crate::model::new_token());
            let lock_path = root.join(format!("{name}.lock"));
            let lock = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock_path)?;
            if lock.try_lock().is_err() {
                // Another process clearing the root took it in the instant before we did.
                continue;
            }
            // That process may also have removed it: the folder is made only once the lock
            // file is known to be ours, so no folder of a live process lacks its lock file.
            let ours = std::fs::metadata(&lock_path)
                .is_ok_and(|m| m.ino() == lock.metadata().map_or(0, |l| l.ino()));
            if !ours {
                continue;
            }
            let dir = root.join(&name);
            std::fs::create_dir(&dir)?;
            return Ok(WorkRoot {
                dir,
                lock_path,
                _lock: lock,
            });
        }
    }

    /// A new folder for one job (an upload), removed when dropped.
    pub fn job(&self) -> io::Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix("upload-")
            .tempdir_in(&self.dir)
    }

    /// This process's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for WorkRoot {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            warn!(dir = %self.dir.display(), error = %e, "failed to remove the work folder");
        }
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// Removes the folders under `root` whose owners have ended; returns how many.
fn clear_dead(root: &Path) -> io::Result<usize> {
    let mut cleared = 0;
    for entry in std::fs::read_dir(root)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !is_ours(name.strip_suffix(".lock").unwrap_or(name)) {
            continue;
        }
        if let Some(stem) = name.strip_suffix(".lock") {
            let Ok(file) = File::open(&path) else {
                continue;
            };
            match file.try_lock() {
                Ok(()) => {
                    remove(&root.join(stem))?;
                    let _ = std::fs::remove_file(&path);
                    cleared += 1;
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(e),
            }
        } else if path.is_dir() && !root.join(format!("{name}.lock")).exists() {
            remove(&path)?;
            cleared += 1;
        }
    }
    Ok(cleared)
}

/// Whether a name is one [`WorkRoot::open`] gives: `<pid>-<32 hex digits>`.
fn is_ours(name: &str) -> bool {
    name.split_once('-').is_some_and(|(pid, token)| {
        !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && token.len() == 32
            && token.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

fn remove(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_of_ended_processes_are_cleared_and_live_ones_kept() {
        let root = tempfile::tempdir().unwrap();
        let live = WorkRoot::open(root.path()).unwrap();
        let job = live.job().unwrap();
        std::fs::write(job.path().join("upload"), b"a force's records").unwrap();
        // What a killed process leaves: its folder and its lock file, unlocked.
        let dead_name = format!("999-{}", "d".repeat(32));
        let dead = root.path().join(&dead_name);
        std::fs::create_dir_all(dead.join("upload-x")).unwrap();
        std::fs::write(dead.join("upload-x/upload"), b"personal data").unwrap();
        std::fs::write(root.path().join(format!("{dead_name}.lock")), b"").unwrap();
        // And a folder of ours with no lock file at all.
        let stray = root.path().join(format!("12-{}", "0a".repeat(16)));
        std::fs::create_dir(&stray).unwrap();
        // Another program's folder and lock file in a shared root (`--work-dir /tmp`).
        let theirs = root.path().join("tmp4x9Qz");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::write(theirs.join("kept"), b"not ours").unwrap();
        let their_lock = root.path().join("other-program.lock");
        std::fs::write(&their_lock, b"").unwrap();
        std::fs::create_dir(root.path().join("other-program")).unwrap();

        let other = WorkRoot::open(root.path()).unwrap();
        assert!(!dead.exists(), "the dead process's upload is gone");
        assert!(!root.path().join(format!("{dead_name}.lock")).exists());
        assert!(!stray.exists());
        assert!(
            theirs.join("kept").exists(),
            "another program's folder is kept"
        );
        assert!(their_lock.exists() && root.path().join("other-program").exists());
        assert!(
            job.path().join("upload").exists(),
            "a live process's work is kept"
        );
        assert_ne!(other.dir(), live.dir());
        drop(job);
        let dir = live.dir().to_owned();
        drop(live);
        assert!(
            !dir.exists(),
            "a process removes its folder when it ends normally"
        );
    }
}
