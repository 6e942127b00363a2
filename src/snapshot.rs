//! Snapshots: accepted rows → typed Parquet with lineage, and the quality tables.
//!
//! A snapshot file holds one submission's accepted rows, typed as the schema's `x-snapshot`
//! annotations say: timestamps in UTC, booleans, floats, and codes as dictionary-encoded
//! canonical values with their attributes (for example self-defined ethnicity `W1` with group
//! `White`). Every file's key-value metadata carries its lineage: submission id, source key,
//! SHA-256, schema id and version (and, for an aggregate return, the metric catalogue's
//! version), and when it was ingested. Files are Snappy-compressed
//! ([`COMPRESSION`]).
//!
//! Readers find the current file of each force × period through the dataset's manifest
//! (`snapshots/<dataset>/_manifest/<year>.json`), which is written last: a reader never sees a
//! snapshot before its data file is complete. [`crate::model::Manifest::apply`] is the pure
//! rule for supersession; `state` commits it under the dataset's commit lock.
//!
//! This module writes to local files (`std::io::Write`); moving them to the bucket is `store`'s
//! job.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBuilder, DictionaryArray, Float64Builder, Int64Builder,
    StringArray, StringBuilder, TimestampMicrosecondBuilder, UInt64Array,
};
use arrow::compute::filter;
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::basic::{Compression, Encoding};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::finding::{Finding, FindingSink};
use dictionary::DictColumn;

mod dictionary;
use crate::ingest::{Batch, Distinct, cell};
use crate::schema::{
    CodeList, LEADING_LINEAGE, Property, RecordSchema, SnapshotType, TRAILING_LINEAGE,
};

/// Lineage written into every snapshot file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lineage {
    /// Dataset id.
    pub dataset: String,
    /// Canonical force id.
    pub force_id: String,
    /// Period `YYYY-MM`.
    pub period: String,
    /// Deterministic submission id.
    pub submission_id: String,
    /// The upload's key.
    pub source_key: String,
    /// SHA-256 of the upload, hex.
    pub sha256: String,
    /// Schema id.
    pub schema_id: String,
    /// Schema version.
    pub schema_version: String,
    /// For an aggregate return, the version of the metric catalogue it was checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalogue_version: Option<String>,
    /// When the upload was processed (RFC 3339).
    pub ingested_at: String,
}

impl Lineage {
    fn key_values(&self) -> Vec<KeyValue> {
        [
            ("force_returns.dataset", &self.dataset),
            ("force_returns.force_id", &self.force_id),
            ("force_returns.period", &self.period),
            ("force_returns.submission_id", &self.submission_id),
            ("force_returns.source_key", &self.source_key),
            ("force_returns.sha256", &self.sha256),
            ("force_returns.schema_id", &self.schema_id),
            ("force_returns.schema_version", &self.schema_version),
            ("force_returns.ingested_at", &self.ingested_at),
        ]
        .into_iter()
        .map(|(k, v)| KeyValue::new(k.to_owned(), v.clone()))
        .chain(
            self.catalogue_version
                .iter()
                .map(|v| KeyValue::new("force_returns.catalogue_version".to_owned(), v.clone())),
        )
        .collect()
    }
}

/// An error writing Parquet.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// From arrow.
    #[error("failed to build a snapshot batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// From parquet.
    #[error("failed to write Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

fn dict_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// The codec of every Parquet file the service writes: Snappy, the one codec every reader the
/// snapshots are for opens (`DuckDB`, pandas, Polars, Spark, Power BI), and the fastest to write.
/// Zstd level 1 made the 1M-row benchmark snapshot 17% smaller (23.1 against 28.0 MB) but
/// cost 0.05 s more CPU, 5% of the whole run (BENCHMARKS.md). Files written with zstd by
/// earlier versions are still read.
pub const COMPRESSION: Compression = Compression::SNAPPY;

