//! Dictionary-encoded Parquet column chunks built from value numbers the checks already know.
//!
//! The Arrow writer (arrow-rs) looks every value of a dictionary-encoded column up in a hash
//! table to find its key, which on a code column of a million rows is a million hashes and
//! byte comparisons for a handful of values; it was the largest single cost of writing a
//! snapshot. The checks already number each column's distinct values per batch while they judge
//! them (`ingest::Distinct`), so here a value is looked up once per batch, and each row costs a
//! table read.
//!
//! [`DictColumn`] collects one column chunk of a row group: its dictionary (each distinct value
//! once, in the order first written), one key per non-null row and whether each row is null.
//! [`DictColumn::finish`] encodes it as the Arrow writer would: a PLAIN dictionary page and one
//! data page (v1) of definition levels and `RLE_DICTIONARY` keys, each run-length/bit-packed
//! hybrid encoded and [`COMPRESSION`](super::COMPRESSION)-compressed, with an offset index; the
//! result is spliced into the row group with `append_column`.

use std::collections::HashMap;

use bytes::Bytes;
use parquet::basic::{Compression, Encoding, PageType};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ColumnChunkMetaData, OffsetIndexBuilder, PageEncodingStats};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

/// The number of an empty cell (written as null).
pub const BLANK: u32 = crate::ingest::Distinct::BLANK;
/// A value number not yet given a key in this chunk.
const UNMAPPED: u32 = u32::MAX;
/// A value number whose rows are written as null.
const NULL_KEY: u32 = u32::MAX - 1;

/// One column chunk of a dictionary-encoded byte-array column, built row by row.
pub struct DictColumn {
    descr: ColumnDescPtr,
    /// The dictionary page's body: each value as a 4-byte little-endian length and its bytes.
    dictionary: Vec<u8>,
    index: HashMap<Box<[u8]>, u32, foldhash::fast::FixedState>,
    /// Keys of the non-null rows.
    keys: Vec<u32>,
    /// Per row, 1 when it has a value and 0 when null; `None` while no row is null.
    levels: Option<Vec<u32>>,
    rows: usize,
    /// Per slot of the batch being written, its key in this chunk.
    table: Vec<u32>,
}

impl DictColumn {
    /// An empty chunk of the column `descr`.
    pub fn new(descr: ColumnDescPtr) -> DictColumn {
        DictColumn {
            descr,
            dictionary: Vec::new(),
            index: HashMap::default(),
            keys: Vec::new(),
            levels: None,
            rows: 0,
            table: Vec::new(),
        }
    }

    /// Appends the rows `rows` of a batch, given each batch row's value number (`slots`,
    /// [`BLANK`] for an empty cell) and each number's bytes (`values`, `None` for a null). A
    /// null in a column that does not allow nulls is an error, as the Arrow writer's would be.
    pub fn push(
        &mut self,
        rows: &[usize],
        slots: &[u32],
        values: &[Option<&[u8]>],
    ) -> Result<(), ParquetError> {
        self.table.clear();
        self.table.resize(values.len(), UNMAPPED);
        for &row in rows {
            let slot = slots.get(row).copied().unwrap_or(BLANK);
            let key = match self.table.get(slot as usize) {
                _ if slot == BLANK => NULL_KEY,
                Some(&UNMAPPED) => {
                    let key = values[slot as usize].map_or(NULL_KEY, |v| self.key_of(v));
                    self.table[slot as usize] = key;
                    key
                }
                Some(&key) => key,
                None => {
                    return Err(ParquetError::General(format!(
                        "value number {slot} of column {} has no value",
                        self.descr.name()
                    )));
                }
            };
            if key == NULL_KEY {
                self.push_null()?;
            } else {
                self.keys.push(key);
                if let Some(levels) = &mut self.levels {
                    levels.push(1);
                }
            }
            self.rows += 1;
        }
        Ok(())
    }

    /// Appends `n` rows of one value.
    pub fn push_constant(&mut self, value: &[u8], n: usize) {
        let key = self.key_of(value);
        self.keys.resize(self.keys.len() + n, key);
        if let Some(levels) = &mut self.levels {
            levels.resize(levels.len() + n, 1);
        }
        self.rows += n;
    }

