//! The counts of one accepted submission, gathered while its batches stream through the
//! pipeline: records per day of the month, blanks per column, records per category of every
//! code-list column (by canonical code and by each code-list attribute), true/false counts of
//! boolean columns, times at midnight, and person searches by self-defined ethnic group.
//!
//! [`CountsBuilder`] works column by column over a batch's Arrow arrays and keeps one counter
//! per code of each list, so memory does not grow with the file. Everything the analysis and
//! the derived metrics need comes from these counts; no row is read twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, StringArray};
use serde::{Deserialize, Serialize};

use crate::ingest::{Batch, cell};
use crate::period::Period;
use crate::schema::{CodeList, RecordSchema, SnapshotType};

/// The category name under which blank cells of a person-search breakdown are counted.
pub const BLANK: &str = "(blank)";

/// The code-list attribute that says whether a search type searched a person.
pub const PERSON_ATTRIBUTE: &str = "person_searched";

/// The self-defined ethnicity property and its 5-group attribute.
pub const SDE: &str = "self_defined_ethnicity";
/// The self-defined ethnicity 5-group dimension (in `model`, since `config` checks the
/// population reference's groups against it).
pub use crate::model::analysis::SDE_GROUP;
/// The group value meaning "not stated".
pub const NOT_STATED: &str = "Not stated";

/// The counts of one submission for one force and month.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MonthlyCounts {
    /// Canonical force id.
    pub force_id: String,
    /// The month.
    pub period: Option<Period>,
    /// The submission counted.
    pub submission_id: String,
    /// Records.
    pub rows: u64,
    /// Records per day of the month (index 0 is the 1st); dates that are not readable are not
    /// counted.
    pub by_day: Vec<u64>,
    /// Records with a readable date.
    pub dated: u64,
    /// Records whose time is exactly 00:00:00, or that carry a date without a time.
    pub midnight: u64,
    /// Blank cells per property (properties with no blanks are left out).
    pub blanks: BTreeMap<String, u64>,
    /// Records per category: the dimension is a code-list property (canonical codes), a
    /// property and one of its code list's attributes (`<property>_<attribute>`), or a boolean
    /// property (`true` / `false`). Blank cells are not counted here; zero counts are left out.
    pub categories: BTreeMap<String, BTreeMap<String, u64>>,
    /// Searches of a person (the search type's `person_searched` attribute; every record when
    /// the schema has no such attribute).
    pub persons: u64,
    /// Person searches by self-defined ethnic group, blanks under [`BLANK`].
    pub persons_by_group: BTreeMap<String, u64>,
}

impl MonthlyCounts {
    /// Records in one category of a dimension (0 when never seen).
    pub fn count(&self, dimension: &str, category: &str) -> u64 {
        self.categories
            .get(dimension)
            .and_then(|c| c.get(category))
            .copied()
            .unwrap_or(0)
    }

    /// Records with a recorded (non-blank) value in a dimension.
    pub fn recorded(&self, dimension: &str) -> u64 {
        self.categories
            .get(dimension)
            .map_or(0, |c| c.values().sum())
    }

    /// Blank cells of a property.
    pub fn blank(&self, property: &str) -> u64 {
        self.blanks.get(property).copied().unwrap_or(0)
    }

    /// Days of the month with no record.
    pub fn empty_days(&self) -> u64 {
        self.by_day.iter().filter(|&&n| n == 0).count() as u64
    }

    /// Searches whose self-defined ethnicity is "not stated" or blank.
    pub fn not_stated(&self) -> u64 {
        self.count(SDE_GROUP, NOT_STATED) + self.blank(SDE)
    }
}

/// How one property is counted.
enum Column {
    /// A code list: one counter per code; attributes are derived at the end.
    Code {
        list: Arc<CodeList>,
        counts: Vec<u64>,
    },
    /// `true` / `false`.
    Boolean { yes: u64, no: u64 },
    /// The in-period date: days and midnight times.
    Date,
    /// Only blanks are counted.
    Other,
}

struct Tracked {
    property: usize,
    name: String,
    column: Column,
    blanks: u64,
}

