//! Decoding: uploaded bytes → Arrow batches of text columns, plus decode findings.
//!
//! The decoder streams: it reads the input in fixed-size chunks and hands out batches of at
//! most `batch_rows` records or 16 MiB of text, so memory stays bounded whatever the file size
//! and however long or wide its rows (no record keeps more cells than the header has, nor the
//! header more than `max_columns`). A plain line (no quotes) is split where it lies, its
//! delimiters found sixteen bytes at a time; any quoted line goes through `csv-core`, and a
//! property test keeps the two readings identical.
//! It never fails on bad data. Binary content, an empty file, an unusable header, rows with
//! the wrong number of cells, bytes that cannot be read and over-long cells each become
//! [`Finding`]s with row and column; a row with such a problem is left out of the batch (it is
//! still in the archived upload, so nothing is lost). Values are kept exactly as sent except
//! that an empty cell becomes null; typing is `validate`'s and `snapshot`'s job.
//!
//! Accepted, each with a note where it is not plain CSV: UTF-8 with or without BOM, and UTF-16
//! and Windows-1252, converted as they are read ([`crate::encoding`], decided once from the first
//! chunk); CRLF or LF line ends; RFC 4180 quoting (quoted cells may hold delimiters, quotes and
//! line breaks); commas, or the semicolons or tabs the header is found to use, or the delimiter
//! an Excel `sep=` first line names; title rows above the header and empty cells at its end
//! (`header` finds the header in the first chunk). Rows made only of delimiters and white
//! space, and empty lines, are skipped and counted. Rows are numbered as a spreadsheet counts
//! them: every line is a row (an Excel `sep=` line excepted), so the header is row 1 unless rows
//! stand above it.

use std::io::Read;
use std::sync::Arc;

use arrow::array::{Array, StringArray, StringBuilder};
use twox_hash::XxHash3_128;

use crate::encoding::{Detected, Encoding, Source, Transcoder};
use crate::finding::{Code, Finding, FindingLog};
use crate::model::Limits;
use crate::schema::RecordSchema;

mod header;
pub mod tables;
pub mod workbook;

use header::{Found, Header};

/// How many records a batch holds at most.
pub const DEFAULT_BATCH_ROWS: usize = 16 * 1024;

/// A batch also ends once its records hold this many bytes, so that long rows (up to the cell
/// limit in every column) keep memory bounded too.
const BATCH_TEXT_BYTES: usize = 16 << 20;

const CHUNK: usize = 256 * 1024;

/// How the upload's header maps to schema properties.
#[derive(Debug, Clone)]
pub struct HeaderMap {
    /// Header cells as sent.
    pub headers: Vec<String>,
    /// For each CSV column, the property it feeds.
    pub column_property: Vec<Option<usize>>,
    /// For each schema property, the CSV column holding it.
    pub property_column: Vec<Option<usize>>,
}

impl HeaderMap {
    /// The header spelling of a property's column, or its name when absent.
    pub fn column_name<'a>(&'a self, schema: &'a RecordSchema, property: usize) -> &'a str {
        self.property_column[property].map_or(schema.properties[property].name.as_str(), |c| {
            self.headers[c].as_str()
        })
    }
}

/// A batch of decoded rows: one text array per mapped property.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The property index of each array.
    pub properties: Arc<[usize]>,
    /// Text columns; null where the cell was empty.
    pub columns: Vec<StringArray>,
    /// Spreadsheet row number of each row.
    pub rows: Vec<u64>,
    /// A 128-bit hash of each row's decoded cells (equal rows, equal hashes).
    pub row_hashes: Vec<u128>,
    /// Per column, its values numbered, when the checks numbered them (columns of few distinct
    /// values): the snapshot writer then looks each value up once, not once a row. Empty until
    /// the checks have seen the batch.
    pub distinct: Vec<Option<Distinct>>,
}

/// One column's distinct values in a batch, numbered in the order they first appear.
#[derive(Debug, Clone, Default)]
pub struct Distinct {
    /// Per row, the number of its value, or [`Distinct::BLANK`] for an empty cell.
    pub of_row: Vec<u32>,
    /// Per number, the first row holding that value.
    pub first: Vec<u32>,
}

impl Distinct {
    /// The number of an empty cell.
    pub const BLANK: u32 = u32::MAX;
}

impl Batch {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The column of a property, when the header has it.
    pub fn column(&self, property: usize) -> Option<&StringArray> {
        self.properties
            .iter()
            .position(|&p| p == property)
            .map(|i| &self.columns[i])
    }
}

/// Counts kept while decoding.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeStats {
    /// Records read after the header (including rows with decode problems).
    pub records: u64,
    /// Records left out because they could not be decoded.
    pub rejected_rows: u64,
    /// Bytes read.
    pub bytes: u64,
}

/// Streaming CSV decoder. Create with [`CsvDecoder::start`].
pub struct CsvDecoder<R> {
    input: Source<R>,
    /// How the file is encoded (read once from its first bytes).
    detected: Detected,
    core: csv_core::Reader,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    eof: bool,
    out: Vec<u8>,
    ends: Vec<usize>,
    header: HeaderMap,
    properties: Arc<[usize]>,
    limits: Limits,
    batch_rows: usize,
    stats: DecodeStats,
    finished: bool,
    /// Text bytes of each mapped column in the last batch.
    value_bytes: Vec<usize>,
    /// The file's delimiter (a comma unless the header or a `sep=` line said otherwise).
    delimiter: u8,
    /// How many cells the header has, empty ones at its end included: a row may have that
    /// many when the cells past the named columns are empty.
    raw_width: usize,
    /// The last record csv-core read ended with a `\r`: a `\n` right after it completes that
    /// line end and is not an empty row.
    after_cr: bool,
    /// The spreadsheet row of the last line read (records and empty rows alike).
    row: u64,
    /// Cells kept of one record: a record with more is counted, not held, so memory stays
    /// within this many cells whatever the file's shape.
    cap: usize,
    /// Rows made only of delimiters and white space, skipped.
    blank: BlankRows,
    /// A csv-core record written back as plain as CSV allows, for the row hash.
    joined: Vec<u8>,
}

/// What one read of the input gave.
enum RawRecord {
    /// A record that is not blank.
    Line(Line),
    /// An empty line, or a record made only of delimiters and white space.
    Blank,
}

/// A record that is not blank.
enum Line {
    /// A record of `len` bytes whose cells end at `ends`: split by csv-core into `out` with
    /// nothing between cells (`at` is `None`), or a plain line of `buf` starting at `at`, its
    /// cells separated by one delimiter.
    Complete {
        at: Option<usize>,
        len: usize,
        fields: usize,
    },
    /// A record with a cell over the limit (`field`, counted from 0). `spans_lines`: the cell
    /// was seen to hold line breaks, so it is quoted, and its quote is probably never closed.
    CellTooLong { field: usize, spans_lines: bool },
    /// A record with more cells than are kept (`fields` of them).
    TooManyCells { fields: usize },
}

/// The rows made only of delimiters and white space that were skipped: how many, and the
/// first few runs of consecutive ones (for the note to the force).
#[derive(Debug, Default)]
struct BlankRows {
    count: u64,
    runs: Vec<(u64, u64)>,
}

impl BlankRows {
    const RUNS_SHOWN: usize = 5;

    fn add(&mut self, row: u64) {
        self.count += 1;
        if let Some((_, last)) = self.runs.last_mut()
            && *last + 1 == row
        {
            *last = row;
        } else if self.runs.len() < Self::RUNS_SHOWN {
            self.runs.push((row, row));
        }
    }

