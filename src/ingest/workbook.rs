//! Workbooks: an XLSX (or ODS, XLSB, XLS) upload read as the CSV text its sheet would save as.
//!
//! Forces' analysts work in spreadsheets, so a return may come as a workbook. The sheet named
//! `data` (in any case) is read, or else the first. Its cells become CSV text, one line per
//! sheet row from row 1, so the decoder's row numbers are the sheet's and everything after it
//! (header search, checks, findings) is the same as for a CSV file; findings then name the
//! cell too (`data!D17`). Cells are written as a spreadsheet shows them: numbers in their
//! shortest exact form (whole numbers without a decimal point), dates and times as Excel shows
//! them in the UK (`31/01/2020 13:45:00`, read then as Excel's dates in a CSV file are),
//! formulas as their cached values, booleans as `true`/`false`, error values as written
//! (`#DIV/0!`). An XLSX sheet is streamed cell by cell on a thread of its own, a few chunks
//! ahead of the decoder, so memory stays bounded whatever the number of rows; other formats
//! are read whole (their files are bounded by the upload size limit), as are an XLSX's shared
//! strings: a part read whole that its archive says unpacks to more than
//! [`MAX_WHOLE_PART_BYTES`] is refused before anything is unpacked. A file that is not a
//! workbook, a password-protected one, and a sheet whose XML breaks part way become
//! findings, never a panic.

use std::io::{Cursor, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use calamine::{Data, Reader, Sheets, open_workbook_auto_from_rs};

use super::tables;
use crate::finding::{CellNames, Code, Finding};

/// The first bytes of a zip archive (XLSX, ODS).
const ZIP_MAGIC: [u8; 4] = *b"PK\x03\x04";
/// The first bytes of a compound file (XLS, and any password-protected workbook).
const COMPOUND_MAGIC: [u8; 8] = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];

/// Bytes of CSV text gathered before they are handed to the decoder.
const CHUNK: usize = 64 * 1024;

/// The most a part of a workbook that is read whole may unpack to, as its zip archive
/// declares: the shared strings of an XLSX or XLSB, the content of an ODS, an XLSB sheet. An
/// XLSX sheet is streamed and has no such bound; its rows are bounded by the return's limit.
pub const MAX_WHOLE_PART_BYTES: u64 = 64 * 1024 * 1024;

/// Whether the upload's first bytes are a workbook's (a zip or a compound file).
pub fn is_workbook(first: &[u8]) -> bool {
    first.starts_with(&ZIP_MAGIC) || first.starts_with(&COMPOUND_MAGIC)
}

/// A workbook's chosen sheet as CSV text, read as it is produced.
pub struct SheetText {
    chunks: Receiver<Vec<u8>>,
    current: Cursor<Vec<u8>>,
    /// Why the sheet stopped being read part way, once it has.
    failure: Arc<Mutex<Option<String>>>,
}

impl SheetText {
    /// What stopped the sheet part way, if anything did: a finding for the upload.
    pub fn failure(&self) -> Arc<Mutex<Option<String>>> {
        Arc::clone(&self.failure)
    }
}

impl Read for SheetText {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            match self.chunks.recv() {
                Ok(chunk) => self.current = Cursor::new(chunk),
                // The sheet is read (or stopped): the end of the text.
                Err(_) => return Ok(0),
            }
        }
    }
}

/// The sheet read and how its cells are named.
pub struct Opened {
    /// The CSV text of the sheet.
    pub text: SheetText,
    /// How findings name a cell of the sheet.
    pub cells: CellNames,
    /// The finding saying which sheet was read.
    pub note: Finding,
}

/// Opens `bytes` as a workbook and starts reading its sheet; a file that cannot be read as one
/// is an error finding.
pub fn open(bytes: Vec<u8>) -> Result<Opened, Box<Finding>> {
    let mut workbook = open_workbook(bytes)?;
    let names = workbook.sheet_names();
    let Some(sheet) = names
        .iter()
        .find(|n| n.eq_ignore_ascii_case("data"))
        .or_else(|| names.first())
        .cloned()
    else {
        return Err(Box::new(Finding::new(
            Code::WorkbookUnreadable,
            "the workbook has no sheets",
            "workbook",
        )));
    };
    let note = Finding::new(
        Code::WorkbookSheetRead,
        format!(
            "read sheet `{sheet}` of the workbook ({}: {}); a sheet named `data` is read if there is one, else the first",
            if names.len() == 1 {
                "its only sheet".to_owned()
            } else {
                format!("{} sheets", names.len())
            },
            names.join(", ")
        ),
        "workbook",
    );
    let failure = Arc::new(Mutex::new(None));
    let (tx, rx) = sync_channel::<Vec<u8>>(4);
    let (first_column_tx, first_column_rx) = sync_channel::<u32>(1);
    let stopped = Arc::clone(&failure);
    let sheet_name = sheet.clone();
    std::thread::spawn(move || {
        // A reader that panics on a malformed sheet stops the sheet like an error does.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            read_sheet(&mut workbook, &sheet_name, tx, &first_column_tx)
        }))
        .unwrap_or_else(|_| Err("the workbook reader failed on the sheet's contents".to_owned()));
        if let Err(message) = result
            && message != READER_GONE
            && let Ok(mut slot) = stopped.lock()
        {
            *slot = Some(message);
        }
    });
    // The sheet's first column, from its dimensions (A when it has none, or failed to open).
    let first_column = first_column_rx.recv().unwrap_or(0);
    Ok(Opened {
        text: SheetText {
            chunks: rx,
            current: Cursor::new(Vec::new()),
            failure,
        },
        cells: CellNames::new(sheet, first_column),
        note,
    })
}

