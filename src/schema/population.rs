//! The population reference: resident population by police force area and self-defined ethnic
//! group, the denominator of rates per 1,000 and of disparity ratios.
//!
//! The file is a CSV whose columns the pipeline names (`[population]`): one column for the
//! area, one for the whole population and one per 5-group. Areas are matched to force ids
//! through the forces code list, ignoring case (`Avon & Somerset`, `Metropolitan` and
//! `Devon & Cornwall` are aliases there). `config` reads the file; parsing is pure; `analyze`
//! divides by it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::CodeList;
use crate::model::analysis::PopulationSettings;

/// The population of one force area.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AreaPopulation {
    /// Everyone.
    pub all: f64,
    /// By self-defined 5-group (White, Mixed, Asian, Black, Other).
    pub groups: BTreeMap<String, f64>,
}

/// The loaded reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Population {
    /// Where the figures come from.
    pub source: String,
    /// By force id.
    pub areas: BTreeMap<String, AreaPopulation>,
    /// The group disparity ratios divide by, when the pipeline names one.
    pub reference_group: Option<String>,
}

/// Splits one CSV line into cells (double quotes around cells with commas; `""` is a quote).
fn split_line(line: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => cells.push(std::mem::take(&mut cell)),
            _ => cell.push(c),
        }
    }
    cells.push(cell);
    cells
}

impl Population {
    /// Parses the CSV `text` as `settings` describe it, matching areas against `forces`.
    /// Every problem is listed (with its line where it has one).
    pub fn parse(
        text: &str,
        settings: &PopulationSettings,
        forces: &CodeList,
    ) -> Result<Population, Vec<(Option<usize>, String)>> {
        let mut problems = Vec::new();
        let mut lines = text
            .trim_start_matches('\u{feff}')
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            return Err(vec![(None, "the population file is empty".into())]);
        };
        let header = split_line(header);
        let column = |name: &str, problems: &mut Vec<(Option<usize>, String)>| {
            let found = header.iter().position(|h| h.trim() == name);
            if found.is_none() {
                problems.push((
                    Some(1),
                    format!("the population file has no column `{name}`"),
                ));
            }
            found
        };
        let area = column(&settings.area_column, &mut problems);
        let all = column(&settings.all_column, &mut problems);
        let groups: Vec<(String, Option<usize>)> = settings
            .groups
            .iter()
            .map(|(g, c)| (g.clone(), column(c, &mut problems)))
            .collect();
        let (Some(area), Some(all)) = (area, all) else {
            return Err(problems);
        };
        let mut areas = BTreeMap::new();
        for (i, line) in lines {
            let cells = split_line(line);
            let name = cells.get(area).map_or("", |s| s.trim());
            let number = |c: Option<usize>| {
                c.and_then(|c| cells.get(c))
                    .and_then(|v| v.trim().replace(',', "").parse::<f64>().ok())
                    .filter(|v| v.is_finite() && *v >= 0.0)
            };
            let Some(force) = forces.lookup_loose(name) else {
                problems.push((
                    Some(i + 1),
                    format!("`{name}` is not a police force area in the forces list"),
                ));
                continue;
            };
            let Some(everyone) = number(Some(all)) else {
                problems.push((
                    Some(i + 1),
                    format!("`{name}`: the population is not a number"),
                ));
                continue;
            };
            let mut by_group = BTreeMap::new();
            for (g, c) in &groups {
                match number(*c) {
                    Some(v) => {
                        by_group.insert(g.clone(), v);
                    }
                    None => problems.push((
                        Some(i + 1),
                        format!("`{name}`: the {g} population is not a number"),
                    )),
                }
            }
            if areas
                .insert(
                    force.code.clone(),
                    AreaPopulation {
                        all: everyone,
                        groups: by_group,
                    },
                )
                .is_some()
            {
                problems.push((Some(i + 1), format!("`{name}` appears twice")));
            }
        }
        if problems.is_empty() {
            Ok(Population {
                source: settings.source.clone(),
                areas,
                reference_group: settings.reference_group.clone(),
            })
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Project;

    fn settings() -> PopulationSettings {
        PopulationSettings {
            file: "x.csv".into(),
            source: "test".into(),
            required: true,
            area_column: "Area".into(),
            all_column: "All".into(),
            groups: BTreeMap::from([
                ("White".into(), "White".into()),
                ("Black".into(), "Black".into()),
            ]),
            reference_group: Some("White".into()),
        }
    }

    fn forces() -> std::sync::Arc<CodeList> {
        let project = Project::load(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        std::sync::Arc::clone(project.code_lists.forces().unwrap())
    }

    #[test]
    #[expect(clippy::float_cmp, reason = "whole numbers parse exactly")]
    fn areas_match_force_aliases_and_numbers_parse() {
        let text = "\u{feff}Area,All,White,Black\nAvon & Somerset,\"1,000\",900,50\nMetropolitan,200,100,60\n";
        let p = Population::parse(text, &settings(), &forces()).unwrap();
        assert_eq!(p.areas["avon-and-somerset"].all, 1000.0);
        assert_eq!(p.areas["metropolitan"].groups["Black"], 60.0);
    }

    #[test]
    fn every_problem_is_listed_with_its_line() {
        let text = "Area,All,White\nNowhere,1,1\nKent,x,1\n";
        let problems = Population::parse(text, &settings(), &forces()).unwrap_err();
        let text: Vec<String> = problems
            .iter()
            .map(|(l, m)| format!("{l:?}: {m}"))
            .collect();
        assert_eq!(problems.len(), 3, "{text:#?}");
        assert!(text[0].contains("Some(1): the population file has no column `Black`"));
        assert!(text[1].contains("Some(2): `Nowhere`"));
        assert!(text[2].contains("Some(3): `Kent`: the population"));
    }
}