    /// The note, when rows were skipped.
    fn finding(&self, delimiter: u8) -> Option<Finding> {
        if self.count == 0 {
            return None;
        }
        let listed: u64 = self.runs.iter().map(|(a, b)| b - a + 1).sum();
        let rows = self
            .runs
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a} to {b}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let more = if listed < self.count {
            format!(" and {} more", self.count - listed)
        } else {
            String::new()
        };
        let (many, them) = if self.count == 1 {
            ("row", "it was")
        } else {
            ("rows", "they were")
        };
        Some(Finding::new(
            Code::BlankRowsSkipped,
            format!(
                "{} {many} held nothing but {}, spaces or nothing at all ({} {rows}{more}): {them} skipped",
                self.count,
                delimiter_name(delimiter),
                if self.count == 1 { "row" } else { "rows" },
            ),
            "blank rows",
        ))
    }
}

/// A hint when a header cell holds semicolons or tabs: the file may use them as delimiter
/// where its header names no column with them either.
fn other_delimiter(cell: &str, delimiter: u8) -> String {
    [b';', b'\t']
        .into_iter()
        .filter(|&d| d != delimiter)
        .map(|d| (d, cell.bytes().filter(|&b| b == d).count()))
        .find(|&(_, n)| n >= 2)
        .map(|(d, n)| {
            let name = delimiter_name(d);
            format!(" (it holds {n} {name}: are the file's cells separated by {name}?)")
        })
        .unwrap_or_default()
}

/// The plural name of a delimiter, for messages.
fn delimiter_name(delimiter: u8) -> String {
    match delimiter {
        b',' => "commas".to_owned(),
        b';' => "semicolons".to_owned(),
        b'\t' => "tabs".to_owned(),
        b'|' => "vertical bars".to_owned(),
        other => format!("`{}` characters", char::from(other)),
    }
}

/// What starting to decode gave.
pub enum Start<R> {
    /// The header is usable; rows can be read.
    Rows(Box<CsvDecoder<R>>),
    /// The file cannot be read as rows (the reasons are in the log).
    Stopped(DecodeStats),
}

impl<R: Read> CsvDecoder<R> {
    /// Reads the header and checks it against `schema`. File-level findings (empty, binary,
    /// header problems) go to `log`; when any of them is an error no rows are read.
    pub fn start(
        mut input: R,
        schema: &RecordSchema,
        limits: Limits,
        batch_rows: usize,
        log: &mut FindingLog<'_>,
    ) -> std::io::Result<Start<R>> {
        let mut raw = vec![0u8; CHUNK];
        let raw_len = read_full(&mut input, &mut raw)?;
        let detected = crate::encoding::detect(&raw[..raw_len], raw_len < CHUNK);
        // Only a file that is not UTF-8 is converted as it is read.
        let (input, buf, len) = if detected.encoding == Encoding::Utf8 {
            let consumed = raw_len as u64;
            (
                Source::Utf8 { input, consumed },
                raw.into_boxed_slice(),
                raw_len,
            )
        } else {
            raw.truncate(raw_len);
            let transcoder =
                Transcoder::new(input, detected.encoding, raw, detected.bom, raw_len < CHUNK);
            let mut source = Source::Transcoded(transcoder);
            let mut buf = vec![0u8; CHUNK].into_boxed_slice();
            let len = read_full(&mut source, &mut buf)?;
            (source, buf, len)
        };
        let stats = DecodeStats {
            bytes: input.consumed(),
            ..DecodeStats::default()
        };
        let skip = if detected.encoding == Encoding::Utf8 {
            detected.bom
        } else {
            0
        };
        let head = &buf[skip..len];
        if head.trim_ascii().is_empty() {
            log.push(Finding::new(
                Code::FileEmpty,
                "the file is empty: it has no header and no records",
                "file has content",
            ));
            return Ok(Start::Stopped(stats));
        }
        if looks_binary(head) {
            log.push(Finding::new(
                Code::FileNotText,
                "the file is not text: it holds binary data, such as a spreadsheet or archive, not CSV",
                "file is text",
            ));
            return Ok(Start::Stopped(stats));
        }
        if let Some(note) = encoding_note(detected) {
            log.push(note);
        }
        let eof = len < CHUNK;
        let found = match header::find(&buf[skip..len], eof, schema, &limits) {
            Header::Found(found) => found,
            Header::TooWide { row, fields, ends } => {
                let max = limits.max_columns;
                let message = if ends {
                    format!(
                        "the header has {fields} cells, more than the limit of {max} columns: the file was not read further"
                    )
                } else {
                    format!(
                        "the header has more cells than the limit of {max} columns ({fields} in the first 256 KiB of the file alone): the file was not read further"
                    )
                };
                log.push(Finding::new(Code::TooManyColumns, message, "max_columns").at_row(row));
                return Ok(Start::Stopped(stats));
            }
            Header::TooLong { row, in_chunk } => {
                let message = if in_chunk {
                    format!(
                        "a header cell is longer than {} bytes: the first row is not a header",
                        limits.max_cell_bytes
                    )
                } else {
                    "the first row runs past the first 256 KiB of the file without ending: it is not a header".to_owned()
                };
                log.push(Finding::new(Code::CellTooLong, message, "max_cell_bytes").at_row(row));
                log.push(Finding::new(
                    Code::HeaderMissingColumn,
                    "no usable header: every required column is missing",
                    "required",
                ));
                return Ok(Start::Stopped(stats));
            }
            Header::Blank { eof } => {
                let (code, message) = if eof {
                    (
                        Code::FileEmpty,
                        "the file holds nothing but empty rows and delimiters: it has no header and no records",
                    )
                } else {
                    (
                        Code::HeaderMissingColumn,
                        "the first 256 KiB of the file hold nothing but empty rows and delimiters: no header was found",
                    )
                };
                log.push(Finding::new(code, message, "file has content"));
                return Ok(Start::Stopped(stats));
            }
        };
        for note in header_notes(&found) {
            log.push(note);
        }
        let mut decoder = CsvDecoder {
            input,
            detected,
            core: csv_core::ReaderBuilder::new()
                .delimiter(found.delimiter)
                .build(),
            delimiter: found.delimiter,
            buf,
            pos: skip + found.end,
            len,
            eof,
            out: vec![0; 4096],
            ends: vec![0; 64],
            header: HeaderMap {
                headers: Vec::new(),
                column_property: Vec::new(),
                property_column: vec![None; schema.properties.len()],
            },
            properties: Arc::from(Vec::new()),
            limits,
            batch_rows: batch_rows.max(1),
            stats,
            finished: false,
            value_bytes: Vec::new(),
            after_cr: found.after_cr,
            row: found.row,
            cap: found.width + 1,
            raw_width: found.width,
            blank: BlankRows::default(),
            joined: Vec::new(),
        };
        let ok = decoder.map_header(found.cells, schema, log);
        if ok {
            Ok(Start::Rows(Box::new(decoder)))
        } else {
            Ok(Start::Stopped(decoder.stats))
        }
    }

