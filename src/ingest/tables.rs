//! Finding the tables on a published sheet: the header rows and the body of figures among
//! title rows, "Contents" links, notes, sources and footnotes.
//!
//! Official statistics workbooks (the Home Office's use-of-force and workforce tables, say)
//! put one or more tables on a sheet under a title, with a header that may take several rows
//! (a group label over several columns, as a merged cell leaves it: written once, in its
//! first column), and notes below. A sheet is read as a grid of cells, each text, a figure
//! (a number, or a suppression marker such as `..` or `[c]`) or a date, and:
//!
//! - a **body** is a run of rows that each hold at least two cells, one a figure, with at most
//!   [`MAX_GAP`] blank rows inside it;
//! - its **header** is the block of rows just above it that hold no figure, at most
//!   [`MAX_HEADER_ROWS`] of them with single blank rows between, stopping at a row that holds
//!   one text cell and nothing else in the table's columns (a title, a "Contents" link);
//! - a **column's name** joins its header rows' cells top to bottom, a group label carried
//!   right to the columns under it until the next label, spaces and line breaks collapsed,
//!   and footnote markers (`[note 3]`) left out.

/// One cell, as the table finder sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Nothing.
    Empty,
    /// Text that is not a figure.
    Text(String),
    /// A number, or a suppression marker, as its text.
    Figure(String),
    /// A date or date-time, as its text.
    Date(String),
}

impl Cell {
    fn text(&self) -> Option<&str> {
        match self {
            Cell::Empty => None,
            Cell::Text(t) | Cell::Figure(t) | Cell::Date(t) => Some(t),
        }
    }
}

/// The most blank rows a body may have inside it.
pub const MAX_GAP: usize = 1;
/// The most rows a header may take.
pub const MAX_HEADER_ROWS: usize = 4;

/// A table found on a sheet. Rows and columns are zero-based positions in the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// The header's first and last rows (equal for a one-row header; `None` for a body with
    /// no header above it).
    pub header: Option<(usize, usize)>,
    /// The body's first and last rows.
    pub body: (usize, usize),
    /// The first and last columns the table uses.
    pub columns: (usize, usize),
    /// A name per column from the first to the last (empty where the header says nothing).
    pub names: Vec<String>,
    /// Rows of the body that hold at least one figure (the rest are blank rows inside it).
    pub rows: usize,
}

/// Whether `text` reads as a figure: a number (thousands separators and a sign allowed, a
/// trailing `%`) or a marker of official statistics.
pub fn is_figure(text: &str) -> bool {
    let t = text.trim();
    if matches!(
        t,
        ".." | "-" | "*" | "[c]" | "[x]" | "[z]" | "[low]" | "[u]"
    ) {
        return true;
    }
    let t = t.strip_suffix('%').unwrap_or(t).replace(',', "");
    !t.is_empty() && t.parse::<f64>().is_ok_and(f64::is_finite)
}

fn has_figure(row: &[Cell]) -> bool {
    row.iter().any(|c| matches!(c, Cell::Figure(_)))
}

fn filled(row: &[Cell]) -> usize {
    row.iter().filter(|c| !matches!(c, Cell::Empty)).count()
}

fn is_body_row(row: &[Cell]) -> bool {
    has_figure(row) && filled(row) >= 2
}

/// The tables of one sheet's grid, top to bottom.
pub fn find(grid: &[Vec<Cell>]) -> Vec<Table> {
    let mut tables: Vec<Table> = Vec::new();
    let mut r = 0;
    while r < grid.len() {
        if !is_body_row(&grid[r]) {
            r += 1;
            continue;
        }
        let start = r;
        let mut end = r;
        let mut next = r + 1;
        while next < grid.len() {
            if is_body_row(&grid[next]) {
                end = next;
                next += 1;
            } else if filled(&grid[next]) == 0 && next - end <= MAX_GAP {
                next += 1;
            } else {
                break;
            }
        }
        let floor = tables.last().map_or(0, |t| t.body.1 + 1);
        let mut found = table(grid, start, end, floor);
        if let Some(above) = tables.last() {
            inherit_names(&mut found, above);
        }
        tables.push(found);
        r = end + 1;
    }
    tables
}