    fn push_null(&mut self) -> Result<(), ParquetError> {
        if self.descr.max_def_level() == 0 {
            return Err(ParquetError::General(format!(
                "column {} cannot hold a null",
                self.descr.name()
            )));
        }
        // Levels are kept from the first null on; before it every row had a value.
        self.levels
            .get_or_insert_with(|| vec![1; self.rows])
            .push(0);
        Ok(())
    }

    fn key_of(&mut self, value: &[u8]) -> u32 {
        if let Some(&key) = self.index.get(value) {
            return key;
        }
        let key = u32::try_from(self.index.len()).unwrap_or(NULL_KEY - 1);
        let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
        self.dictionary.extend_from_slice(&len.to_le_bytes());
        self.dictionary.extend_from_slice(value);
        self.index.insert(value.into(), key);
        key
    }

    /// Encodes the chunk (dictionary page, then one data page) and empties the column for the
    /// next row group; returns the chunk's bytes and what `append_column` needs to splice them.
    pub fn finish(&mut self) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
        let rows = self.rows;
        let entries = self.index.len();
        let mut sink = TrackedWrite::new(Vec::new());
        let mut pages = SerializedPageWriter::new(&mut sink);

        let dictionary =
            pages.write_page(compressed(&self.dictionary, |buf| Page::DictionaryPage {
                buf,
                num_values: u32::try_from(entries).unwrap_or(u32::MAX),
                encoding: Encoding::PLAIN,
                is_sorted: false,
            })?)?;

        let mut body = Vec::new();
        if self.descr.max_def_level() > 0 {
            let mut levels = Vec::new();
            if let Some(l) = &self.levels {
                hybrid(l, 1, &mut levels);
            } else {
                varint((rows as u64) << 1, &mut levels);
                levels.push(1);
            }
            let len = u32::try_from(levels.len()).unwrap_or(u32::MAX);
            body.extend_from_slice(&len.to_le_bytes());
            body.extend_from_slice(&levels);
        }
        let width = bit_width(entries.saturating_sub(1));
        body.push(width);
        hybrid(&self.keys, width, &mut body);
        let data = pages.write_page(compressed(&body, |buf| Page::DataPage {
            buf,
            num_values: u32::try_from(rows).unwrap_or(u32::MAX),
            encoding: Encoding::RLE_DICTIONARY,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        })?)?;

        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let metadata = ColumnChunkMetaData::builder(self.descr.clone())
            .set_compression(super::COMPRESSION)
            .set_encodings(vec![
                Encoding::PLAIN,
                Encoding::RLE,
                Encoding::RLE_DICTIONARY,
            ])
            .set_page_encoding_stats(vec![
                PageEncodingStats {
                    page_type: PageType::DICTIONARY_PAGE,
                    encoding: Encoding::PLAIN,
                    count: 1,
                },
                PageEncodingStats {
                    page_type: PageType::DATA_PAGE,
                    encoding: Encoding::RLE_DICTIONARY,
                    count: 1,
                },
            ])
            .set_num_values(as_i64(rows as u64))
            .set_total_compressed_size(as_i64(
                (dictionary.compressed_size + data.compressed_size) as u64,
            ))
            .set_total_uncompressed_size(as_i64(
                (dictionary.uncompressed_size + data.uncompressed_size) as u64,
            ))
            .set_dictionary_page_offset(Some(as_i64(dictionary.offset)))
            .set_data_page_offset(as_i64(data.offset))
            .build()?;
        let mut offsets = OffsetIndexBuilder::new();
        offsets.append_offset_and_size(
            as_i64(data.offset),
            i32::try_from(data.compressed_size).unwrap_or(i32::MAX),
        );
        offsets.append_row_count(as_i64(rows as u64));
        let close = ColumnCloseResult {
            bytes_written: dictionary.bytes_written + data.bytes_written,
            rows_written: rows as u64,
            metadata,
            bloom_filter: None,
            column_index: None,
            offset_index: Some(offsets.build()),
        };
        let bytes = Bytes::from(sink.into_inner()?);
        self.dictionary.clear();
        self.index.clear();
        self.keys.clear();
        self.levels = None;
        self.rows = 0;
        Ok((bytes, close))
    }
}