/// [`COMPRESSION`], bounded row groups, and dictionary encoding by the Arrow writer only for
/// the named columns: codes repeat and compress well as dictionaries, while identifiers, times
/// and coordinates only fill the dictionary up before the writer falls back, costing time and
/// memory for nothing. (The snapshot names none: it encodes its dictionary columns itself,
/// [`dictionary`].)
///
/// The dictionary-encoded columns carry no min/max statistics: a code column's range in a row
/// group is nearly always its whole code list, so the statistics would prune nothing, and the
/// writer computes them with two string comparisons a value. Identifiers, times and numbers
/// keep theirs (a reader looking up a record id or a date range skips row groups with them).
///
/// Floating-point columns are byte-stream split: their sign and exponent bytes, alike across
/// coordinates, end up together, where the compressor finds them, while interleaved they
/// compress hardly at all (BENCHMARKS.md).
fn writer_props(dictionary_columns: &[String], float_columns: &[String]) -> WriterProperties {
    let builder = float_columns
        .iter()
        .fold(WriterProperties::builder(), |b, c| {
            b.set_column_encoding(ColumnPath::from(c.as_str()), Encoding::BYTE_STREAM_SPLIT)
        });
    let builder = dictionary_columns
        .iter()
        .fold(builder.set_dictionary_enabled(false), |b, c| {
            b.set_column_dictionary_enabled(ColumnPath::from(c.as_str()), true)
                .set_column_statistics_enabled(
                    ColumnPath::from(c.as_str()),
                    EnabledStatistics::None,
                )
        });
    builder
        // Row numbers only ever go up by one or a few: delta encoding makes them nearly free.
        .set_column_encoding(
            ColumnPath::from("source_row"),
            Encoding::DELTA_BINARY_PACKED,
        )
        .set_compression(COMPRESSION)
        .set_max_row_group_row_count(Some(64 * 1024))
        .build()
}

/// The Arrow schema of a dataset's snapshots.
pub fn snapshot_schema(schema: &RecordSchema) -> SchemaRef {
    let [force_id, period] = LEADING_LINEAGE;
    let mut fields = vec![
        Field::new(force_id, dict_type(), false),
        Field::new(period, DataType::Utf8, false),
    ];
    for prop in &schema.properties {
        match &prop.snapshot {
            SnapshotType::Omit => {}
            SnapshotType::Timestamp => fields.push(Field::new(
                &prop.name,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            )),
            SnapshotType::Boolean => fields.push(Field::new(&prop.name, DataType::Boolean, true)),
            SnapshotType::Float64 => fields.push(Field::new(&prop.name, DataType::Float64, true)),
            SnapshotType::Int64 => fields.push(Field::new(&prop.name, DataType::Int64, true)),
            SnapshotType::String => fields.push(Field::new(&prop.name, DataType::Utf8, true)),
            SnapshotType::Code { attributes } => {
                fields.push(Field::new(&prop.name, dict_type(), true));
                for a in attributes {
                    fields.push(Field::new(format!("{}_{a}", prop.name), dict_type(), true));
                }
            }
        }
    }
    let [submission_id, source_row] = TRAILING_LINEAGE;
    fields.push(Field::new(submission_id, DataType::Utf8, false));
    fields.push(Field::new(source_row, DataType::UInt64, false));
    Arc::new(Schema::new(fields))
}

/// Columns worth dictionary-encoding: codes and their attributes, the constant lineage
/// columns, and free text that is not declared unique.
fn dictionary_columns(arrow: &Schema, schema: &RecordSchema) -> Vec<String> {
    let unique: Vec<&str> = schema
        .properties
        .iter()
        .filter(|p| p.unique)
        .map(|p| p.name.as_str())
        .collect();
    arrow
        .fields()
        .iter()
        .filter(|f| matches!(f.data_type(), DataType::Dictionary(..) | DataType::Utf8))
        .map(|f| f.name().clone())
        .filter(|name| !unique.contains(&name.as_str()))
        .collect()
}

/// Floating-point columns, to be byte-stream split.
fn float_columns(arrow: &Schema) -> Vec<String> {
    arrow
        .fields()
        .iter()
        .filter(|f| f.data_type() == &DataType::Float64)
        .map(|f| f.name().clone())
        .collect()
}

/// Rows in one row group.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// Streams accepted rows of one submission into a Parquet file.
///
/// Dictionary columns (codes and their attributes, the constant lineage columns and text that is
/// not unique) are encoded here ([`dictionary`]) from the value numbers the checks leave in the
/// batch; every other column goes through the Arrow writer's column writers. Each row group's
/// chunks are spliced into the file in schema order.
pub struct SnapshotWriter<W: Write + Send> {
    schema: Arc<RecordSchema>,
    arrow_schema: SchemaRef,
    lineage: Lineage,
    file: SerializedFileWriter<W>,
    factory: ArrowRowGroupWriterFactory,
    /// Whether each snapshot column is dictionary-encoded here.
    dictionary: Vec<bool>,
    /// Per code-list property, its list.
    lists: Vec<Option<Arc<CodeList>>>,
    /// The row group being filled, and how many were written before it.
    group: Option<RowGroup>,
    groups: usize,
    rows: u64,
}