/// The table whose body is rows `start..=end`, its header searched no higher than `floor`.
fn table(grid: &[Vec<Cell>], start: usize, end: usize, floor: usize) -> Table {
    let body = &grid[start..=end];
    let used = |row: &[Cell]| -> Option<(usize, usize)> {
        let first = row.iter().position(|c| !matches!(c, Cell::Empty))?;
        let last = row.iter().rposition(|c| !matches!(c, Cell::Empty))?;
        Some((first, last))
    };
    let (mut left, mut right) = body
        .iter()
        .filter_map(|row| used(row))
        .fold((usize::MAX, 0), |(l, r), (a, b)| (l.min(a), r.max(b)));
    // Header rows, nearest first.
    let mut header_rows: Vec<usize> = Vec::new();
    let mut r = start;
    let mut blanks = 0;
    while r > floor && header_rows.len() < MAX_HEADER_ROWS {
        r -= 1;
        let row = &grid[r];
        let in_table: Vec<usize> = (left..=right.min(row.len().saturating_sub(1)))
            .filter(|&c| c < row.len() && !matches!(row[c], Cell::Empty))
            .collect();
        if in_table.is_empty() {
            blanks += 1;
            if blanks > 1 {
                break;
            }
            continue;
        }
        if has_figure(row) {
            break;
        }
        // A title, a link or a label over the table: one text cell alone in the table's
        // first column, over a header row already found (or reading as a title).
        if filled(row) == 1 && in_table == [left] && (!header_rows.is_empty() || is_title(row)) {
            break;
        }
        blanks = 0;
        header_rows.push(r);
    }
    header_rows.reverse();
    for &h in &header_rows {
        if let Some((a, b)) = used(&grid[h]) {
            left = left.min(a);
            right = right.max(b);
        }
    }
    let width = right + 1 - left;
    let mut parts: Vec<Vec<String>> = vec![Vec::new(); width];
    for (i, &h) in header_rows.iter().enumerate() {
        let row = &grid[h];
        let last = i + 1 == header_rows.len();
        let mut carried: Option<String> = None;
        for (c, part) in parts.iter_mut().enumerate() {
            let cell = row.get(left + c).and_then(Cell::text).map(clean);
            match cell {
                Some(text) if !text.is_empty() => {
                    // The first column holds the rows' labels: its header is its own.
                    carried = (c > 0).then(|| text.clone());
                    part.push(text);
                }
                _ if !last => {
                    if let Some(text) = &carried {
                        part.push(text.clone());
                    }
                }
                _ => {}
            }
        }
    }
    Table {
        header: header_rows
            .first()
            .zip(header_rows.last())
            .map(|(a, b)| (*a, *b)),
        body: (start, end),
        columns: (left, right),
        names: parts.into_iter().map(|p| p.join(" / ")).collect(),
        rows: body.iter().filter(|row| has_figure(row)).count(),
    }
}

/// Columns a table's header leaves unnamed take the names the table just above gives them,
/// when that table ends at most two rows above this one's header: published tables put a
/// line of totals between the column headings and the rows they head.
fn inherit_names(table: &mut Table, above: &Table) {
    let top = table.header.map_or(table.body.0, |h| h.0);
    if top > above.body.1 + 3 {
        return;
    }
    for (i, name) in table.names.iter_mut().enumerate() {
        let column = table.columns.0 + i;
        if name.is_empty() && (above.columns.0..=above.columns.1).contains(&column) {
            name.clone_from(&above.names[column - above.columns.0]);
        }
    }
}

/// A row that is a title or a link rather than a header: its one cell is a sentence-like text
/// (a table's title) or a word such as "Contents".
fn is_title(row: &[Cell]) -> bool {
    row.iter().filter_map(Cell::text).any(|t| {
        let t = t.trim();
        t.eq_ignore_ascii_case("contents")
            || t.to_ascii_lowercase().starts_with("table ")
            || words(t).count() > 8
    })
}

