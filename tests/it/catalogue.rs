//! The metric catalogue through the real binary: `catalogue` in its three formats,
//! `docs/catalogue.md` generated from it, and `check-config` on a broken catalogue.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::common::{copy_dir, force_returns, manifest_dir, output_text as text};

fn catalogue_json() -> Value {
    let o = force_returns(&["catalogue", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The codes of a reference list, read from its file (not through the service's parser).
fn codes_of(list: &str) -> Vec<String> {
    let path = manifest_dir().join(format!("schemas/reference/{list}.json"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_json_catalogue_gives_every_field_with_each_dimensions_codes() {
    let v = catalogue_json();
    assert_eq!(v["version"], "1");
    let metrics = v["metrics"].as_array().unwrap();
    let ids: BTreeSet<&str> = metrics.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), metrics.len(), "ids are unique");
    for m in metrics {
        let id = m["id"].as_str().unwrap();
        for key in [
            "title",
            "unit",
            "cadence",
            "dataset",
            "dimensions",
            "numerator",
            "denominator",
            "mandatory",
            "alignment",
            "rules",
        ] {
            assert!(m.get(key).is_some(), "{id} has no `{key}`");
        }
        for d in m["dimensions"].as_array().unwrap() {
            let list = d["codelist"].as_str().unwrap();
            let codes: Vec<String> = serde_json::from_value(d["codes"].clone()).unwrap();
            assert_eq!(codes, codes_of(list), "{id}: the codes of {list}");
        }
        for part in ["numerator", "denominator"] {
            if let Some(other) = m[part].as_str() {
                assert!(ids.contains(other), "{id}'s {part} {other} is a metric");
            }
        }
        let alignment = m["alignment"].as_object().unwrap();
        let keys: Vec<&str> = alignment.keys().map(String::as_str).collect();
        assert_eq!(keys, ["adr", "hmicfrs", "prap", "framework"], "{id}");
        for r in alignment.values().filter(|r| !r.is_null()) {
            assert!(
                r["verified"].is_boolean() && r["ref"].is_string(),
                "{id}: {r}"
            );
        }
        let rules: Vec<&str> = m["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rule"].as_str().unwrap())
            .collect();
        assert!(rules.contains(&"not_negative"), "{id}: {rules:?}");
        match m["unit"].as_str().unwrap() {
            "rate_per_1000" | "ratio" | "percent" => {
                assert!(
                    m["numerator"].is_string() && m["denominator"].is_string(),
                    "{id}"
                );
                assert!(rules.contains(&"agrees_with_parts"), "{id}: {rules:?}");
            }
            _ => assert!(
                m["numerator"].is_null() && m["denominator"].is_null(),
                "{id}"
            ),
        }
    }
    // The measures a Police Race Action Plan data pack reports, for each return.
    let has = |dataset: &str, unit: &str, dimension: &str| {
        metrics.iter().any(|m| {
            m["dataset"] == dataset
                && m["unit"] == unit
                && m["dimensions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d["name"] == dimension)
        })
    };
    for dataset in ["stop_search", "use_of_force", "arrests"] {
        for unit in ["count", "rate_per_1000", "ratio"] {
            assert!(
                has(dataset, unit, "ethnicity"),
                "{dataset} {unit} by ethnicity"
            );
        }
    }
    assert!(has("stop_search", "percent", "ethnicity"), "outcome shares");
    assert!(has("workforce", "headcount", "rank") && has("workforce", "fte", "rank"));
    assert!(
        has("workforce", "percent", "rank"),
        "representation by rank"
    );
    for id in ["workforce_joiners", "workforce_leavers"] {
        assert!(ids.contains(id), "{id}");
    }
    // A disparity ratio divides by the White rate.
    let disparity = metrics
        .iter()
        .find(|m| m["id"] == "stop_search_disparity_ratio")
        .unwrap();
    assert_eq!(
        disparity["denominator_at"]["ethnicity"],
        serde_json::json!(["White"])
    );
    // A rate per 1,000 above 1,000 is flagged, as the unit implies.
    let rate = metrics
        .iter()
        .find(|m| m["id"] == "stop_search_rate_per_1000")
        .unwrap();
    assert!(
        rate["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule"] == "at_most" && r["value"] == 1000.0 && r["implied"] == true),
        "{rate}"
    );
}

#[test]
fn the_table_lists_every_metric() {
    let o = force_returns(&["catalogue"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    let v = catalogue_json();
    let metrics = v["metrics"].as_array().unwrap();
    assert!(t.contains(&format!("{} metrics", metrics.len())), "{t}");
    for m in metrics {
        let line = t
            .lines()
            .find(|l| l.split_whitespace().next() == m["id"].as_str())
            .unwrap_or_else(|| panic!("no line for {}: {t}", m["id"]));
        assert!(line.contains(m["unit"].as_str().unwrap()), "{line}");
    }
    let o = force_returns(&["catalogue", "--version", "99"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no metric catalogue v99"), "{}", text(&o));
}

/// `docs/catalogue.md` is what `catalogue --format markdown` prints;
/// `FORCE_RETURNS_BLESS=1` rewrites it.
#[test]
fn docs_catalogue_md_is_generated_from_the_catalogue() {
    let o = force_returns(&["catalogue", "--format", "markdown"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let generated = String::from_utf8(o.stdout).unwrap();
    let path = manifest_dir().join("docs/catalogue.md");
    if std::env::var_os("FORCE_RETURNS_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/catalogue.md is out of date: run `cargo run -- catalogue --format markdown > docs/catalogue.md`"
    );
    for m in catalogue_json()["metrics"].as_array().unwrap() {
        assert!(
            generated.contains(&format!("### {}", m["id"].as_str().unwrap())),
            "{}",
            m["id"]
        );
    }
}

/// A copy of the project's pipelines and schemas, to break.
fn project_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&manifest_dir().join("schemas"), &dir.path().join("schemas"));
    copy_dir(
        &manifest_dir().join("pipelines"),
        &dir.path().join("pipelines"),
    );
    dir
}

#[test]
fn check_config_reports_every_catalogue_problem_with_its_line() {
    let dir = project_copy();
    let file = dir.path().join("schemas/catalogue/v1.json");
    let good = std::fs::read_to_string(&file).unwrap();
    let mut v: Value = serde_json::from_str(&good).unwrap();
    let metrics = v["metrics"].as_array_mut().unwrap();
    let index = |metrics: &[Value], id: &str| metrics.iter().position(|m| m["id"] == id).unwrap();
    // A numerator misspelt; a dimension's code list that does not exist; a rate with no
    // denominator; a parts rule on a dimension the metric does not have.
    let i = index(metrics, "stop_search_rate_per_1000");
    metrics[i]["numerator"] = "stop_search_serches".into();
    let i = index(metrics, "arrests");
    metrics[i]["dimensions"][3]["codelist"] = "offence_groups".into();
    let i = index(metrics, "arrest_rate_per_1000");
    metrics[i].as_object_mut().unwrap().remove("denominator");
    let i = index(metrics, "workforce_leavers");
    metrics[i]["rules"][0]["dimension"] = "rank".into();
    let broken = serde_json::to_string_pretty(&v).unwrap();
    std::fs::write(&file, &broken).unwrap();
    let o = force_returns(&["--project", dir.path().to_str().unwrap(), "check-config"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    // Four in the catalogue, and the data pack, which cannot be checked without it.
    assert!(t.contains("5 configuration problem(s)"), "{t}");
    assert!(
        t.contains("data_pack.toml:") && t.contains("there is no usable metric catalogue"),
        "{t}"
    );
    let line_of = |id: &str| {
        broken
            .lines()
            .position(|l| l.trim_start().starts_with("\"id\"") && l.contains(&format!("\"{id}\"")))
            .unwrap()
            + 1
    };
    let at = |id: &str| format!("v1.json:{}: metric `{id}`", line_of(id));
    assert!(
        t.contains(&format!(
            "{}: its numerator `stop_search_serches` is not a metric of the catalogue (did you mean `stop_search_searches`?)",
            at("stop_search_rate_per_1000")
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "{}: dimension `offence_group` names code list `offence_groups`, which is not in schemas/reference/",
            at("arrests")
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "{}: a rate_per_1000 needs both a numerator and a denominator",
            at("arrest_rate_per_1000")
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "{}: rule parts_add_to_total names `rank`, which is not one of its dimensions",
            at("workforce_leavers")
        )),
        "{t}"
    );

    // A file that breaks the catalogue's own schema: a unit it does not know, named with the
    // metric's line and the path in the file.
    let i = index(v["metrics"].as_array().unwrap(), "workforce_fte");
    let mut v: Value = serde_json::from_str(&good).unwrap();
    v["metrics"][i]["unit"] = "full_time_equivalent".into();
    let broken = serde_json::to_string_pretty(&v).unwrap();
    std::fs::write(&file, &broken).unwrap();
    let o = force_returns(&["--project", dir.path().to_str().unwrap(), "check-config"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    let line = broken
        .lines()
        .position(|l| l.contains("\"workforce_fte\""))
        .unwrap()
        + 1;
    assert!(
        t.contains(&format!(
            "v1.json:{line}: /metrics/{i}/unit: \"full_time_equivalent\""
        )),
        "{t}"
    );
}

#[test]
fn check_config_checks_what_a_count_is_reconciled_with_against_the_pipelines() {
    let dir = project_copy();
    let file = dir.path().join("schemas/catalogue/v1.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let metrics = v["metrics"].as_array_mut().unwrap();
    let searches = metrics
        .iter()
        .position(|m| m["id"] == "stop_search_searches")
        .unwrap();
    // A dimension of the records misspelt; a blank code that is not a code.
    metrics[searches]["computed_from"]["dimensions"]["ethnicity"] =
        "self_defined_ethnicity_groups".into();
    metrics[searches]["computed_from"]["blank"]["outcome_group"] = "Unknown".into();
    // A rate cannot be counted from records.
    let rate = metrics
        .iter()
        .position(|m| m["id"] == "stop_search_rate_per_1000")
        .unwrap();
    metrics[rate]["computed_from"] =
        serde_json::json!({"dataset": "stop_search", "dimensions": {}});
    std::fs::write(&file, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let o = force_returns(&["--project", dir.path().to_str().unwrap(), "check-config"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    for says in [
        "metric `stop_search_searches`: computed_from.blank gives `Unknown`, which is not a code of `outcome_group`",
        "metric `stop_search_rate_per_1000`: computed_from is for counts of records; a rate_per_1000 is checked against its numerator and denominator instead",
    ] {
        assert!(t.contains(says), "{says}\n{t}");
    }

    // With the catalogue itself sound, the dimension is checked against the records' schema.
    let mut v: Value = serde_json::from_str(
        &std::fs::read_to_string(manifest_dir().join("schemas/catalogue/v1.json")).unwrap(),
    )
    .unwrap();
    v["metrics"][searches]["computed_from"]["dimensions"]["ethnicity"] =
        "self_defined_ethnicity_groups".into();
    std::fs::write(&file, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let o = force_returns(&["--project", dir.path().to_str().unwrap(), "check-config"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("metric `stop_search_searches`: computed_from takes ethnicity from `self_defined_ethnicity_groups`, which is not a dimension of schema stop_search/v1"),
        "{t}"
    );
    assert!(t.contains("1 configuration problem(s)"), "{t}");
}

#[test]
fn check_config_refuses_suppression_markers_the_schema_would_refuse() {
    let dir = project_copy();
    let file = dir.path().join("pipelines/data_pack.toml");
    let profile = std::fs::read_to_string(&file).unwrap();
    assert!(profile.contains("# markers = "), "{profile}");
    let changed = profile.replacen(
        "# markers = [\"..\", \"-\", \"*\", \"[c]\", \"[x]\", \"[z]\"]",
        "markers = [\"..\", \"[u]\", \"[low]\"]",
        1,
    );
    assert_ne!(changed, profile);
    std::fs::write(&file, changed).unwrap();
    let o = force_returns(&["--project", dir.path().to_str().unwrap(), "check-config"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    for property in ["value", "numerator", "denominator"] {
        assert!(
            t.contains(&format!(
                "the suppression markers [\"[u]\", \"[low]\"] are not values schema data_pack/v1 accepts for `{property}`"
            )),
            "{property}: {t}"
        );
    }
}
