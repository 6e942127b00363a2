//! The command line as a force or operator uses it: exit codes, output, ad-hoc schemas.
use crate::common::{copy_dir, force_returns, manifest_dir, output_text as text, shared_fixtures};

#[test]
fn validate_accepts_a_real_extract_under_any_spelling_of_the_force() {
    let fx = shared_fixtures();
    let file = fx.join("police-uk/stop-and-search/2020-01-south-yorkshire-stop-and-search.csv");
    for force in [
        "south-yorkshire",
        "E23000011",
        "South Yorkshire Police",
        "south yorkshire",
    ] {
        let o = force_returns(&[
            "validate",
            file.to_str().unwrap(),
            "--dataset",
            "stop_search",
            "--force",
            force,
            "--period",
            "2020-01",
        ]);
        assert_eq!(o.status.code(), Some(0), "{force}: {}", text(&o));
        assert!(text(&o).contains("ACCEPTED WITH WARNINGS"), "{}", text(&o));
        assert!(
            text(&o).contains("Latitude is blank in 2052 of 2052 rows (100.0%)"),
            "{}",
            text(&o)
        );
    }
    // The same file claimed for the wrong month: every date is out of period, four of them (in
    // the last hour of January) only just, which is a warning.
    let o = force_returns(&[
        "validate",
        file.to_str().unwrap(),
        "--dataset",
        "stop_search",
        "--force",
        "south-yorkshire",
        "--period",
        "2020-02",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["decision"], "rejected");
    assert_eq!(v["flagged_rows"], 2048);
    let count = |code: &str| {
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["code"] == code)
            .map(|f| f["count"].clone())
    };
    assert_eq!(count("date_near_period"), Some(4.into()));
    let out_of_period = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "date_out_of_period")
        .unwrap();
    assert_eq!(out_of_period["count"], 2048);
    assert_eq!(
        out_of_period["examples"].as_array().unwrap().len(),
        20,
        "examples are capped"
    );
}

#[test]
fn usage_and_io_errors_exit_2_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("x.csv");
    std::fs::write(&csv, "Type\n").unwrap();
    let csv = csv.to_str().unwrap();
    let cases: [&[&str]; 4] = [
        &[
            "validate",
            "/no/such/file.csv",
            "--dataset",
            "stop_search",
            "--force",
            "kent",
            "--period",
            "2020-01",
        ],
        &[
            "validate",
            csv,
            "--dataset",
            "stop_search",
            "--force",
            "atlantis",
            "--period",
            "2020-01",
        ],
        &[
            "validate",
            csv,
            "--dataset",
            "stop_search",
            "--force",
            "kent",
            "--period",
            "January",
        ],
        &["validate", csv, "--dataset", "stop_search"],
    ];
    for args in cases {
        let o = force_returns(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(!text(&o).contains("panicked"), "{}", text(&o));
    }
}

fn peer_row(i: usize, force: &str, record: &str, date: &str, lat: &str) -> String {
    format!("{force},2023-05,{record},{date},18-24,Male,W1,IC1,Misuse of Drugs Act 1971 (section 23),Controlled drugs,Arrest,true,false,{lat},-1.5\n")
        .replace("{i}", &i.to_string())
}

#[test]
fn validate_with_any_json_schema_counts_flagged_rows_like_the_peer_benchmark() {
    let fx = shared_fixtures();
    let schema = fx.join("../bench/peers/schemas/row.schema.json");
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("peer.csv");
    let mut s = String::from(
        "force_id,period,record_id,date,age_range,gender,self_defined_ethnicity,officer_defined_ethnicity,legislation,object_of_search,outcome,outcome_linked,removal_of_more_than_outer_clothing,latitude,longitude\n",
    );
    for i in 0..200 {
        s.push_str(&peer_row(
            i,
            "E23000010",
            &format!("SS{i:09}"),
            "2023-05-14",
            "53.1",
        ));
    }
    // One defect per row, as the peer generator plants them.
    s.push_str(&peer_row(0, "E99999999", "X1", "2023-05-14", "53.1")); // bad force
    s.push_str(&peer_row(0, "E23000010", "X2", "2023-02-30", "53.1")); // impossible date
    // A UK date as Excel writes it: read as 2023-01-31 with a note, not flagged.
    s.push_str(&peer_row(0, "E23000010", "X3", "31/01/2023", "53.1"));
    s.push_str(&peer_row(0, "E23000010", "X4", "2023-05-14", "58.2")); // latitude out of range
    s.push_str(&peer_row(0, "E23000010", "X5", "2023-05-14", "north")); // latitude not a number
    s.push_str(&peer_row(
        0,
        "E23000010",
        "SS000000007",
        "2023-05-14",
        "53.1",
    )); // duplicate id: 2 rows flagged
    s.push_str(
        &peer_row(0, "E23000010", "X6", "2023-05-14", "53.1")
            .replace("Misuse of Drugs Act 1971 (section 23)", ""),
    );
    std::fs::write(&csv, s).unwrap();
    let o = force_returns(&[
        "validate",
        csv.to_str().unwrap(),
        "--schema",
        schema.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["flagged_rows"], 7, "{v:#}");
    let codes: Vec<(&str, u64)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["code"].as_str().unwrap(), f["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        codes,
        [
            ("value_required", 1),
            ("value_wrong_type", 1),
            ("value_not_in_list", 1),
            ("value_bad_date", 1),
            ("value_out_of_range", 1),
            ("value_not_unique", 2),
            // The repeated id's row is identical to row 9 in every cell: a warning, not a flag.
            ("duplicate_row", 1),
            ("value_excel_date", 1),
        ]
    );
}

#[test]
fn check_config_reports_every_problem_with_file_and_line() {
    let ok = force_returns(&["check-config"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(text(&ok).contains("ok  stop_search  schema stop_search/v1"));

    let dir = tempfile::tempdir().unwrap();
    copy_dir(&manifest_dir().join("schemas"), &dir.path().join("schemas"));
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    let good = std::fs::read_to_string(manifest_dir().join("pipelines/stop_search.toml")).unwrap();
    let bad = good
        .replace(
            "schedule = \"0 */15 * * * *\"",
            "schedule = \"every five minutes\"",
        )
        .replace("[blank_rates.latitude]", "[blank_rates.lattitude]");
    std::fs::write(dir.path().join("pipelines/stop_search.toml"), bad).unwrap();
    let o = force_returns(&["--project", dir.path().to_str().unwrap(), "check-config"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("2 configuration problem(s)"), "{t}");
    let line = good
        .lines()
        .position(|l| l.starts_with("schedule ="))
        .unwrap()
        + 1;
    assert!(
        t.contains(&format!(
            "stop_search.toml:{line}: schedule `every five minutes`"
        )),
        "{t}"
    );
    assert!(t.contains("blank_rates names `lattitude`"), "{t}");
}

#[test]
fn schema_command_prints_the_contract_with_code_lists_expanded() {
    let o = force_returns(&["schema", "stop_search"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let sde = v["properties"]["self_defined_ethnicity"]["enum"]
        .as_array()
        .unwrap();
    assert!(sde.contains(&serde_json::json!(
        "White - English/Welsh/Scottish/Northern Irish/British"
    )));
    assert!(
        sde.contains(&serde_json::json!("O1")),
        "legacy codes are accepted"
    );
    assert!(sde.contains(&serde_json::Value::Null));
    // The printed contract is a valid schema that other tools can use as is.
    assert!(jsonschema::draft202012::meta::is_valid(&v));
}
