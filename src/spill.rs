//! Exact repeat detection in bounded memory: hash partitions, spilled to local disk when large.
//!
//! Finding repeated rows (or repeated values of an `x-unique` column) needs to remember every row
//! seen, which in memory grows with the file. [`RepeatFinder`] instead appends a 128-bit hash and
//! the row number of each item (and, when asked, its value) to one of several partitions chosen by
//! the hash. Partitions stay in memory while they are small together (under [`MEMORY_BUDGET`]);
//! past that every partition is appended to its own file and its buffer emptied. The files are
//! unnamed temporary files (never linked into a directory, or unlinked as soon as made): nothing is
//! left on disk if the worker is killed, and each is freed by the thread that groups it, not in one
//! directory removal at the end. At the end the partitions are grouped two at a time on two
//! threads: a sieve of two small bitmaps first marks the hashes that may repeat (all that do, and
//! about one in sixteen that do not), and only their items go to the exact pass that remembers each
//! hash's first item and opens a group when a second comes; a partition above 2 MiB is first split
//! on disk by further bits of the hash, so the memory of a pass stays bounded whatever the file
//! size. Memory is the budget plus two bounded passes (and the row numbers of repeated items); disk
//! is about 24 bytes a row (plus values) for a large file and nothing for a small one. Two
//! different items share a 128-bit hash with a probability far below one in 10^20 for any file this
//! service will see.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, Write};

const PARTITIONS: usize = 64;
/// Bytes of items kept in memory before the partitions are written to disk.
pub const MEMORY_BUDGET: usize = 2 * 1024 * 1024;
/// Bytes of one item before its value: the hash and the row.
const HEAD: usize = 24;

/// Collects (hash, row, value) items and reports the groups that share a hash.
pub struct RepeatFinder {
    buffers: Vec<Vec<u8>>,
    files: Vec<Option<File>>,
    buffered: usize,
    with_values: bool,
    items: u64,
}

/// One group of items sharing a hash: their rows in ascending order, and the value (when kept).
pub struct Repeat<'a> {
    /// Rows holding the item, ascending.
    pub rows: &'a [u64],
    /// The value, when the finder keeps values.
    pub value: Option<&'a [u8]>,
}

impl RepeatFinder {
    /// A finder that spills under the system temporary directory; `with_values` keeps each
    /// item's bytes so a report can quote them.
    pub fn new(with_values: bool) -> RepeatFinder {
        RepeatFinder {
            buffers: vec![Vec::new(); PARTITIONS],
            files: (0..PARTITIONS).map(|_| None).collect(),
            buffered: 0,
            with_values,
            items: 0,
        }
    }

    /// Records one item.
    pub fn add(&mut self, hash: u128, row: u64, value: &[u8]) -> std::io::Result<()> {
        let part = (hash >> 122) as usize % PARTITIONS;
        let buf = &mut self.buffers[part];
        let before = buf.len();
        let mut head = [0u8; HEAD + 4];
        head[..16].copy_from_slice(&hash.to_le_bytes());
        head[16..HEAD].copy_from_slice(&row.to_le_bytes());
        if self.with_values {
            let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
            head[HEAD..].copy_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&head);
            buf.extend_from_slice(&value[..len as usize]);
        } else {
            buf.extend_from_slice(&head[..HEAD]);
        }
        self.buffered += buf.len() - before;
        self.items += 1;
        if self.buffered > MEMORY_BUDGET {
            self.spill()?;
        }
        Ok(())
    }

    /// Appends every partition's buffer to its file and empties the buffers.
    fn spill(&mut self) -> std::io::Result<()> {
        for (part, buf) in self.buffers.iter_mut().enumerate() {
            if buf.is_empty() {
                continue;
            }
            let file = match &mut self.files[part] {
                Some(f) => f,
                slot => slot.insert(tempfile::tempfile()?),
            };
            file.write_all(buf)?;
            buf.clear();
        }
        self.buffered = 0;
        Ok(())
    }

    /// How many items were added.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Calls `on_repeat` for every group of two or more items with the same hash, partition
    /// by partition, each group's rows ascending.
    pub fn finish(self, mut on_repeat: impl FnMut(Repeat<'_>)) -> std::io::Result<()> {
        let with_values = self.with_values;
        let mut sources: Vec<(Option<File>, Vec<u8>)> =
            self.files.into_iter().zip(self.buffers).collect();
        for file in sources.iter_mut().filter_map(|(file, _)| file.as_mut()) {
            file.rewind()?;
        }
        let (tx_even, rx_even) = std::sync::mpsc::sync_channel(1);
        let (tx_odd, rx_odd) = std::sync::mpsc::sync_channel(1);
        let mut odd = Vec::new();
        let mut even = Vec::new();
        for (part, source) in sources.into_iter().enumerate() {
            if part % 2 == 0 {
                even.push(source);
            } else {
                odd.push(source);
            }
        }
        std::thread::scope(|scope| {
            for (sources, tx) in [(even, tx_even), (odd, tx_odd)] {
                scope.spawn(move || {
                    let mut scratch = Scratch::default();
                    for (file, tail) in sources {
                        let grouped = group_source(file, &tail, with_values, 0, &mut scratch);
                        let failed = grouped.is_err();
                        if tx.send(grouped).is_err() || failed {
                            break;
                        }
                    }
                });
            }
            for part in 0..PARTITIONS {
                let rx = if part % 2 == 0 { &rx_even } else { &rx_odd };
                let grouped = rx
                    .recv()
                    .map_err(|_| std::io::Error::other("a repeat-finding thread stopped"))??;
                for g in grouped {
                    g.report(&mut on_repeat);
                }
            }
            Ok(())
        })
    }
}

