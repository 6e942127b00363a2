//! The aggregate data pack through the real binary: `validate` judges each row and the whole
//! table against the metric catalogue, and `run --once` takes a pack to a Parquet snapshot that
//! pyarrow reads, its withheld figures null and counted.

use std::path::Path;

use serde_json::Value;

use crate::common::{
    force_returns, libreoffice_save_as, manifest_dir, output_text as text, python, read_bucket,
    read_folder,
};

const HEADER: &str = "force,period,metric,ethnicity,outcome_group,value,numerator,denominator,note";

/// A pack of stop-and-search figures: searches by ethnicity (one withheld) and by outcome,
/// the population, rates per 1,000 and the disparity ratio, all agreeing with each other.
fn pack_rows() -> Vec<String> {
    let searches = [
        ("Asian", "100", 20_000.0),
        ("Black", "200", 5_000.0),
        ("Mixed", "[c]", 4_000.0),
        ("Other", "50", 2_000.0),
        ("White", "600", 500_000.0),
        ("Not stated", "20", 0.0),
    ];
    let mut rows = vec!["kent,FY2024-25,stop_search_searches,,,\"1,000\",,,".to_owned()];
    for (group, n, _) in searches {
        rows.push(format!(
            "kent,FY2024-25,stop_search_searches,{group},,{n},,,"
        ));
    }
    for (group, n) in [
        ("Arrest", 150),
        ("Charge or summons", 50),
        ("Out of court disposal", 100),
        ("No further action", 650),
        ("Other", 50),
    ] {
        rows.push(format!(
            "kent,FY2024-25,stop_search_searches,,{group},{n},,,"
        ));
    }
    let white_rate = 600.0 / 500_000.0 * 1000.0;
    rows.push("kent,FY2024-25,population,,,531000,,,".to_owned());
    rows.push(format!(
        "kent,FY2024-25,stop_search_rate_per_1000,,,{:.3},1000,531000,",
        1000.0 / 531_000.0 * 1000.0
    ));
    for (group, n, people) in searches {
        if people == 0.0 {
            continue;
        }
        rows.push(format!("kent,FY2024-25,population,{group},,{people},,,"));
        let Ok(n) = n.parse::<f64>() else {
            // A withheld count withholds the rate and ratio computed from it.
            rows.push(format!(
                "kent,FY2024-25,stop_search_rate_per_1000,{group},,[c],,,"
            ));
            rows.push(format!(
                "kent,FY2024-25,stop_search_disparity_ratio,{group},,[c],,,"
            ));
            continue;
        };
        let rate = n / people * 1000.0;
        rows.push(format!(
            "kent,FY2024-25,stop_search_rate_per_1000,{group},,{rate:.3},{n},{people},"
        ));
        rows.push(format!(
            "kent,FY2024-25,stop_search_disparity_ratio,{group},,{:.2},,,",
            rate / white_rate
        ));
    }
    rows
}

fn csv(rows: &[String]) -> String {
    format!("{HEADER}\n{}\n", rows.join("\n"))
}

fn validate(file: &Path) -> (Option<i32>, Value) {
    let o = force_returns(&[
        "validate",
        file.to_str().unwrap(),
        "--dataset",
        "data_pack",
        "--force",
        "kent",
        "--period",
        "FY2024-25",
        "--format",
        "json",
    ]);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)));
    (o.status.code(), v)
}

/// The codes of a report, in its order.
fn codes(v: &Value) -> Vec<&str> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect()
}

