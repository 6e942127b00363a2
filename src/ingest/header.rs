//! Finding the header at the start of an upload: its row and the delimiter of the file.
//!
//! Files do not always start with the header. Excel puts a `sep=;` line first when it is told
//! which delimiter to use; reports exported from records systems carry a title row or two;
//! spreadsheets in other locales separate cells with semicolons, and Excel's "Unicode Text"
//! with tabs. The header is looked for in the file's first chunk only (256 KiB, at most
//! [`SEARCH_ROWS`] rows that are not blank), so the search costs the same whatever the file
//! holds, and no record read while looking keeps more than `max_columns` cells:
//!
//! - a first line `sep=X` (or `"sep=X"`) names the delimiter; like Excel, which hides it, it is
//!   not counted as a row;
//! - otherwise the first row read with commas is the header when it names every required
//!   column (nearly every file: one record is read);
//! - otherwise each of the first rows is read with commas, semicolons and tabs, and the header
//!   is the row and delimiter whose cells name the most columns of the schema, if that is at
//!   least two and more than the first row with commas names; ties go to the earlier row,
//!   then to commas, semicolons, tabs in that order. Failing that, the first row with commas
//!   is the header, and its missing columns are reported as usual.
//!
//! Empty cells at the end of the header (Excel writes them for columns once touched) are
//! dropped; the decoder then accepts the empty cells under them.

use std::cmp::Reverse;

use crate::model::Limits;
use crate::schema::RecordSchema;

/// Rows that are not blank looked at, at most, for the header.
pub const SEARCH_ROWS: usize = 10;

/// The delimiters tried when no `sep=` line names one, in order of preference.
const DELIMITERS: [u8; 3] = [b',', b';', b'\t'];

/// The header found, and where the records start.
#[derive(Debug)]
pub struct Found {
    /// The delimiter the file is read with.
    pub delimiter: u8,
    /// Bytes of a `sep=` line skipped (0 when there is none).
    pub sep_line: usize,
    /// The header's spreadsheet row.
    pub row: u64,
    /// The header's cells, without the empty ones at its end.
    pub cells: Vec<String>,
    /// How many cells the header has, the empty ones at its end included.
    pub width: usize,
    /// Where the records start, after the `sep=` line and the header.
    pub end: usize,
    /// The header's line ended with `\r` and its `\n` is still to come.
    pub after_cr: bool,
    /// The rows above the header (skipped), and the first of them that is not blank.
    pub above: Option<Above>,
}

/// Rows above the header.
#[derive(Debug)]
pub struct Above {
    /// How many (blank ones included).
    pub rows: u64,
    /// The first row that is not blank, as text (cut to 80 characters), when there is one.
    pub first: Option<(u64, String)>,
}

/// What looking for the header found.
#[derive(Debug)]
pub enum Header {
    /// The header and where the records start.
    Found(Found),
    /// The header row has more cells than `max_columns` (`fields` of them, or more when it
    /// does not end in the first chunk: `ends`).
    TooWide { row: u64, fields: usize, ends: bool },
    /// A header cell is longer than `max_cell_bytes`, or the first row runs past the first
    /// chunk (`in_chunk` false).
    TooLong { row: u64, in_chunk: bool },
    /// The first chunk holds only blank rows (`eof`: and it is the whole file).
    Blank { eof: bool },
}

/// One row read while looking for the header.
#[derive(Debug)]
struct HeadRow {
    row: u64,
    /// Its cells; `None` when it has more cells than `max_columns`.
    cells: Option<Vec<String>>,
    fields: usize,
    blank: bool,
    /// A cell is longer than `max_cell_bytes`.
    too_long: bool,
    /// Where the row ends in the chunk (`None`: it does not end in it).
    end: Option<RowEnd>,
}

/// Where a row ends.
#[derive(Debug, Clone, Copy)]
struct RowEnd {
    /// Just past the row (its line end included, but for the `\n` of a `\r\n`).
    at: usize,
    /// The row ended with `\r`, whose `\n` is still to come.
    after_cr: bool,
}

impl HeadRow {
    fn unfinished(&self) -> bool {
        self.end.is_none()
    }
}

