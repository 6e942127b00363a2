//! Batches → observations, as the profile declares: the observations of one accepted
//! submission, gathered while its batches stream through the pipeline: records per day of the period, blanks per column, records per category of every
//! code-list column (by canonical code and by each code-list attribute), true/false counts of
//! boolean columns, and what the profile's `[observe]` declares (`model::observe`): records
//! at a time of day, the subset counted for rates by its breakdown, and agreement between two
//! dimensions; and a fingerprint of its records (`model::fingerprint`), to tell a file sent again.
//!
//! [`ObservationsBuilder`] works column by column over a batch's Arrow arrays and keeps one
//! counter per code of each list, so memory does not grow with the file. Everything the
//! analysis, the derived metrics and the summaries need comes from these counts; no row is read
//! twice, and nothing here knows which return it counts. The value it yields,
//! [`Observations`], lives in `model::observe`: the state stores it too (the force's series).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::ingest::{Batch, cell};
use crate::model::fingerprint::{FingerprintBuilder, RecordHashes, day_and_time};
use crate::model::observe::{AgreementDecl, ObserveSettings, SubsetDecl};
use crate::period::Period;
use crate::schema::{CodeList, RecordSchema, SnapshotType};
use arrow::array::{Array, BooleanArray, StringArray};
use chrono::Datelike;

pub use crate::model::observe::Observations;

/// The category name under which blank cells of the subset's breakdown are counted.
pub const BLANK: &str = "(blank)";