/// The examples of a code: (row, column, message).
fn examples(v: &Value, code: &str) -> Vec<(Option<u64>, String, String)> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == code)
        .flat_map(|f| f["examples"].as_array().unwrap().clone())
        .map(|e| {
            (
                e["row"].as_u64(),
                e["column"].as_str().unwrap_or_default().to_owned(),
                e["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_consistent_pack_is_accepted_and_every_break_of_the_catalogues_rules_is_found_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pack.csv");
    std::fs::write(&file, csv(&pack_rows())).unwrap();
    let (code, v) = validate(&file);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["decision"], "accepted_with_warnings", "{v}");
    let codes = codes(&v);
    // What the pack leaves out (use of force, arrests, shares) is missing, and the withheld
    // figure is counted; nothing else.
    assert_eq!(
        codes,
        [
            "metric_missing",
            "value_thousands_separator",
            "metric_suppressed"
        ],
        "{v}"
    );
    let suppressed = examples(&v, "metric_suppressed");
    assert!(
        suppressed[0]
            .2
            .starts_with("3 values are suppression markers")
    );
    assert!(
        examples(&v, "metric_missing")
            .iter()
            .all(|(_, _, m)| !m.starts_with("`stop_search_searches`")
                && !m.starts_with("`stop_search_rate_per_1000`")),
        "{v}"
    );

    // The same pack with one break of each kind: rows 2 onwards are the pack's rows.
    let mut rows = pack_rows();
    let row_of = |rows: &[String], needle: &str| {
        rows.iter().position(|r| r.contains(needle)).unwrap() as u64 + 2
    };
    let total = row_of(&rows, "stop_search_searches,,,\"1,000\"");
    rows[0] = "kent,FY2024-25,stop_search_searches,,,900,,,".to_owned();
    let black_rate = row_of(&rows, "stop_search_rate_per_1000,Black");
    rows[(black_rate - 2) as usize] =
        "kent,FY2024-25,stop_search_rate_per_1000,Black,,4,200,5000,".to_owned();
    rows.push("kent,FY2024-25,stop_search_serches,Black,,5,,,".to_owned());
    rows.push("kent,FY2024-25,population,Black,Arrest,5,,,".to_owned());
    rows.push("kent,FY2024-25,stop_search_searches,Black,,200,,,".to_owned());
    rows.push("kent,FY2024-25,stop_search_nfa_share,,,-4,,,".to_owned());
    rows.push("kent,FY2024-25,stop_search_arrest_share,,,,,,".to_owned());
    let last = rows.len() as u64 + 1;
    std::fs::write(&file, csv(&rows)).unwrap();
    let (code, v) = validate(&file);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["decision"], "rejected");
    let one = |code: &str| {
        let e = examples(&v, code);
        assert_eq!(e.len(), 1, "{code}: {e:?}");
        e.into_iter().next().unwrap()
    };
    // Both breakdowns of the searches disagree with the new total: by ethnicity (with a part
    // withheld, those given already exceed it) and by outcome.
    let parts = examples(&v, "metric_parts_total");
    assert!(
        parts
            .iter()
            .all(|(row, column, _)| *row == Some(total) && column == "value")
    );
    let messages: Vec<&str> = parts.iter().map(|(_, _, m)| m.as_str()).collect();
    assert_eq!(
        messages,
        [
            "`stop_search_searches` (the total): the values by ethnicity (those given) already exceed 970, not the total 900",
            "`stop_search_searches` (the total): the values by outcome_group add up to 1000, not the total 900",
        ]
    );
    // The Black rate disagrees with its own numerator and denominator, and with the searches
    // and population rows; what is computed from the changed figures disagrees in turn (the
    // total rate, the Black disparity ratio).
    let off = examples(&v, "metric_disagrees_with_parts");
    let at_black: Vec<&str> = off
        .iter()
        .filter(|(row, _, _)| *row == Some(black_rate))
        .map(|(_, _, m)| m.as_str())
        .collect();
    assert_eq!(
        at_black,
        [
            "`stop_search_rate_per_1000` is 4, but its numerator 200 over its denominator 5000 gives 40",
            "`stop_search_rate_per_1000` by ethnicity = Black is 4, but `stop_search_searches` over `population` in this return gives 40 (200 over 5000)",
        ],
        "{off:?}"
    );
    assert!(
        off.iter()
            .any(|(_, _, m)| m.starts_with("`stop_search_disparity_ratio` by ethnicity = Black")),
        "{off:?}"
    );
    let (row, column, message) = one("metric_unknown");
    assert_eq!((row, column.as_str()), (Some(last - 4), "metric"));
    assert!(
        message.contains("(did you mean `stop_search_searches`?)"),
        "{message}"
    );
    let (row, column, _) = one("metric_dimension_unknown");
    assert_eq!((row, column.as_str()), (Some(last - 3), "outcome_group"));
    let (row, _, message) = one("metric_duplicate");
    assert_eq!(row, Some(last - 2));
    assert!(
        message.contains("by ethnicity = Black is given twice"),
        "{message}"
    );
    let (row, _, message) = one("metric_out_of_range");
    assert_eq!(row, Some(last - 1));
    assert!(message.contains("is -4, below zero"), "{message}");
    let (row, _, message) = one("metric_value_invalid");
    assert_eq!(row, Some(last));
    assert!(
        message.contains("is blank: give the figure, or a suppression marker"),
        "{message}"
    );
}