/// Counts the accepted rows of one submission, batch by batch.
pub struct CountsBuilder {
    counts: MonthlyCounts,
    columns: Vec<Tracked>,
    /// The search-type column (index into `columns`) and, per code, whether it searched a person.
    person: Option<(usize, Vec<bool>)>,
    /// The self-defined ethnicity column (index into `columns`).
    sde: Option<usize>,
    /// Person searches by self-defined ethnicity code index (`codes.len()` = blank).
    persons_by_code: Vec<u64>,
}

impl CountsBuilder {
    /// A builder for one submission of `schema`'s dataset.
    pub fn new(
        schema: &RecordSchema,
        force_id: &str,
        period: Period,
        submission_id: &str,
    ) -> CountsBuilder {
        let columns: Vec<Tracked> = schema
            .properties
            .iter()
            .enumerate()
            .map(|(i, p)| Tracked {
                property: i,
                name: p.name.clone(),
                column: match (&p.codelist, &p.snapshot) {
                    (Some(list), _) => Column::Code {
                        counts: vec![0; list.codes.len()],
                        list: Arc::clone(list),
                    },
                    (None, SnapshotType::Boolean) => Column::Boolean { yes: 0, no: 0 },
                    (None, _) if p.in_period => Column::Date,
                    _ => Column::Other,
                },
                blanks: 0,
            })
            .collect();
        let person = columns
            .iter()
            .enumerate()
            .find_map(|(i, c)| match &c.column {
                Column::Code { list, .. }
                    if list.attributes.iter().any(|a| a == PERSON_ATTRIBUTE) =>
                {
                    let flags = (0..list.codes.len())
                        .map(|k| list.attribute(k as u32, PERSON_ATTRIBUTE) == "true")
                        .collect();
                    Some((i, flags))
                }
                _ => None,
            });
        let sde = columns
            .iter()
            .position(|c| c.name == SDE && matches!(c.column, Column::Code { .. }));
        let sde_codes = sde.map_or(0, |i| match &columns[i].column {
            Column::Code { list, .. } => list.codes.len(),
            _ => 0,
        });
        CountsBuilder {
            counts: MonthlyCounts {
                force_id: force_id.to_owned(),
                period: Some(period),
                submission_id: submission_id.to_owned(),
                by_day: vec![0; period.days() as usize],
                ..MonthlyCounts::default()
            },
            columns,
            person,
            sde,
            persons_by_code: vec![0; sde_codes + 1],
        }
    }

    /// Counts the rows of `batch` where `keep` is true.
    pub fn add(&mut self, batch: &Batch, keep: &BooleanArray) {
        let kept: Vec<usize> = (0..batch.len())
            .filter(|&i| keep.is_valid(i) && keep.value(i))
            .collect();
        if kept.is_empty() {
            return;
        }
        self.counts.rows += kept.len() as u64;
        // Code index of each kept row for the two columns of the person breakdown.
        let mut person_codes: Option<Vec<Option<u32>>> = None;
        let mut sde_codes: Option<Vec<Option<u32>>> = None;
        for (c, tracked) in self.columns.iter_mut().enumerate() {
            let Some(column) = batch.column(tracked.property) else {
                tracked.blanks += kept.len() as u64;
                continue;
            };
            let days = &mut self.counts.by_day;
            match &mut tracked.column {
                Column::Code { list, counts } => {
                    let codes = code_indices(list, column, &kept);
                    for code in &codes {
                        match code {
                            Some(k) => counts[*k as usize] += 1,
                            None => tracked.blanks += 1,
                        }
                    }
                    if self.person.as_ref().is_some_and(|(p, _)| *p == c) {
                        person_codes = Some(codes);
                    } else if self.sde == Some(c) {
                        sde_codes = Some(codes);
                    }
                }
                Column::Boolean { yes, no } => {
                    for &i in &kept {
                        match cell(column, i) {
                            None => tracked.blanks += 1,
                            Some(t) if t.eq_ignore_ascii_case("true") => *yes += 1,
                            Some(_) => *no += 1,
                        }
                    }
                }
                Column::Date => {
                    for &i in &kept {
                        match cell(column, i) {
                            None => tracked.blanks += 1,
                            Some(t) => {
                                if let Some(day) =
                                    t.get(8..10).and_then(|d| d.parse::<usize>().ok())
                                    && let Some(slot) =
                                        day.checked_sub(1).and_then(|d| days.get_mut(d))
                                {
                                    *slot += 1;
                                    self.counts.dated += 1;
                                    if t.len() == 10 || t.get(11..19) == Some("00:00:00") {
                                        self.counts.midnight += 1;
                                    }
                                }
                            }
                        }
                    }
                }
                Column::Other => {
                    tracked.blanks += kept.iter().filter(|&&i| column.is_null(i)).count() as u64;
                }
            }
        }
        let blank_code = self.persons_by_code.len() - 1;
        for (r, _) in kept.iter().enumerate() {
            let is_person = match (&self.person, &person_codes) {
                (Some((_, flags)), Some(codes)) => {
                    codes[r].is_some_and(|k| flags.get(k as usize).copied().unwrap_or(false))
                }
                _ => true,
            };
            if !is_person {
                continue;
            }
            self.counts.persons += 1;
            let code = sde_codes
                .as_ref()
                .and_then(|codes| codes[r])
                .map_or(blank_code, |k| k as usize);
            if let Some(slot) = self.persons_by_code.get_mut(code) {
                *slot += 1;
            }
        }
    }