    fn map_header(
        &mut self,
        headers: Vec<String>,
        schema: &RecordSchema,
        log: &mut FindingLog<'_>,
    ) -> bool {
        let mut column_property = Vec::with_capacity(headers.len());
        let mut property_column: Vec<Option<usize>> = vec![None; schema.properties.len()];
        for (col, cell) in headers.iter().enumerate() {
            match schema.match_header(cell) {
                Some(p) if property_column[p].is_some() => {
                    log.push(
                        Finding::new(
                            Code::HeaderDuplicateColumn,
                            format!(
                                "header cell `{cell}` (column {}) names `{}` again",
                                col + 1,
                                schema.properties[p].title
                            ),
                            "unique header",
                        )
                        .at_row(self.row)
                        .in_column(cell.clone()),
                    );
                    column_property.push(None);
                }
                Some(p) => {
                    property_column[p] = Some(col);
                    column_property.push(Some(p));
                }
                None => {
                    log.push(
                        Finding::new(
                            Code::HeaderUnknownColumn,
                            format!(
                                "header cell `{cell}` (column {}) is not a column of the schema; it is ignored{}",
                                col + 1,
                                other_delimiter(cell, self.delimiter)
                            ),
                            "known header",
                        )
                        .at_row(self.row)
                        .in_column(cell.clone()),
                    );
                    column_property.push(None);
                }
            }
        }
        for name in &schema.required {
            if let Some(p) = schema.properties.iter().position(|q| &q.name == name)
                && property_column[p].is_none()
            {
                let prop = &schema.properties[p];
                let spelling = prop.aliases.first().unwrap_or(&prop.name);
                log.push(
                    Finding::new(
                        Code::HeaderMissingColumn,
                        format!("the header has no `{spelling}` column"),
                        "required",
                    )
                    .at_row(self.row)
                    .in_column(spelling.clone())
                    .with_schema_path("/required"),
                );
            }
        }
        self.properties = property_column
            .iter()
            .enumerate()
            .filter_map(|(p, c)| c.map(|_| p))
            .collect::<Vec<_>>()
            .into();
        // A first guess for the first batch: eight bytes a cell.
        self.value_bytes = vec![self.batch_rows * 8; self.properties.len()];
        self.header = HeaderMap {
            headers,
            column_property,
            property_column,
        };
        !log.has_file_error()
    }

    /// The header mapping.
    pub fn header(&self) -> &HeaderMap {
        &self.header
    }

    /// Counts so far.
    pub fn stats(&self) -> DecodeStats {
        self.stats
    }

    /// The next batch, or `None` at the end. Problem rows are reported in `found` and left out.
    pub fn next_batch(&mut self, found: &mut Vec<Finding>) -> std::io::Result<Option<Batch>> {
        if self.finished {
            return Ok(None);
        }
        let width = self.header.headers.len();
        // Each column's text buffer is sized from the previous batch (plus a margin), so batches
        // neither over-reserve short columns nor grow long ones by doubling.
        let mut builders: Vec<StringBuilder> = self
            .value_bytes
            .iter()
            .map(|&bytes| StringBuilder::with_capacity(self.batch_rows, bytes + bytes / 8))
            .collect();
        let slot: Vec<Option<usize>> = self
            .header
            .column_property
            .iter()
            .map(|p| p.and_then(|p| self.properties.iter().position(|&q| q == p)))
            .collect();
        let mut rows = Vec::with_capacity(self.batch_rows);
        let mut row_hashes = Vec::with_capacity(self.batch_rows);
        let mut text_bytes = 0;
        while rows.len() < self.batch_rows && text_bytes < BATCH_TEXT_BYTES {
            if self.stats.records >= self.limits.max_rows {
                if self.next_record()?.is_some() {
                    found.push(Finding::new(
                        Code::TooManyRows,
                        format!(
                            "the file has more than {} records; records from row {} on were not read",
                            self.limits.max_rows, self.row
                        ),
                        "max_rows",
                    ));
                }
                self.finished = true;
                break;
            }
            if self.stats.bytes > self.limits.max_file_bytes {
                found.push(Finding::new(
                    Code::FileTooLarge,
                    format!(
                        "the file is larger than {} bytes; the rest was not read",
                        self.limits.max_file_bytes
                    ),
                    "max_file_bytes",
                ));
                self.finished = true;
                break;
            }
            let Some(line) = self.next_record()? else {
                self.finished = true;
                break;
            };
            self.stats.records += 1;
            let row = self.row;
            match line {
                Line::TooManyCells { fields } => {
                    self.stats.rejected_rows += 1;
                    found.push(
                        Finding::new(
                            Code::RowTooManyFields,
                            format!("the row has {fields} cells, more than the header's {width}"),
                            "cells per row = header",
                        )
                        .at_row(row),
                    );
                }
                Line::CellTooLong { field, spans_lines } => {
                    self.stats.rejected_rows += 1;
                    let column = self
                        .header
                        .headers
                        .get(field)
                        .cloned()
                        .unwrap_or_else(|| format!("column {}", field + 1));
                    let extra = if spans_lines {
                        " and spans several lines: probably a quote that is never closed"
                    } else {
                        ""
                    };
                    found.push(
                        Finding::new(
                            Code::CellTooLong,
                            format!(
                                "the cell is longer than the limit of {} bytes{extra}",
                                self.limits.max_cell_bytes
                            ),
                            "max_cell_bytes",
                        )
                        .at_row(row)
                        .in_column(column),
                    );
                }
                Line::Complete { at, len, fields } => {
                    let (bytes, sep) = record(&self.buf, &self.out, at, len);
                    // Cells under the header's empty cells at its end are dropped when empty.
                    let (len, fields) = self.without_empty_tail(len, fields, sep, width);
                    let bytes = &bytes[..len];
                    if fields != width {
                        self.stats.rejected_rows += 1;
                        found.push(self.wrong_width(bytes, sep, fields, width).at_row(row));
                        continue;
                    }
                    let Ok(record) = simdutf8::basic::from_utf8(bytes) else {
                        self.stats.rejected_rows += 1;
                        self.report_bad_utf8(at, len, row, fields, found);
                        continue;
                    };
                    // The record is valid UTF-8 as a whole, and cells end at ASCII delimiters,
                    // so every cell is a char-boundary slice of it: no second check per cell.
                    for (col, range) in cell_ranges(&self.ends[..fields], sep).enumerate() {
                        if let Some(s) = slot[col] {
                            if range.is_empty() {
                                builders[s].append_null();
                            } else {
                                builders[s].append_value(&record[range]);
                            }
                        }
                    }
                    text_bytes += len;
                    rows.push(row);
                    row_hashes.push(self.row_hash(at, len, fields));
                }
            }
        }
        if self.finished
            && let Some(note) = self.blank.finding(self.delimiter)
        {
            found.push(note);
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let columns = builders
            .iter_mut()
            .map(StringBuilder::finish)
            .collect::<Vec<_>>();
        for (hint, column) in self.value_bytes.iter_mut().zip(&columns) {
            *hint = column.value_data().len();
        }
        debug_assert!(columns.iter().all(|c| c.len() == rows.len()));
        Ok(Some(Batch {
            properties: Arc::clone(&self.properties),
            columns,
            rows,
            row_hashes,
            distinct: Vec::new(),
        }))
    }

    /// A record's length and cell count without the cells past the header's `width` named
    /// columns, when the header has empty cells there and the record's cells under them are
    /// empty too; otherwise as they are.
    fn without_empty_tail(
        &self,
        len: usize,
        fields: usize,
        sep: usize,
        width: usize,
    ) -> (usize, usize) {
        if fields <= width || fields > self.raw_width || width == 0 {
            return (len, fields);
        }
        let named_end = self.ends[width - 1];
        // Empty cells add one delimiter each to a plain line, and nothing to csv-core's output.
        let empty = if sep == 1 {
            len - named_end == fields - width
        } else {
            self.ends[fields - 1] == named_end
        };
        if empty {
            (named_end, width)
        } else {
            (len, fields)
        }
    }

    /// The finding for a record whose cell count is not the header's.
    fn wrong_width(&self, bytes: &[u8], sep: usize, fields: usize, width: usize) -> Finding {
        let preview = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
        let (code, message) = if fields < width {
            (
                Code::RowTooFewFields,
                format!("the row has {fields} cells, fewer than the header's {width}"),
            )
        } else if fields <= self.raw_width {
            let column = cell_ranges(&self.ends[..fields], sep)
                .enumerate()
                .skip(width)
                .find(|(_, r)| !r.is_empty())
                .map_or(width + 1, |(c, _)| c + 1);
            (
                Code::RowTooManyFields,
                format!(
                    "the row has a value in column {column}, where the header's cell is empty (the header names {width} columns)"
                ),
            )
        } else {
            (
                Code::RowTooManyFields,
                format!("the row has {fields} cells, more than the header's {width}"),
            )
        };
        Finding::new(code, message, "cells per row = header").with_value(preview)
    }

    /// A 128-bit hash of a record's cells: of the cells written as CSV with quotes only where
    /// a cell needs them, which is how a plain line is written already. That writing can be
    /// read back, so different cells give different bytes, and equal cells hash alike however
    /// the upload quoted them.
    fn row_hash(&mut self, at: Option<usize>, len: usize, fields: usize) -> u128 {
        if at.is_some() {
            return XxHash3_128::oneshot(record(&self.buf, &self.out, at, len).0);
        }
        self.joined.clear();
        for (i, range) in cell_ranges(&self.ends[..fields], 0).enumerate() {
            if i > 0 {
                self.joined.push(self.delimiter);
            }
            let cell = &self.out[range];
            if cell
                .iter()
                .any(|&b| matches!(b, b'"' | b'\r' | b'\n') || b == self.delimiter)
            {
                self.joined.push(b'"');
                for &b in cell {
                    if b == b'"' {
                        self.joined.push(b'"');
                    }
                    self.joined.push(b);
                }
                self.joined.push(b'"');
            } else {
                self.joined.extend_from_slice(cell);
            }
        }
        XxHash3_128::oneshot(&self.joined)
    }

    fn report_bad_utf8(
        &self,
        at: Option<usize>,
        len: usize,
        row: u64,
        fields: usize,
        found: &mut Vec<Finding>,
    ) {
        let (bytes, sep) = record(&self.buf, &self.out, at, len);
        for (col, range) in cell_ranges(&self.ends[..fields], sep).enumerate() {
            let cell = &bytes[range];
            if let Err(e) = std::str::from_utf8(cell) {
                let what = self
                    .detected
                    .encoding
                    .describe_invalid(&cell[e.valid_up_to()..], self.detected.utf8_because);
                found.push(
                    Finding::new(
                        Code::EncodingInvalidUtf8,
                        format!(
                            "the cell cannot be read at its byte {}: {what}",
                            e.valid_up_to() + 1
                        ),
                        "encoding utf-8",
                    )
                    .at_row(row)
                    .in_column(self.header.headers.get(col).cloned().unwrap_or_default())
                    .with_value(String::from_utf8_lossy(cell).into_owned()),
                );
            }
        }
    }

    fn refill(&mut self) -> std::io::Result<()> {
        self.len = read_full(&mut self.input, &mut self.buf)?;
        self.pos = 0;
        self.stats.bytes = self.input.consumed();
        if self.len < self.buf.len() {
            self.eof = true;
        }
        Ok(())
    }

    /// The next record that is not blank, with `row` set to its spreadsheet row; blank rows on
    /// the way are counted and skipped.
    fn next_record(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            let Some(raw) = self.read_raw()? else {
                return Ok(None);
            };
            self.row += 1;
            match raw {
                RawRecord::Blank => self.blank.add(self.row),
                RawRecord::Line(line) => return Ok(Some(line)),
            }
        }
    }