/// One sheet of a workbook read whole, for finding its tables.
#[derive(Debug)]
pub struct Sheet {
    /// Its name.
    pub name: String,
    /// Its first row and column (zero-based): the grid's top-left cell.
    pub origin: (u32, u32),
    /// Its cells, row by row from the origin; or why it could not be read.
    pub grid: Result<Vec<Vec<tables::Cell>>, String>,
}

/// Every sheet of a workbook, read whole (for `force-returns tables`, on a file within the
/// upload size limit): cells as a spreadsheet shows them, typed as text, figures or dates.
pub fn sheets(bytes: Vec<u8>) -> Result<Vec<Sheet>, Box<Finding>> {
    let mut workbook = open_workbook(bytes)?;
    let names = workbook.sheet_names();
    Ok(names
        .into_iter()
        .map(|name| {
            let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                workbook.worksheet_range(&name).map_err(|e| e.to_string())
            }))
            .unwrap_or_else(|_| Err("the workbook reader failed on the sheet's contents".into()));
            match read {
                Ok(range) => {
                    let origin = range.start().unwrap_or((0, 0));
                    let mut text = String::new();
                    let grid = range
                        .rows()
                        .map(|row| {
                            row.iter()
                                .map(|value| {
                                    text.clear();
                                    write_value(value, &mut text);
                                    match value {
                                        Data::Empty => tables::Cell::Empty,
                                        Data::Int(_) | Data::Float(_) => {
                                            tables::Cell::Figure(text.clone())
                                        }
                                        Data::DateTime(_) | Data::DateTimeIso(_) => {
                                            tables::Cell::Date(text.clone())
                                        }
                                        _ if text.trim().is_empty() => tables::Cell::Empty,
                                        _ if tables::is_figure(&text) => {
                                            tables::Cell::Figure(text.clone())
                                        }
                                        _ => tables::Cell::Text(text.clone()),
                                    }
                                })
                                .collect()
                        })
                        .collect();
                    Sheet {
                        name,
                        origin,
                        grid: Ok(grid),
                    }
                }
                Err(e) => Sheet {
                    name,
                    origin: (0, 0),
                    grid: Err(e),
                },
            }
        })
        .collect())
}

/// A workbook opened from the upload's bytes in memory.
type Workbook = Sheets<Cursor<Arc<[u8]>>>;

/// Opens `bytes` as a workbook, once its parts read whole are known to fit; a file that cannot
/// be opened as one is an error finding.
fn open_workbook(bytes: Vec<u8>) -> Result<Workbook, Box<Finding>> {
    let compound = bytes.starts_with(&COMPOUND_MAGIC);
    whole_parts_fit(&bytes)?;
    let data: Arc<[u8]> = bytes.into();
    open_workbook_auto_from_rs(Cursor::new(data))
        .map_err(|e| Box::new(unreadable(compound, &e.to_string())))
}

/// Checks, from a zip archive's directory and before anything is unpacked, that no part read
/// whole unpacks to more than [`MAX_WHOLE_PART_BYTES`]. A file that is not a zip archive
/// passes: opening it as a workbook says what it is.
fn whole_parts_fit(bytes: &[u8]) -> Result<(), Box<Finding>> {
    let Ok(mut archive) = zip::ZipArchive::new(Cursor::new(bytes)) else {
        return Ok(());
    };
    for index in 0..archive.len() {
        let Ok(part) = archive.by_index_raw(index) else {
            continue;
        };
        let name = part.name().to_ascii_lowercase();
        let whole = matches!(
            name.as_str(),
            "xl/sharedstrings.xml" | "xl/sharedstrings.bin" | "content.xml"
        ) || (name.starts_with("xl/worksheets/")
            && std::path::Path::new(&name)
                .extension()
                .is_some_and(|e| e == "bin"));
        if whole && part.size() > MAX_WHOLE_PART_BYTES {
            return Err(Box::new(Finding::new(
                Code::FileTooLarge,
                format!(
                    "the workbook's part `{}` unpacks to {} bytes, above the {MAX_WHOLE_PART_BYTES} bytes a part read whole may have; it was not read: save the sheet as CSV UTF-8 and upload that",
                    part.name(),
                    part.size()
                ),
                "workbook",
            )));
        }
    }
    Ok(())
}