    /// The counts.
    pub fn finish(self) -> MonthlyCounts {
        let mut counts = self.counts;
        for tracked in &self.columns {
            if tracked.blanks > 0 {
                counts.blanks.insert(tracked.name.clone(), tracked.blanks);
            }
            match &tracked.column {
                Column::Code { list, counts: n } => {
                    let mut by_code = BTreeMap::new();
                    let mut by_attribute: Vec<BTreeMap<String, u64>> =
                        vec![BTreeMap::new(); list.attributes.len()];
                    for (k, &count) in n.iter().enumerate().filter(|(_, c)| **c > 0) {
                        by_code.insert(list.codes[k].code.clone(), count);
                        for (a, attribute) in list.attributes.iter().enumerate() {
                            *by_attribute[a]
                                .entry(list.attribute(k as u32, attribute).to_owned())
                                .or_default() += count;
                        }
                    }
                    if !by_code.is_empty() {
                        counts.categories.insert(tracked.name.clone(), by_code);
                    }
                    for (attribute, map) in list.attributes.iter().zip(by_attribute) {
                        if !map.is_empty() {
                            counts
                                .categories
                                .insert(format!("{}_{attribute}", tracked.name), map);
                        }
                    }
                }
                Column::Boolean { yes, no } => {
                    let map: BTreeMap<String, u64> = [("true", *yes), ("false", *no)]
                        .into_iter()
                        .filter(|(_, n)| *n > 0)
                        .map(|(k, n)| (k.to_owned(), n))
                        .collect();
                    if !map.is_empty() {
                        counts.categories.insert(tracked.name.clone(), map);
                    }
                }
                Column::Date | Column::Other => {}
            }
        }
        if let Some(Column::Code { list, .. }) = self.sde.map(|i| &self.columns[i].column) {
            for (k, &n) in self
                .persons_by_code
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
            {
                let group = if k < list.codes.len() {
                    list.attribute(k as u32, "group").to_owned()
                } else {
                    BLANK.to_owned()
                };
                *counts.persons_by_group.entry(group).or_default() += n;
            }
        }
        counts
    }
}