/// The chunks of one row group, one per snapshot column.
struct RowGroup {
    columns: Vec<Chunk>,
    rows: usize,
}

enum Chunk {
    Arrow(Box<ArrowColumnWriter>),
    Dictionary(DictColumn),
}

/// One batch's kept rows of a snapshot column: an Arrow array, one value for every row, or
/// numbered values (each batch row's number is in the batch's numberings, at `slots`).
enum Column<'a> {
    Array(ArrayRef),
    Constant(&'a [u8]),
    Numbered {
        slots: usize,
        values: Vec<Option<&'a [u8]>>,
    },
}

impl<W: Write + Send> SnapshotWriter<W> {
    /// A writer for one submission's snapshot.
    pub fn new(schema: Arc<RecordSchema>, lineage: Lineage, out: W) -> Result<Self, SnapshotError> {
        let arrow_schema = snapshot_schema(&schema);
        let dictionary_names = dictionary_columns(&arrow_schema, &schema);
        let dictionary = arrow_schema
            .fields()
            .iter()
            .map(|f| dictionary_names.contains(f.name()))
            .collect();
        let (file, factory) = ArrowWriter::try_new(
            out,
            Arc::clone(&arrow_schema),
            Some(writer_props(&[], &float_columns(&arrow_schema))),
        )?
        .into_serialized_writer()?;
        let lists = schema
            .properties
            .iter()
            .map(|p| match (&p.snapshot, &p.codelist) {
                (SnapshotType::Code { .. }, Some(list)) => Some(Arc::clone(list)),
                _ => None,
            })
            .collect();
        Ok(SnapshotWriter {
            schema,
            arrow_schema,
            lineage,
            file,
            factory,
            dictionary,
            lists,
            group: None,
            groups: 0,
            rows: 0,
        })
    }