    /// Reads one raw record into `out`/`ends`, keeping no cell longer than the limit and no
    /// more than `cap` cells.
    fn read_raw(&mut self) -> std::io::Result<Option<RawRecord>> {
        use csv_core::ReadRecordResult as R;
        // A line end at the start of a record is an empty row, unless it is the `\n` of a
        // `\r\n` whose `\r` ended the previous record (csv-core would skip both silently).
        loop {
            if self.pos == self.len && !self.eof {
                self.refill()?;
            }
            match self.buf[..self.len].get(self.pos) {
                Some(b'\n') if self.after_cr => {
                    self.pos += 1;
                    self.after_cr = false;
                }
                Some(b'\n') => {
                    self.pos += 1;
                    return Ok(Some(RawRecord::Blank));
                }
                Some(b'\r') => {
                    self.pos += 1;
                    self.after_cr = true;
                    return Ok(Some(RawRecord::Blank));
                }
                _ => {
                    self.after_cr = false;
                    break;
                }
            }
        }
        if let Some((used, len, fields)) = plain_line(
            &self.buf[self.pos..self.len],
            self.delimiter,
            self.limits.max_cell_bytes,
            self.cap,
            &mut self.ends,
        ) {
            let at = self.pos;
            self.pos += used;
            if is_blank(&self.buf[at..at + len], self.delimiter) {
                return Ok(Some(RawRecord::Blank));
            }
            let at = Some(at);
            return Ok(Some(RawRecord::Line(Line::Complete { at, len, fields })));
        }
        let mut out_len = 0;
        let mut nends = 0;
        let mut too_long: Option<usize> = None;
        let mut spans_lines = false;
        // Cells past the cap: counted, their bytes dropped (and looked at only to tell a blank
        // record).
        let mut dropped = 0;
        let mut dropped_blank = true;
        let mut field_start = 0;
        loop {
            if self.pos == self.len && !self.eof {
                self.refill()?;
            }
            let input = &self.buf[self.pos..self.len];
            let (res, nin, nout, nend) =
                self.core
                    .read_record(input, &mut self.out[out_len..], &mut self.ends[nends..]);
            self.pos += nin;
            out_len += nout;
            if nend > 0 {
                field_start = if too_long.is_some() || dropped > 0 {
                    out_len
                } else {
                    self.ends[nends + nend - 1]
                };
            }
            nends += nend;
            match res {
                R::InputEmpty => {
                    if self.eof && self.pos == self.len && input.is_empty() {
                        // csv-core has flushed everything for an empty input.
                        return Ok(None);
                    }
                }
                R::OutputFull if dropped > 0 => {
                    dropped_blank &= is_blank(&self.out[..out_len], 0);
                    out_len = 0;
                    field_start = 0;
                }
                R::OutputFull => {
                    let start = field_start.min(out_len);
                    if out_len - start >= self.limits.max_cell_bytes {
                        too_long.get_or_insert(nends);
                        spans_lines |= self.out[start..out_len]
                            .iter()
                            .any(|&b| b == b'\n' || b == b'\r');
                        // Drop the over-long cell's bytes; csv-core's positions no longer
                        // match, but a rejected row needs only its cell count.
                        out_len = start;
                    } else {
                        let grow = self.out.len().min(self.limits.max_cell_bytes.max(4096));
                        self.out.resize(self.out.len() + grow, 0);
                    }
                }
                R::OutputEndsFull => {
                    let n = self.ends.len();
                    if n < self.cap {
                        self.ends.resize((n * 2).min(self.cap), 0);
                    } else {
                        // More cells than any row may have: count the rest, keep none.
                        dropped_blank &= is_blank(&self.out[..out_len], 0);
                        dropped += nends;
                        nends = 0;
                        out_len = 0;
                        field_start = 0;
                    }
                }
                R::Record => {
                    if nin > 0 && self.buf[self.pos - 1] == b'\r' {
                        self.after_cr = true;
                    }
                    if dropped > 0 {
                        if dropped_blank && is_blank(&self.out[..out_len], 0) {
                            return Ok(Some(RawRecord::Blank));
                        }
                        let fields = dropped + nends;
                        return Ok(Some(RawRecord::Line(Line::TooManyCells { fields })));
                    }
                    if let Some(field) = too_long {
                        return Ok(Some(RawRecord::Line(Line::CellTooLong {
                            field,
                            spans_lines,
                        })));
                    }
                    let longest = self.ends[..nends]
                        .iter()
                        .scan(0, |prev, &e| {
                            let l = e - *prev;
                            *prev = e;
                            Some(l)
                        })
                        .enumerate()
                        .find(|&(_, l)| l > self.limits.max_cell_bytes);
                    if let Some((field, _)) = longest {
                        let start = if field == 0 { 0 } else { self.ends[field - 1] };
                        let spans_lines = self.out[start..self.ends[field]]
                            .iter()
                            .any(|&b| b == b'\n' || b == b'\r');
                        return Ok(Some(RawRecord::Line(Line::CellTooLong {
                            field,
                            spans_lines,
                        })));
                    }
                    if is_blank(&self.out[..out_len], 0) {
                        return Ok(Some(RawRecord::Blank));
                    }
                    return Ok(Some(RawRecord::Line(Line::Complete {
                        at: None,
                        len: out_len,
                        fields: nends,
                    })));
                }
                R::End => return Ok(None),
            }
        }
    }
}