/// The finding for a file that does not open as a workbook.
fn unreadable(compound: bool, error: &str) -> Finding {
    let message = if compound {
        "the file is a password-protected workbook, or an old-style .xls that could not be read: save it without a password as .xlsx (or as CSV UTF-8) and upload that".to_owned()
    } else {
        format!(
            "the file is a zip archive but not a workbook that can be read ({error}): save it as .xlsx (or as CSV UTF-8) and upload that"
        )
    };
    Finding::new(Code::WorkbookUnreadable, message, "workbook")
}

/// Reads the sheet into CSV text chunks on `tx`, after sending its first column.
fn read_sheet<RS: Read + std::io::Seek>(
    workbook: &mut Sheets<RS>,
    sheet: &str,
    tx: SyncSender<Vec<u8>>,
    first_column_tx: &SyncSender<u32>,
) -> Result<(), String> {
    match workbook {
        Sheets::Xlsx(xlsx) => {
            let cells = xlsx.worksheet_cells_reader(sheet);
            let (first, width) = cells.as_ref().map_or((0, 0), |c| {
                let d = c.dimensions();
                (d.start.1, d.end.1.saturating_sub(d.start.1) + 1)
            });
            let _ = first_column_tx.send(first);
            let mut cells = cells.map_err(|e| e.to_string())?;
            let mut out = Writer::new(tx, first, width);
            while let Some(cell) = cells.next_cell().map_err(|e| e.to_string())? {
                let (row, column) = cell.get_position();
                out.cell(row, column, &Data::from(cell.get_value().clone()))?;
            }
            out.finish()
        }
        other => {
            let range = other.worksheet_range(sheet);
            let (top, left) = range
                .as_ref()
                .ok()
                .and_then(calamine::Range::start)
                .unwrap_or((0, 0));
            let _ = first_column_tx.send(left);
            let range = range.map_err(|e| e.to_string())?;
            let mut out = Writer::new(tx, left, range.width() as u32);
            for (r, row) in range.rows().enumerate() {
                for (c, value) in row.iter().enumerate() {
                    out.cell(top + r as u32, left + c as u32, value)?;
                }
            }
            out.finish()
        }
    }
}

/// Writes cells in row order as CSV text, in chunks.
struct Writer {
    tx: SyncSender<Vec<u8>>,
    buf: Vec<u8>,
    /// The sheet row being written (0-based).
    row: u32,
    /// The field last written in this row, counted from the sheet's first column.
    last: Option<u32>,
    first_column: u32,
    /// The sheet's width in columns as it declares it (not every writer declares it right),
    /// and the most cells a row has had so far: every row is given at least as many cells
    /// as either (the decoder wants rows as wide as the header; a spreadsheet leaves out the
    /// empty cells at the end of a row).
    width: u32,
    widest: u32,
    text: String,
}

/// The sheet stopped being read: the decoder went away (its upload is finished with).
const READER_GONE: &str = "the reader of the sheet stopped";

impl Writer {
    fn new(tx: SyncSender<Vec<u8>>, first_column: u32, width: u32) -> Self {
        Writer {
            tx,
            buf: Vec::with_capacity(CHUNK + 1024),
            row: 0,
            last: None,
            first_column,
            width,
            widest: 0,
            text: String::new(),
        }
    }

    /// Ends the row being written, padded to the sheet's width.
    fn end_row(&mut self) {
        let written = self.last.map_or(0, |l| l + 1);
        self.widest = self.widest.max(written);
        for _ in written.max(1)..self.width.max(self.widest) {
            self.buf.push(b',');
        }
        self.buf.extend_from_slice(b"\r\n");
        self.row += 1;
        self.last = None;
    }

    fn cell(&mut self, row: u32, column: u32, value: &Data) -> Result<(), String> {
        if matches!(value, Data::Empty) {
            return Ok(());
        }
        while self.row < row {
            self.end_row();
        }
        let field = column.saturating_sub(self.first_column);
        let commas = match self.last {
            None => field,
            // A cell left of one already written (never so in a saved sheet) goes after it.
            Some(last) => field.saturating_sub(last).max(1),
        };
        for _ in 0..commas {
            self.buf.push(b',');
        }
        self.last = Some(self.last.map_or(field, |l| l + commas));
        self.text.clear();
        write_value(value, &mut self.text);
        csv_cell(&self.text, &mut self.buf);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + 1024));
        self.tx.send(chunk).map_err(|_| READER_GONE.to_owned())
    }

    fn finish(mut self) -> Result<(), String> {
        self.end_row();
        self.flush()
    }
}