    /// Writes the rows of `batch` where `keep` is true.
    pub fn write(&mut self, batch: &Batch, keep: &BooleanArray) -> Result<(), SnapshotError> {
        let kept = keep.true_count();
        if kept == 0 {
            return Ok(());
        }
        let rows: Vec<usize> = (0..batch.len()).filter(|&i| keep.value(i)).collect();
        let lineage = self.lineage.clone();
        let lists = self.lists.clone();
        let blank = StringArray::new_null(batch.len());
        // The value number of each batch row, per dictionary text column.
        let mut numberings: Vec<Cow<'_, [u32]>> = Vec::new();
        let mut columns: Vec<Column<'_>> = Vec::with_capacity(self.arrow_schema.fields().len());
        columns.push(Column::Constant(lineage.force_id.as_bytes()));
        columns.push(Column::Constant(lineage.period.as_bytes()));
        for (p, prop) in self.schema.properties.iter().enumerate() {
            if prop.snapshot == SnapshotType::Omit {
                continue;
            }
            let (text, distinct) = match batch.properties.iter().position(|&q| q == p) {
                Some(slot) => (
                    &batch.columns[slot],
                    batch.distinct.get(slot).and_then(Option::as_ref),
                ),
                None => (&blank, None),
            };
            let dictionary = self.dictionary[columns.len()];
            Self::typed(
                prop,
                lists[p].as_deref(),
                text,
                distinct,
                (keep, &rows),
                dictionary,
                (&mut columns, &mut numberings),
            )?;
        }
        columns.push(Column::Constant(lineage.submission_id.as_bytes()));
        columns.push(Column::Array(Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|&i| batch.rows[i]),
        ))));

        let mut start = 0;
        while start < kept {
            let mut group = match self.group.take() {
                Some(group) => group,
                None => self.new_group()?,
            };
            let n = (ROW_GROUP_ROWS - group.rows).min(kept - start);
            for ((chunk, column), field) in group
                .columns
                .iter_mut()
                .zip(&columns)
                .zip(self.arrow_schema.fields())
            {
                match (chunk, column) {
                    (Chunk::Arrow(w), Column::Array(array)) => {
                        for leaf in compute_leaves(field, &array.slice(start, n))? {
                            w.write(&leaf)?;
                        }
                    }
                    (Chunk::Dictionary(d), Column::Numbered { slots, values }) => {
                        d.push(&rows[start..start + n], &numberings[*slots], values)?;
                    }
                    (Chunk::Dictionary(d), Column::Constant(value)) => d.push_constant(value, n),
                    _ => {
                        return Err(parquet::errors::ParquetError::General(format!(
                            "column {} was built for the other writer",
                            field.name()
                        ))
                        .into());
                    }
                }
            }
            group.rows += n;
            start += n;
            if group.rows == ROW_GROUP_ROWS {
                self.write_group(group)?;
            } else {
                self.group = Some(group);
            }
        }
        self.rows += kept as u64;
        Ok(())
    }

    fn new_group(&self) -> Result<RowGroup, SnapshotError> {
        let writers = self.factory.create_column_writers(self.groups)?;
        let descr = self.file.schema_descr();
        let columns = writers
            .into_iter()
            .zip(&self.dictionary)
            .enumerate()
            .map(|(i, (w, &dictionary))| {
                if dictionary {
                    Chunk::Dictionary(DictColumn::new(descr.column(i)))
                } else {
                    Chunk::Arrow(Box::new(w))
                }
            })
            .collect();
        Ok(RowGroup { columns, rows: 0 })
    }

    /// Writes a filled row group to the file.
    fn write_group(&mut self, group: RowGroup) -> Result<(), SnapshotError> {
        let mut out = self.file.next_row_group()?;
        for chunk in group.columns {
            match chunk {
                Chunk::Arrow(w) => w.close()?.append_to_row_group(&mut out)?,
                Chunk::Dictionary(mut d) => {
                    let (bytes, close) = d.finish()?;
                    out.append_column(&bytes, close)?;
                }
            }
        }
        out.close()?;
        self.groups += 1;
        Ok(())
    }

    /// Types the kept rows of a text column (`kept` holds the mask and the row numbers) as
    /// the property's snapshot column (or columns, for a code and its attributes): an Arrow
    /// array, or, for a dictionary column, the rows' value numbers and each number's value.
    fn typed<'a>(
        prop: &Property,
        list: Option<&'a CodeList>,
        text: &'a StringArray,
        distinct: Option<&'a Distinct>,
        (keep, rows): (&BooleanArray, &[usize]),
        dictionary: bool,
        (columns, numberings): (&mut Vec<Column<'a>>, &mut Vec<Cow<'a, [u32]>>),
    ) -> Result<(), SnapshotError> {
        let n = rows.len();
        match &prop.snapshot {
            SnapshotType::Omit => {}
            SnapshotType::String if dictionary => {
                let (slots, firsts) = numbered(text, distinct);
                numberings.push(slots);
                columns.push(Column::Numbered {
                    slots: numberings.len() - 1,
                    values: firsts
                        .iter()
                        .map(|&r| Some(text.value(r as usize).as_bytes()))
                        .collect(),
                });
            }
            SnapshotType::String => columns.push(Column::Array(filter(text, keep)?)),
            SnapshotType::Timestamp => {
                let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
                for v in parsed(text, distinct, rows, parse_timestamp_micros) {
                    b.append_option(v);
                }
                columns.push(Column::Array(Arc::new(b.finish())));
            }
            SnapshotType::Boolean => {
                let mut b = BooleanBuilder::with_capacity(n);
                let boolean = |t: &str| {
                    if t.eq_ignore_ascii_case("true") {
                        Some(true)
                    } else if t.eq_ignore_ascii_case("false") {
                        Some(false)
                    } else {
                        None
                    }
                };
                for v in parsed(text, distinct, rows, boolean) {
                    b.append_option(v);
                }
                columns.push(Column::Array(Arc::new(b.finish())));
            }
            SnapshotType::Float64 => {
                let mut b = Float64Builder::with_capacity(n);
                let finite = |t: &str| crate::validate::parse_f64(t).filter(|f| f.is_finite());
                for v in parsed(text, distinct, rows, finite) {
                    b.append_option(v);
                }
                columns.push(Column::Array(Arc::new(b.finish())));
            }
            SnapshotType::Int64 => {
                let mut b = Int64Builder::with_capacity(n);
                for v in parsed(text, distinct, rows, |t| t.parse::<i64>().ok()) {
                    b.append_option(v);
                }
                columns.push(Column::Array(Arc::new(b.finish())));
            }
            SnapshotType::Code { attributes } => {
                let Some(list) = list else {
                    return Err(arrow::error::ArrowError::SchemaError(format!(
                        "{} has no code list",
                        prop.name
                    ))
                    .into());
                };
                // Each value number's code, by its canonical spelling (None when not listed).
                let (slots, firsts) = numbered(text, distinct);
                let codes: Vec<Option<u32>> = firsts
                    .iter()
                    .map(|&r| list.lookup(text.value(r as usize)).map(|(k, _)| k))
                    .collect();
                numberings.push(slots);
                let slots = numberings.len() - 1;
                columns.push(Column::Numbered {
                    slots,
                    values: codes
                        .iter()
                        .map(|k| k.map(|k| list.codes[k as usize].code.as_bytes()))
                        .collect(),
                });
                for a in attributes {
                    columns.push(Column::Numbered {
                        slots,
                        values: codes
                            .iter()
                            .map(|k| k.map(|k| list.attribute(k, a).as_bytes()))
                            .collect(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Finishes the file with the upload's SHA-256 in its lineage (known only once the whole
    /// upload has been read); returns the rows written and the writer.
    pub fn finish(mut self, sha256: &str) -> Result<(u64, W), SnapshotError> {
        if let Some(group) = self.group.take() {
            self.write_group(group)?;
        }
        sha256.clone_into(&mut self.lineage.sha256);
        for kv in self.lineage.key_values() {
            self.file.append_key_value_metadata(kv);
        }
        let rows = self.rows;
        let out = self.file.into_inner()?;
        Ok((rows, out))
    }
}

/// The kept `rows` of a text column read by `parse` (`None` for an empty cell or one `parse`
/// refuses): each distinct value once when the checks numbered them, else each row.
fn parsed<'a, T: Copy + 'a>(
    text: &'a StringArray,
    distinct: Option<&'a Distinct>,
    rows: &'a [usize],
    parse: impl Fn(&str) -> Option<T> + 'a,
) -> Box<dyn Iterator<Item = Option<T>> + 'a> {
    match distinct {
        Some(d) => {
            let values: Vec<Option<T>> = d
                .first
                .iter()
                .map(|&r| parse(text.value(r as usize)))
                .collect();
            Box::new(
                rows.iter()
                    .map(move |&i| values.get(d.of_row[i] as usize).copied().flatten()),
            )
        }
        None => Box::new(rows.iter().map(move |&i| cell(text, i).and_then(&parse))),
    }
}

/// A text column's rows numbered by value: per row its number (or [`dictionary::BLANK`]),
/// and per number the row holding its value. The checks' numbering is used when they made one;
/// otherwise the values are numbered here.
fn numbered<'a>(text: &StringArray, distinct: Option<&'a Distinct>) -> (Cow<'a, [u32]>, Vec<u32>) {
    if let Some(d) = distinct {
        return (Cow::Borrowed(&d.of_row), d.first.clone());
    }
    let mut seen: HashMap<&str, u32, foldhash::fast::FixedState> = HashMap::default();
    let mut firsts = Vec::new();
    let slots = (0..text.len())
        .map(|i| match cell(text, i) {
            None => dictionary::BLANK,
            Some(t) => *seen.entry(t).or_insert_with(|| {
                firsts.push(i as u32);
                (firsts.len() - 1) as u32
            }),
        })
        .collect();
    (Cow::Owned(slots), firsts)
}

/// Microseconds since the epoch of an RFC 3339 date-time or a plain date (midnight UTC).
pub fn parse_timestamp_micros(text: &str) -> Option<i64> {
    fast_timestamp_micros(text.as_bytes()).or_else(|| {
        if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(text) {
            return Some(dt.timestamp_micros());
        }
        chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc().timestamp_micros())
    })
}

/// The common shapes (`YYYY-MM-DD` and `YYYY-MM-DDTHH:MM:SS[.f]±HH:MM|Z`) without chrono's
/// general parser; anything else (leap seconds included) is left to it.
fn fast_timestamp_micros(b: &[u8]) -> Option<i64> {
    let num = |s: &[u8]| -> Option<i64> {
        s.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(num(&b[..4])?).ok()?,
        u32::try_from(num(&b[5..7])?).ok()?,
        u32::try_from(num(&b[8..10])?).ok()?,
    )?;
    let day_start = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp() * 1_000_000;
    if b.len() == 10 {
        return Some(day_start);
    }
    if b.len() < 20 || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, m, sec) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    if h > 23 || m > 59 || sec > 59 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0;
    if b[i] == b'.' {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let kept = &b[i + 1..i + 1 + digits.min(6)];
        micros = num(kept)? * 10i64.pow(6 - u32::try_from(kept.len()).ok()?);
        i += 1 + digits;
    }
    let offset = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), oh1, oh2, b':', om1, om2] => {
            let (oh, om) = (num(&[*oh1, *oh2])?, num(&[*om1, *om2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let minutes = oh * 60 + om;
            if *sign == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };
    Some(day_start + ((h * 60 + m - offset) * 60 + sec) * 1_000_000 + micros)
}

/// One row of the `quality/submissions` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmissionRecord {
    /// Submission id.
    pub submission_id: String,
    /// Dataset.
    pub dataset: String,
    /// Force id, when known.
    pub force_id: Option<String>,
    /// Period, when known.
    pub period: Option<String>,
    /// Upload key.
    pub source_key: String,
    /// SHA-256.
    pub sha256: String,
    /// Size.
    pub bytes: u64,
    /// Upload time (RFC 3339).
    pub uploaded_at: String,
    /// Processing time (RFC 3339).
    pub processed_at: String,
    /// Schema id.
    pub schema_id: String,
    /// Decision.
    pub decision: String,
    /// Records read.
    pub rows_read: u64,
    /// Rows in the snapshot.
    pub rows_accepted: u64,
    /// Rows with errors.
    pub error_rows: u64,
    /// Error findings.
    pub errors: u64,
    /// Warning findings.
    pub warnings: u64,
    /// Info findings.
    pub infos: u64,
    /// Snapshot key, when accepted.
    pub snapshot_key: Option<String>,
}

/// The `quality/submissions` table file for one submission.
pub fn submissions_parquet(record: &SubmissionRecord) -> Result<Vec<u8>, SnapshotError> {
    let s = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let u = |name: &str| Field::new(name, DataType::UInt64, false);
    let schema = Arc::new(Schema::new(vec![
        s("submission_id", false),
        s("dataset", false),
        s("force_id", true),
        s("period", true),
        s("source_key", false),
        s("sha256", false),
        u("bytes"),
        s("uploaded_at", false),
        s("processed_at", false),
        s("schema_id", false),
        s("decision", false),
        u("rows_read"),
        u("rows_accepted"),
        u("error_rows"),
        u("errors"),
        u("warnings"),
        u("infos"),
        s("snapshot_key", true),
    ]));
    let text = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
    let opt = |v: &Option<String>| Arc::new(StringArray::from(vec![v.as_deref()])) as ArrayRef;
    let num = |v: u64| Arc::new(UInt64Array::from(vec![v])) as ArrayRef;
    let r = record;
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            text(&r.submission_id),
            text(&r.dataset),
            opt(&r.force_id),
            opt(&r.period),
            text(&r.source_key),
            text(&r.sha256),
            num(r.bytes),
            text(&r.uploaded_at),
            text(&r.processed_at),
            text(&r.schema_id),
            text(&r.decision),
            num(r.rows_read),
            num(r.rows_accepted),
            num(r.error_rows),
            num(r.errors),
            num(r.warnings),
            num(r.infos),
            opt(&r.snapshot_key),
        ],
    )?;
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema, Some(writer_props(&[], &[])))?;
    w.write(&batch)?;
    w.close()?;
    Ok(out)
}

