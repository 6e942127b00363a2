//! Exact repeat detection in bounded memory: hash partitions spilled to local disk.
//!
//! Finding repeated rows (or repeated values of an `x-unique` column) needs to remember every
//! row seen, which in memory grows with the file. [`RepeatFinder`] instead appends a 128-bit
//! hash and the row number of each item (and, when asked, its value) to one of several
//! partition files chosen by the hash, and at the end reads one partition at a time, sorts it
//! and reports each group of equal hashes. Memory is the write buffers plus one partition; disk
//! is about 24 bytes a row (plus values). Two different items share a 128-bit hash with a
//! probability far below one in 10^20 for any file this service will see.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

const PARTITIONS: usize = 64;
const BUFFER: usize = 32 * 1024;

/// Collects (hash, row, value) items and reports the groups that share a hash.
pub struct RepeatFinder {
    dir: tempfile::TempDir,
    parts: Vec<Option<BufWriter<File>>>,
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
    /// A finder writing under the system temporary directory; `with_values` keeps each item's
    /// bytes so a report can quote them.
    pub fn new(with_values: bool) -> std::io::Result<RepeatFinder> {
        Ok(RepeatFinder {
            dir: tempfile::tempdir()?,
            parts: (0..PARTITIONS).map(|_| None).collect(),
            with_values,
            items: 0,
        })
    }

    fn path(&self, part: usize) -> PathBuf {
        self.dir.path().join(format!("part-{part:02}"))
    }

    /// Records one item.
    pub fn add(&mut self, hash: u128, row: u64, value: &[u8]) -> std::io::Result<()> {
        let part = (hash >> 122) as usize % PARTITIONS;
        if self.parts[part].is_none() {
            let file = File::create(self.path(part))?;
            self.parts[part] = Some(BufWriter::with_capacity(BUFFER, file));
        }
        let with_values = self.with_values;
        if let Some(w) = self.parts[part].as_mut() {
            w.write_all(&hash.to_le_bytes())?;
            w.write_all(&row.to_le_bytes())?;
            if with_values {
                let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
                w.write_all(&len.to_le_bytes())?;
                w.write_all(&value[..len as usize])?;
            }
        }
        self.items += 1;
        Ok(())
    }

    /// How many items were added.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Calls `on_repeat` for every group of two or more items with the same hash.
    pub fn finish(mut self, mut on_repeat: impl FnMut(Repeat<'_>)) -> std::io::Result<()> {
        let mut entries: Vec<(u128, u64, u32, u32)> = Vec::new();
        let mut values: Vec<u8> = Vec::new();
        let mut rows: Vec<u64> = Vec::new();
        for part in 0..PARTITIONS {
            let Some(writer) = self.parts[part].take() else {
                continue;
            };
            writer
                .into_inner()
                .map_err(std::io::IntoInnerError::into_error)?;
            let mut reader = BufReader::with_capacity(BUFFER, File::open(self.path(part))?);
            entries.clear();
            values.clear();
            let mut head = [0u8; 24];
            loop {
                match reader.read_exact(&mut head) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e),
                }
                let mut hash = [0u8; 16];
                hash.copy_from_slice(&head[..16]);
                let mut row = [0u8; 8];
                row.copy_from_slice(&head[16..]);
                let (start, len) = if self.with_values {
                    let mut len = [0u8; 4];
                    reader.read_exact(&mut len)?;
                    let len = u32::from_le_bytes(len);
                    let start = values.len();
                    values.resize(start + len as usize, 0);
                    reader.read_exact(&mut values[start..])?;
                    (u32::try_from(start).unwrap_or(u32::MAX), len)
                } else {
                    (0, 0)
                };
                entries.push((
                    u128::from_le_bytes(hash),
                    u64::from_le_bytes(row),
                    start,
                    len,
                ));
            }
            entries.sort_unstable_by_key(|e| (e.0, e.1));
            let mut i = 0;
            while i < entries.len() {
                let mut j = i + 1;
                while j < entries.len() && entries[j].0 == entries[i].0 {
                    j += 1;
                }
                if j - i > 1 {
                    rows.clear();
                    rows.extend(entries[i..j].iter().map(|e| e.1));
                    let (start, len) = (entries[i].2 as usize, entries[i].3 as usize);
                    on_repeat(Repeat {
                        rows: &rows,
                        value: self.with_values.then(|| &values[start..start + len]),
                    });
                }
                i = j;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_of_equal_hashes_are_reported_with_all_their_rows() {
        let mut f = RepeatFinder::new(true).unwrap();
        for row in 0..10_000u64 {
            let hash =
                u128::from(row % 4_999).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
            f.add(hash, row, format!("v{}", row % 4_999).as_bytes())
                .unwrap();
        }
        assert_eq!(f.items(), 10_000);
        let mut groups = Vec::new();
        f.finish(|r| {
            groups.push((
                r.rows.to_vec(),
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            ));
        })
        .unwrap();
        groups.sort();
        // Every value repeats: rows r, r + 4999 (and r + 9998 for r < 2) share a value.
        assert_eq!(groups.len(), 4_999);
        assert_eq!(groups[0], (vec![0, 4_999, 9_998], "v0".to_owned()));
        assert_eq!(groups[1], (vec![1, 5_000, 9_999], "v1".to_owned()));
        assert_eq!(groups[2], (vec![2, 5_001], "v2".to_owned()));
    }

    #[test]
    fn no_repeats_no_groups() {
        let mut f = RepeatFinder::new(false).unwrap();
        for row in 0..1000u64 {
            f.add(u128::from(row) << 64 | u128::from(row), row, b"")
                .unwrap();
        }
        let mut n = 0;
        f.finish(|_| n += 1).unwrap();
        assert_eq!(n, 0);
    }
}