/// Whether a record holds nothing but white space and (`delimiter`, for a plain line; 0 for
/// csv-core's output, which has no delimiters) delimiters. A record's first byte settles it
/// for almost every row, so this costs one comparison a row.
fn is_blank(record: &[u8], delimiter: u8) -> bool {
    record
        .iter()
        .all(|&b| b == b' ' || b == b'\t' || (b == delimiter && delimiter != 0))
}

/// The bytes of a complete record (in `buf` when it is a plain line at `at`, else in `out`) and
/// the number of bytes between its cells.
fn record<'a>(buf: &'a [u8], out: &'a [u8], at: Option<usize>, len: usize) -> (&'a [u8], usize) {
    match at {
        Some(start) => (&buf[start..start + len], 1),
        None => (&out[..len], 0),
    }
}

/// The byte ranges of a record's cells, given where each ends and the bytes between them.
fn cell_ranges(ends: &[usize], sep: usize) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    ends.iter().scan(0, move |start, &end| {
        let range = *start..end;
        *start = end + sep;
        Some(range)
    })
}

/// Bytes looked at together when splitting plain lines.
const LANES: usize = 16;

/// Which bytes of a block a plain line stops at (delimiter, line feed, quote, carriage
/// return): bit `i` for byte `i`. SSE2 is part of every x86-64 processor.
#[cfg(target_arch = "x86_64")]
fn stops(block: &[u8; LANES], delimiter: u8) -> u32 {
    use safe_arch::{
        cmp_eq_mask_i8_m128i, load_unaligned_m128i, move_mask_i8_m128i, set_splat_i8_m128i,
    };
    let v = load_unaligned_m128i(block);
    let at = |b: u8| cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(b.cast_signed()));
    move_mask_i8_m128i(at(delimiter) | at(b'\n') | at(b'"') | at(b'\r')).cast_unsigned()
}

/// [`stops`] a byte at a time, for other processors (and to test the vector version).
#[cfg(any(test, not(target_arch = "x86_64")))]
fn stops_bytewise(block: &[u8; LANES], delimiter: u8) -> u32 {
    block.iter().enumerate().fold(0, |mask, (i, &b)| {
        mask | (u32::from(matches!(b, b'\n' | b'"' | b'\r') || b == delimiter) << i)
    })
}

#[cfg(not(target_arch = "x86_64"))]
use stops_bytewise as stops;

/// The plain line at the start of `input` as one record, without csv-core: a whole line, not
/// empty, with no quote and no carriage return but a final one, no cell over `max_cell` and
/// (where `ends` must grow for it) no more than `cap` cells.
/// Its cells are separated by single `delimiter`s and end at `ends`; that is exactly what
/// csv-core reads with that delimiter (a property test says so). Anything else, and a last line without its newline, is
/// left to csv-core. Returns the bytes used (newline included), the line's length without its
/// line end, and the number of cells.
fn plain_line(
    input: &[u8],
    delimiter: u8,
    max_cell: usize,
    cap: usize,
    ends: &mut Vec<usize>,
) -> Option<(usize, usize, usize)> {
    let (mut fields, mut cell_start, mut base) = (0, 0, 0);
    let mut end_cell = |end: usize, fields: &mut usize| -> Option<()> {
        if end - cell_start > max_cell {
            return None;
        }
        if *fields == ends.len() {
            if *fields >= cap {
                return None;
            }
            ends.resize((*fields * 2 + 1).min(cap), 0);
        }
        ends[*fields] = end;
        *fields += 1;
        cell_start = end + 1;
        Some(())
    };
    while base < input.len() {
        let rest = &input[base..];
        let mut tail = [0; LANES];
        let block = rest.first_chunk::<LANES>().unwrap_or_else(|| {
            tail[..rest.len()].copy_from_slice(rest);
            &tail
        });
        let mut mask = stops(block, delimiter);
        while mask != 0 {
            let at = base + mask.trailing_zeros() as usize;
            mask &= mask - 1;
            match input[at] {
                b if b == delimiter => end_cell(at, &mut fields)?,
                b'\n' if at > 0 => {
                    end_cell(at, &mut fields)?;
                    return Some((at + 1, at, fields));
                }
                b'\r' if at > 0 && input.get(at + 1) == Some(&b'\n') => {
                    end_cell(at, &mut fields)?;
                    return Some((at + 2, at, fields));
                }
                _ => return None,
            }
        }
        base += LANES;
    }
    None
}

/// Fills `buf` as far as the input allows; returns how much was read (less only at the end).
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The notes on how the header was found: a `sep=` line, a delimiter other than commas, rows
/// above the header, empty cells at its end.
fn header_notes(found: &Found) -> Vec<Finding> {
    let mut notes = Vec::new();
    let name = delimiter_name(found.delimiter);
    if found.sep_line > 0 {
        notes.push(Finding::new(
            Code::SepLineSkipped,
            format!(
                "the first line `sep={}` is Excel's hint naming the delimiter ({name}): the file was read with it, and the line is not counted as a row",
                char::from(found.delimiter).escape_default()
            ),
            "sep line",
        ));
    } else if found.delimiter != b',' {
        notes.push(Finding::new(
            Code::DelimiterNotComma,
            format!("the cells are separated by {name}, not commas: the file was read as such"),
            "delimiter",
        ));
    }
    if let Some(above) = &found.above {
        let (many, them) = if above.rows == 1 {
            ("row".to_owned(), "it was")
        } else {
            (format!("{} rows", above.rows), "they were")
        };
        let first = above
            .first
            .as_ref()
            .map(|(row, text)| format!(" (row {row}: `{text}`)"))
            .unwrap_or_default();
        notes.push(
            Finding::new(
                Code::RowsAboveHeader,
                format!(
                    "the header is on row {}: the {many} above it{first} are not records, so {them} skipped",
                    found.row
                ),
                "header row",
            )
            .at_row(found.row),
        );
    }
    let named = found.cells.len();
    if found.width > named {
        let columns = if found.width - named == 1 {
            format!("cell (column {}) is", named + 1)
        } else {
            format!(
                "{} cells (columns {} to {}) are",
                found.width - named,
                named + 1,
                found.width
            )
        };
        notes.push(
            Finding::new(
                Code::HeaderEmptyColumns,
                format!(
                    "the header's last {columns} empty: those columns were ignored, and the cells under them must be empty"
                ),
                "header cells",
            )
            .at_row(found.row),
        );
    }
    notes
}

/// The note saying which encoding a file that is not UTF-8 was read in.
fn encoding_note(detected: Detected) -> Option<Finding> {
    let message = match detected.encoding {
        Encoding::Utf8 => return None,
        Encoding::Utf16 { .. } => {
            let mark = if detected.bom > 0 {
                "with a byte-order mark, as Excel's \"Unicode Text\" is"
            } else {
                "without a byte-order mark"
            };
            format!(
                "the file is saved as {} {mark}; it was read as such and converted to UTF-8",
                detected.encoding.name()
            )
        }
        Encoding::Windows1252 => {
            let example = detected
                .example
                .and_then(|b| crate::encoding::windows_1252_char(b).map(|c| (b, c)))
                .map(|(b, c)| format!(" (byte 0x{b:02X} is `{c}`)"))
                .unwrap_or_default();
            format!(
                "the file is saved as {}, as Excel's \"CSV (Comma delimited)\" is: its bytes are not UTF-8 and hold no UTF-8 character, so it was read as Windows-1252{example} and converted to UTF-8",
                detected.encoding.name()
            )
        }
    };
    Some(Finding::new(Code::EncodingConverted, message, "encoding"))
}