const MASK: &str = "***";

/// Streams the findings it is given (capped per code by the log) into the central
/// `quality/findings` table, masking personal values.
pub struct QualityFindingSink<W: Write + Send> {
    writer: ArrowWriter<W>,
    schema: SchemaRef,
    submission_id: String,
    masked_columns: HashSet<String>,
    pending: Vec<Finding>,
}

impl<W: Write + Send> QualityFindingSink<W> {
    /// A sink for one submission. `masked_columns` are header spellings of personal columns.
    pub fn new(
        out: W,
        submission_id: String,
        masked_columns: HashSet<String>,
    ) -> Result<Self, SnapshotError> {
        let s = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
        let schema = Arc::new(Schema::new(vec![
            s("submission_id", false),
            Field::new("row", DataType::UInt64, true),
            s("column", true),
            Field::new("severity", dict_type(), false),
            Field::new("code", dict_type(), false),
            s("message", false),
            s("value", true),
            s("rule", false),
            s("schema_path", true),
            s("cell", true),
        ]));
        let writer = ArrowWriter::try_new(
            out,
            Arc::clone(&schema),
            Some(writer_props(
                &["column", "rule", "schema_path"].map(String::from),
                &[],
            )),
        )?;
        Ok(QualityFindingSink {
            writer,
            schema,
            submission_id,
            masked_columns,
            pending: Vec::new(),
        })
    }

