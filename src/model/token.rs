//! Tokens unique to one taking: of a lease generation (`state`) or of a process's work folder
//! (`workdir`).

use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// A token no other taking has: random keys from the standard library's hasher seeds, the
/// process, a counter and the time.
pub fn new_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut token = String::with_capacity(32);
    for half in 0..2u8 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u8(half);
        hasher.write_u32(std::process::id());
        hasher.write_u64(count);
        hasher.write_u128(nanos);
        let _ = write!(token, "{:016x}", hasher.finish());
    }
    token
}
