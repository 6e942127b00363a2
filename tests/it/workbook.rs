//! Workbooks read as their sheet's CSV text: a real extract saved as XLSX by openpyxl (dates as
//! Excel dates, numbers as numbers) is judged exactly as the CSV it came from.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::common::{
    force_returns, libreoffice_save_as, output_text as text, python, shared_fixtures,
};

/// Saves `csv` as an XLSX workbook with openpyxl: the `Date` column as Excel date-times (as
/// Excel stores them, without an offset), numbers as numbers, blank cells left out.
fn save_as_xlsx(csv: &Path, xlsx: &Path) {
    let script = r#"
import csv, datetime, sys
import openpyxl
src, dst = sys.argv[1], sys.argv[2]
wb = openpyxl.Workbook()
ws = wb.active
ws.title = "Stop and search"
rows = list(csv.reader(open(src, encoding="utf-8-sig")))
date = rows[0].index("Date")
for r, row in enumerate(rows, start=1):
    for c, cell in enumerate(row):
        if cell == "":
            continue
        value = cell
        if r > 1 and c == date:
            value = datetime.datetime.fromisoformat(cell).astimezone(
                datetime.timezone(datetime.timedelta(hours=0))).replace(tzinfo=None)
        elif r > 1:
            try:
                value = float(cell)
            except ValueError:
                pass
        ws.cell(row=r, column=c + 1, value=value)
wb.save(dst)
"#;
    let out = std::process::Command::new(python())
        .args(["-c", script])
        .arg(csv)
        .arg(xlsx)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "openpyxl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The decision and the count of every code of `validate --format json` on a file.
fn judged(file: &Path) -> (String, BTreeMap<String, u64>) {
    let o = force_returns(&[
        "validate",
        file.to_str().unwrap(),
        "--dataset",
        "stop_search",
        "--force",
        "durham",
        "--period",
        "2020-01",
        "--format",
        "json",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)));
    let counts = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["code"].as_str().unwrap().to_owned(),
                f["count"].as_u64().unwrap(),
            )
        })
        .collect();
    (v["decision"].as_str().unwrap().to_owned(), counts)
}

#[test]
fn a_real_extract_saved_as_a_workbook_is_judged_as_its_csv() {
    let csv =
        shared_fixtures().join("police-uk/stop-and-search/2020-01-durham-stop-and-search.csv");
    let dir = tempfile::tempdir().unwrap();
    let xlsx = dir.path().join("durham.xlsx");
    save_as_xlsx(&csv, &xlsx);
    let (decision, mut from_workbook) = judged(&xlsx);
    let (expected_decision, from_csv) = judged(&csv);
    assert_eq!(decision, expected_decision);
    // The workbook adds two notes: which sheet was read, and that its dates were Excel's
    // (161 records, each dated); every other code is counted exactly as for the CSV.
    assert_eq!(from_workbook.remove("workbook_sheet_read"), Some(1));
    assert_eq!(from_workbook.remove("value_excel_date"), Some(1));
    assert_eq!(from_workbook, from_csv);
}

#[test]
fn a_real_extract_saved_by_libreoffice_as_xlsx_and_as_ods_is_judged_as_its_csv() {
    let csv =
        shared_fixtures().join("police-uk/stop-and-search/2020-01-durham-stop-and-search.csv");
    let dir = tempfile::tempdir().unwrap();
    let (expected_decision, from_csv) = judged(&csv);
    for format in ["xlsx", "ods"] {
        let saved = libreoffice_save_as(&csv, format, dir.path());
        let (decision, mut from_workbook) = judged(&saved);
        assert_eq!(decision, expected_decision, "{format}");
        assert_eq!(
            from_workbook.remove("workbook_sheet_read"),
            Some(1),
            "{format}"
        );
        assert_eq!(from_workbook, from_csv, "{format}");
    }
}

/// `force-returns tables --format json` on a file.
fn tables(file: &Path) -> Value {
    let o = force_returns(&["tables", file.to_str().unwrap(), "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)))
}

/// The tables of `sheet` as (range, column names).
fn sheet_tables<'a>(found: &'a Value, sheet: &str) -> Vec<(&'a str, Vec<&'a str>)> {
    found["sheets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sheet"] == sheet)
        .unwrap_or_else(|| panic!("no sheet {sheet}"))["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["range"].as_str().unwrap(),
                t["columns"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["name"].as_str().unwrap())
                    .collect(),
            )
        })
        .collect()
}

