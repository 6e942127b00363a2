//! The severity policy at the edges a force and an analyst see: outputs capped per code with a
//! closing line, and rule problems reported by `check-config`.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use force_returns::config::Project;
use force_returns::pipeline::{RunOptions, Service};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::common::{TestBucket, copy_dir, manifest_dir, on_both_backends, project};

const HEADER: &str = "Type,Date,Part of a policing operation,Policing operation,Latitude,Longitude,Gender,Age range,Self-defined ethnicity,Officer-defined ethnicity,Legislation,Object of search,Outcome,Outcome linked to object of search,Removal of more than just outer clothing";

/// Twelve records dated in February, uploaded for January, with forty columns the schema does
/// not know: 40 `header_unknown_column` and 12 `date_out_of_period` findings.
fn noisy_file() -> Vec<u8> {
    let extra: Vec<String> = (0..40).map(|i| format!("extra {i}")).collect();
    let mut s = format!("{HEADER},{}\n", extra.join(","));
    for day in 1..=12 {
        let _ = std::fmt::Write::write_fmt(
            &mut s,
            format_args!(
                "Person search,2020-02-{day:02}T10:15:00+00:00,False,,54.7,-1.6,Male,18-24,White - English/Welsh/Scottish/Northern Irish/British,White,Misuse of Drugs Act 1971 (section 23),Controlled drugs,A no further action disposal,True,False{}\n",
                ",x".repeat(40)
            ),
        );
    }
    s.into_bytes()
}

on_both_backends!(findings_are_capped_per_code_in_every_output_with_a_closing_line);
async fn findings_are_capped_per_code_in_every_output_with_a_closing_line(bucket: TestBucket) {
    let mut project: Project = (*project()).clone();
    let pipeline = project.pipelines.get_mut("stop_search").unwrap();
    pipeline.decision.findings_per_code = 5;
    pipeline.decision.examples_per_code = 3;
    bucket
        .upload(
            "incoming/durham/stop_search/2020-01/noisy.csv",
            noisy_file(),
        )
        .await;
    let service = Service::new(
        Arc::new(project),
        bucket.store.clone(),
        bucket.clock.clone(),
        RunOptions::default(),
    );
    let outcome = service.run_once().await.unwrap();
    let s = &outcome.processed[0];
    assert_eq!(s.codes["header_unknown_column"], 40, "counts stay in full");
    assert_eq!(s.codes["date_out_of_period"], 12);

    // The force's CSV: five of each code, then one line saying how many more.
    let (csv, _) = bucket
        .store
        .get(s.outputs.findings_csv.as_ref().unwrap())
        .await
        .unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let lines = |code: &str| -> Vec<&str> {
        csv.lines()
            .filter(|l| l.contains(&format!(",{code},")))
            .collect()
    };
    for (code, severity, more) in [
        ("header_unknown_column", "warning", 35),
        ("date_out_of_period", "error", 7),
    ] {
        let of_code = lines(code);
        assert_eq!(of_code.len(), 6, "{code}:\n{csv}");
        let closing = of_code[5];
        assert!(
            closing.starts_with(&format!(
                ",,{severity},{code},{more} more `{code}` findings are not listed here"
            )),
            "{closing}"
        );
        assert!(
            closing.contains(&format!(",{more},findings_per_code,")),
            "{closing}"
        );
        assert!(
            of_code[..5]
                .iter()
                .all(|l| !l.contains("findings_per_code"))
        );
    }

    // The central table: the same rows.
    let (table, _) = bucket
        .store
        .get(&format!(
            "quality/findings/dataset=stop_search/{}.parquet",
            s.received.upload.submission_id
        ))
        .await
        .unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(table))
        .unwrap()
        .build()
        .unwrap();
    let mut rows: BTreeMap<String, Vec<(String, Option<String>)>> = BTreeMap::new();
    for batch in reader {
        let batch = batch.unwrap();
        let code = arrow::compute::cast(
            batch.column_by_name("code").unwrap(),
            &arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let code = code.as_string::<i32>();
        let rule = batch.column_by_name("rule").unwrap().as_string::<i32>();
        let value = batch.column_by_name("value").unwrap().as_string::<i32>();
        for i in 0..batch.num_rows() {
            rows.entry(code.value(i).to_owned()).or_default().push((
                rule.value(i).to_owned(),
                value.is_valid(i).then(|| value.value(i).to_owned()),
            ));
        }
    }
    for (code, more) in [("header_unknown_column", "35"), ("date_out_of_period", "7")] {
        let of_code = &rows[code];
        assert_eq!(of_code.len(), 6, "{code}: {of_code:?}");
        assert_eq!(
            of_code[5],
            ("findings_per_code".to_owned(), Some(more.to_owned()))
        );
    }

    // The JSON report: full counts, capped examples, and how many of each were left out.
    let report = bucket
        .get_json(s.outputs.report_json.as_ref().unwrap())
        .await;
    let summary = |code: &str| {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["code"] == code)
            .unwrap()
            .clone()
    };
    let header = summary("header_unknown_column");
    assert_eq!(
        (
            &header["count"],
            &header["listed"],
            &header["examples_omitted"]
        ),
        (&40.into(), &5.into(), &37.into())
    );
    assert_eq!(header["examples"].as_array().unwrap().len(), 3);
    let dates = summary("date_out_of_period");
    assert_eq!(
        (
            &dates["count"],
            &dates["listed"],
            &dates["examples_omitted"]
        ),
        (&12.into(), &5.into(), &9.into())
    );

    // The page says the CSV lists only the first five.
    let (html, _) = bucket
        .store
        .get(s.outputs.report_html.as_ref().unwrap())
        .await
        .unwrap();
    let html = String::from_utf8(html).unwrap();
    assert!(html.contains("Showing the first 3 of 40;"), "{html}");
    assert!(html.contains("lists the first 5."), "{html}");
}

#[test]
fn check_config_reports_every_rule_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = manifest_dir();
    copy_dir(&root.join("schemas"), &dir.path().join("schemas"));
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    let good = std::fs::read_to_string(root.join("pipelines/stop_search.toml")).unwrap();
    let bad = good
        .replace("field = \"latitude\"", "field = \"lattitude\"")
        .replace("near_severity = \"warning\"", "near_severity = \"mild\"")
        .replace("in = [\"under 10\"]", "in = [\"under 11\"]")
        .replace("min = -6.5\nmax = 2.0", "min = 2.0\nmax = -6.5");
    assert_ne!(bad, good);
    std::fs::write(dir.path().join("pipelines/stop_search.toml"), &bad).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_force-returns"))
        .args(["--project", dir.path().to_str().unwrap(), "check-config"])
        .current_dir(&root)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{text}");
    assert!(text.contains("4 configuration problem(s)"), "{text}");
    let line_of = |needle: &str| bad.lines().position(|l| l.contains(needle)).unwrap() + 1;
    for (needle, message) in [
        (
            "field = \"lattitude\"",
            "rule `latitude_in_england_and_wales`: field `lattitude` is not a property of schema `stop_search/v1`",
        ),
        (
            "min = 2.0",
            "rule `longitude_in_england_and_wales`: min 2 is above max -6.5",
        ),
        (
            "near_severity = \"mild\"",
            "rule `date_in_month`: near_severity `mild` is not a severity (error, warning or info)",
        ),
        (
            "in = [\"under 11\"]",
            "rule `under_10_arrested_or_charged`: `under 11` is not in the code list of `age_range` (age_range)",
        ),
    ] {
        let expected = format!("stop_search.toml:{}: {message}", line_of(needle));
        assert!(text.contains(&expected), "{expected}\n{text}");
    }
}
