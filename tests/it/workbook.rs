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
