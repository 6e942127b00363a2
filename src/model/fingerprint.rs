//! A submission's content fingerprint: which records it holds, in 128 numbers, so that two
//! submissions can be compared record by record without keeping either.
//!
//! Each record is hashed over every column, with its date reduced to the day of the month and
//! the time (a file sent again as the next period, with its dates moved on a month, hashes the
//! same). The fingerprint keeps the [`SIZE`] smallest distinct record hashes (a bottom-k sketch);
//! [`Fingerprint::similarity`] estimates from two of them the Jaccard similarity of the two
//! sets of records (exactly, when both hold fewer than [`SIZE`] distinct records). The hash is
//! not cryptographic: it needs only to spread records evenly, and is fast enough to take every
//! record of a million-row file.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Record hashes a fingerprint keeps.
pub const SIZE: usize = 128;

/// The multiplier of the record hash's mixing step (from Firefox's `FxHash`).
const MIX: u64 = 0x517c_c1b7_2722_0a95;

/// The smallest distinct record hashes of a submission, ascending.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// At most [`SIZE`] record hashes, ascending.
    pub hashes: Vec<u64>,
}

impl Fingerprint {
    /// Whether no record was hashed.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The estimated share of the two submissions' distinct records that both hold (Jaccard
    /// similarity), from the smallest hashes of their union; `None` when either is empty.
    pub fn similarity(&self, other: &Fingerprint) -> Option<f64> {
        if self.is_empty() || other.is_empty() {
            return None;
        }
        let (ours, theirs) = (&self.hashes, &other.hashes);
        // Two whole sets (each under SIZE distinct records) are compared in full; otherwise the
        // SIZE smallest hashes of the union, which are all at most a full sketch's largest, so
        // whether each is in either set is known.
        let limit = if ours.len() < SIZE && theirs.len() < SIZE {
            usize::MAX
        } else {
            SIZE
        };
        let (mut at_ours, mut at_theirs, mut taken, mut shared) = (0, 0, 0usize, 0usize);
        while taken < limit && (at_ours < ours.len() || at_theirs < theirs.len()) {
            match (ours.get(at_ours), theirs.get(at_theirs)) {
                (Some(x), Some(y)) if x == y => {
                    shared += 1;
                    at_ours += 1;
                    at_theirs += 1;
                }
                (Some(x), Some(y)) if x < y => at_ours += 1,
                (Some(_), None) => at_ours += 1,
                _ => at_theirs += 1,
            }
            taken += 1;
        }
        Some(shared as f64 / taken as f64)
    }
}

/// Keeps the smallest distinct record hashes seen.
#[derive(Debug, Default)]
pub struct FingerprintBuilder {
    smallest: BTreeSet<u64>,
}

impl FingerprintBuilder {
    /// Takes in one record's hash.
    pub fn add(&mut self, hash: u64) {
        if self.smallest.len() < SIZE {
            self.smallest.insert(hash);
        } else if self.smallest.last().is_some_and(|&largest| hash < largest)
            && self.smallest.insert(hash)
        {
            self.smallest.pop_last();
        }
    }

    /// The fingerprint.
    pub fn finish(self) -> Fingerprint {
        Fingerprint {
            hashes: self.smallest.into_iter().collect(),
        }
    }
}

/// Record hashes built column by column: one running value per record.
pub struct RecordHashes {
    values: Vec<u64>,
}

impl RecordHashes {
    /// Running hashes for `records` records.
    pub fn new(records: usize) -> RecordHashes {
        RecordHashes {
            values: vec![0; records],
        }
    }

    /// Mixes into record `r` a value of the next column (a code's number, a flag).
    pub fn mix(&mut self, r: usize, value: u64) {
        let h = &mut self.values[r];
        *h = (h.rotate_left(5) ^ value).wrapping_mul(MIX);
    }