/// A header cell's text with spaces and line breaks collapsed and footnote markers left out.
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let close = rest[open..].find(']').map(|c| open + c);
        match close {
            Some(close)
                if rest[open + 1..close]
                    .to_ascii_lowercase()
                    .starts_with("note") =>
            {
                out.push_str(&rest[..open]);
                rest = &rest[close + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    words(&out).collect::<Vec<_>>().join(" ")
}

/// The words of a text: what lies between runs of spaces, tabs and line breaks (a cell's
/// line breaks are `Alt+Enter` in a spreadsheet; a non-breaking space stays inside a word).
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split([' ', '\t', '\n', '\r'])
        .filter(|w| !w.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(rows: &[&str]) -> Vec<Vec<Cell>> {
        rows.iter()
            .map(|row| {
                if row.is_empty() {
                    return Vec::new();
                }
                row.split('|')
                    .map(|c| {
                        let c = c.trim();
                        if c.is_empty() {
                            Cell::Empty
                        } else if is_figure(c) {
                            Cell::Figure(c.to_owned())
                        } else {
                            Cell::Text(c.to_owned())
                        }
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_titled_table_with_a_grouped_header_and_notes_below() {
        let g = grid(&[
            "Table 12. Incidents by police force area, England and Wales, year ending March 2019",
            "Contents",
            "",
            "Region | Police force | Tactic used | | ",
            " | | Restraint [note 2] | Taser | Total",
            "England and Wales | Total | 100 | 20 | 120",
            "North East | Cleveland | 10 | .. | 12",
            "",
            "North East | Durham | 5 | 1 | 6",
            "",
            "",
            "Source: Home Office, Annual Data Requirement",
            "1. Figures for Cleveland are withheld.",
        ]);
        let tables = find(&g);
        assert_eq!(tables.len(), 1, "{tables:?}");
        let t = &tables[0];
        assert_eq!(t.header, Some((3, 4)));
        assert_eq!(t.body, (5, 8));
        assert_eq!(t.rows, 3);
        assert_eq!(t.columns, (0, 4));
        assert_eq!(
            t.names,
            [
                "Region",
                "Police force",
                "Tactic used / Restraint",
                "Tactic used / Taser",
                "Tactic used / Total"
            ]
        );
    }

    #[test]
    fn two_tables_on_one_sheet_each_get_their_own_header() {
        let g = grid(&[
            "Table 2. Number of times tactic reported, by age",
            "",
            " | | Under 11 | 11 - 17",
            " | | 639 | 40,633",
            "",
            "Type of force | Tactic | | ",
            "Restraint | Handcuffing | 225 | 28770",
            "Restraint | Ground | 100 | [c]",
        ]);
        let tables = find(&g);
        assert_eq!(tables.len(), 2, "{tables:?}");
        assert_eq!(tables[0].header, Some((2, 2)));
        assert_eq!(tables[0].body, (3, 3));
        assert_eq!(tables[0].names, ["Under 11", "11 - 17"]);
        assert_eq!(tables[1].header, Some((5, 5)));
        assert_eq!(tables[1].body, (6, 7));
        assert_eq!(tables[1].columns, (0, 3));
        // The columns the second header leaves blank are named by the first.
        assert_eq!(
            tables[1].names,
            ["Type of force", "Tactic", "Under 11", "11 - 17"]
        );
    }

    #[test]
    fn figures_are_numbers_and_markers_and_notes_are_not_tables() {
        for f in ["1", "-3.5", "1,234", "12%", "..", "[c]", "*", "-"] {
            assert!(is_figure(f), "{f}");
        }
        for t in ["Total", "2018/19", "NaN", "inf", "", "1.2.3"] {
            assert!(!is_figure(t), "{t}");
        }
        let g = grid(&[
            "Cover sheet",
            "",
            "Police use of force statistics",
            "Published 19 December 2019",
        ]);
        assert!(find(&g).is_empty());
        assert_eq!(clean(" Drawn \n[note 4] "), "Drawn");
        assert_eq!(clean("Rate [x]"), "Rate [x]");
    }
}