    fn flush(&mut self) -> Result<(), SnapshotError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let n = self.pending.len();
        let mut message = StringBuilder::new();
        let mut value = StringBuilder::new();
        for f in &self.pending {
            let masked = f
                .column
                .as_ref()
                .is_some_and(|c| self.masked_columns.contains(c));
            match (&f.value, masked) {
                (Some(v), true) => {
                    message.append_value(if v.is_empty() {
                        f.message.clone()
                    } else {
                        f.message.replace(v.as_str(), MASK)
                    });
                    value.append_value(MASK);
                }
                (v, false) => {
                    message.append_value(&f.message);
                    value.append_option(v.as_deref());
                }
                (None, true) => {
                    message.append_value(&f.message);
                    value.append_null();
                }
            }
        }
        let dict = |values: Vec<&str>| -> ArrayRef {
            Arc::new(values.into_iter().collect::<DictionaryArray<Int32Type>>())
        };
        let p = &self.pending;
        let batch = RecordBatch::try_new(
            Arc::clone(&self.schema),
            vec![
                Arc::new(StringArray::from(vec![self.submission_id.as_str(); n])),
                Arc::new(UInt64Array::from(
                    p.iter().map(|f| f.row).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    p.iter().map(|f| f.column.as_deref()).collect::<Vec<_>>(),
                )),
                dict(p.iter().map(|f| f.severity.as_str()).collect()),
                dict(p.iter().map(|f| f.code.as_str()).collect()),
                Arc::new(message.finish()),
                Arc::new(value.finish()),
                Arc::new(StringArray::from(
                    p.iter().map(|f| f.rule.as_str()).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    p.iter()
                        .map(|f| f.schema_path.as_deref())
                        .collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    p.iter().map(|f| f.cell.as_deref()).collect::<Vec<_>>(),
                )),
            ],
        )?;
        self.writer.write(&batch)?;
        // One row group per batch of findings: a file with hundreds of thousands of findings
        // must not hold them all, encoded, in memory until the end.
        self.writer.flush()?;
        self.pending.clear();
        Ok(())
    }

    /// Finishes the file and returns the writer.
    pub fn finish(mut self) -> Result<W, SnapshotError> {
        self.flush()?;
        Ok(self.writer.into_inner()?)
    }
}