/// Bytes of one partition grouped at once; a larger partition is first split by further
/// bits of the hash into [`SPLIT`] files, each grouped in turn.
const GROUP_LIMIT: u64 = 2 * 1024 * 1024;
const SPLIT: u32 = 16;
/// Splits at most; past them a partition is one hash repeated, grouped as it streams.
const MAX_SPLITS: u32 = 4;

/// What a grouping thread reuses from one partition to the next: the bytes read and the sieve.
#[derive(Default)]
struct Scratch {
    bytes: Vec<u8>,
    sieve: Sieve,
}

/// Groups one partition: what was spilled to its file, then what is still in memory.
fn group_source(
    file: Option<File>,
    tail: &[u8],
    with_values: bool,
    level: u32,
    scratch: &mut Scratch,
) -> std::io::Result<Vec<Grouped>> {
    let spilled = match &file {
        Some(f) => f.metadata()?.len(),
        None => 0,
    };
    let size = spilled + tail.len() as u64;
    if size <= GROUP_LIMIT {
        let bytes = &mut scratch.bytes;
        bytes.clear();
        if let Some(mut f) = file {
            f.read_to_end(bytes)?;
        }
        bytes.extend_from_slice(tail);
        return group_bytes(bytes, with_values, &mut scratch.sieve).map(|g| vec![g]);
    }
    let mut items = BufReader::with_capacity(
        256 * 1024,
        file.map_or_else(
            || Box::new(std::io::empty()) as Box<dyn Read>,
            |f| Box::new(f) as Box<dyn Read>,
        )
        .chain(tail),
    );
    if level >= MAX_SPLITS {
        return group_stream(&mut items, with_values).map(|g| vec![g]);
    }
    let mut parts = (0..SPLIT)
        .map(|_| tempfile::tempfile().map(|f| BufWriter::with_capacity(64 * 1024, f)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let shift = 118 - 4 * level;
    let mut item = Vec::new();
    while let Some(hash) = next_item(&mut items, with_values, &mut item)? {
        parts[((hash >> shift) & u128::from(SPLIT - 1)) as usize].write_all(&item)?;
    }
    let mut out = Vec::new();
    for part in parts {
        let mut file = part
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        file.rewind()?;
        out.extend(group_source(
            Some(file),
            &[],
            with_values,
            level + 1,
            scratch,
        )?);
    }
    Ok(out)
}

/// Reads the next item's bytes into `item` and returns its hash; `None` at a clean end.
fn next_item(
    input: &mut impl BufRead,
    with_values: bool,
    item: &mut Vec<u8>,
) -> std::io::Result<Option<u128>> {
    if input.fill_buf()?.is_empty() {
        return Ok(None);
    }
    let truncated = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            std::io::Error::other("a repeat partition file is truncated")
        } else {
            e
        }
    };
    item.clear();
    item.resize(HEAD, 0);
    input.read_exact(item).map_err(truncated)?;
    if with_values {
        let mut len = [0u8; 4];
        input.read_exact(&mut len).map_err(truncated)?;
        item.extend_from_slice(&len);
        let start = item.len();
        item.resize(start + u32::from_le_bytes(len) as usize, 0);
        input.read_exact(&mut item[start..]).map_err(truncated)?;
    }
    let mut hash = [0u8; 16];
    hash.copy_from_slice(&item[..16]);
    Ok(Some(u128::from_le_bytes(hash)))
}

/// The repeated items of one partition.
#[derive(Default)]
struct Grouped {
    /// Rows of every group, group after group.
    rows: Vec<u64>,
    /// Per group: its end in `rows` and its value's range in `values`.
    groups: Vec<(usize, usize, usize)>,
    values: Vec<u8>,
    with_values: bool,
}