/// Whether the first bytes look like binary data rather than text: any NUL byte, or more than
/// one in a hundred control characters other than tab, line feed, carriage return and form feed.
fn looks_binary(head: &[u8]) -> bool {
    let sample = &head[..head.len().min(8192)];
    if sample.contains(&0) {
        return true;
    }
    let controls = sample
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c))
        .count();
    controls * 100 > sample.len()
}

/// Text of a cell of a batch column, or `None` when blank.
pub fn cell(column: &StringArray, i: usize) -> Option<&str> {
    column.is_valid(i).then(|| column.value(i))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::finding::{CodeSummary, NoSink};
    use crate::schema::CodeLists;

    fn schema() -> RecordSchema {
        RecordSchema::parse(
            "t",
            r#"{"type":"object","required":["a","b"],"properties":{
                "a":{"type":"string","x-aliases":["Col A"]},"b":{"type":["string","null"]}}}"#,
            &CodeLists::default(),
        )
        .unwrap()
    }

    fn decode(bytes: &[u8], limits: Limits, batch: usize) -> (Vec<Batch>, Vec<CodeSummary>) {
        let s = schema();
        let mut sink = NoSink;
        let mut log = FindingLog::new(100, BTreeMap::new(), &mut sink);
        let mut batches = Vec::new();
        if let Start::Rows(mut d) = CsvDecoder::start(bytes, &s, limits, batch, &mut log).unwrap() {
            let mut found = Vec::new();
            while let Some(b) = d.next_batch(&mut found).unwrap() {
                batches.push(b);
            }
            for f in found {
                log.push(f);
            }
        }
        (batches, log.finish().unwrap())
    }

    fn codes(s: &[CodeSummary]) -> Vec<&str> {
        s.iter().map(|c| c.code.as_str()).collect()
    }

    #[test]
    fn equal_cells_hash_alike_however_they_are_quoted() {
        let input =
            b"a,b\nx,y\n\"x\",y\r\n\"x,y\",z\nx,\"y,z\"\nx,y,\n\"\"\"x,y\"\"\",z\n\"\"\"x\"\"\",y\n";
        let (b, f) = decode(input, Limits::default(), 100);
        assert_eq!(codes(&f), ["row_too_many_fields"]);
        let h = &b[0].row_hashes;
        assert_eq!(b[0].rows, [2, 3, 4, 5, 7, 8]);
        assert_eq!(h[0], h[1], "x,y and \"x\",y are the same row");
        assert_ne!(h[2], h[3], "[x,y | z] and [x | y,z] are different rows");
        assert_ne!(h[0], h[5], "[x | y] and [\"x\" | y] are different rows");
        let distinct: std::collections::HashSet<_> = [h[0], h[2], h[3], h[4], h[5]].into();
        assert_eq!(distinct.len(), 5);
    }

    #[test]
    fn bom_crlf_quotes_and_blanks() {
        let (b, f) = decode(
            b"\xef\xbb\xbfCol A,b\r\n\"x, \"\"y\"\"\nz\",\r\nq,r\r\n",
            Limits::default(),
            10,
        );
        assert!(f.is_empty(), "{f:?}");
        let a = &b[0].columns[0];
        assert_eq!(a.value(0), "x, \"y\"\nz");
        assert!(b[0].columns[1].is_null(0));
        assert_eq!(b[0].rows, vec![2, 3]);
    }

    fn messages(s: &[CodeSummary], code: &str) -> Vec<String> {
        s.iter()
            .filter(|c| c.code.as_str() == code)
            .flat_map(|c| c.examples.iter().map(|f| f.message.clone()))
            .collect()
    }

    #[test]
    fn utf16_files_are_read_with_a_note_not_called_binary() {
        let text = "Col A,b\r\nCafé “x”,😀\r\n";
        let le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        for (bytes, words) in [
            (le, "UTF-16 (little-endian) with a byte-order mark"),
            (be, "UTF-16 (big-endian) without a byte-order mark"),
        ] {
            let (b, f) = decode(&bytes, Limits::default(), 10);
            assert_eq!(codes(&f), ["encoding_converted"], "{words}");
            assert!(
                messages(&f, "encoding_converted")[0].contains(words),
                "{f:?}"
            );
            assert_eq!(b[0].columns[0].value(0), "Café “x”");
            assert_eq!(b[0].columns[1].value(0), "😀");
            assert_eq!(b[0].rows, [2]);
        }
    }

    #[test]
    fn windows_1252_files_are_read_with_a_note_and_mixed_files_are_not_reinterpreted() {
        let (b, f) = decode(b"a,b\r\nCaf\xe9,\x93x\x94\r\n", Limits::default(), 10);
        assert_eq!(codes(&f), ["encoding_converted"]);
        assert!(messages(&f, "encoding_converted")[0].contains("byte 0xE9 is `é`"));
        assert_eq!(b[0].columns[0].value(0), "Café");
        assert_eq!(b[0].columns[1].value(0), "“x”");
        // The same stray byte in a file that is UTF-8 elsewhere is not guessed at.
        let mixed = "a,b\nMôn,x\n"
            .bytes()
            .chain(*b"Caf\xe9,y\n")
            .collect::<Vec<u8>>();
        let (b, f) = decode(&mixed, Limits::default(), 10);
        assert_eq!(codes(&f), ["encoding_invalid_utf8"]);
        let message = &messages(&f, "encoding_invalid_utf8")[0];
        assert!(message.contains("byte 4: 0xE9 is not UTF-8 (in Windows-1252 it is `é`); the file also holds UTF-8 characters"), "{message}");
        assert_eq!(b[0].rows, [2]);
    }

    #[test]
    fn rows_of_only_delimiters_or_spaces_are_skipped_and_counted_wherever_they_are() {
        let input = b"a,b\n1,2\n,\n  , \n\n3,4\n\"\",\"\"\r\n,\n\"x\",y\r\n\r\n5,6\r\n\r\n";
        let (b, f) = decode(input, Limits::default(), 10);
        assert_eq!(codes(&f), ["blank_rows_skipped"]);
        assert_eq!(
            b[0].rows,
            [2, 6, 9, 11],
            "rows are numbered as a spreadsheet shows them"
        );
        assert_eq!(
            messages(&f, "blank_rows_skipped"),
            [
                "7 rows held nothing but commas, spaces or nothing at all (rows 3 to 5, 7 to 8, 10, 12): they were skipped"
            ]
        );
        let scattered = format!("a,b\n{}", "1,2\n,\n".repeat(8));
        let (_, f) = decode(scattered.as_bytes(), Limits::default(), 10);
        assert_eq!(
            messages(&f, "blank_rows_skipped"),
            [
                "8 rows held nothing but commas, spaces or nothing at all (rows 3, 5, 7, 9, 11 and 3 more): they were skipped"
            ]
        );
        let wide_blank = format!("a,b\n{}\n1,2\n", ",".repeat(5000));
        let (b, f) = decode(wide_blank.as_bytes(), Limits::default(), 10);
        assert_eq!(codes(&f), ["blank_rows_skipped"]);
        assert_eq!(b[0].rows, [3]);
    }

    #[test]
    fn a_header_of_millions_of_cells_is_one_finding() {
        let input = format!("{}\n1,2\n", "c,".repeat(2_000_000));
        let (b, f) = decode(input.as_bytes(), Limits::default(), 10);
        assert!(b.is_empty());
        assert_eq!(codes(&f), ["too_many_columns"]);
        assert_eq!(f[0].count, 1);
        assert!(
            messages(&f, "too_many_columns")[0]
                .starts_with("the header has more cells than the limit of 1000 columns (131072 in the first 256 KiB"),
            "{f:?}"
        );
    }

    #[test]
    fn a_row_of_millions_of_cells_is_one_finding_in_bounded_memory() {
        let input = format!("a,b\n{}\n1,2\n", "x,".repeat(1_000_000));
        let s = schema();
        let mut sink = NoSink;
        let mut log = FindingLog::new(100, BTreeMap::new(), &mut sink);
        let Start::Rows(mut d) =
            CsvDecoder::start(input.as_bytes(), &s, Limits::default(), 10, &mut log).unwrap()
        else {
            panic!("the header is fine")
        };
        let mut found = Vec::new();
        let batch = d.next_batch(&mut found).unwrap().unwrap();
        assert_eq!(batch.rows, [3]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].code, Code::RowTooManyFields);
        assert_eq!(
            found[0].message,
            "the row has 1000001 cells, more than the header's 2"
        );
        assert!(d.ends.len() <= 64, "cell ends kept: {}", d.ends.len());
        assert!(d.out.len() <= 64 << 10, "cell bytes kept: {}", d.out.len());
    }

    #[test]
    fn only_a_cell_spanning_lines_is_called_an_unclosed_quote() {
        let limits = Limits {
            max_cell_bytes: 1000,
            ..Limits::default()
        };
        let long_line = format!("a,b\n{}\n5,6\n", "x".repeat(3_000_000));
        let (b, f) = decode(long_line.as_bytes(), limits, 10);
        assert_eq!(codes(&f), ["cell_too_long"]);
        assert_eq!(
            messages(&f, "cell_too_long"),
            ["the cell is longer than the limit of 1000 bytes"]
        );
        assert_eq!(b[0].rows, [3]);
        let unclosed = format!("a,b\n1,\"open\n{}", "5,6\n".repeat(1000));
        let (b, f) = decode(unclosed.as_bytes(), limits, 10);
        assert!(b.is_empty());
        assert_eq!(
            messages(&f, "cell_too_long"),
            [
                "the cell is longer than the limit of 1000 bytes and spans several lines: probably a quote that is never closed"
            ]
        );
    }

    #[test]
    fn semicolons_tabs_and_excels_sep_line_are_read_with_a_note() {
        let (b, f) = decode(b"a;b\r\n\"x;1\";y\r\nz;\r\n", Limits::default(), 10);
        assert_eq!(codes(&f), ["delimiter_not_comma"]);
        assert_eq!(b[0].columns[0].value(0), "x;1");
        assert!(b[0].columns[1].is_null(1));
        assert_eq!(b[0].rows, [2, 3]);
        let (b, f) = decode(b"sep=;\na;b\n1,5;2\n", Limits::default(), 10);
        assert_eq!(codes(&f), ["sep_line_skipped"]);
        assert_eq!(b[0].columns[0].value(0), "1,5");
        assert_eq!(b[0].rows, [2], "the sep= line is not a row, as in Excel");
        // Excel's "Unicode Text": UTF-16 with a byte-order mark, tab-separated.
        let text = "Col A\tb\r\nx, y\t\r\n";
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let (b, f) = decode(&utf16, Limits::default(), 10);
        assert_eq!(codes(&f), ["encoding_converted", "delimiter_not_comma"]);
        assert_eq!(b[0].columns[0].value(0), "x, y");
        // A semicolon file whose header names no column: the finding says what it saw.
        let (_, f) = decode(b"p;q;r\n1;2;3\n", Limits::default(), 10);
        assert!(
            messages(&f, "header_unknown_column")[0]
                .contains("it holds 2 semicolons: are the file's cells separated by semicolons?")
        );
    }

    #[test]
    fn rows_above_the_header_are_skipped_and_later_rows_keep_their_numbers() {
        let (b, f) = decode(
            b"Stop and search return,Durham\n,\nb,Col A\n1,2\n",
            Limits::default(),
            10,
        );
        assert_eq!(codes(&f), ["rows_above_header"]);
        assert_eq!(
            messages(&f, "rows_above_header"),
            [
                "the header is on row 3: the 2 rows above it (row 1: `Stop and search return,Durham`) are not records, so they were skipped"
            ]
        );
        assert_eq!(b[0].rows, [4]);
        assert_eq!(
            (b[0].columns[0].value(0), b[0].columns[1].value(0)),
            ("2", "1")
        );
    }

    #[test]
    fn empty_columns_at_the_end_of_the_header_are_ignored_with_their_empty_cells() {
        let (b, f) = decode(
            b"a,b,,\n1,2,,\n3,\"4\",\"\",\n5,6\n7,8,,x\n9,10,,,\n",
            Limits::default(),
            10,
        );
        assert_eq!(codes(&f), ["header_empty_columns", "row_too_many_fields"]);
        assert_eq!(
            messages(&f, "header_empty_columns"),
            [
                "the header's last 2 cells (columns 3 to 4) are empty: those columns were ignored, and the cells under them must be empty"
            ]
        );
        assert_eq!(
            messages(&f, "row_too_many_fields"),
            [
                "the row has a value in column 4, where the header's cell is empty (the header names 2 columns)",
                "the row has 5 cells, more than the header's 2"
            ]
        );
        assert_eq!(b[0].rows, [2, 3, 4]);
        let h = &b[0].row_hashes;
        assert_eq!(
            h[0],
            decode(b"a,b\n1,2\n", Limits::default(), 10).0[0].row_hashes[0]
        );
        assert_ne!(h[0], h[1]);
    }

    #[test]
    fn batches_are_bounded_and_rows_numbered_across_them() {
        let mut text = b"a,b\n".to_vec();
        for i in 0..10 {
            text.extend_from_slice(format!("v{i},w\n").as_bytes());
        }
        let (b, _) = decode(&text, Limits::default(), 4);
        assert_eq!(b.iter().map(Batch::len).collect::<Vec<_>>(), [4, 4, 2]);
        assert_eq!(b[2].rows, vec![10, 11]);
    }

    #[test]
    fn structural_problems_become_findings_and_rows_are_left_out() {
        let (b, f) = decode(
            b"a,b\nx\nx,y,z\n\xe9t\xe9,y\nok,fi\xc3\xb1e",
            Limits::default(),
            10,
        );
        assert_eq!(
            codes(&f),
            [
                "encoding_invalid_utf8",
                "row_too_few_fields",
                "row_too_many_fields"
            ]
        );
        let utf = &f[0].examples[0];
        assert_eq!((utf.row, utf.column.as_deref()), (Some(4), Some("a")));
        assert_eq!(b[0].rows, vec![5]);
    }

    #[test]
    fn over_long_cell_is_cut_off_with_bounded_memory() {
        let limits = Limits {
            max_cell_bytes: 1000,
            ..Limits::default()
        };
        let big = "x".repeat(3_000_000);
        let text = format!("a,b\n1,2\n3,{big}\n5,6\n");
        let (b, f) = decode(text.as_bytes(), limits, 10);
        assert_eq!(codes(&f), ["cell_too_long"]);
        assert_eq!(f[0].examples[0].row, Some(3));
        assert_eq!(f[0].examples[0].column.as_deref(), Some("b"));
        assert_eq!(b[0].rows, vec![2, 4]);
    }

    #[test]
    fn empty_binary_and_header_problems_stop_reading() {
        assert_eq!(codes(&decode(b"", Limits::default(), 10).1), ["file_empty"]);
        assert_eq!(
            codes(&decode(b" \n\r\n", Limits::default(), 10).1),
            ["file_empty"]
        );
        assert_eq!(
            codes(&decode(b"PK\x03\x04\x00\x00", Limits::default(), 10).1),
            ["file_not_text"]
        );
        let (b, f) = decode(b"a,a,zz\n1,2,3\n", Limits::default(), 10);
        assert_eq!(
            codes(&f),
            [
                "header_missing_column",
                "header_duplicate_column",
                "header_unknown_column"
            ]
        );
        assert!(b.is_empty());
    }

    #[test]
    fn long_rows_make_short_batches() {
        let cell = "x".repeat(1 << 20);
        let input = format!("a,b\n{}", format!("{cell},{cell}\n").repeat(40));
        let limits = Limits {
            max_cell_bytes: 2 << 20,
            ..Limits::default()
        };
        let (b, f) = decode(input.as_bytes(), limits, 1000);
        assert!(f.is_empty());
        let sizes: Vec<usize> = b.iter().map(Batch::len).collect();
        assert_eq!(
            sizes,
            [8, 8, 8, 8, 8],
            "16 MiB of text a batch, at 2 MiB a row"
        );
    }

    #[test]
    fn row_limit_is_enforced() {
        let limits = Limits {
            max_rows: 2,
            ..Limits::default()
        };
        let (b, f) = decode(b"a,b\n1,2\n3,4\n5,6\n", limits, 10);
        assert_eq!(codes(&f), ["too_many_rows"]);
        assert_eq!(b[0].len(), 2);
    }

    /// Every record of `input` as cells, read by csv-core alone or, with `plain`, by
    /// `plain_line` wherever it takes a line and csv-core elsewhere, as `read_raw` does.
    fn records(input: &[u8], delimiter: u8, plain: bool) -> Vec<Vec<Vec<u8>>> {
        use csv_core::ReadRecordResult as R;
        let mut core = csv_core::ReaderBuilder::new().delimiter(delimiter).build();
        let (mut out, mut ends) = (vec![0u8; 1024], vec![0usize; 256]);
        let (mut pos, mut out_len, mut nends) = (0, 0, 0);
        let mut found = Vec::new();
        let cells = |out: &[u8], ends: &[usize]| {
            let mut start = 0;
            ends.iter()
                .map(|&e| {
                    let cell = out[start..e].to_vec();
                    start = e;
                    cell
                })
                .collect::<Vec<_>>()
        };
        loop {
            if plain
                && out_len == 0
                && nends == 0
                && let Some((used, len, fields)) =
                    plain_line(&input[pos..], delimiter, usize::MAX, usize::MAX, &mut ends)
            {
                let line = &input[pos..pos + len];
                found.push(
                    cell_ranges(&ends[..fields], 1)
                        .map(|r| line[r].to_vec())
                        .collect(),
                );
                pos += used;
                continue;
            }
            let (res, nin, nout, nend) =
                core.read_record(&input[pos..], &mut out[out_len..], &mut ends[nends..]);
            pos += nin;
            out_len += nout;
            nends += nend;
            match res {
                R::InputEmpty => {}
                R::Record => {
                    found.push(cells(&out[..out_len], &ends[..nends]));
                    (out_len, nends) = (0, 0);
                }
                R::End => return found,
                R::OutputFull | R::OutputEndsFull => panic!("test buffers too small"),
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 5000, ..Default::default() })]

        #[test]
        fn plain_lines_split_exactly_as_csv_core_reads_them(
            input in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'b', b',', b';', b'\t', b'"', b'\r', b'\n', b' ', 0xC3, 0xA9]),
                0..200,
            ),
            delimiter in proptest::sample::select(vec![b',', b';', b'\t']),
        ) {
            proptest::prop_assert_eq!(records(&input, delimiter, true), records(&input, delimiter, false));
        }

        #[test]
        fn plain_line_stops_are_found_alike_a_block_or_a_byte_at_a_time(
            block in proptest::array::uniform16(proptest::sample::select(vec![b'a', b',', b';', b'\t', b'"', b'\r', b'\n', 0, 0x80, 0xFF])),
            delimiter in proptest::sample::select(vec![b',', b';', b'\t']),
        ) {
            proptest::prop_assert_eq!(stops(&block, delimiter), stops_bytewise(&block, delimiter));
        }
    }

    /// A CSV cell as a writer would write it: quoted only when it must be.
    fn written(cell: &str, delimiter: char) -> String {
        if cell.contains([delimiter, '"']) {
            format!("\"{}\"", cell.replace('"', "\"\""))
        } else {
            cell.to_owned()
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

        /// Rows are numbered one a line however lines end, blank rows (empty, or only
        /// delimiters and spaces) are skipped and counted, above the header or below it, and the
        /// others read as written with the file's delimiter, also where they straddle the end of
        /// the first chunk.
        #[test]
        fn rows_keep_their_spreadsheet_numbers_and_blank_ones_are_counted(
            rows in proptest::collection::vec(
                (proptest::collection::vec("[ab ,;\t\"]{0,3}", 2), proptest::bool::ANY),
                1..40,
            ),
            above in proptest::collection::vec(proptest::sample::select(vec!["\n", "\r\n", " \n"]), 0..3),
            delimiter in proptest::sample::select(vec![',', ';', '\t']),
            straddle in 0usize..300,
        ) {
            let filler = (CHUNK - straddle) / 4;
            let mut input = above.concat().into_bytes();
            input.extend(format!("a{delimiter}b\n").bytes());
            input.extend(format!("p{delimiter}q\n").repeat(filler).bytes());
            let first = above.len() + filler + 2;
            let mut want_rows = Vec::new();
            let mut want_cells = Vec::new();
            let mut blanks = 0;
            for (i, (cells, crlf)) in rows.iter().enumerate() {
                let line = cells
                    .iter()
                    .map(|c| written(c, delimiter))
                    .collect::<Vec<_>>()
                    .join(&delimiter.to_string());
                input.extend_from_slice(line.as_bytes());
                input.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
                if cells.iter().all(|c| c.trim_matches([' ', '\t']).is_empty()) {
                    blanks += 1;
                } else {
                    want_rows.push((first + i) as u64);
                    want_cells.push(cells.iter().map(|c| (!c.is_empty()).then(|| c.clone())).collect::<Vec<_>>());
                }
            }
            let (batches, found) = decode(&input, Limits::default(), 1 << 20);
            let got_rows: Vec<u64> = batches.iter().flat_map(|b| b.rows.iter().copied()).skip(filler).collect();
            proptest::prop_assert_eq!(&got_rows, &want_rows);
            let mut got_cells = Vec::new();
            for b in &batches {
                for i in 0..b.len() {
                    got_cells.push(b.columns.iter().map(|c| cell(c, i).map(str::to_owned)).collect::<Vec<_>>());
                }
            }
            proptest::prop_assert_eq!(&got_cells[filler..], &want_cells[..]);
            let noted = |code| found.iter().find(|c| c.code == code).map_or(0, |c| c.count);
            proptest::prop_assert_eq!(noted(Code::BlankRowsSkipped), u64::from(blanks > 0));
            proptest::prop_assert_eq!(noted(Code::RowsAboveHeader), u64::from(!above.is_empty()));
            proptest::prop_assert_eq!(noted(Code::DelimiterNotComma), u64::from(delimiter != ','));
            let message = messages(&found, "blank_rows_skipped");
            proptest::prop_assert!(blanks == 0 || message[0].starts_with(&format!("{blanks} row")), "{:?}", message);
        }
    }

    #[test]
    fn a_plain_line_is_split_without_csv_core_and_others_are_left_to_it() {
        let mut ends = Vec::new();
        assert_eq!(
            plain_line(b"a,,bc\r\nnext", b',', 10, 64, &mut ends),
            Some((7, 5, 3))
        );
        assert_eq!(&ends[..3], &[1, 2, 5]);
        let long = b"0123456789,0123456789,0123456789,0123456789\n";
        assert_eq!(
            plain_line(long, b',', 10, 64, &mut ends),
            Some((long.len(), long.len() - 1, 4))
        );
        assert_eq!(&ends[..4], &[10, 21, 32, 43]);
        for left in [
            &b"a,\"b\"\n"[..],
            b"a,b",
            b"\n",
            b"a\rb\n",
            b"abcdefghijk,b\n",
        ] {
            assert!(
                plain_line(left, b',', 10, 64, &mut ends).is_none(),
                "{left:?}"
            );
        }
    }
}