/// A cell's text as a spreadsheet shows it, for the checks.
fn write_value(value: &Data, out: &mut String) {
    use std::fmt::Write as _;
    match value {
        Data::Empty => {}
        Data::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Data::Float(f) => {
            if f.fract() == 0.0 && f.abs() < 1e15 {
                let _ = write!(out, "{f:.0}");
            } else {
                let _ = write!(out, "{f}");
            }
        }
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => out.push_str(s),
        Data::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Data::DateTime(d) => match d.as_datetime() {
            // As Excel shows a date in the UK, so that the reading of Excel's dates applies
            // (day first; a date and time in UK local time) and is reported as for a CSV file.
            Some(t) if d.is_datetime() => {
                if t.time() == chrono::NaiveTime::MIN {
                    let _ = write!(out, "{}", t.date().format("%d/%m/%Y"));
                } else {
                    let _ = write!(out, "{}", t.format("%d/%m/%Y %H:%M:%S"));
                }
            }
            _ => {
                let _ = write!(out, "{}", d.as_f64());
            }
        },
        Data::Error(e) => {
            let _ = write!(out, "{e}");
        }
    }
}

/// Appends `text` as one CSV field, quoted where it must be.
fn csv_cell(text: &str, out: &mut Vec<u8>) {
    if text.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(text.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &Data) -> String {
        let mut out = String::new();
        write_value(value, &mut out);
        out
    }

    #[test]
    fn cells_are_written_as_a_spreadsheet_shows_them() {
        assert_eq!(text(&Data::Float(1000.0)), "1000");
        assert_eq!(text(&Data::Float(-0.125)), "-0.125");
        assert_eq!(text(&Data::Float(0.1 + 0.2)), "0.30000000000000004");
        assert_eq!(text(&Data::Int(-7)), "-7");
        assert_eq!(text(&Data::Bool(true)), "true");
        assert_eq!(text(&Data::String("Black".into())), "Black");
        assert_eq!(text(&Data::Empty), "");
        let mut out = Vec::new();
        csv_cell("a, \"b\"", &mut out);
        assert_eq!(out, b"\"a, \"\"b\"\"\"");
    }

    /// The CSV text of cells given as (row, column, value), for a sheet whose first column is
    /// `first` and width `width`.
    fn sheet(first: u32, width: u32, cells: &[(u32, u32, Data)]) -> String {
        let (tx, rx) = sync_channel(64);
        let mut out = Writer::new(tx, first, width);
        for (r, c, v) in cells {
            out.cell(*r, *c, v).unwrap();
        }
        out.finish().unwrap();
        String::from_utf8(rx.try_iter().flatten().collect()).unwrap()
    }

    #[test]
    fn rows_keep_the_sheets_numbers_and_width() {
        let s = |v: &str| Data::String(v.into());
        // A title in B1, a blank row, a header from B3, a row with a gap and one cut short.
        let text = sheet(
            1,
            3,
            &[
                (0, 1, s("Title")),
                (2, 1, s("a")),
                (2, 2, s("b")),
                (2, 3, s("c")),
                (3, 1, s("1")),
                (3, 3, s("3")),
                (4, 2, s("x")),
            ],
        );
        assert_eq!(text, "Title,,\r\n,,\r\na,b,c\r\n1,,3\r\n,x,\r\n");
        // A sheet that declares no width (openpyxl's write-only mode): rows are as wide as the
        // widest so far, the header.
        let text = sheet(
            0,
            1,
            &[
                (0, 0, s("a")),
                (0, 1, s("b")),
                (0, 2, s("c")),
                (1, 0, s("1")),
            ],
        );
        assert_eq!(text, "a,b,c\r\n1,,\r\n");
    }

    #[test]
    fn columns_are_lettered_as_a_spreadsheet_does() {
        assert_eq!(crate::finding::column_letters(0), "A");
        assert_eq!(crate::finding::column_letters(25), "Z");
        assert_eq!(crate::finding::column_letters(26), "AA");
        assert_eq!(crate::finding::column_letters(701), "ZZ");
        assert_eq!(crate::finding::column_letters(702), "AAA");
        let mut names = crate::finding::CellNames::new("my data".into(), 1);
        names.set_headers(&["metric".into(), "value".into()]);
        assert_eq!(names.name(17, "value").as_deref(), Some("'my data'!C17"));
        assert_eq!(names.name(17, "other"), None);
    }
}