/// The code index of each kept row's value (`None` when blank or not in the list), looking
/// each distinct spelling up once.
fn code_indices(list: &CodeList, column: &StringArray, kept: &[usize]) -> Vec<Option<u32>> {
    let mut memo: HashMap<&str, Option<u32>> = HashMap::new();
    kept.iter()
        .map(|&i| {
            cell(column, i).and_then(|t| {
                *memo
                    .entry(t)
                    .or_insert_with(|| list.lookup(t).map(|(k, _)| k))
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) use tests::{HEADER, count_csv};

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Project;
    use crate::finding::NoSink;
    use crate::pipeline::{check_settings, check_upload};
    use crate::validate::UploadScope;

    pub(crate) const HEADER: &str = "Type,Date,Part of a policing operation,Policing operation,Latitude,Longitude,Gender,Age range,Self-defined ethnicity,Officer-defined ethnicity,Legislation,Object of search,Outcome,Outcome linked to object of search,Removal of more than just outer clothing";

    /// Counts a CSV text through the real decoder and checker.
    pub(crate) fn count_csv(text: &str, period: &str) -> MonthlyCounts {
        let project = Project::load(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        let pipeline = project.pipeline("stop_search").unwrap();
        let period: Period = period.parse().unwrap();
        let mut builder = CountsBuilder::new(&pipeline.schema, "kent", period, "s1");
        let outcome = check_upload(
            text.as_bytes(),
            None,
            &check_settings(pipeline),
            pipeline.limits,
            UploadScope {
                force: Some("kent".into()),
                period: Some(period),
                now: None,
            },
            &mut NoSink,
            &mut |batch, keep| {
                builder.add(&batch, &keep);
                Ok(())
            },
        )
        .unwrap();
        assert_ne!(
            outcome.verdict.decision.as_str(),
            "rejected",
            "{:?}",
            outcome.findings
        );
        builder.finish()
    }

    #[test]
    fn counts_days_categories_blanks_midnight_and_person_searches() {
        let text = format!(
            "{HEADER}\n\
             Person search,2020-01-01T00:00:00+00:00,False,,53.4,-1.4,Male,18-24,W1,White,Misuse of Drugs Act 1971 (section 23),Controlled drugs,Arrest,True,False\n\
             Person search,2020-01-01T13:10:00+00:00,,,,,Male,18-24,Black/African/Caribbean/Black British - Caribbean,Black,Misuse of Drugs Act 1971 (section 23),Controlled drugs,A no further action disposal,,True\n\
             Vehicle search,2020-01-03,False,,53.4,-1.4,,,,,Police and Criminal Evidence Act 1984 (section 1),Stolen goods,Suspect arrested,False,False\n\
             Person and Vehicle search,2020-01-31T22:00:00+00:00,True,,53.4,-1.4,Female,over 34,NS,White,Police and Criminal Evidence Act 1984 (section 1),Offensive weapons,Community resolution,True,False\n\
             Person search,2020-01-31T23:00:00+00:00,False,,53.4,-1.4,Male,10-17,,Asian,Misuse of Drugs Act 1971 (section 23),Controlled drugs,Arrest,True,False\n"
        );
        let c = count_csv(&text, "2020-01");
        assert_eq!(c.rows, 5);
        assert_eq!(c.by_day.len(), 31);
        assert_eq!((c.by_day[0], c.by_day[2], c.by_day[30]), (2, 1, 2));
        assert_eq!(c.empty_days(), 28);
        assert_eq!((c.dated, c.midnight), (5, 2), "00:00:00 and a date alone");
        assert_eq!(
            c.count("outcome", "Arrest"),
            3,
            "legacy spelling counted as its code"
        );
        assert_eq!(c.count("outcome_outcome_group", "Arrest"), 3);
        assert_eq!(c.count("self_defined_ethnicity", "B1"), 1);
        assert_eq!(c.count(SDE_GROUP, "White"), 1);
        assert_eq!(c.count(SDE_GROUP, NOT_STATED), 1);
        assert_eq!(c.recorded(SDE_GROUP), 3);
        assert_eq!(c.blank(SDE), 2);
        assert_eq!(c.not_stated(), 3);
        assert_eq!(c.count("legislation_power", "MDA s23"), 3);
        assert_eq!(
            c.count("removal_of_more_than_just_outer_clothing", "true"),
            1
        );
        assert_eq!(c.count("outcome_linked_to_object_of_search", "true"), 3);
        assert_eq!(c.blank("outcome_linked_to_object_of_search"), 1);
        assert_eq!(c.blank("latitude"), 1);
        assert_eq!(c.blank("policing_operation"), 5);
        // The vehicle search is not a person search; its blank ethnicity is not counted.
        assert_eq!(c.persons, 4);
        assert_eq!(
            c.persons_by_group,
            BTreeMap::from([
                ("Black".to_owned(), 1),
                ("Not stated".to_owned(), 1),
                ("White".to_owned(), 1),
                (BLANK.to_owned(), 1),
            ])
        );
    }
}