/// How well a row does as the header: columns named, then earlier rows, then earlier
/// delimiters.
type Rank = (usize, Reverse<u64>, Reverse<usize>);

/// Looks for the header in `chunk`, the first bytes of the file (after any byte-order mark);
/// `eof` when the chunk is the whole file.
pub fn find(chunk: &[u8], eof: bool, schema: &RecordSchema, limits: &Limits) -> Header {
    let (sep, start) = match sep_line(chunk) {
        Some((delimiter, used)) => (Some(delimiter), used),
        None => (None, 0),
    };
    let body = &chunk[start..];
    let first_delimiter = sep.unwrap_or(DELIMITERS[0]);
    let first = head_rows(body, eof, first_delimiter, limits);
    let Some(default) = first.iter().position(|r| !r.blank) else {
        return Header::Blank { eof };
    };
    let complete = |r: &HeadRow| {
        r.cells.is_some() && r.fields <= limits.max_columns && !r.too_long && !r.unfinished()
    };
    let names_every_required = first[default].cells.as_ref().is_some_and(|cells| {
        schema.required.iter().all(|name| {
            cells.iter().any(|c| {
                schema
                    .match_header(c)
                    .is_some_and(|p| &schema.properties[p].name == name)
            })
        })
    });
    if complete(&first[default]) && names_every_required {
        return found(&first, default, first_delimiter, start);
    }
    // Every row with every delimiter: the one naming the most columns, the earlier row and
    // then the earlier delimiter winning ties.
    let mut best: Option<(Rank, Header)> = None;
    let delimiters: &[u8] = if sep.is_some() { &[] } else { &DELIMITERS[1..] };
    let others: Vec<(u8, Vec<HeadRow>)> = delimiters
        .iter()
        .map(|&d| (d, head_rows(body, eof, d, limits)))
        .collect();
    let tried =
        std::iter::once((first_delimiter, &first)).chain(others.iter().map(|(d, r)| (*d, r)));
    for (k, (delimiter, rows)) in tried.enumerate() {
        for (i, r) in rows.iter().enumerate() {
            if r.blank || !complete(r) {
                continue;
            }
            let key = (score(r, schema), Reverse(r.row), Reverse(k));
            if best.as_ref().is_none_or(|(b, _)| key > *b) {
                best = Some((key, found(rows, i, delimiter, start)));
            }
        }
    }
    let least = 2.min(schema.properties.len());
    let default_score = score(&first[default], schema);
    if let Some(((points, ..), header)) = best
        && points > default_score
        && points >= least
    {
        return header;
    }
    let r = &first[default];
    if r.cells.is_none() || r.fields > limits.max_columns {
        Header::TooWide {
            row: r.row,
            fields: r.fields,
            ends: !r.unfinished(),
        }
    } else if r.too_long || r.unfinished() {
        Header::TooLong {
            row: r.row,
            in_chunk: !r.unfinished(),
        }
    } else {
        found(&first, default, first_delimiter, start)
    }
}

/// The distinct schema properties a row's cells name.
fn score(row: &HeadRow, schema: &RecordSchema) -> usize {
    let Some(cells) = &row.cells else { return 0 };
    let mut named: Vec<usize> = cells
        .iter()
        .filter_map(|c| schema.match_header(c))
        .collect();
    named.sort_unstable();
    named.dedup();
    named.len()
}

fn found(rows: &[HeadRow], at: usize, delimiter: u8, start: usize) -> Header {
    let r = &rows[at];
    let mut cells = r.cells.clone().unwrap_or_default();
    while cells.len() > 1 && cells.last().is_some_and(|c| c.trim().is_empty()) {
        cells.pop();
    }
    let above = (r.row > 1).then(|| Above {
        rows: r.row - 1,
        first: rows[..at].iter().find(|a| !a.blank).map(|a| {
            let text = a.cells.as_ref().map_or_else(String::new, |c| {
                let joined = c.join(&char::from(delimiter).to_string());
                joined.chars().take(80).collect()
            });
            (a.row, text)
        }),
    });
    Header::Found(Found {
        delimiter,
        sep_line: start,
        row: r.row,
        width: r.fields,
        cells,
        end: start + r.end.map_or(0, |e| e.at),
        after_cr: r.end.is_some_and(|e| e.after_cr),
        above,
    })
}