    /// Mixes into record `r` a cell's text (`None` for a blank cell).
    pub fn mix_text(&mut self, r: usize, text: Option<&[u8]>) {
        let Some(text) = text else {
            self.mix(r, u64::MAX);
            return;
        };
        let mut chunks = text.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(r, u64::from_le_bytes(word));
        }
        let mut last = [0u8; 8];
        last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.mix(r, u64::from_le_bytes(last) ^ ((text.len() as u64) << 56));
    }

    /// Hands every record's finished hash to `builder`.
    pub fn finish(self, builder: &mut FingerprintBuilder) {
        for h in self.values {
            builder.add(spread(h));
        }
    }
}

/// The date part of a record's hash: the day of the month and the time, without year and month
/// (`2024-03-05T10:00:00+00:00` → `05T10:00:00+00:00`).
pub fn day_and_time(date: &str) -> &[u8] {
    date.as_bytes().get(8..).unwrap_or(date.as_bytes())
}

/// Spreads a mixed hash over all 64 bits (the finaliser of `SplitMix64`), so the smallest hashes are a
/// fair sample of the records.
fn spread(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fingerprint of records given as rows of cell texts.
    fn fingerprint(rows: &[Vec<String>]) -> Fingerprint {
        let mut hashes = RecordHashes::new(rows.len());
        let columns = rows.first().map_or(0, Vec::len);
        for c in 0..columns {
            for (r, row) in rows.iter().enumerate() {
                hashes.mix_text(r, Some(row[c].as_bytes()));
            }
        }
        let mut builder = FingerprintBuilder::default();
        hashes.finish(&mut builder);
        builder.finish()
    }

    fn rows(from: usize, to: usize) -> Vec<Vec<String>> {
        (from..to)
            .map(|i| vec![format!("{i}"), format!("cell {}", i % 7), "x".to_owned()])
            .collect()
    }

    #[test]
    fn identical_files_are_the_same_and_different_files_share_nothing() {
        let a = fingerprint(&rows(0, 5000));
        assert_eq!(a.hashes.len(), SIZE);
        assert!(a.hashes.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a.similarity(&fingerprint(&rows(0, 5000))), Some(1.0));
        assert_eq!(a.similarity(&fingerprint(&rows(5000, 10_000))), Some(0.0));
        assert_eq!(a.similarity(&Fingerprint::default()), None);
    }

    #[test]
    fn the_similarity_estimates_the_share_of_records_both_hold() {
        // 4,000 shared of 6,000 distinct: Jaccard 2/3.
        let a = fingerprint(&rows(0, 5000));
        let b = fingerprint(&rows(1000, 6000));
        let s = a.similarity(&b).unwrap();
        assert!((s - 2.0 / 3.0).abs() < 0.12, "{s}");
        // Small files are compared exactly: 60 shared of 140 distinct.
        let a = fingerprint(&rows(0, 100));
        let b = fingerprint(&rows(40, 140));
        assert_eq!(a.similarity(&b), Some(60.0 / 140.0));
    }

    #[test]
    fn a_record_twice_counts_once_and_column_order_matters() {
        let once = fingerprint(&rows(0, 50));
        let mut doubled = rows(0, 50);
        doubled.extend(rows(0, 50));
        assert_eq!(fingerprint(&doubled), once);
        let swapped: Vec<Vec<String>> = rows(0, 50)
            .into_iter()
            .map(|mut r| {
                r.swap(1, 2);
                r
            })
            .collect();
        assert_eq!(once.similarity(&fingerprint(&swapped)), Some(0.0));
    }

    #[test]
    fn a_date_moved_on_a_month_hashes_the_same() {
        assert_eq!(
            day_and_time("2024-03-05T10:00:00+00:00"),
            day_and_time("2024-04-05T10:00:00+00:00")
        );
        assert_ne!(
            day_and_time("2024-03-05T10:00:00+00:00"),
            day_and_time("2024-03-06T10:00:00+00:00")
        );
        assert_eq!(day_and_time("2024"), b"2024");
    }
}