// The pages are compressed here with Snappy: a change of the snapshot's codec must change this.
const _: () = assert!(matches!(super::COMPRESSION, Compression::SNAPPY));

/// A page whose body is `body` compressed with the snapshot's codec.
fn compressed(
    body: &[u8],
    page: impl FnOnce(Bytes) -> Page,
) -> Result<CompressedPage, ParquetError> {
    let buf = snap::raw::Encoder::new()
        .compress_vec(body)
        .map_err(|e| ParquetError::General(format!("could not compress a page: {e}")))?;
    Ok(CompressedPage::new(page(Bytes::from(buf)), body.len()))
}

/// Bits needed for values up to `max`, at least one.
fn bit_width(max: usize) -> u8 {
    (usize::BITS - max.leading_zeros()).clamp(1, 32) as u8
}

/// Groups of eight in one bit-packed run: 63 keeps its header one byte, as other writers do.
const MAX_GROUPS: usize = 63;

/// Appends `values` (each below `2^width`) in Parquet's run-length / bit-packing hybrid:
/// eight or more equal values starting a group of eight as one repeated value, the rest
/// bit-packed eight at a time (the last group padded with zeros, which the reader ignores by
/// the value count).
fn hybrid(values: &[u32], width: u8, out: &mut Vec<u8>) {
    let mut literal_start = 0;
    let mut i = 0;
    while let Some(group) = values.get(i..i + 8) {
        let v = group[0];
        if group.iter().all(|&x| x == v) {
            let end = values[i + 8..]
                .iter()
                .position(|&x| x != v)
                .map_or(values.len(), |n| i + 8 + n);
            bit_pack(&values[literal_start..i], width, out);
            varint(((end - i) as u64) << 1, out);
            out.extend_from_slice(&v.to_le_bytes()[..usize::from(width).div_ceil(8)]);
            i = end;
            literal_start = end;
        } else {
            i += 8;
        }
    }
    bit_pack(&values[literal_start..], width, out);
}

/// Appends `values` as bit-packed runs of at most [`MAX_GROUPS`] groups of eight.
fn bit_pack(values: &[u32], width: u8, out: &mut Vec<u8>) {
    let w = u32::from(width);
    for run in values.chunks(MAX_GROUPS * 8) {
        let groups = run.len().div_ceil(8);
        varint(((groups as u64) << 1) | 1, out);
        for group in run.chunks(8) {
            let mut eight = [0u32; 8];
            eight[..group.len()].copy_from_slice(group);
            if w <= 8 {
                // Eight values of up to eight bits fill at most one word: `width` bytes.
                let word = eight
                    .iter()
                    .enumerate()
                    .fold(0u64, |acc, (k, &v)| acc | (u64::from(v) << (k as u32 * w)));
                out.extend_from_slice(&word.to_le_bytes()[..usize::from(width)]);
            } else {
                let mut acc: u64 = 0;
                let mut bits = 0u32;
                for v in eight {
                    acc |= u64::from(v) << bits;
                    bits += w;
                    while bits >= 8 {
                        out.push(acc as u8);
                        acc >>= 8;
                        bits -= 8;
                    }
                }
            }
        }
    }
}