/// For each table found, what the same workbook saved by LibreOffice as XLSX holds where the
/// table is said to be, read by openpyxl: the text of the header's last row, and whether the
/// body's first and last rows hold a number.
fn check_positions(found: &Value, xlsx: &Path) -> Value {
    let script = r#"
import json, re, sys
import openpyxl
from openpyxl.utils import column_index_from_string
found = json.load(sys.stdin)
wb = openpyxl.load_workbook(sys.argv[1], read_only=True)
out = []
for sheet in found["sheets"]:
    ws = wb[sheet["sheet"]]
    rows = list(ws.iter_rows(values_only=True))
    for t in sheet["tables"]:
        first, last = re.match(r"([A-Z]+)\d+:([A-Z]+)\d+", t["range"]).groups()
        a, b = column_index_from_string(first) - 1, column_index_from_string(last) - 1
        cells = lambda r: list(rows[r - 1][a:b + 1]) if r - 1 < len(rows) else []
        number = lambda r: any(isinstance(c, (int, float)) or c in ("..", "*", "[c]", "[x]", "-") for c in cells(r))
        header = t["header_rows"][1] if t["header_rows"] else None
        out.append({
            "sheet": sheet["sheet"], "range": t["range"],
            "header": [" ".join(str(c).split()) for c in cells(header) if c is not None and not hasattr(c, "year")] if header else [],
            "body_first_has_figure": number(t["body_rows"][0]),
            "body_last_has_figure": number(t["body_rows"][1]),
            "row_after_has_figure": number(t["body_rows"][1] + 1),
        })
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(python())
        .args(["-c", script])
        .arg(xlsx)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(found.to_string().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_home_offices_published_workbooks_are_read_and_their_tables_found() {
    let dir = tempfile::tempdir().unwrap();
    let home_office = shared_fixtures().join("home-office");
    let use_of_force = home_office.join("police-use-of-force-apr2018-mar2019-tables.ods");
    let workforce = home_office.join("police-workforce-sep19-tables.ods");
    for (file, sheets, with_tables) in [(&use_of_force, 19, 17), (&workforce, 14, 13)] {
        let found = tables(file);
        let all = found["sheets"].as_array().unwrap();
        assert_eq!(all.len(), sheets, "{found}");
        assert!(all.iter().all(|s| s["error"].is_null()), "{found}");
        let table_sheets = all
            .iter()
            .filter(|s| s["sheet"].as_str().unwrap().starts_with("Table_"))
            .filter(|s| !s["tables"].as_array().unwrap().is_empty())
            .count();
        assert_eq!(
            table_sheets, with_tables,
            "every Table_ sheet has a table: {found}"
        );
        // Where each table is said to be, the workbook as LibreOffice saves it and openpyxl
        // reads it has the header's names above figures, and the body ends where they do.
        let xlsx = libreoffice_save_as(file, "xlsx", dir.path());
        for t in check_positions(&found, &xlsx).as_array().unwrap() {
            assert_eq!(t["body_first_has_figure"], true, "{t}");
            assert_eq!(t["body_last_has_figure"], true, "{t}");
            assert_eq!(t["row_after_has_figure"], false, "{t}");
            let names = sheet_tables(&found, t["sheet"].as_str().unwrap())
                .into_iter()
                .find(|(range, _)| *range == t["range"])
                .unwrap()
                .1
                .join(" | ");
            for cell in t["header"].as_array().unwrap() {
                assert!(
                    names.contains(cell.as_str().unwrap()),
                    "{cell} not in {names}"
                );
            }
        }
    }

    let found = tables(&use_of_force);
    // Incidents by force: one header row under the title and the "Contents" link; the rows
    // run to the last force, above the notes.
    assert_eq!(
        sheet_tables(&found, "Table_12"),
        vec![("A4:C58", vec!["Region", "Police force", "Total"])]
    );
    // Taser (CED) by type of use, per force and year: the column set of the CED table.
    let ced = sheet_tables(&found, "Table_13");
    assert_eq!(ced.len(), 1);
    for name in [
        "Financial year",
        "Police force",
        "Drawn",
        "Red-dot",
        "Arced",
        "Fired",
    ] {
        assert!(ced[0].1.contains(&name), "{name}: {:?}", ced[0].1);
    }
    // Tactics by age: a line of national totals under the age headings, then the table,
    // whose age columns are named by the headings above the totals.
    let by_age = sheet_tables(&found, "Table_2");
    assert_eq!(by_age.len(), 2, "{by_age:?}");
    assert!(
        by_age[1]
            .1
            .starts_with(&["Type of force", "Tactic", "Under 11 years"])
    );
    // Tactics by ethnicity per force: a header of two rows, its group label carried over.
    let by_ethnicity = sheet_tables(&found, "Table_16");
    assert!(
        by_ethnicity[0]
            .1
            .contains(&"Perceived ethnicity / Black (or Black British)")
    );

    // The workforce: a four-row header with dates, under a title.
    let found = tables(&workforce);
    let officers = sheet_tables(&found, "Table_7");
    assert_eq!(officers.len(), 1);
    assert!(officers[0].0.starts_with("A3:"), "{officers:?}");
}

/// Writes a workbook with `tests/py/make_workbook.py`.
fn make_workbook(path: &Path, kind: &str, size: u64) {
    let o = std::process::Command::new(python())
        .arg(crate::common::manifest_dir().join("tests/py/make_workbook.py"))
        .arg(path)
        .arg(kind)
        .arg(size.to_string())
        .output()
        .expect("python runs");
    assert!(o.status.success(), "make_workbook.py {kind}: {}", text(&o));
}

/// `validate --format json` of a data pack run from Python, which also reports the peak
/// resident memory of the run (`getrusage` of its child), in bytes.
fn validate_measured(file: &Path) -> (i32, Value, u64) {
    let script = r#"
import json, resource, subprocess, sys
p = subprocess.run(sys.argv[1:], capture_output=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"code": p.returncode, "peak": peak, "stdout": p.stdout.decode(), "stderr": p.stderr.decode()}))
"#;
    let o = std::process::Command::new(python())
        .args(["-c", script, env!("CARGO_BIN_EXE_force-returns")])
        .args(["validate", file.to_str().unwrap()])
        .args(["--dataset", "data_pack", "--force", "kent"])
        .args(["--period", "FY2024-25", "--format", "json"])
        .current_dir(crate::common::manifest_dir())
        .output()
        .expect("python runs");
    assert!(o.status.success(), "{}", text(&o));
    let run: Value = serde_json::from_slice(&o.stdout).unwrap();
    let report: Value =
        serde_json::from_str(run["stdout"].as_str().unwrap()).unwrap_or_else(|_| panic!("{run}"));
    (
        run["code"].as_i64().unwrap() as i32,
        report,
        run["peak"].as_u64().unwrap(),
    )
}