/// `(delimiter, bytes used)` when the chunk starts with Excel's `sep=X` line.
fn sep_line(chunk: &[u8]) -> Option<(u8, usize)> {
    let (line, quoted) = match chunk.first() {
        Some(b'"') => (&chunk[1..], true),
        _ => (chunk, false),
    };
    if line.len() < 5 || !line[..4].eq_ignore_ascii_case(b"sep=") {
        return None;
    }
    let delimiter = line[4];
    if !delimiter.is_ascii() || matches!(delimiter, b'"' | b'\r' | b'\n') {
        return None;
    }
    let mut used = usize::from(quoted) + 5;
    if quoted {
        if chunk.get(used) != Some(&b'"') {
            return None;
        }
        used += 1;
    }
    match &chunk[used..] {
        [b'\r', b'\n', ..] => Some((delimiter, used + 2)),
        [b'\n' | b'\r', ..] => Some((delimiter, used + 1)),
        [] => Some((delimiter, used)),
        _ => None,
    }
}

/// Reads the rows at the start of `bytes` with `delimiter`, until [`SEARCH_ROWS`] rows that
/// are not blank, the end of the bytes, or a row that does not end in them. Rows are counted as
/// the decoder counts them: an empty line is a row, the `\n` of a `\r\n` is not.
fn head_rows(bytes: &[u8], eof: bool, delimiter: u8, limits: &Limits) -> Vec<HeadRow> {
    use csv_core::ReadRecordResult as R;
    let mut core = csv_core::ReaderBuilder::new().delimiter(delimiter).build();
    // A record's output is never longer than its input.
    let mut out = vec![0u8; bytes.len() + 1];
    let mut ends = vec![0usize; limits.max_columns.saturating_add(1).min(bytes.len() + 1)];
    let mut rows = Vec::new();
    let (mut pos, mut row, mut after_cr, mut filled) = (0, 0u64, false, 0);
    let blank_row = |row, at, after_cr| HeadRow {
        row,
        cells: Some(Vec::new()),
        fields: 0,
        blank: true,
        too_long: false,
        end: Some(RowEnd { at, after_cr }),
    };
    while filled < SEARCH_ROWS {
        match bytes.get(pos) {
            Some(b'\n') if after_cr => {
                pos += 1;
                after_cr = false;
                continue;
            }
            Some(b'\n') => {
                pos += 1;
                row += 1;
                rows.push(blank_row(row, pos, false));
                continue;
            }
            Some(b'\r') => {
                pos += 1;
                row += 1;
                rows.push(blank_row(row, pos, true));
                after_cr = true;
                continue;
            }
            None => break,
            Some(_) => after_cr = false,
        }
        row += 1;
        let (mut out_len, mut nends, mut dropped) = (0, 0, 0);
        let unfinished = loop {
            let input = &bytes[pos..];
            if input.is_empty() && !eof {
                break true;
            }
            let (res, nin, nout, nend) =
                core.read_record(input, &mut out[out_len..], &mut ends[nends..]);
            pos += nin;
            out_len += nout;
            nends += nend;
            match res {
                R::InputEmpty => {}
                R::OutputFull => {
                    let n = out.len();
                    out.resize(n * 2, 0);
                }
                R::OutputEndsFull => {
                    // More cells than a header may have: count them, keep none.
                    dropped += nends;
                    nends = 0;
                }
                R::Record => {
                    after_cr = nin > 0 && bytes[pos - 1] == b'\r';
                    break false;
                }
                R::End => break false,
            }
        };
        let fields = dropped + nends;
        let blank = out[..out_len].iter().all(|&b| b == b' ' || b == b'\t');
        let cells = (dropped == 0).then(|| {
            let mut start = 0;
            ends[..nends]
                .iter()
                .map(|&e| {
                    let cell = String::from_utf8_lossy(&out[start..e]).into_owned();
                    start = e;
                    cell
                })
                .collect::<Vec<_>>()
        });
        let too_long = cells
            .as_ref()
            .is_some_and(|c| c.iter().any(|c| c.len() > limits.max_cell_bytes));
        let blank = blank && !unfinished;
        filled += usize::from(!blank);
        rows.push(HeadRow {
            row,
            cells,
            fields,
            blank,
            too_long,
            end: (!unfinished).then_some(RowEnd { at: pos, after_cr }),
        });
        if unfinished {
            break;
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::CodeLists;

    fn schema() -> RecordSchema {
        RecordSchema::parse(
            "t",
            r#"{"type":"object","required":["a","b"],"properties":{
                "a":{"type":"string","x-aliases":["Col A"]},"b":{"type":["string","null"]},
                "c":{"type":["string","null"]}}}"#,
            &CodeLists::default(),
        )
        .unwrap()
    }

    fn found(text: &[u8]) -> Found {
        match find(text, true, &schema(), &Limits::default()) {
            Header::Found(f) => f,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_header_naming_every_required_column_is_taken_at_once() {
        let f = found(b"a,b,c\n1,2,3\n");
        assert_eq!((f.delimiter, f.row, f.end, f.width), (b',', 1, 6, 3));
        assert_eq!(f.cells, ["a", "b", "c"]);
        assert!(f.above.is_none());
    }

    #[test]
    fn semicolons_and_tabs_are_found_by_the_columns_they_name() {
        let f = found(b"a;b;c\r\n1;2;3\r\n");
        assert_eq!((f.delimiter, f.row, f.end, f.after_cr), (b';', 1, 6, true));
        let f = found(b"Col A\tb\n1\t2\n");
        assert_eq!((f.delimiter, f.cells.len()), (b'\t', 2));
    }

    #[test]
    fn title_rows_above_the_header_are_skipped() {
        let f = found(b"Stop and search, Durham\n\nJanuary 2020\na,b,c\n1,2,3\n");
        assert_eq!((f.row, f.end), (4, 44));
        let above = f.above.unwrap();
        assert_eq!(above.rows, 3);
        assert_eq!(above.first, Some((1, "Stop and search, Durham".to_owned())));
    }

    #[test]
    fn the_sep_line_names_the_delimiter_and_is_not_a_row() {
        let f = found(b"sep=;\r\na;b\r\n1;2\r\n");
        assert_eq!((f.delimiter, f.sep_line, f.row, f.end), (b';', 7, 1, 11));
        let f = found(b"\"sep=|\"\na|b\n");
        assert_eq!((f.delimiter, f.sep_line), (b'|', 8));
        // Not a sep line: the first row is read as usual.
        assert_eq!(found(b"sep=;;\na,b\n").row, 2);
    }

    #[test]
    fn empty_cells_at_the_end_of_the_header_are_dropped() {
        let f = found(b"a,b,,,\n1,2,,,\n");
        assert_eq!((f.cells.len(), f.width), (2, 5));
    }

    #[test]
    fn a_header_naming_few_columns_stays_the_first_row() {
        // The first row names one column with commas; no row names more: it stays.
        let f = found(b"a,x\nq;r\n");
        assert_eq!((f.row, f.delimiter), (1, b','));
    }

    #[test]
    fn a_header_too_wide_or_too_long_is_said_so_from_the_first_chunk() {
        let wide = "c,".repeat(200_000);
        match find(wide.as_bytes(), false, &schema(), &Limits::default()) {
            Header::TooWide { row, fields, ends } => {
                assert_eq!((row, ends), (1, false));
                assert!(fields > 1000);
            }
            other => panic!("{other:?}"),
        }
        let long = "x".repeat(100_000);
        match find(long.as_bytes(), false, &schema(), &Limits::default()) {
            Header::TooLong {
                row: 1,
                in_chunk: false,
            } => {}
            other => panic!("{other:?}"),
        }
        match find(b"\n ,\n", true, &schema(), &Limits::default()) {
            Header::Blank { eof: true } => {}
            other => panic!("{other:?}"),
        }
    }
}