impl<W: Write + Send> FindingSink for QualityFindingSink<W> {
    fn accept(&mut self, finding: &Finding) -> std::io::Result<()> {
        self.pending.push(finding.clone());
        if self.pending.len() >= 8192 {
            self.flush().map_err(std::io::Error::other)?;
        }
        Ok(())
    }
}

/// Sends each finding to two sinks.
pub struct Tee<'a>(pub &'a mut dyn FindingSink, pub &'a mut dyn FindingSink);

impl FindingSink for Tee<'_> {
    fn accept(&mut self, f: &Finding) -> std::io::Result<()> {
        self.0.accept(f)?;
        self.1.accept(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `batch` (keeping every row but each fifth) as a stop-and-search snapshot and
    /// reads it back.
    fn written(schema: &Arc<RecordSchema>, batch: &Batch) -> Vec<RecordBatch> {
        let lineage = Lineage {
            dataset: "stop_search".into(),
            force_id: "kent".into(),
            period: "2024-03".into(),
            submission_id: "s1".into(),
            source_key: "incoming/kent/stop_search/2024-03/a.csv".into(),
            sha256: String::new(),
            schema_id: "stop_search/v1".into(),
            schema_version: "1".into(),
            catalogue_version: None,
            ingested_at: "2024-04-01T00:00:00Z".into(),
        };
        let keep = BooleanArray::from((0..batch.len()).map(|i| i % 5 != 3).collect::<Vec<_>>());
        let mut writer = SnapshotWriter::new(Arc::clone(schema), lineage, Vec::new()).unwrap();
        // Twice, so that a row group ends inside the second batch.
        writer.write(batch, &keep).unwrap();
        writer.write(batch, &keep).unwrap();
        let (rows, bytes) = writer.finish("abc").unwrap();
        assert_eq!(rows, 2 * keep.true_count() as u64);
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(
            bytes,
        ))
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// `check-config` finds clashing names from the schema's list of snapshot columns, so that
    /// list must be what the writer writes.
    #[test]
    fn the_schema_names_the_columns_the_writer_writes() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let project = crate::config::Project::load(root).unwrap();
        for pipeline in project.pipelines.values() {
            let names: Vec<String> = snapshot_schema(&pipeline.schema)
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            assert_eq!(
                names,
                pipeline.schema.snapshot_columns(),
                "{}",
                pipeline.dataset
            );
        }
        // The comparison covers attribute columns (`<property>_<attribute>`) too.
        let attributes = |s: &RecordSchema| {
            s.properties.iter().any(
                |p| matches!(&p.snapshot, SnapshotType::Code { attributes } if !attributes.is_empty()),
            )
        };
        assert!(project.pipelines.values().any(|p| attributes(&p.schema)));
    }

    #[test]
    fn values_numbered_by_the_checks_or_here_are_written_alike() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let project = crate::config::Project::load(root).unwrap();
        let schema = Arc::clone(&project.pipeline("stop_search").unwrap().schema);
        let n = 40_000;
        let mut properties = Vec::new();
        let mut columns = Vec::new();
        for (p, prop) in schema.properties.iter().enumerate() {
            let cell = |i: usize| -> Option<String> {
                if i.is_multiple_of(7) {
                    return None;
                }
                Some(match (&prop.codelist, &prop.snapshot) {
                    (Some(_), _) if i.is_multiple_of(11) => "not listed".to_owned(),
                    (Some(list), _) => list.codes[i % list.codes.len()].code.clone(),
                    (None, SnapshotType::Timestamp) => format!("2024-03-{:02}", 1 + i % 28),
                    (None, SnapshotType::Boolean) => ["true", "FALSE", "maybe"][i % 3].to_owned(),
                    (None, SnapshotType::Float64) => format!("51.{}", i % 90),
                    (None, SnapshotType::Int64) => (i % 13).to_string(),
                    _ if prop.unique => format!("id{i}"),
                    _ => format!("text {}", i % 6),
                })
            };
            properties.push(p);
            columns.push((0..n).map(cell).collect::<StringArray>());
        }
        // The checks' numbering: each column's values in the order they first appear.
        let distinct = columns
            .iter()
            .map(|c| {
                let mut numbers: HashMap<&str, u32> = HashMap::new();
                let mut d = Distinct::default();
                for i in 0..c.len() {
                    d.of_row.push(cell(c, i).map_or(Distinct::BLANK, |t| {
                        *numbers.entry(t).or_insert_with(|| {
                            d.first.push(i as u32);
                            d.first.len() as u32 - 1
                        })
                    }));
                }
                Some(d)
            })
            .collect();
        let mut batch = Batch {
            properties: Arc::from(properties),
            columns,
            rows: (2..n as u64 + 2).collect(),
            row_hashes: vec![0; n],
            distinct: Vec::new(),
        };
        let plain = written(&schema, &batch);
        batch.distinct = distinct;
        let numbered = written(&schema, &batch);
        assert_eq!(plain, numbered);
        let rows: usize = numbered.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 2 * (n - n / 5));
        assert!(numbered.len() > 1, "more than one row group");
        // A listed code is written as itself, an unlisted one (and a blank) as null.
        let sde = numbered[0]
            .column_by_name("self_defined_ethnicity")
            .unwrap();
        let sde = arrow::compute::cast(sde, &DataType::Utf8).unwrap();
        let sde = sde.as_any().downcast_ref::<StringArray>().unwrap();
        let list = schema
            .properties
            .iter()
            .find(|p| p.name == "self_defined_ethnicity")
            .and_then(|p| p.codelist.clone())
            .unwrap();
        let kept = (0..n).filter(|i| i % 5 != 3);
        for (j, i) in kept.take(200).enumerate() {
            let want =
                (i % 7 != 0 && i % 11 != 0).then(|| list.codes[i % list.codes.len()].code.as_str());
            assert_eq!(sde.is_valid(j).then(|| sde.value(j)), want, "row {i}");
        }
    }

    #[test]
    fn the_fast_timestamp_path_agrees_with_chrono() {
        for t in [
            "2020-01-01T00:46:34+00:00",
            "2020-01-01T00:46:34.5-05:30",
            "2019-12-31T23:59:59.1234567z",
            "2020-02-29T12:00:00Z",
            "1969-07-20T20:17:40+14:00",
        ] {
            let chrono = chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .timestamp_micros();
            assert_eq!(fast_timestamp_micros(t.as_bytes()), Some(chrono), "{t}");
        }
        for t in [
            "2020-02-30",
            "2020-01-01T24:00:00Z",
            "2020-01-01T00:00:00",
            "2020-01-01 00:00:00Z",
        ] {
            assert_eq!(fast_timestamp_micros(t.as_bytes()), None, "{t}");
        }
        // A leap second is left to chrono.
        assert!(parse_timestamp_micros("2016-12-31T23:59:60Z").is_some());
    }

    #[test]
    fn timestamps_parse_with_offsets_and_plain_dates() {
        assert_eq!(parse_timestamp_micros("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_timestamp_micros("1970-01-02"), Some(86_400_000_000));
        assert_eq!(parse_timestamp_micros("yesterday"), None);
    }
}