impl Grouped {
    fn report(&self, on_repeat: &mut impl FnMut(Repeat<'_>)) {
        let mut start = 0;
        for &(end, v_start, v_end) in &self.groups {
            on_repeat(Repeat {
                rows: &self.rows[start..end],
                value: self.with_values.then(|| &self.values[v_start..v_end]),
            });
            start = end;
        }
    }
}

/// A hasher for keys that are already uniform hashes: it keeps their low 64 bits.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type HashIndex<V> = HashMap<u128, V, BuildHasherDefault<Prehashed>>;

/// The first item seen with a hash, and the group it leads once a second one comes.
struct First {
    row: u64,
    /// Where its value is in the values kept.
    value_start: usize,
    value_len: u32,
    /// Index of its group, or `NO_GROUP`.
    group: u32,
}

const NO_GROUP: u32 = u32::MAX;

/// Collects the groups of items sharing a hash, in the order their second items come: each
/// hash's first item is remembered (with its value) and a group is opened when a second item
/// with that hash comes.
struct Grouper {
    with_values: bool,
    firsts: HashIndex<First>,
    values: Vec<u8>,
    lists: Vec<(u128, Vec<u64>)>,
}

impl Grouper {
    fn new(with_values: bool, items: usize) -> Grouper {
        Grouper {
            with_values,
            firsts: HashIndex::with_capacity_and_hasher(items, <_>::default()),
            values: Vec::new(),
            lists: Vec::new(),
        }
    }

    fn add(&mut self, hash: u128, row: u64, value: &[u8]) -> std::io::Result<()> {
        match self.firsts.entry(hash) {
            Entry::Vacant(slot) => {
                slot.insert(First {
                    row,
                    value_start: self.values.len(),
                    value_len: u32::try_from(value.len()).unwrap_or(u32::MAX),
                    group: NO_GROUP,
                });
                self.values.extend_from_slice(value);
            }
            Entry::Occupied(mut seen) => {
                let first = seen.get_mut();
                if first.group == NO_GROUP {
                    first.group = u32::try_from(self.lists.len())
                        .map_err(|_| std::io::Error::other("too many repeats in one partition"))?;
                    self.lists.push((hash, vec![first.row, row]));
                } else {
                    self.lists[first.group as usize].1.push(row);
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> Grouped {
        let mut grouped = Grouped {
            with_values: self.with_values,
            ..Grouped::default()
        };
        for (hash, mut rows) in self.lists {
            rows.sort_unstable();
            grouped.rows.extend_from_slice(&rows);
            let (v_start, v_end) = self.firsts.get(&hash).map_or((0, 0), |f| {
                (f.value_start, f.value_start + f.value_len as usize)
            });
            let start = grouped.values.len();
            grouped
                .values
                .extend_from_slice(&self.values[v_start..v_end]);
            grouped
                .groups
                .push((grouped.rows.len(), start, grouped.values.len()));
        }
        grouped
    }
}

/// The items of a partition held in memory: (hash, row, value), or an error where the bytes
/// end inside an item.
fn items(bytes: &[u8], with_values: bool) -> impl Iterator<Item = std::io::Result<Item<'_>>> {
    let truncated = || std::io::Error::other("a repeat partition file is truncated");
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= bytes.len() {
            return None;
        }
        let mut next = || -> std::io::Result<Item<'_>> {
            let head = bytes.get(at..at + HEAD).ok_or_else(truncated)?;
            let hash = u128::from_le_bytes(head[..16].try_into().map_err(|_| truncated())?);
            let row = u64::from_le_bytes(head[16..].try_into().map_err(|_| truncated())?);
            at += HEAD;
            let value = if with_values {
                let len = bytes.get(at..at + 4).ok_or_else(truncated)?;
                let len = u32::from_le_bytes(len.try_into().map_err(|_| truncated())?) as usize;
                at += 4;
                let value = bytes.get(at..at + len).ok_or_else(truncated)?;
                at += len;
                value
            } else {
                &[]
            };
            Ok((hash, row, value))
        };
        let item = next();
        if item.is_err() {
            at = bytes.len();
        }
        Some(item)
    })
}

type Item<'a> = (u128, u64, &'a [u8]);