/// Appends `n` as an unsigned LEB128 varint.
fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, StringArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::properties::WriterProperties;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use proptest::prelude::*;

    use super::*;

    /// Writes each group of cells (value numbers into `values`, `None` for an empty cell) as a
    /// row group of one column through [`DictColumn`], taking every `stride`-th row, and reads
    /// the file back with the Arrow reader.
    fn round_trip(
        groups: &[Vec<Option<u32>>],
        values: &[Option<String>],
        stride: usize,
        nullable: bool,
    ) -> Result<Vec<Option<String>>, ParquetError> {
        let message = if nullable {
            "message m { optional binary v (STRING); }"
        } else {
            "message m { required binary v (STRING); }"
        };
        let schema = Arc::new(parse_message_type(message)?);
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(super::super::COMPRESSION)
                .build(),
        );
        let mut file = SerializedFileWriter::new(Vec::new(), schema, props)?;
        let values: Vec<Option<&[u8]>> = values
            .iter()
            .map(|v| v.as_ref().map(String::as_bytes))
            .collect();
        for cells in groups {
            let slots: Vec<u32> = cells.iter().map(|c| c.unwrap_or(BLANK)).collect();
            let rows: Vec<usize> = (0..cells.len()).step_by(stride).collect();
            let mut column = DictColumn::new(file.schema_descr().column(0));
            // Written in two pushes, as batches are, and the second with a fresh table.
            let half = rows.len() / 2;
            column.push(&rows[..half], &slots, &values)?;
            column.push(&rows[half..], &slots, &values)?;
            let (bytes, close) = column.finish()?;
            let mut group = file.next_row_group()?;
            group.append_column(&bytes, close)?;
            group.close()?;
        }
        let bytes = Bytes::from(file.into_inner()?);
        let groups_read = SerializedFileReader::new(bytes.clone())?
            .metadata()
            .num_row_groups();
        assert_eq!(groups_read, groups.len());
        let mut read = Vec::new();
        for batch in ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()? {
            let batch = batch?;
            let column = batch
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| ParquetError::General("not a string column".into()))?;
            read.extend(
                (0..column.len()).map(|i| column.is_valid(i).then(|| column.value(i).to_owned())),
            );
        }
        Ok(read)
    }

    /// Cells in runs (for the run-length side of the encoding) over `distinct` values.
    fn cells(distinct: u32) -> impl Strategy<Value = Vec<Option<u32>>> {
        prop::collection::vec(
            (prop::option::weighted(0.9, 0..distinct), 1..20usize),
            0..300,
        )
        .prop_map(|runs| {
            runs.into_iter()
                .flat_map(|(cell, n)| std::iter::repeat_n(cell, n))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn chunks_read_back_as_written(
            distinct in prop::sample::select(vec![1u32, 2, 3, 17, 255, 256, 300, 5000]),
            groups in prop::collection::vec(cells(5000), 1..4),
            stride in 1..3usize,
            unlisted in 0..4u32,
        ) {
            // Numbers at or past `distinct` wrap around; number `unlisted` has no value.
            let groups: Vec<Vec<Option<u32>>> = groups
                .into_iter()
                .map(|g| g.into_iter().map(|c| c.map(|n| n % distinct)).collect())
                .collect();
            let values: Vec<Option<String>> = (0..distinct)
                .map(|n| (n != unlisted).then(|| format!("value {n}")))
                .collect();
            let expected: Vec<Option<String>> = groups
                .iter()
                .flat_map(|g| g.iter().step_by(stride))
                .map(|c| c.and_then(|n| values[n as usize].clone()))
                .collect();
            prop_assert_eq!(round_trip(&groups, &values, stride, true)?, expected);
        }
    }

    #[test]
    fn a_null_in_a_required_column_is_an_error() {
        let values = vec![Some("a".to_owned())];
        let full = round_trip(&[vec![Some(0); 10]], &values, 1, false);
        assert_eq!(full.ok(), Some(vec![Some("a".to_owned()); 10]));
        let err = round_trip(&[vec![Some(0), None]], &values, 1, false).unwrap_err();
        assert!(err.to_string().contains("cannot hold a null"), "{err}");
    }

    #[test]
    fn long_runs_and_literals_alternate() {
        // Runs that start inside a group of eight, literals of every length up to a group.
        let mut cells = Vec::new();
        for k in 0..40u32 {
            cells.extend((0..k % 9).map(|i| Some((k + i) % 5)));
            cells.extend(std::iter::repeat_n(Some(k % 5), 8 + k as usize));
            cells.extend(std::iter::repeat_n(None, (k % 3) as usize));
        }
        let values: Vec<Option<String>> = (0..5).map(|n| Some(n.to_string())).collect();
        let expected: Vec<Option<String>> = cells
            .iter()
            .map(|c| c.map(|n: u32| n.to_string()))
            .collect();
        assert_eq!(
            round_trip(&[cells.clone(), cells], &values, 1, true).ok(),
            Some([expected.clone(), expected].concat())
        );
    }
}