#[test]
fn a_pack_goes_through_the_worker_to_a_snapshot_pyarrow_reads() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let incoming = bucket.join("incoming/kent/data_pack/FY2024-25");
    std::fs::create_dir_all(&incoming).unwrap();
    let rows = pack_rows();
    std::fs::write(incoming.join("pack.csv"), csv(&rows)).unwrap();
    let o = force_returns(&["run", "--once", "--bucket", bucket.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("accepted_with_warnings"), "{}", text(&o));
    let (stored, columns) =
        read_folder(&bucket.join("snapshots/data_pack/period=FY2024-25/force=kent"));
    assert_eq!(stored.len(), rows.len());
    // pyarrow reads the lineage, with the catalogue the pack was checked against.
    let read = read_bucket(&bucket, "data_pack");
    let meta = &read["snapshots"][0]["metadata"];
    assert_eq!(meta["force_returns.schema_id"], "data_pack/v1", "{read}");
    assert_eq!(meta["force_returns.catalogue_version"], "1", "{read}");
    for c in [
        "metric",
        "ethnicity",
        "outcome_group",
        "value",
        "numerator",
        "denominator",
    ] {
        assert!(columns.iter().any(|x| x == c), "{c} in {columns:?}");
    }
    let find = |metric: &str, ethnicity: Option<&str>| {
        stored
            .iter()
            .find(|r| {
                r["metric"] == metric
                    && r["ethnicity"].as_str() == ethnicity
                    && r["outcome_group"].is_null()
            })
            .unwrap_or_else(|| panic!("{metric} {ethnicity:?}"))
    };
    assert_eq!(find("stop_search_searches", None)["value"], 1000.0);
    assert_eq!(find("stop_search_searches", Some("Black"))["value"], 200.0);
    // A withheld figure is null in the snapshot, never a number.
    assert!(find("stop_search_searches", Some("Mixed"))["value"].is_null());
    assert_eq!(
        find("stop_search_rate_per_1000", Some("Black"))["denominator"],
        5000.0
    );
    // The pack's figures are its observations: each a row of its metrics table, by metric and
    // breakdown, withheld ones left out.
    let (metrics, _) =
        read_folder(&bucket.join("snapshots/data_pack_metrics/period=FY2024-25/force=kent"));
    let figure = |metric: &str, dimension: &str, category: &str| {
        metrics
            .iter()
            .find(|r| {
                r["metric"] == metric && r["dimension"] == dimension && r["category"] == category
            })
            .map(|r| r["value"].as_f64().unwrap())
    };
    assert_eq!(figure("stop_search_searches", "", ""), Some(1000.0));
    assert_eq!(
        figure("stop_search_searches", "ethnicity", "Black"),
        Some(200.0)
    );
    assert_eq!(
        figure("stop_search_searches", "outcome_group", "Arrest"),
        Some(150.0)
    );
    assert_eq!(figure("stop_search_searches", "ethnicity", "Mixed"), None);
    assert_eq!(figure("population", "ethnicity", "White"), Some(500_000.0));
    // The force's report says what was missing.
    let report = std::fs::read_dir(bucket.join("feedback/kent/data_pack/FY2024-25"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap();
    let report: Value = serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    let text = report.to_string();
    assert!(text.contains("metric_missing") && text.contains("use_of_force_tactic_uses"));
}

/// Writes `rows` (CSV lines of the pack) into the `data` sheet of a workbook saved by openpyxl,
/// after a README sheet and under a merged title row and a blank one (so the header is row 3);
/// cells that read as numbers are stored as numbers, the rest (`1,000`, `[c]`) as text. Then
/// each of `cells` (a cell of the sheet and what to write there, such as a formula) is written.
fn openpyxl_pack(path: &Path, rows: &[String], cells: &[(&str, &str)]) {
    let script = r#"
import csv, io, sys
import openpyxl
path, text = sys.argv[1], sys.stdin.read()
cells = sys.argv[2:]
wb = openpyxl.Workbook()
readme = wb.active
readme.title = "README"
readme["A1"] = "Fill in the data sheet; one row per metric and breakdown."
data = wb.create_sheet("data")
data["A1"] = "Police Race Action Plan data pack"
data.merge_cells("A1:D1")
for r, row in enumerate(csv.reader(io.StringIO(text)), start=3):
    for c, cell in enumerate(row, start=1):
        if cell == "":
            continue
        value = cell
        if r > 3:
            for kind in (int, float):
                try:
                    value = kind(cell)
                    break
                except ValueError:
                    pass
        data.cell(row=r, column=c, value=value)
for at, value in zip(cells[::2], cells[1::2]):
    data[at] = value
wb.save(path)
"#;
    let mut child = std::process::Command::new(crate::common::python())
        .args(["-c", script])
        .arg(path)
        .args(cells.iter().flat_map(|(at, value)| [*at, *value]))
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(csv(rows).as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openpyxl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_workbook_is_read_from_its_data_sheet_and_findings_name_the_cell() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pack.xlsx");
    let mut rows = pack_rows();
    rows.push("kent,FY2024-25,stop_search_serches,Black,,5,,,".to_owned());
    openpyxl_pack(&file, &rows, &[]);
    let (code, v) = validate(&file);
    assert_eq!(code, Some(1), "{v}");
    let note = examples(&v, "workbook_sheet_read");
    assert!(
        note[0]
            .2
            .starts_with("read sheet `data` of the workbook (2 sheets: README, data)"),
        "{note:?}"
    );
    // The title rows above the header are skipped; the sheet's row numbers are kept.
    let unknown: Vec<&Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "metric_unknown")
        .flat_map(|f| f["examples"].as_array().unwrap())
        .collect();
    assert_eq!(unknown.len(), 1, "{v}");
    let sheet_row = rows.len() as u64 + 3;
    assert_eq!(unknown[0]["row"], sheet_row);
    assert_eq!(unknown[0]["cell"], format!("data!C{sheet_row}"));
    // Everything else reads as the CSV did: the same figures, the same table (`1,000` is text
    // in the sheet, a number stored as text, read without its separator).
    let codes = codes(&v);
    assert_eq!(
        codes,
        [
            "metric_unknown",
            "metric_missing",
            "rows_above_header",
            "value_thousands_separator",
            "workbook_sheet_read",
            "metric_suppressed"
        ],
        "{v}"
    );
}

#[test]
fn files_that_are_not_readable_workbooks_are_findings_not_failures() {
    let dir = tempfile::tempdir().unwrap();
    // A zip archive holding a text file, and a compound file such as a password-protected
    // workbook is saved as (its header only).
    let zip = dir.path().join("notes.xlsx");
    let mut bytes = b"PK\x03\x04".to_vec();
    bytes.extend_from_slice(&[0u8; 200]);
    std::fs::write(&zip, bytes).unwrap();
    let protected = dir.path().join("protected.xlsx");
    let mut bytes = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
    bytes.extend_from_slice(&[0u8; 504]);
    std::fs::write(&protected, bytes).unwrap();
    for (file, says) in [
        (
            &zip,
            "the file is a zip archive but not a workbook that can be read",
        ),
        (
            &protected,
            "the file is a password-protected workbook, or an old-style .xls",
        ),
    ] {
        let (code, v) = validate(file);
        assert_eq!(code, Some(1), "{v}");
        let found = examples(&v, "workbook_unreadable");
        assert_eq!(found.len(), 1, "{v}");
        assert!(found[0].2.starts_with(says), "{}", found[0].2);
    }
}

/// The counts of every code of a `validate --format json` report, by severity.
fn counts(v: &Value) -> Vec<(String, String, u64)> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["severity"].as_str().unwrap().to_owned(),
                f["code"].as_str().unwrap().to_owned(),
                f["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_template_holds_every_mandatory_row_and_validates_clean_once_filled_and_resaved() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("pack.xlsx");
    let o = force_returns(&[
        "template",
        "data_pack",
        "--force",
        "Kent Police",
        "--period",
        "FY2024-25",
        "--out",
        template.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("fill in the sheet `data`"),
        "{}",
        text(&o)
    );

    // Sent as it comes, every pre-filled row is refused for its blank value and for nothing
    // else: its metric, codes, force and period are all valid, and no mandatory row is missing.
    let (code, v) = validate(&template);
    assert_eq!(code, Some(1), "{v}");
    let found = counts(&v);
    let rows = v["rows_read"].as_u64().unwrap();
    assert!(rows > 100, "{v}");
    assert_eq!(
        found,
        vec![
            ("error".to_owned(), "metric_value_invalid".to_owned(), rows),
            ("info".to_owned(), "workbook_sheet_read".to_owned(), 1),
        ],
        "{v}"
    );

    // openpyxl reads it as Excel would and fills in one consistent set of figures.
    let catalogue = dir.path().join("catalogue.json");
    let o = force_returns(&["catalogue", "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(&catalogue, &o.stdout).unwrap();
    let filled = dir.path().join("filled.xlsx");
    let o = std::process::Command::new(python())
        .arg(manifest_dir().join("tests/py/fill_template.py"))
        .args([&catalogue, &template, &filled])
        .output()
        .expect("python runs");
    assert!(o.status.success(), "{}", text(&o));
    let facts: Value = serde_json::from_slice(&o.stdout).unwrap();

    assert_eq!(
        facts["sheets"],
        serde_json::json!(["README", "data", "lists"])
    );
    assert_eq!(facts["states"]["lists"], "hidden");
    assert_eq!(facts["protected"], true, "the data sheet is protected");
    assert_eq!(facts["frozen"], "A2", "the header row stays in view");
    let header: Vec<&str> = facts["header"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert_eq!(&header[..3], ["force", "period", "metric"]);
    assert!(
        facts["header_locked"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l == true)
    );
    // The pre-filled cells stay editable.
    assert_eq!(
        facts["first_row_locked"][header.iter().position(|h| *h == "metric").unwrap()],
        false
    );

    // The rows are exactly those the catalogue makes mandatory, worked out from its JSON.
    let rows_of = |list: &Value, metric: &str, key: &str| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                if r.is_array() {
                    format!("{} {}", r[0], r[1])
                } else {
                    format!("{} {}", r[metric], r[key])
                }
            })
            .collect()
    };
    let mut got = rows_of(&facts["rows"], "metric", "key");
    let mut expected = rows_of(&facts["expected"], "", "");
    got.sort();
    expected.sort();
    assert_eq!(got.len() as u64, rows);
    assert_eq!(got, expected);
    for row in facts["rows"].as_array().unwrap() {
        assert_eq!(row["force"], "kent");
        assert_eq!(row["period"], "FY2024-25");
    }

    // A drop-down on the force, the metric and every breakdown column; figures checked.
    let validations = facts["validations"].as_array().unwrap();
    let column_of = |name: &str| {
        let c = header.iter().position(|h| *h == name).unwrap();
        (b'A' + c as u8) as char
    };
    for name in ["force", "metric", "ethnicity", "outcome_group", "tactic"] {
        let column = column_of(name);
        assert!(
            validations.iter().any(|v| v["type"] == "list"
                && v["range"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{column}2:"))
                && v["formula"].as_str().unwrap().starts_with("lists!")),
            "no drop-down on {name}: {validations:?}"
        );
    }
    let value = column_of("value");
    assert!(
        validations.iter().any(|v| v["type"] == "custom"
            && v["formula"]
                .as_str()
                .unwrap()
                .contains(&format!("ISNUMBER({value}2)"))
            && v["formula"].as_str().unwrap().contains("\"[c]\"")),
        "{validations:?}"
    );

    // Filled, it is accepted with nothing to say but which sheet was read; and so it is once
    // LibreOffice has opened and saved it again.
    let resaved_dir = dir.path().join("libreoffice");
    std::fs::create_dir(&resaved_dir).unwrap();
    let resaved = libreoffice_save_as(&filled, "xlsx", &resaved_dir);
    for file in [&filled, &resaved] {
        let (code, v) = validate(file);
        assert_eq!(code, Some(0), "{}: {v}", file.display());
        assert_eq!(
            counts(&v),
            vec![("info".to_owned(), "workbook_sheet_read".to_owned(), 1)],
            "{}: {v}",
            file.display()
        );
        assert_eq!(v["rows_read"].as_u64(), Some(rows));
    }
}

/// The rows of the data pack's stop-and-search counts: the total, by ethnicity, by outcome.
fn searches_pack(black: u64, white: u64) -> String {
    let mut rows = vec![format!(
        "kent,FY2024-25,stop_search_searches,,,{},,,",
        black + white
    )];
    for (group, n) in [
        ("Asian", 0),
        ("Black", black),
        ("Mixed", 0),
        ("Other", 0),
        ("White", white),
        ("Not stated", 0),
    ] {
        rows.push(format!(
            "kent,FY2024-25,stop_search_searches,{group},,{n},,,"
        ));
    }
    for (group, n) in [
        ("Arrest", black + white),
        ("Charge or summons", 0),
        ("Out of court disposal", 0),
        ("No further action", 0),
        ("Other", 0),
    ] {
        rows.push(format!(
            "kent,FY2024-25,stop_search_searches,,{group},{n},,,"
        ));
    }
    csv(&rows)
}

/// The codes, severities and messages of every finding of a report (`feedback/...json`).
fn report_findings(bucket: &Path, dataset: &str, period: &str) -> Vec<(String, String, String)> {
    let dir = bucket.join(format!("feedback/kent/{dataset}/{period}"));
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for f in v["findings"].as_array().unwrap() {
                for e in f["examples"].as_array().unwrap() {
                    out.push((
                        f["code"].as_str().unwrap().to_owned(),
                        e["severity"].as_str().unwrap().to_owned(),
                        e["message"].as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn a_packs_counts_are_reconciled_with_the_forces_records_once_every_month_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let months: Vec<String> = (4..=12)
        .map(|m| format!("2024-{m:02}"))
        .chain((1..=3).map(|m| format!("2025-{m:02}")))
        .collect();
    // Four searches a month; every third month's people are Black, the rest White: 16 Black
    // and 32 White over the year, every one ending in arrest.
    let upload = |month: &str, i: usize| {
        let folder = bucket.join(format!("incoming/kent/stop_search/{month}"));
        std::fs::create_dir_all(&folder).unwrap();
        let ethnicity = if i.is_multiple_of(3) { "B1" } else { "W1" };
        std::fs::write(
            folder.join("searches.csv"),
            crate::common::stop_search_file(month, 4, ethnicity),
        )
        .unwrap();
    };
    let pack = |name: &str, black: u64, white: u64| {
        let folder = bucket.join("incoming/kent/data_pack/FY2024-25");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(name), searches_pack(black, white)).unwrap();
    };
    let run = || {
        let o = force_returns(&["run", "--once", "--bucket", bucket.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    };
    // Eleven months and a pack that puts one Black person's search under White.
    for (i, month) in months.iter().enumerate().take(11) {
        upload(month, i);
    }
    pack("pack.csv", 17, 31);
    run();
    let found = report_findings(&bucket, "data_pack", "FY2024-25");
    let pending: Vec<_> = found
        .iter()
        .filter(|f| f.0 == "reconciliation_pending")
        .collect();
    assert_eq!(pending.len(), 1, "{found:?}");
    assert!(!found.iter().any(|f| f.0 == "reconciliation_differs"));
    // The pack was judged before or among the months; each month that arrived after it
    // brought its note up to date in the quality table.
    let (anomalies, _) = read_folder(&bucket.join("quality/anomalies/dataset=data_pack"));
    let pending: Vec<&str> = anomalies
        .iter()
        .filter(|a| a["code"] == "reconciliation_pending")
        .map(|a| a["message"].as_str().unwrap())
        .collect();
    assert_eq!(pending.len(), 1, "{anomalies:?}");
    assert!(pending[0].ends_with("11 of 12 are"), "{}", pending[0]);

    // The last month arrives: the pack is compared, and both sides hear of it.
    upload(&months[11], 11);
    run();
    let march = report_findings(&bucket, "stop_search", "2025-03");
    let told: Vec<_> = march
        .iter()
        .filter(|f| f.0 == "reconciliation_differs")
        .collect();
    assert_eq!(told.len(), 2, "{march:?}");
    assert!(told.iter().all(|f| f.1 == "info"), "{told:?}");
    assert!(
        told.iter().all(|f| f
            .2
            .starts_with("with this return's records: `stop_search_searches` by ethnicity = ")),
        "{told:?}"
    );
    let (anomalies, _) = read_folder(&bucket.join("quality/anomalies/dataset=data_pack"));
    let mut differs: Vec<(String, f64, f64)> = anomalies
        .iter()
        .filter(|a| a["code"] == "reconciliation_differs")
        .map(|a| {
            (
                a["category"].as_str().unwrap().to_owned(),
                a["observed"].as_f64().unwrap(),
                a["expected"].as_f64().unwrap(),
            )
        })
        .collect();
    differs.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        differs,
        vec![("Black".into(), 17.0, 16.0), ("White".into(), 31.0, 32.0)],
        "{anomalies:?}"
    );
    assert!(
        !anomalies
            .iter()
            .any(|a| a["code"] == "reconciliation_pending"),
        "the pending note is replaced: {anomalies:?}"
    );
    let black = anomalies.iter().find(|a| a["category"] == "Black").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        black.contains("the Police Race Action Plan data pack says 17")
            && black.contains("count 16, 1 fewer"),
        "{black}"
    );

    // A corrected pack agrees, all twelve of its stop-and-search figures.
    pack("pack-corrected.csv", 16, 32);
    run();
    let found = report_findings(&bucket, "data_pack", "FY2024-25");
    let agrees: Vec<_> = found
        .iter()
        .filter(|f| f.0 == "reconciliation_agrees")
        .collect();
    assert_eq!(agrees.len(), 1, "{found:?}");
    assert!(agrees[0].2.starts_with("12 figure(s)"), "{}", agrees[0].2);
}

#[test]
fn a_total_written_as_a_formula_is_read_from_the_value_libreoffice_calculated() {
    let dir = tempfile::tempdir().unwrap();
    let rows = pack_rows();
    // The pack's first row is the searches' total; rows 7 to 11 (from 0) are its outcome
    // parts, which add up to it: on the sheet, under the header in row 3, rows 11 to 15.
    assert!(rows[0].contains("stop_search_searches,,,\"1,000\""));
    assert!(rows[7].contains(",,Arrest,150") && rows[11].contains(",,Other,50"));
    // The total as a formula over its outcome parts, with no value calculated: openpyxl does
    // not calculate.
    let written = dir.path().join("formula.xlsx");
    openpyxl_pack(&written, &rows, &[("F4", "=SUM(F11:F15)")]);
    // As openpyxl left it, the formula has no value to read: the total is blank.
    let (code, v) = validate(&written);
    assert_eq!(code, Some(1), "{v}");
    let blank = examples(&v, "metric_value_invalid");
    assert_eq!(blank.len(), 1, "{v}");
    assert_eq!(blank[0].0, Some(4));
    // Once LibreOffice has opened and saved it, the value it calculated is read, and the pack
    // is judged as its CSV is.
    let saved_dir = dir.path().join("libreoffice");
    std::fs::create_dir(&saved_dir).unwrap();
    let saved = libreoffice_save_as(&written, "xlsx", &saved_dir);
    let (code, v) = validate(&saved);
    let from_csv = {
        let file = dir.path().join("pack.csv");
        std::fs::write(&file, csv(&rows)).unwrap();
        validate(&file)
    };
    assert_eq!(code, from_csv.0, "{v}");
    // The workbook adds which sheet was read and the title rows above its header.
    let mut codes_saved = codes(&v);
    codes_saved.retain(|c| !["workbook_sheet_read", "rows_above_header"].contains(c));
    // The CSV's total, `1,000`, is noted for its separator; the formula's value is a number.
    let mut codes_csv = codes(&from_csv.1);
    codes_csv.retain(|c| *c != "value_thousands_separator");
    assert_eq!(codes_saved, codes_csv);
}

#[test]
fn a_packs_figures_are_judged_against_the_forces_previous_pack() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let send = |period: &str, black: u64, white: u64| {
        let folder = bucket.join(format!("incoming/kent/data_pack/{period}"));
        std::fs::create_dir_all(&folder).unwrap();
        let pack = searches_pack(black, white).replace("FY2024-25", period);
        std::fs::write(folder.join("pack.csv"), pack).unwrap();
        let o = force_returns(&["run", "--once", "--bucket", bucket.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    };
    send("FY2024-25", 400, 1600);
    let figure_codes = |period: &str| -> Vec<(String, String, String)> {
        report_findings(&bucket, "data_pack", period)
            .into_iter()
            .filter(|f| f.0.starts_with("anomaly_"))
            .collect()
    };
    // The first pack has nothing to be compared with.
    assert!(figure_codes("FY2024-25").is_empty());
    // The next year's searches fall to less than a third.
    send("FY2025-26", 120, 480);
    let found = figure_codes("FY2025-26");
    assert_eq!(found.len(), 1, "{found:?}");
    let (code, severity, message) = &found[0];
    assert_eq!(
        (code.as_str(), severity.as_str()),
        ("anomaly_figure", "warning")
    );
    assert!(
        message.contains("is 600")
            && message.contains("2,000 usually (the financial year 2024-25)")
            && message.contains("Moved with it"),
        "{message}"
    );
    // The quality table holds it with its numbers.
    let (anomalies, _) = read_folder(&bucket.join("quality/anomalies/dataset=data_pack"));
    let a = anomalies
        .iter()
        .find(|a| a["code"] == "anomaly_figure")
        .unwrap();
    assert_eq!(a["observed"], 600.0, "{a}");
    let number = |k: &str| a[k].as_f64().unwrap();
    assert!(
        (number("expected") - 2000.0).abs() < 1.0
            && number("lower") > 600.0
            && number("upper") > 2000.0,
        "{a}"
    );
}