/// How one property is counted.
enum Column {
    /// A code list: one counter per code; attributes are derived at the end.
    Code {
        list: Arc<CodeList>,
        counts: Vec<u64>,
    },
    /// `true` / `false`.
    Boolean { yes: u64, no: u64 },
    /// The in-period date: days and times of day.
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

/// A code-list dimension read row by row: its column (index into the tracked columns) and,
/// per code, the category it stands for (the code, or its attribute's value).
struct RowDimension {
    column: usize,
    category: Vec<String>,
}

impl RowDimension {
    /// Resolves a dimension name (`<property>` or `<property>_<attribute>`) of a code-list
    /// property; `None` for any other dimension.
    fn resolve(columns: &[Tracked], dimension: &str) -> Option<RowDimension> {
        columns.iter().enumerate().find_map(|(c, t)| {
            let Column::Code { list, .. } = &t.column else {
                return None;
            };
            let codes = 0..list.codes.len() as u32;
            if t.name == dimension {
                return Some(RowDimension {
                    column: c,
                    category: list.codes.iter().map(|k| k.code.clone()).collect(),
                });
            }
            let attribute = dimension
                .strip_prefix(t.name.as_str())?
                .strip_prefix('_')
                .filter(|a| list.attributes.iter().any(|x| x == a))?;
            Some(RowDimension {
                column: c,
                category: codes
                    .map(|k| list.attribute(k, attribute).to_owned())
                    .collect(),
            })
        })
    }
}

/// The declared subset: which codes select it, and its breakdown.
struct Subset {
    select: Option<(RowDimension, Vec<bool>)>,
    by: Option<RowDimension>,
    /// Per category index of `by` (its last slot for blanks), records counted.
    counts: Vec<u64>,
    /// The category names of `by`, in slot order.
    names: Vec<String>,
    /// Per code of `by`, its slot.
    slot_of: Vec<usize>,
}

impl Subset {
    fn new(columns: &[Tracked], decl: &SubsetDecl) -> Subset {
        let select = decl.dimension.as_deref().and_then(|d| {
            let dim = RowDimension::resolve(columns, d)?;
            let flags = dim
                .category
                .iter()
                .map(|c| decl.categories.contains(c))
                .collect();
            Some((dim, flags))
        });
        let by = RowDimension::resolve(columns, &decl.by);
        let mut names: Vec<String> = by.as_ref().map_or_else(Vec::new, |b| {
            let mut n = b.category.clone();
            n.sort();
            n.dedup();
            n
        });
        let slot_of = by.as_ref().map_or_else(Vec::new, |b| {
            b.category
                .iter()
                .map(|c| names.binary_search(c).unwrap_or(0))
                .collect()
        });
        names.push(BLANK.to_owned());
        Subset {
            select,
            by,
            counts: vec![0; names.len()],
            names,
            slot_of,
        }
    }
}

/// A declared agreement: per code of each side, its category (`None` when it is ignored).
struct Agreement {
    name: String,
    sides: [(usize, Vec<Option<String>>); 2],
    agree: u64,
    both: u64,
}

impl Agreement {
    /// `None` when either dimension is not a code-list dimension of the schema.
    fn new(columns: &[Tracked], decl: &AgreementDecl) -> Option<Agreement> {
        let side = |d: &str| {
            let dim = RowDimension::resolve(columns, d)?;
            let category = dim
                .category
                .into_iter()
                .map(|c| (!decl.ignore.contains(&c)).then_some(c))
                .collect();
            Some((dim.column, category))
        };
        Some(Agreement {
            name: decl.name.clone(),
            sides: [side(&decl.dimensions[0])?, side(&decl.dimensions[1])?],
            agree: 0,
            both: 0,
        })
    }
}

/// Counts the accepted rows of one submission, batch by batch.
pub struct ObservationsBuilder {
    observations: Observations,
    columns: Vec<Tracked>,
    /// Time-of-day shares: name, `hh:mm:ss` and records counted.
    times: Vec<(String, String, u64)>,
    /// The days of the period.
    days: PeriodDays,
    subset: Option<Subset>,
    agreements: Vec<Agreement>,
    /// Tracked columns whose per-row codes the subset or an agreement reads.
    row_columns: Vec<usize>,
    fingerprint: FingerprintBuilder,
}

impl ObservationsBuilder {
    /// A builder for one submission of `schema`'s dataset, observing what `observe` declares.
    pub fn new(
        schema: &RecordSchema,
        observe: &ObserveSettings,
        force_id: &str,
        period: Period,
        submission_id: &str,
    ) -> ObservationsBuilder {
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
        let subset = observe.subset.as_ref().map(|s| Subset::new(&columns, s));
        let agreements: Vec<Agreement> = observe
            .agreements
            .iter()
            .filter_map(|a| Agreement::new(&columns, a))
            .collect();
        let mut row_columns: Vec<usize> = subset
            .iter()
            .flat_map(|s| {
                s.select
                    .iter()
                    .map(|(d, _)| d.column)
                    .chain(s.by.iter().map(|b| b.column))
            })
            .chain(
                agreements
                    .iter()
                    .flat_map(|a| a.sides.iter().map(|(c, _)| *c)),
            )
            .collect();
        row_columns.sort_unstable();
        row_columns.dedup();
        ObservationsBuilder {
            observations: Observations {
                force_id: force_id.to_owned(),
                period: Some(period),
                submission_id: submission_id.to_owned(),
                by_day: vec![0; period.days() as usize],
                ..Observations::default()
            },
            columns,
            times: observe
                .shares
                .iter()
                .filter_map(|s| Some((s.name.clone(), s.time_of_day.clone()?, 0)))
                .collect(),
            days: PeriodDays::of(period),
            subset,
            agreements,
            row_columns,
            fingerprint: FingerprintBuilder::default(),
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
        self.observations.rows += kept.len() as u64;
        // Code index of each kept row, for the columns read row by row.
        let mut row_codes: HashMap<usize, Vec<Option<u32>>> = HashMap::new();
        let mut hashes = RecordHashes::new(kept.len());
        for (c, tracked) in self.columns.iter_mut().enumerate() {
            let Some(column) = batch.column(tracked.property) else {
                tracked.blanks += kept.len() as u64;
                continue;
            };
            match &mut tracked.column {
                Column::Code { list, counts } => {
                    let codes = code_indices(list, column, &kept);
                    for (r, code) in codes.iter().enumerate() {
                        match code {
                            Some(k) => counts[*k as usize] += 1,
                            None => tracked.blanks += 1,
                        }
                        hashes.mix(r, code.map_or(u64::MAX, u64::from));
                    }
                    if self.row_columns.binary_search(&c).is_ok() {
                        row_codes.insert(c, codes);
                    }
                }
                Column::Boolean { yes, no } => {
                    for (r, &i) in kept.iter().enumerate() {
                        let flag = match cell(column, i) {
                            None => {
                                tracked.blanks += 1;
                                2
                            }
                            Some(t) if t.eq_ignore_ascii_case("true") => {
                                *yes += 1;
                                1
                            }
                            Some(_) => {
                                *no += 1;
                                0
                            }
                        };
                        hashes.mix(r, flag);
                    }
                }
                Column::Date => {
                    let o = &mut self.observations;
                    for (r, &i) in kept.iter().enumerate() {
                        let date = cell(column, i);
                        hashes.mix_text(r, date.map(day_and_time));
                        match date {
                            None => tracked.blanks += 1,
                            Some(t) => {
                                let Some(slot) =
                                    self.days.index(t).and_then(|d| o.by_day.get_mut(d))
                                else {
                                    continue;
                                };
                                *slot += 1;
                                o.dated += 1;
                                for (_, time, n) in &mut self.times {
                                    if t.len() == 10 || t.get(11..19) == Some(time.as_str()) {
                                        *n += 1;
                                    }
                                }
                            }
                        }
                    }
                }
                Column::Other => {
                    for (r, &i) in kept.iter().enumerate() {
                        let text = cell(column, i);
                        tracked.blanks += u64::from(text.is_none());
                        hashes.mix_text(r, text.map(str::as_bytes));
                    }
                }
            }
        }
        hashes.finish(&mut self.fingerprint);
        self.add_rows(kept.len(), &row_codes);
    }

    /// The subset and the agreements, row by row over the kept rows' codes.
    fn add_rows(&mut self, rows: usize, codes: &HashMap<usize, Vec<Option<u32>>>) {
        let code = |column: usize, r: usize| codes.get(&column).map(|c| c[r]);
        if let Some(s) = &mut self.subset {
            let blank = s.names.len() - 1;
            for r in 0..rows {
                let selected = match &s.select {
                    Some((dim, flags)) => match code(dim.column, r) {
                        Some(k) => k.is_some_and(|k| flags[k as usize]),
                        None => true,
                    },
                    None => true,
                };
                if !selected {
                    continue;
                }
                self.observations.subset += 1;
                let slot =
                    s.by.as_ref()
                        .and_then(|b| code(b.column, r).flatten())
                        .map_or(blank, |k| s.slot_of[k as usize]);
                s.counts[slot] += 1;
            }
        }
        for a in &mut self.agreements {
            let [(left, lcat), (right, rcat)] = &a.sides;
            let (Some(l), Some(rr)) = (codes.get(left), codes.get(right)) else {
                continue;
            };
            for r in 0..rows {
                let pair = (
                    l[r].and_then(|k| lcat[k as usize].as_ref()),
                    rr[r].and_then(|k| rcat[k as usize].as_ref()),
                );
                if let (Some(x), Some(y)) = pair {
                    a.both += 1;
                    a.agree += u64::from(x == y);
                }
            }
        }
    }

    /// The observations.
    pub fn finish(self) -> Observations {
        let mut o = self.observations;
        o.fingerprint = self.fingerprint.finish();
        for tracked in &self.columns {
            if tracked.blanks > 0 {
                o.blanks.insert(tracked.name.clone(), tracked.blanks);
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
                        o.categories.insert(tracked.name.clone(), by_code);
                    }
                    for (attribute, map) in list.attributes.iter().zip(by_attribute) {
                        if !map.is_empty() {
                            o.categories
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
                        o.categories.insert(tracked.name.clone(), map);
                    }
                }
                Column::Date | Column::Other => {}
            }
        }
        if let Some(s) = self.subset {
            o.subset_by = s
                .names
                .into_iter()
                .zip(s.counts)
                .filter(|(_, n)| *n > 0)
                .collect();
        }
        for a in self.agreements {
            o.agreements.insert(a.name, (a.agree, a.both));
        }
        for (name, _, n) in self.times {
            if n > 0 {
                o.at_time.insert(name, n);
            }
        }
        o
    }
}

/// The days of a period, by month: for each month it overlaps, `yyyy-mm-`, its first and last
/// day in the period, and the day of the period its first day is. A date written
/// `yyyy-mm-dd...` finds its day by comparing eight bytes and reading two digits.
#[derive(Debug, Default)]
struct PeriodDays(Vec<([u8; 8], u32, u32, usize)>);

impl PeriodDays {
    fn of(period: Period) -> PeriodDays {
        let (first, last) = (period.first_day(), period.last_day());
        let mut months = Vec::new();
        let mut start = first;
        while start <= last {
            let next = start
                .with_day(1)
                .and_then(|d| d.checked_add_months(chrono::Months::new(1)))
                .unwrap_or(chrono::NaiveDate::MAX);
            let end = last.min(next.pred_opt().unwrap_or(last));
            let mut prefix = [0; 8];
            prefix.copy_from_slice(&start.format("%Y-%m-").to_string().as_bytes()[..8]);
            let base = usize::try_from((start - first).num_days()).unwrap_or(0);
            months.push((prefix, start.day(), end.day(), base));
            start = next;
        }
        PeriodDays(months)
    }