/// Which hashes of a partition may occur more than once, from one pass over its items: each
/// item sets its bit in `seen`, or in `twice` when it was already set. Every repeated hash
/// ends with its bit in `twice`, and so does a distinct one whose bit another shares, about
/// one in [`SIEVE_BITS`]. Only the items whose bit is in `twice` are then grouped exactly, so
/// a partition of distinct items (the usual case) costs two bit tests an item, not a hash-map
/// insert; the bitmaps (a few dozen KiB) stay in the processor's caches.
#[derive(Default)]
struct Sieve {
    seen: Vec<u64>,
    twice: Vec<u64>,
    mask: usize,
}

/// Bits of each sieve bitmap per item.
const SIEVE_BITS: usize = 16;

impl Sieve {
    fn reset(&mut self, items: usize) {
        let bits = (items.max(1) * SIEVE_BITS).next_power_of_two().max(64);
        for map in [&mut self.seen, &mut self.twice] {
            map.clear();
            map.resize(bits / 64, 0);
        }
        self.mask = bits - 1;
    }

    fn bit(&self, hash: u128) -> (usize, u64) {
        // The low bits: the partition was chosen by the high ones.
        let at = (hash as usize) & self.mask;
        (at / 64, 1 << (at % 64))
    }

    fn add(&mut self, hash: u128) {
        let (word, bit) = self.bit(hash);
        if self.seen[word] & bit == 0 {
            self.seen[word] |= bit;
        } else {
            self.twice[word] |= bit;
        }
    }

    fn may_repeat(&self, hash: u128) -> bool {
        let (word, bit) = self.bit(hash);
        self.twice[word] & bit != 0
    }
}

/// Groups a partition held in memory: the sieve first, then the items it lets through.
fn group_bytes(bytes: &[u8], with_values: bool, sieve: &mut Sieve) -> std::io::Result<Grouped> {
    let per_item = if with_values { HEAD + 4 } else { HEAD };
    sieve.reset(bytes.len() / per_item);
    for item in items(bytes, with_values) {
        sieve.add(item?.0);
    }
    let mut grouper = Grouper::new(with_values, 0);
    for item in items(bytes, with_values) {
        let (hash, row, value) = item?;
        if sieve.may_repeat(hash) {
            grouper.add(hash, row, value)?;
        }
    }
    Ok(grouper.finish())
}