/// The first message of `code` in a report.
fn message<'a>(report: &'a Value, code: &str) -> Option<&'a str> {
    report["findings"]
        .as_array()?
        .iter()
        .find(|f| f["code"] == code)?["examples"][0]["message"]
        .as_str()
}

#[test]
fn malformed_and_oversized_workbooks_are_findings_in_bounded_memory() {
    /// Far above what any of these needs (a debug build, a million rows: about 70 MiB), far
    /// below what reading them whole would take.
    const BOUND: u64 = 256 << 20;
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, u64, &str, &str); 5] = [
        (
            "encrypted",
            0,
            "workbook_unreadable",
            "the file is a password-protected workbook",
        ),
        (
            "not-a-workbook",
            0,
            "workbook_unreadable",
            "the file is a zip archive but not a workbook",
        ),
        (
            // One row past the return's limit of a million.
            "rows",
            1_000_001,
            "too_many_rows",
            "",
        ),
        // One cell of 10 MB, far past the return's cell limit (4 KiB).
        ("big-cell", 10_000_000, "cell_too_long", ""),
        // Shared strings that unpack past the 64 MiB a part read whole may have.
        (
            "shared-strings",
            70_000_000,
            "file_too_large",
            "the workbook's part `xl/sharedStrings.xml` unpacks to",
        ),
    ];
    for (kind, size, code, says) in cases {
        let file = dir.path().join(format!("{kind}.xlsx"));
        make_workbook(&file, kind, size);
        let (exit, report, peak) = validate_measured(&file);
        assert_eq!(exit, 1, "{kind}: {report}");
        let found = message(&report, code).unwrap_or_else(|| panic!("{kind}: no {code}: {report}"));
        assert!(found.starts_with(says), "{kind}: {found}");
        assert!(peak < BOUND, "{kind}: peak memory {peak} bytes");
        if kind == "big-cell" {
            let cell = report["findings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["code"] == code)
                .unwrap()["examples"][0]["cell"]
                .clone();
            assert_eq!(cell, "data!A3", "{report}");
        }
    }
}