    /// The day of the period (0 for its first day) of a date as written, when in the period.
    fn index(&self, text: &str) -> Option<usize> {
        let b = text.as_bytes();
        let prefix = b.get(..8)?;
        let (_, lo, hi, base) = self.0.iter().find(|m| m.0 == prefix)?;
        let [d1, d2] = *b.get(8..10)? else {
            return None;
        };
        if !(d1.is_ascii_digit() && d2.is_ascii_digit()) {
            return None;
        }
        let day = u32::from(d1 - b'0') * 10 + u32::from(d2 - b'0');
        (*lo..=*hi)
            .contains(&day)
            .then(|| base + (day - lo) as usize)
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
    pub(crate) fn count_csv(text: &str, period: &str) -> Observations {
        let project = Project::load(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        let pipeline = project.pipeline("stop_search").unwrap();
        let period: Period = period.parse().unwrap();
        let mut builder =
            ObservationsBuilder::new(&pipeline.schema, &pipeline.observe, "kent", period, "s1");
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
    fn a_date_finds_its_day_of_the_period_for_every_cadence() {
        let days = |token: &str| {
            let p = if token.starts_with("FY") {
                crate::period::Cadence::FinancialYear.parse(token).unwrap()
            } else {
                token.parse().unwrap()
            };
            PeriodDays::of(p)
        };
        let month = days("2024-02");
        assert_eq!(month.index("2024-02-01T10:00:00+00:00"), Some(0));
        assert_eq!(month.index("2024-02-29"), Some(28), "a leap day");
        assert_eq!(month.index("2024-02-30"), None);
        assert_eq!(month.index("2024-03-01"), None);
        assert_eq!(month.index("2024-02-1"), None);
        let quarter = days("2024-Q2");
        assert_eq!(quarter.index("2024-04-01"), Some(0));
        assert_eq!(quarter.index("2024-05-01"), Some(30));
        assert_eq!(
            quarter.index("2024-06-30"),
            Some(90),
            "the quarter's 91st day"
        );
        assert_eq!(quarter.index("2024-07-01"), None);
        let year = days("FY2023-24");
        assert_eq!(year.index("2023-04-01"), Some(0));
        assert_eq!(year.index("2024-03-31"), Some(365), "2024 is a leap year");
        assert_eq!(year.index("2023-03-31"), None);
    }

    #[test]
    fn counts_days_categories_blanks_declared_shares_and_the_subset() {
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
        let pipeline = Project::load(Path::new(env!("CARGO_MANIFEST_DIR")))
            .unwrap()
            .pipeline("stop_search")
            .unwrap()
            .clone();
        let share = |name: &str| c.share(pipeline.observe.share(name).unwrap());
        assert_eq!(share("midnight_share"), (2, 5), "00:00:00 and a date alone");
        assert_eq!(
            c.count("outcome", "Arrest"),
            3,
            "legacy spelling counted as its code"
        );
        assert_eq!(c.count("outcome_outcome_group", "Arrest"), 3);
        assert_eq!(c.count("self_defined_ethnicity", "B1"), 1);
        assert_eq!(c.count("self_defined_ethnicity_group", "White"), 1);
        assert_eq!(c.count("self_defined_ethnicity_group", "Not stated"), 1);
        assert_eq!(c.recorded("self_defined_ethnicity_group"), 3);
        assert_eq!(c.blank("self_defined_ethnicity"), 2);
        assert_eq!(share("not_stated_share"), (3, 5));
        assert_eq!(c.count("legislation_power", "MDA s23"), 3);
        assert_eq!(
            c.count("removal_of_more_than_just_outer_clothing", "true"),
            1
        );
        assert_eq!(c.count("outcome_linked_to_object_of_search", "true"), 3);
        assert_eq!(c.blank("outcome_linked_to_object_of_search"), 1);
        assert_eq!(c.blank("latitude"), 1);
        assert_eq!(c.blank("policing_operation"), 5);
        // Both recorded and agreeing on the first two rows; "Not stated" is not compared.
        assert_eq!(c.agreements["ethnicity_agreement"], (2, 2));
        // The vehicle search is not a person search; its blank ethnicity is not counted.
        assert_eq!(c.subset, 4);
        assert_eq!(
            c.subset_by,
            BTreeMap::from([
                ("Black".to_owned(), 1),
                ("Not stated".to_owned(), 1),
                ("White".to_owned(), 1),
                (BLANK.to_owned(), 1),
            ])
        );
    }

    #[test]
    fn a_file_sent_again_as_the_next_month_has_the_same_fingerprint() {
        use std::fmt::Write as _;
        let rows = |month: &str, from: usize| -> String {
            let mut text = String::new();
            for i in from..from + 40 {
                let _ = writeln!(
                    text,
                    "Person search,2020-{month}-{:02}T{:02}:{:02}:00+00:00,,,53.{i},-1.4,Male,18-24,W1,White,\
                     Misuse of Drugs Act 1971 (section 23),Controlled drugs,Arrest,True,False",
                    1 + i % 28,
                    i % 24,
                    i % 60
                );
            }
            text
        };
        let february = count_csv(&format!("{HEADER}\n{}", rows("02", 0)), "2020-02");
        let again = count_csv(&format!("{HEADER}\n{}", rows("03", 0)), "2020-03");
        let march = count_csv(&format!("{HEADER}\n{}", rows("03", 20)), "2020-03");
        assert_eq!(february.fingerprint.hashes.len(), 40);
        assert_eq!(
            february.fingerprint.similarity(&again.fingerprint),
            Some(1.0)
        );
        // Half the records of March are February's: 20 shared of 60.
        assert_eq!(
            february.fingerprint.similarity(&march.fingerprint),
            Some(20.0 / 60.0)
        );
    }
}