/// Groups a partition as it streams by, for one too large to hold.
fn group_stream(items: &mut impl BufRead, with_values: bool) -> std::io::Result<Grouped> {
    let mut grouper = Grouper::new(with_values, 0);
    let mut item = Vec::new();
    while let Some(hash) = next_item(items, with_values, &mut item)? {
        let mut row = [0u8; 8];
        row.copy_from_slice(&item[16..HEAD]);
        grouper.add(
            hash,
            u64::from_le_bytes(row),
            item.get(HEAD + 4..).unwrap_or_default(),
        )?;
    }
    Ok(grouper.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups_of(f: RepeatFinder) -> Vec<(Vec<u64>, String)> {
        let mut groups = Vec::new();
        f.finish(|r| {
            groups.push((
                r.rows.to_vec(),
                String::from_utf8(r.value.unwrap_or_default().to_vec()).unwrap(),
            ));
        })
        .unwrap();
        groups.sort();
        groups
    }

    fn every_value_repeats(rows: u64, distinct: u64) -> RepeatFinder {
        let mut f = RepeatFinder::new(true);
        for row in 0..rows {
            let hash =
                u128::from(row % distinct).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
            f.add(hash, row, format!("v{}", row % distinct).as_bytes())
                .unwrap();
        }
        f
    }

    #[test]
    fn groups_of_equal_hashes_are_reported_with_all_their_rows() {
        let f = every_value_repeats(10_000, 4_999);
        assert_eq!(f.items(), 10_000);
        assert!(
            f.files.iter().all(Option::is_none),
            "a small finder stays in memory"
        );
        let groups = groups_of(f);
        // Every value repeats: rows r, r + 4999 (and r + 9998 for r < 2) share a value.
        assert_eq!(groups.len(), 4_999);
        assert_eq!(groups[0], (vec![0, 4_999, 9_998], "v0".to_owned()));
        assert_eq!(groups[1], (vec![1, 5_000, 9_999], "v1".to_owned()));
        assert_eq!(groups[2], (vec![2, 5_001], "v2".to_owned()));
    }

    #[test]
    fn spilled_and_buffered_items_are_grouped_together() {
        // About 40 bytes an item: 600,000 items pass the memory budget many times, so each
        // group has members on disk and, for the last rows, in memory.
        let f = every_value_repeats(600_000, 250_000);
        assert!(f.files.iter().any(Option::is_some), "a large finder spills");
        let groups = groups_of(f);
        assert_eq!(groups.len(), 250_000);
        assert_eq!(groups[0], (vec![0, 250_000, 500_000], "v0".to_owned()));
        assert_eq!(
            groups[99_999],
            (vec![99_999, 349_999, 599_999], "v99999".to_owned())
        );
        assert_eq!(
            groups[100_000],
            (vec![100_000, 350_000], "v100000".to_owned())
        );
    }

    #[test]
    fn no_repeats_no_groups() {
        let mut f = RepeatFinder::new(false);
        for row in 0..1000u64 {
            f.add(u128::from(row) << 64 | u128::from(row), row, b"")
                .unwrap();
        }
        let mut n = 0;
        f.finish(|_| n += 1).unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn a_truncated_partition_is_an_error_not_a_panic() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&7u128.to_le_bytes());
        bytes.extend_from_slice(&3u64.to_le_bytes());
        bytes.extend_from_slice(&10u32.to_le_bytes());
        bytes.extend_from_slice(b"abc");
        assert!(group_bytes(&bytes, true, &mut Sieve::default()).is_err());
        assert!(group_bytes(&bytes[..20], false, &mut Sieve::default()).is_err());
        assert!(group_stream(&mut &bytes[..], true).is_err());
        assert!(group_stream(&mut &bytes[..20], false).is_err());
    }

    /// `count` hash-only items whose hash repeats every `distinct` rows, as a partition's bytes.
    fn partition_bytes(count: u64, distinct: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        for row in 0..count {
            let hash =
                u128::from(row % distinct).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
            bytes.extend_from_slice(&hash.to_le_bytes());
            bytes.extend_from_slice(&row.to_le_bytes());
        }
        bytes
    }

    fn rows_of(grouped: &[Grouped]) -> Vec<Vec<u64>> {
        let mut groups = Vec::new();
        for g in grouped {
            g.report(&mut |r: Repeat<'_>| groups.push(r.rows.to_vec()));
        }
        groups.sort();
        groups
    }

    #[test]
    fn a_large_partition_is_split_and_still_grouped_exactly() {
        // 4.8 MB: above the limit, so it is split by further hash bits before grouping.
        let bytes = partition_bytes(200_000, 90_000);
        assert!(bytes.len() as u64 > GROUP_LIMIT);
        let grouped = group_source(None, &bytes, false, 0, &mut Scratch::default()).unwrap();
        assert_eq!(grouped.len(), SPLIT as usize);
        let groups = rows_of(&grouped);
        assert_eq!(groups.len(), 90_000);
        assert_eq!(groups[0], vec![0, 90_000, 180_000]);
        assert_eq!(groups[89_999], vec![89_999, 179_999]);
        assert_eq!(
            groups,
            rows_of(&[group_bytes(&bytes, false, &mut Sieve::default()).unwrap()])
        );
        assert_eq!(
            groups,
            rows_of(&[group_stream(&mut &bytes[..], false).unwrap()])
        );
    }

    fn reported(grouped: &Grouped) -> Vec<(Vec<u64>, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        grouped
            .report(&mut |r: Repeat<'_>| out.push((r.rows.to_vec(), r.value.map(<[u8]>::to_vec))));
        out
    }

    proptest::proptest! {
        /// The sieve only skips work: with hashes whose low bits collide far more often than
        /// real ones do, the groups, their order and their values are those of grouping every
        /// item, also when one sieve serves partition after partition.
        #[test]
        fn the_sieve_changes_no_group(
            partitions in proptest::collection::vec(
                proptest::collection::vec((0u8..40, 0u8..4), 0..300),
                1..4,
            ),
        ) {
            let mut sieve = Sieve::default();
            for ids in partitions {
                let mut bytes = Vec::new();
                for (row, &(id, low)) in ids.iter().enumerate() {
                    // Distinct ids share low bits in fours: the sieve lets many through.
                    let hash = u128::from(id) << 64 | u128::from(low);
                    let value = format!("v{id}-{low}");
                    bytes.extend_from_slice(&hash.to_le_bytes());
                    bytes.extend_from_slice(&(row as u64).to_le_bytes());
                    bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
                    bytes.extend_from_slice(value.as_bytes());
                }
                let sieved = group_bytes(&bytes, true, &mut sieve).unwrap();
                let every = group_stream(&mut &bytes[..], true).unwrap();
                proptest::prop_assert_eq!(reported(&sieved), reported(&every));
            }
        }
    }

    #[test]
    fn one_hash_repeated_past_every_split_is_grouped_as_it_streams() {
        let bytes = partition_bytes(120_000, 1);
        let groups =
            rows_of(&group_source(None, &bytes, false, 0, &mut Scratch::default()).unwrap());
        assert_eq!(groups, vec![(0..120_000).collect::<Vec<u64>>()]);
    }
}
