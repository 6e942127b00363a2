//! Synthetic returns for the demo and tests: realistic monthly stop-and-search uploads from every
//! territorial force, plus a documented set of planted defects.
//!
//! [`uploads`] streams one upload at a time (never the whole set in memory): for each month of
//! the configured window and each of the 43 territorial forces, one clean return in the exact
//! data.police.uk extract format, with volumes in proportion to the force's share of national
//! stop and search, mild seasonality and Poisson-like noise. Values come from the code lists' code
//! lists with realistic mixes, and blanks are placed by exact quotas so that every clean return
//! stays below the warning thresholds of `pipelines/stop_search.toml` and is `accepted` with no
//! findings. The [`PLANTED`] uploads replace or add to one force × month each and together cover
//! every finding code the stop-and-search pipeline can produce; `docs/demo.md` lists them.
//!
//! With `incidents` on, the [`INCIDENTS`] are planted too: the data-quality failures of
//! `DOMAIN.md`'s incident table (missing months after a system change, a missing force-year, a
//! category stuck near zero then a step, a 4× step, a high not-stated share, a category share
//! far from peers, a half-month extract, a breakdown cell at zero), each in valid files, each
//! with the detection it must get, which the demo command prints. (The analysis is evaluated
//! on a history generated apart from the demo: `crate::eval`.)
//!
//! Output is byte-for-byte reproducible: a small splitmix64 generator is seeded from the
//! configured seed, the force and the month, and no floating-point function other than `sqrt`
//! (which IEEE 754 rounds exactly) is used.

use std::borrow::Cow;
use std::collections::VecDeque;

use chrono::{DateTime, Datelike, Utc};

use force_returns::finding::Code;
use force_returns::model::Limits;
use force_returns::period::Period;
use force_returns::schema::{CodeList, CodeLists};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoConfig {
    /// Seed of every random choice: the same seed gives the same bytes.
    pub seed: u64,
    /// The last month generated.
    pub end: Period,
    /// How many months are generated, ending with `end`.
    pub months: usize,
    /// Volume: 1.0 is the realistic national volume (about 45,000 searches a month).
    pub scale: f64,
    /// Whether the planted file defects ([`PLANTED`]) are uploaded.
    pub defects: bool,
    /// Whether the planted data-quality incidents ([`INCIDENTS`]) are applied.
    pub incidents: bool,
}

impl Default for DemoConfig {
    /// The demo's configuration: the financial year April 2024 to March 2025 at national
    /// volume, with the planted file defects and no incidents.
    fn default() -> Self {
        DemoConfig {
            seed: 20_250_331,
            end: Period::new(2025, 3).expect("2025-03 is a month"),
            months: 12,
            scale: 1.0,
            defects: true,
            incidents: false,
        }
    }
}

/// One generated upload.
#[derive(Debug, Clone)]
pub struct DemoUpload {
    /// Where it is uploaded: `incoming/<force id>/stop_search/<YYYY-MM>/<file name>`.
    pub key: String,
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// The planted defect, or `None` for a clean return.
    pub defect: Option<&'static PlantedDefect>,
    /// The planted incident this valid return carries, if any.
    pub incident: Option<&'static PlantedIncident>,
    /// When a force would upload it: between the 3rd and the 22nd of the following month
    /// (a misfiled first attempt a day earlier, a resubmission three days later).
    pub uploaded_at: DateTime<Utc>,
}

/// A documented upload with a known problem (or a known fix), and what checking it must give.
#[derive(Debug)]
pub struct PlantedDefect {
    /// Stable identifier.
    pub id: &'static str,
    /// The force whose return it replaces or adds to.
    pub force: &'static str,
    /// The month, counted back from the configured end month (0 = the end month); clamped to
    /// the configured window.
    pub months_back: usize,
    /// What is wrong, in plain words.
    pub description: &'static str,
    /// The exact set of distinct finding codes checking it must give.
    pub expected: &'static [Code],
    /// The expected decision: `accepted`, `accepted_with_warnings` or `rejected`.
    pub decision: &'static str,
    plant: Plant,
}

impl PlantedDefect {
    /// The month this upload belongs to under `config`.
    pub fn period(&self, config: &DemoConfig) -> Period {
        let back = self.months_back.min(config.months.saturating_sub(1));
        (0..back).fold(config.end, |p, _| p.prev())
    }
}

/// How a planted upload is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plant {
    Latin1,
    Windows1252,
    ExcelResaved,
    Resubmission,
    XlsxRenamed,
    Empty,
    ZeroReport,
    UnknownForceFolder,
    BadMonthFolder,
    MissingColumn,
    UnknownColumn,
    DuplicateColumn,
    TruncatedRow,
    UnquotedComma,
    UnknownCodes,
    ImpossibleDates,
    DatesWrongMonth,
    ForceColumnOtherForce,
    PeriodColumnOtherMonth,
    PeriodColumnWrongShape,
    LatitudeText,
    LocationSwapped,
    OperationTooLong,
    BlankRequired,
    LegacySpellings,
    BlankRateWarning,
    BlankRateError,
    DuplicateRows,
    FileTooLarge,
    TooManyRows,
    UnclosedQuote,
}

/// Where a planted upload goes relative to the force's clean return of that month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Instead of the clean return.
    Replace,
    /// Before the clean return, which is still uploaded (a misfiled first attempt).
    Before,
    /// After every return of the month (a corrected resubmission).
    After,
}

impl Plant {
    fn placement(self) -> Placement {
        match self {
            Plant::UnknownForceFolder | Plant::BadMonthFolder => Placement::Before,
            Plant::Resubmission => Placement::After,
            _ => Placement::Replace,
        }
    }
}

/// Codes the demo does not plant (`docs/demo.md` says why): some cannot come from a
/// stop-and-search upload and tests with ad-hoc schemas and pipelines cover them; the defect
/// corpus (`tests/fixtures/defects/`) has a case for the other file formats and readings.
pub const NOT_PLANTED: &[Code] = &[
    Code::ValueNotUnique,
    Code::ValueSchema,
    Code::RowsExcluded,
    Code::ValueOutOfRange,
    Code::PeriodNotBegun,
    Code::DateNearPeriod,
    Code::DateInFuture,
    Code::FieldsInconsistent,
    Code::PeriodWrongCadence,
    Code::SepLineSkipped,
    Code::DelimiterNotComma,
    Code::TooManyColumns,
    Code::RowsAboveHeader,
    Code::HeaderEmptyColumns,
    Code::ValueAmbiguousDate,
    Code::ValueThousandsSeparator,
    Code::ValueSmartQuotes,
    Code::ValuePlaceholder,
    Code::AnomalyCategoryShare,
    Code::BlankRateVsHistory,
    Code::AnomalyResentRecords,
    Code::AnomalyFieldsAgree,
    Code::FileNotText,
    Code::WorkbookSheetRead,
    Code::MetricUnknown,
    Code::MetricDimensionUnknown,
    Code::MetricValueInvalid,
    Code::MetricDuplicate,
    Code::MetricOutOfRange,
    Code::MetricPartsTotal,
    Code::MetricNumeratorAboveDenominator,
    Code::MetricDisagreesWithParts,
    Code::MetricSuppressed,
    Code::MetricMissing,
    Code::ReconciliationDiffers,
    Code::ReconciliationAgrees,
    Code::ReconciliationPending,
    Code::AnomalyFigure,
    Code::AnomalyFiguresResent,
];

const REJECTED: &str = "rejected";
const WARNINGS: &str = "accepted_with_warnings";
const ACCEPTED: &str = "accepted";

/// The planted uploads, documented in `docs/demo.md`.
pub const PLANTED: &[PlantedDefect] = &[
    PlantedDefect {
        id: "latin1_encoding",
        force: "north-wales",
        months_back: 8,
        description: "Pasted together from two exports: about 5% of rows name the operation `Operation Môn Ddiogel`, in UTF-8 except in the second, fourth and sixth of those rows, where its `ô` is the single Latin-1 byte 0xF4; a file mixing both encodings is not guessed at, and those rows are not decoded",
        expected: &[Code::EncodingInvalidUtf8],
        decision: REJECTED,
        plant: Plant::Latin1,
    },
    PlantedDefect {
        id: "resubmission_corrected",
        force: "north-wales",
        months_back: 8,
        description: "The same month uploaded again later as `..._v2.csv`, saved as UTF-8: the corrected resubmission of `latin1_encoding`",
        expected: &[],
        decision: ACCEPTED,
        plant: Plant::Resubmission,
    },
    PlantedDefect {
        id: "windows_1252_encoding",
        force: "dyfed-powys",
        months_back: 4,
        description: "Saved by Excel as \"CSV (Comma delimited)\": Windows-1252, so the `ô` of `Operation Môn Ddiogel` (about 5% of rows) is the byte 0xF4; read as Windows-1252 with a note",
        expected: &[Code::EncodingConverted],
        decision: ACCEPTED,
        plant: Plant::Windows1252,
    },
    PlantedDefect {
        id: "excel_resaved",
        force: "north-yorkshire",
        months_back: 6,
        description: "Opened and saved again in Excel (UK): every date as `dd/mm/yyyy hh:mm:ss` (or `dd/mm/yyyy`), a byte-order mark, CRLF line ends, and three rows of bare commas at the end where rows were cleared; read with notes",
        expected: &[Code::ValueExcelDate, Code::BlankRowsSkipped],
        decision: ACCEPTED,
        plant: Plant::ExcelResaved,
    },
    PlantedDefect {
        id: "xlsx_renamed",
        force: "essex",
        months_back: 5,
        description: "The start of an Excel workbook (zip: `PK\\x03\\x04` magic, compressed binary content) renamed from .xlsx to .csv, cut short: no workbook can be read from it",
        expected: &[Code::WorkbookUnreadable],
        decision: REJECTED,
        plant: Plant::XlsxRenamed,
    },
    PlantedDefect {
        id: "empty_file",
        force: "cumbria",
        months_back: 3,
        description: "The file has zero bytes (the export failed)",
        expected: &[Code::FileEmpty],
        decision: REJECTED,
        plant: Plant::Empty,
    },
    PlantedDefect {
        id: "zero_report",
        force: "city-of-london",
        months_back: 2,
        description: "The header and no records: a zero report (no searches this month)",
        expected: &[Code::NoRows],
        decision: WARNINGS,
        plant: Plant::ZeroReport,
    },
    PlantedDefect {
        id: "unknown_force_folder",
        force: "devon-and-cornwall",
        months_back: 4,
        description: "The month's clean return first uploaded under the folder `devon-cornwall`, which is no force id (the correct upload follows)",
        expected: &[Code::UploadLocationInvalid],
        decision: REJECTED,
        plant: Plant::UnknownForceFolder,
    },
    PlantedDefect {
        id: "bad_month_folder",
        force: "gwent",
        months_back: 6,
        description: "The month's clean return first uploaded under a month folder without the leading zero (`2024-9`), which is not YYYY-MM (the correct upload follows)",
        expected: &[Code::UploadLocationInvalid],
        decision: REJECTED,
        plant: Plant::BadMonthFolder,
    },
    PlantedDefect {
        id: "missing_column",
        force: "hampshire",
        months_back: 11,
        description: "An old export template without the `Removal of more than just outer clothing` column (header and rows have 14 cells)",
        expected: &[Code::HeaderMissingColumn],
        decision: REJECTED,
        plant: Plant::MissingColumn,
    },
    PlantedDefect {
        id: "unknown_column",
        force: "kent",
        months_back: 7,
        description: "An extra column `Search reference` (the force's own record number) that the schema does not know; it is ignored and the rows are clean",
        expected: &[Code::HeaderUnknownColumn],
        decision: WARNINGS,
        plant: Plant::UnknownColumn,
    },
    PlantedDefect {
        id: "duplicate_column",
        force: "surrey",
        months_back: 10,
        description: "The export template repeats `Gender` as a 16th column",
        expected: &[Code::HeaderDuplicateColumn],
        decision: REJECTED,
        plant: Plant::DuplicateColumn,
    },
    PlantedDefect {
        id: "truncated_row",
        force: "leicestershire",
        months_back: 0,
        description: "The upload was cut off inside the last row's `Self-defined ethnicity` cell, so that row has 9 of 15 cells (it is left out; the other rows are clean)",
        expected: &[Code::RowTooFewFields],
        decision: REJECTED,
        plant: Plant::TruncatedRow,
    },
    PlantedDefect {
        id: "unquoted_comma",
        force: "sussex",
        months_back: 5,
        description: "Three rows name the operation `Operation Sceptre, knife crime week of action` without quotes, giving 16 cells",
        expected: &[Code::RowTooManyFields],
        decision: REJECTED,
        plant: Plant::UnquotedComma,
    },
    PlantedDefect {
        id: "unknown_codes",
        force: "nottinghamshire",
        months_back: 9,
        description: "The force's own codes in a few rows: Gender `M` and `F`, Age range `35-44`",
        expected: &[Code::ValueNotInList],
        decision: REJECTED,
        plant: Plant::UnknownCodes,
    },
    PlantedDefect {
        id: "impossible_dates",
        force: "staffordshire",
        months_back: 1,
        description: "Three rows dated the day after the month's last day (for February 2025: `2025-02-29`), which does not exist",
        expected: &[Code::ValueBadDate],
        decision: REJECTED,
        plant: Plant::ImpossibleDates,
    },
    PlantedDefect {
        id: "dates_wrong_month",
        force: "south-yorkshire",
        months_back: 2,
        description: "The extract started a day early: its first rows (5%, at least 3) are dated the last day of the previous month",
        expected: &[Code::DateOutOfPeriod],
        decision: REJECTED,
        plant: Plant::DatesWrongMonth,
    },
    PlantedDefect {
        id: "force_column_other_force",
        force: "warwickshire",
        months_back: 6,
        description: "A `Force` column (the shared records system of the Warwickshire and West Mercia alliance) names `West Mercia Police` in about 8% of rows",
        expected: &[Code::ForceMismatch],
        decision: REJECTED,
        plant: Plant::ForceColumnOtherForce,
    },
    PlantedDefect {
        id: "period_column_other_month",
        force: "northumbria",
        months_back: 4,
        description: "A `Month` column names the previous month in the last 5% of rows (at least one); their dates are in the right month",
        expected: &[Code::PeriodMismatch],
        decision: REJECTED,
        plant: Plant::PeriodColumnOtherMonth,
    },
    PlantedDefect {
        id: "period_column_wrong_shape",
        force: "derbyshire",
        months_back: 7,
        description: "A `Month` column that Excel reformatted as `Aug-24` in every row instead of `2024-08`",
        expected: &[Code::ValuePattern],
        decision: REJECTED,
        plant: Plant::PeriodColumnWrongShape,
    },
    PlantedDefect {
        id: "latitude_text",
        force: "lincolnshire",
        months_back: 8,
        description: "Four rows give Latitude and Longitude as the text `unknown`",
        expected: &[Code::ValueWrongType],
        decision: REJECTED,
        plant: Plant::LatitudeText,
    },
    PlantedDefect {
        id: "latitude_out_of_range",
        force: "cheshire",
        months_back: 10,
        description: "Five rows have Latitude and Longitude swapped (latitude about -2.6, longitude about 53.2): possible, but outside England and Wales, so warnings and the rows are kept",
        expected: &[Code::ValueImplausible],
        decision: WARNINGS,
        plant: Plant::LocationSwapped,
    },
    PlantedDefect {
        id: "operation_too_long",
        force: "thames-valley",
        months_back: 3,
        description: "Three rows carry a 250-character briefing text in `Policing operation`, whose maximum length is 200",
        expected: &[Code::ValueLength],
        decision: REJECTED,
        plant: Plant::OperationTooLong,
    },
    PlantedDefect {
        id: "blank_required",
        force: "avon-and-somerset",
        months_back: 9,
        description: "Three rows have a blank `Type` and two a blank `Date`; neither may be blank",
        expected: &[Code::ValueRequired],
        decision: REJECTED,
        plant: Plant::BlankRequired,
    },
    PlantedDefect {
        id: "legacy_spellings",
        force: "humberside",
        months_back: 11,
        description: "Every outcome in its legacy spelling (`Nothing found - no further action`, `Suspect arrested`, ...): accepted and stored as the current codes",
        expected: &[Code::ValueLegacySpelling],
        decision: ACCEPTED,
        plant: Plant::LegacySpellings,
    },
    PlantedDefect {
        id: "blank_rate_warning",
        force: "gloucestershire",
        months_back: 1,
        description: "Gender blank in 25% of rows: above the 10% warning threshold, below the 90% error threshold",
        expected: &[Code::BlankRate],
        decision: WARNINGS,
        plant: Plant::BlankRateWarning,
    },
    PlantedDefect {
        id: "blank_rate_error",
        force: "bedfordshire",
        months_back: 0,
        description: "Officer-defined ethnicity blank in every row (not recorded after a system change): above the 90% error threshold",
        expected: &[Code::BlankRate],
        decision: REJECTED,
        plant: Plant::BlankRateError,
    },
    PlantedDefect {
        id: "duplicate_rows",
        force: "norfolk",
        months_back: 5,
        description: "About 1.5% of rows (2 to 40) exported twice: each repeat follows its original, identical in every cell",
        expected: &[Code::DuplicateRow],
        decision: WARNINGS,
        plant: Plant::DuplicateRows,
    },
    PlantedDefect {
        id: "file_too_large",
        force: "west-yorkshire",
        months_back: 6,
        description: "Three years (36 months ending with the upload's month) of the force's records in one file, about 13 MB at national volume whatever the scale: above the demo's 8 MiB limit",
        expected: &[Code::FileTooLarge],
        decision: REJECTED,
        plant: Plant::FileTooLarge,
    },
    PlantedDefect {
        id: "too_many_rows",
        force: "merseyside",
        months_back: 2,
        description: "The national extract of the month (41,000 records from every force, ethnicity as 18+1 codes, about 7 MiB) uploaded under one force: above the demo's 40,000-row limit, below its size limit",
        expected: &[Code::TooManyRows],
        decision: REJECTED,
        plant: Plant::TooManyRows,
    },
    PlantedDefect {
        id: "cell_too_long",
        force: "west-midlands",
        months_back: 4,
        description: "A row a third of the way down opens a quote in `Policing operation` that is never closed, so the cell swallows the rest of the file (over 100 KiB; at least 1,200 rows): above the 64 KiB cell limit",
        expected: &[Code::CellTooLong],
        decision: REJECTED,
        plant: Plant::UnclosedQuote,
    },
];

/// How a planted incident must be detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    /// Every affected month's return is `overdue` in the status table.
    Overdue,
    /// One of `codes` on the force for the month `months_back` (within `tolerance` months;
    /// a level shift counts by the month its step started).
    Codes {
        /// Any of these codes.
        codes: &'static [Code],
        /// The month, counted back from the configured end month.
        months_back: usize,
        /// Months either side that still count.
        tolerance: usize,
    },
}

/// How a planted incident changes a force's valid returns.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tweak {
    /// No return at all.
    Missing,
    /// This many times the usual number of records.
    Volume(f64),
    /// Only records dated up to this day of the month.
    UpToDay(u32),
    /// A column's values starting with `from` (every value when empty) become `to`, except
    /// for the share `keep`.
    Recode {
        column: usize,
        from: &'static str,
        to: &'static str,
        keep: f64,
    },
    /// Recorded cells of a column are blanked at random until about this share is blank.
    Blank { column: usize, share: f64 },
    /// This share of records carries the time 00:00:00.
    Midnight(f64),
}

/// A data-quality incident from `DOMAIN.md`'s table, planted in valid returns.
#[derive(Debug)]
pub struct PlantedIncident {
    /// Stable identifier.
    pub id: &'static str,
    /// The incident pattern (`DOMAIN.md`) it reproduces.
    pub pattern: &'static str,
    /// The force.
    pub force: &'static str,
    /// Its first month, counted back from the configured end month.
    pub months_back: usize,
    /// How many months it lasts.
    pub months: usize,
    /// What happens, in plain words.
    pub description: &'static str,
    /// How it must be detected.
    pub expected: Detection,
    tweak: Tweak,
}

impl PlantedIncident {
    /// The months affected under `config` (inside the window), oldest first.
    pub fn periods(&self, config: &DemoConfig) -> Vec<Period> {
        let window = config.end.trailing(config.months);
        (0..self.months)
            .filter_map(|i| self.months_back.checked_sub(i))
            .map(|back| (0..back).fold(config.end, |p, _| p.prev()))
            .filter(|p| window.contains(p))
            .collect()
    }

    /// Whether the incident affects `force`'s month `period`.
    pub fn affects(&self, config: &DemoConfig, force: &str, period: Period) -> bool {
        self.force == force && self.periods(config).contains(&period)
    }
}

const NS_LABEL: &str = "Other ethnic group - Not stated";
const C_SDE: usize = 8;
const C_ODE: usize = 9;

/// The planted incidents, documented in `docs/demo.md`. Months are counted back from the end
/// month; with the default end (March 2025) and 36 months the window is April 2022 to March
/// 2025.
pub const INCIDENTS: &[PlantedIncident] = &[
    PlantedIncident {
        id: "missing_months_after_system_change",
        pattern: "missing months after a system change",
        force: "devon-and-cornwall",
        months_back: 17,
        months: 4,
        description: "A new records system: no return for four months (Devon & Cornwall, from November 2022)",
        expected: Detection::Overdue,
        tweak: Tweak::Missing,
    },
    PlantedIncident {
        id: "missing_force_year",
        pattern: "a missing force-year",
        force: "lancashire",
        months_back: 23,
        months: 12,
        description: "No return for a whole financial year (Lancashire's arrests, 2017/18)",
        expected: Detection::Overdue,
        tweak: Tweak::Missing,
    },
    PlantedIncident {
        id: "category_stuck_then_step",
        pattern: "a category stuck near zero, then a step",
        force: "hertfordshire",
        months_back: 35,
        months: 17,
        description: "Community resolution exported as no further action in 90% of cases for 17 months, then exported properly (Kent's compliant handcuffing, +71.5% after the fix)",
        expected: Detection::Codes {
            codes: &[Code::AnomalyDistributionShift],
            months_back: 18,
            tolerance: 1,
        },
        tweak: Tweak::Recode {
            column: C_OUTCOME,
            from: "Community resolution",
            to: NO_FURTHER_ACTION,
            keep: 0.1,
        },
    },
    PlantedIncident {
        id: "four_fold_step",
        pattern: "a 4× step change",
        force: "greater-manchester",
        months_back: 14,
        months: 15,
        description: "Four times as many records from one month to the end of the window, with no operational cause (Greater Manchester's use of force after better recording)",
        expected: Detection::Codes {
            codes: &[Code::AnomalyVolume, Code::AnomalyLevelShift],
            months_back: 14,
            tolerance: 1,
        },
        tweak: Tweak::Volume(4.0),
    },
    PlantedIncident {
        id: "high_not_stated_share",
        pattern: "a high not-stated share",
        force: "avon-and-somerset",
        months_back: 16,
        months: 6,
        description: "Self-defined ethnicity exported as `Not stated` for a third of searches for six months (Avon & Somerset's use of force, 2019/20)",
        expected: Detection::Codes {
            codes: &[Code::AnomalyRecordingShare],
            months_back: 16,
            tolerance: 1,
        },
        tweak: Tweak::Recode {
            column: C_SDE,
            from: "",
            to: NS_LABEL,
            keep: 2.0 / 3.0,
        },
    },
    PlantedIncident {
        id: "category_far_from_peers",
        pattern: "a category share far from peers",
        force: "cheshire",
        months_back: 35,
        months: 12,
        description: "`Not stated` self-defined ethnicity exported as `Any other ethnic group` for the first year: no `Not stated` at all, where every other force has some (Cheshire's use of force, 2019/20)",
        expected: Detection::Codes {
            codes: &[Code::AnomalyPeerShare],
            months_back: 35,
            tolerance: 0,
        },
        tweak: Tweak::Recode {
            column: C_SDE,
            from: NS_LABEL,
            to: "Other ethnic group - Any other ethnic group",
            keep: 0.0,
        },
    },
    PlantedIncident {
        id: "half_month_extract",
        pattern: "a half-month extract",
        force: "durham",
        months_back: 9,
        months: 1,
        description: "The extract stops at the 15th: no records for the second half of the month",
        expected: Detection::Codes {
            codes: &[Code::GapDaysWithoutRecords],
            months_back: 9,
            tolerance: 0,
        },
        tweak: Tweak::UpToDay(15),
    },
    PlantedIncident {
        id: "breakdown_cell_at_zero_first_quarter",
        pattern: "a breakdown cell at zero",
        force: "kent",
        months_back: 20,
        months: 3,
        description: "No `Mixed` self-defined ethnicity for a quarter: the mixed-heritage codes exported as `Not stated` (Kent's stop and search, Mixed = 0 in two quarters)",
        expected: Detection::Codes {
            codes: &[Code::AnomalyCategoryVanished],
            months_back: 20,
            tolerance: 0,
        },
        tweak: Tweak::Recode {
            column: C_SDE,
            from: "Mixed/Multiple ethnic groups",
            to: NS_LABEL,
            keep: 0.0,
        },
    },
    PlantedIncident {
        id: "breakdown_cell_at_zero_second_quarter",
        pattern: "a breakdown cell at zero",
        force: "kent",
        months_back: 14,
        months: 3,
        description: "The same again two quarters later, after three normal months",
        expected: Detection::Codes {
            codes: &[Code::AnomalyCategoryVanished],
            months_back: 14,
            tolerance: 0,
        },
        tweak: Tweak::Recode {
            column: C_SDE,
            from: "Mixed/Multiple ethnic groups",
            to: NS_LABEL,
            keep: 0.0,
        },
    },
    PlantedIncident {
        id: "times_at_midnight",
        pattern: "times clustered at midnight",
        force: "west-mercia",
        months_back: 8,
        months: 9,
        description: "After a system upgrade, 60% of searches carry the time 00:00:00 instead of their own, to the end of the window",
        expected: Detection::Codes {
            codes: &[Code::AnomalyRecordingShare, Code::AnomalyPeerShare],
            months_back: 8,
            tolerance: 0,
        },
        tweak: Tweak::Midnight(0.6),
    },
    PlantedIncident {
        id: "blank_rate_rise",
        pattern: "a field recorded less often",
        force: "south-wales",
        months_back: 20,
        months: 4,
        description: "Officer-defined ethnicity blank in about one search in eight for four months (usually one in 15 to one in 60): under the 15% warning threshold, far above the force's own rate",
        expected: Detection::Codes {
            codes: &[Code::AnomalyRecordingShare, Code::AnomalyLevelShift],
            months_back: 20,
            tolerance: 1,
        },
        tweak: Tweak::Blank {
            column: C_ODE,
            share: 0.13,
        },
    },
];

/// The limits the demo runs with: low enough that the planted over-limit files stay small,
/// high enough for every clean return up to `scale` 2 (the Metropolitan Police's month at
/// national volume is about 17,000 rows and 4 MB).
pub fn demo_limits() -> Limits {
    Limits {
        max_file_bytes: 8 << 20,
        max_rows: 40_000,
        max_cell_bytes: 64 << 10,
        ..Limits::default()
    }
}

/// Streams the uploads, month by month (oldest first) and force by force, in the order they
/// are uploaded: a misfiled first attempt before the force's clean return, a resubmission
/// after the month's other uploads.
pub fn uploads<'a>(
    code_lists: &'a CodeLists,
    config: &'a DemoConfig,
) -> impl Iterator<Item = DemoUpload> + 'a {
    uploads_where(code_lists, config, |_, _| true)
}

/// The uploads of [`uploads`] for the force-months `keep` selects (force id, month), the
/// others not generated at all: the same bytes, keys and times as the whole stream gives them,
/// at the cost of the selected months only. A selected month brings every upload of that
/// force and month (a misfiled first attempt and a resubmission included).
pub fn uploads_where<'a>(
    code_lists: &'a CodeLists,
    config: &'a DemoConfig,
    keep: impl Fn(&str, Period) -> bool + 'a,
) -> impl Iterator<Item = DemoUpload> + 'a {
    Uploads {
        config,
        vocab: Vocab::new(code_lists, config.seed),
        periods: config.end.trailing(config.months),
        next_period: 0,
        jobs: VecDeque::new(),
        keep: Box::new(keep),
    }
}

/// Rows of the clean return of `force` for `period` (at least one: a zero report is planted
/// on purpose), or `None` when the force is not one of the 43 territorial forces.
pub fn clean_rows(config: &DemoConfig, force: &str, period: Period) -> Option<usize> {
    let f = FORCES.iter().find(|f| f.id == force)?;
    Some(volume(config.seed, f, period, config.scale).max(1))
}

// ---------------------------------------------------------------------------------------------
// Forces: weights and places
// ---------------------------------------------------------------------------------------------

/// Searches a month across England and Wales at scale 1.0.
const NATIONAL_MONTHLY: f64 = 45_000.0;

/// Seasonal factor by calendar month: searches peak in late spring, dip in early winter
/// (1 + 0.08 cos(2π(m − 5)/12), tabulated so no trigonometry is needed).
const SEASON: [f64; 12] = [
    0.96, 1.0, 1.04, 1.069, 1.08, 1.069, 1.04, 1.0, 0.96, 0.931, 0.92, 0.931,
];

/// The ethnic mix of the people a force searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mix {
    London,
    Urban,
    Shire,
}

/// One territorial force: relative volume and where its searches happen.
struct ForceInfo {
    id: &'static str,
    /// Relative share of national stop and search (per mille, roughly).
    weight: f64,
    lat: f64,
    lon: f64,
    /// Half-widths of the area searches fall in, in degrees.
    spread_lat: f64,
    spread_lon: f64,
    mix: Mix,
}

const fn force(
    id: &'static str,
    weight: f64,
    lat: f64,
    lon: f64,
    spread_lat: f64,
    spread_lon: f64,
    mix: Mix,
) -> ForceInfo {
    ForceInfo {
        id,
        weight,
        lat,
        lon,
        spread_lat,
        spread_lon,
        mix,
    }
}

/// The 43 territorial forces. Weights follow the forces' rough shares of searches in the Home
/// Office's stop-and-search statistics (the Metropolitan Police about a third, then the big
/// metropolitan forces); centres are the main town where searches concentrate.
const FORCES: &[ForceInfo] = &[
    force(
        "metropolitan",
        330.0,
        51.5074,
        -0.1278,
        0.12,
        0.2,
        Mix::London,
    ),
    force(
        "west-midlands",
        50.0,
        52.4862,
        -1.8904,
        0.08,
        0.15,
        Mix::Urban,
    ),
    force(
        "greater-manchester",
        42.0,
        53.4808,
        -2.2426,
        0.08,
        0.12,
        Mix::Urban,
    ),
    force("merseyside", 40.0, 53.4084, -2.9916, 0.06, 0.08, Mix::Shire),
    force(
        "west-yorkshire",
        34.0,
        53.7997,
        -1.5492,
        0.08,
        0.15,
        Mix::Urban,
    ),
    force("essex", 25.0, 51.7356, 0.4685, 0.15, 0.25, Mix::Shire),
    force("kent", 22.0, 51.2787, 0.5217, 0.12, 0.35, Mix::Shire),
    force("thames-valley", 22.0, 51.6, -0.95, 0.2, 0.3, Mix::Urban),
    force(
        "south-yorkshire",
        20.0,
        53.3811,
        -1.4701,
        0.08,
        0.12,
        Mix::Shire,
    ),
    force("hampshire", 20.0, 50.9097, -1.4044, 0.12, 0.25, Mix::Shire),
    force("lancashire", 20.0, 53.7632, -2.7031, 0.15, 0.15, Mix::Urban),
    force(
        "northumbria",
        18.0,
        54.9783,
        -1.6178,
        0.08,
        0.12,
        Mix::Shire,
    ),
    force("south-wales", 18.0, 51.4816, -3.1791, 0.08, 0.3, Mix::Shire),
    force(
        "avon-and-somerset",
        16.0,
        51.4545,
        -2.5879,
        0.12,
        0.2,
        Mix::Urban,
    ),
    force("sussex", 16.0, 50.8225, -0.1372, 0.08, 0.3, Mix::Shire),
    force("hertfordshire", 14.0, 51.75, -0.3, 0.12, 0.15, Mix::Shire),
    force(
        "nottinghamshire",
        12.0,
        52.9548,
        -1.1581,
        0.1,
        0.1,
        Mix::Urban,
    ),
    force(
        "leicestershire",
        12.0,
        52.6369,
        -1.1398,
        0.1,
        0.12,
        Mix::Urban,
    ),
    force(
        "devon-and-cornwall",
        12.0,
        50.3755,
        -4.1427,
        0.2,
        0.5,
        Mix::Shire,
    ),
    force(
        "west-mercia",
        11.0,
        52.1936,
        -2.2216,
        0.25,
        0.25,
        Mix::Shire,
    ),
    force("bedfordshire", 10.0, 51.8787, -0.42, 0.08, 0.1, Mix::Urban),
    force("cleveland", 10.0, 54.5742, -1.235, 0.05, 0.1, Mix::Shire),
    force("humberside", 10.0, 53.7457, -0.3367, 0.1, 0.2, Mix::Shire),
    force("staffordshire", 10.0, 52.95, -2.1, 0.12, 0.12, Mix::Shire),
    force("cheshire", 10.0, 53.2, -2.6, 0.1, 0.2, Mix::Shire),
    force("derbyshire", 9.0, 52.9225, -1.4746, 0.12, 0.12, Mix::Shire),
    force("surrey", 9.0, 51.3148, -0.56, 0.08, 0.2, Mix::Shire),
    force("north-wales", 9.0, 53.2, -3.5, 0.1, 0.4, Mix::Shire),
    force("gwent", 8.0, 51.5842, -2.9977, 0.06, 0.1, Mix::Shire),
    force("durham", 8.0, 54.7761, -1.5733, 0.1, 0.15, Mix::Shire),
    force("cambridgeshire", 8.0, 52.35, -0.05, 0.15, 0.15, Mix::Shire),
    force("norfolk", 8.0, 52.6309, 1.2974, 0.12, 0.3, Mix::Shire),
    force(
        "northamptonshire",
        8.0,
        52.2405,
        -0.9027,
        0.1,
        0.15,
        Mix::Shire,
    ),
    force("suffolk", 7.0, 52.0567, 1.1482, 0.12, 0.25, Mix::Shire),
    force("lincolnshire", 6.0, 53.2307, -0.5406, 0.2, 0.25, Mix::Shire),
    force(
        "north-yorkshire",
        6.0,
        53.959,
        -1.0815,
        0.2,
        0.3,
        Mix::Shire,
    ),
    force(
        "gloucestershire",
        6.0,
        51.8642,
        -2.2382,
        0.1,
        0.15,
        Mix::Shire,
    ),
    force("wiltshire", 6.0, 51.5558, -1.7797, 0.15, 0.15, Mix::Shire),
    force("dorset", 6.0, 50.7192, -1.8808, 0.06, 0.2, Mix::Shire),
    force("cumbria", 5.0, 54.8925, -2.9329, 0.2, 0.2, Mix::Shire),
    force("dyfed-powys", 5.0, 52.0, -4.0, 0.25, 0.4, Mix::Shire),
    force(
        "city-of-london",
        4.0,
        51.5155,
        -0.0922,
        0.005,
        0.008,
        Mix::London,
    ),
    force("warwickshire", 4.0, 52.35, -1.55, 0.12, 0.12, Mix::Shire),
];

fn total_weight() -> f64 {
    FORCES.iter().map(|f| f.weight).sum()
}

/// Rows of a force's month: Poisson around its share of the seasonal national volume.
fn volume(seed: u64, f: &ForceInfo, period: Period, scale: f64) -> usize {
    let season = SEASON[(period.month() as usize).clamp(1, 12) - 1];
    let lambda = NATIONAL_MONTHLY * scale.max(0.0) * f.weight / total_weight() * season;
    let mut rng = Rng::new(&[seed, tag(f.id), period_key(period), tag("volume")]);
    rng.poisson(lambda)
}

/// Anonymised search locations of a force: data.police.uk snaps each search to a nearby point,
/// so the same coordinates recur. Bigger forces have more points (84 to 2,040).
fn places(seed: u64, f: &ForceInfo) -> Vec<(String, String)> {
    let mut rng = Rng::new(&[seed, tag(f.id), tag("places")]);
    let count = 60 + (f.weight * 6.0) as usize;
    (0..count)
        .map(|_| {
            let lat = (f.lat + f.spread_lat * rng.centred()).clamp(49.9, 55.9);
            let lon = (f.lon + f.spread_lon * rng.centred()).clamp(-6.4, 1.9);
            (format!("{lat:.6}"), format!("{lon:.6}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Value mixes, by code (resolved against the code lists)
// ---------------------------------------------------------------------------------------------

/// Relative weights of codes.
type Weights = &'static [(&'static str, f64)];

const SEARCH_TYPES: &[(&str, f64)] = &[
    ("Person search", 0.80),
    ("Person and Vehicle search", 0.17),
    ("Vehicle search", 0.03),
];

const GENDERS: &[(&str, f64)] = &[("Male", 0.905), ("Female", 0.09), ("Other", 0.005)];

const AGES: &[(&str, f64)] = &[
    ("under 10", 0.002),
    ("10-17", 0.14),
    ("18-24", 0.35),
    ("25-34", 0.28),
    ("over 34", 0.228),
];

/// Shares of the people searched by 5-group (and not stated), per mix.
const GROUPS: &[&str] = &["White", "Black", "Asian", "Mixed", "Other", "Not stated"];
const GROUP_SHARES: [(Mix, [f64; 6]); 3] = [
    (Mix::London, [0.36, 0.33, 0.14, 0.07, 0.05, 0.05]),
    (Mix::Urban, [0.60, 0.11, 0.17, 0.05, 0.02, 0.05]),
    (Mix::Shire, [0.84, 0.04, 0.04, 0.03, 0.01, 0.04]),
];

/// Self-defined ethnicity within its group.
const SDE_WITHIN: &[(&str, f64)] = &[
    ("W1", 0.85),
    ("W2", 0.015),
    ("W3", 0.01),
    ("W9", 0.125),
    ("M1", 0.4),
    ("M2", 0.15),
    ("M3", 0.15),
    ("M9", 0.3),
    ("A1", 0.2),
    ("A2", 0.35),
    ("A3", 0.15),
    ("A4", 0.03),
    ("A9", 0.27),
    ("B1", 0.35),
    ("B2", 0.35),
    ("B9", 0.3),
    ("O2", 0.3),
    ("O9", 0.7),
    ("NS", 1.0),
];

/// Officer-defined ethnicity given the self-defined group: the same group in most rows.
const ODE_GIVEN: &[(&str, &[(&str, f64)])] = &[
    (
        "White",
        &[
            ("White", 0.96),
            ("Other", 0.02),
            ("Asian", 0.01),
            ("Black", 0.005),
            ("Mixed", 0.005),
        ],
    ),
    (
        "Black",
        &[
            ("Black", 0.95),
            ("Mixed", 0.02),
            ("Other", 0.02),
            ("White", 0.01),
        ],
    ),
    (
        "Asian",
        &[
            ("Asian", 0.92),
            ("Other", 0.05),
            ("White", 0.02),
            ("Black", 0.01),
        ],
    ),
    (
        "Mixed",
        &[
            ("Black", 0.45),
            ("White", 0.3),
            ("Mixed", 0.1),
            ("Other", 0.1),
            ("Asian", 0.05),
        ],
    ),
    (
        "Other",
        &[
            ("Other", 0.45),
            ("Asian", 0.3),
            ("White", 0.2),
            ("Black", 0.05),
        ],
    ),
    (
        "Not stated",
        &[
            ("White", 0.7),
            ("Black", 0.12),
            ("Asian", 0.1),
            ("Other", 0.05),
            ("Mixed", 0.03),
        ],
    ),
];

const MISUSE_OF_DRUGS: &str = "Misuse of Drugs Act 1971 (section 23)";

/// Powers used, each with the objects searched for under it.
const LEGISLATION: &[(&str, f64, Weights)] = &[
    (MISUSE_OF_DRUGS, 0.61, &[("Controlled drugs", 1.0)]),
    (
        "Police and Criminal Evidence Act 1984 (section 1)",
        0.345,
        &[
            ("Offensive weapons", 0.36),
            ("Stolen goods", 0.25),
            ("Article for use in theft", 0.22),
            ("Articles for use in criminal damage", 0.08),
            ("Fireworks", 0.03),
            ("Anything to threaten or harm anyone", 0.04),
            ("Detailed object of search unavailable", 0.02),
        ],
    ),
    (
        "Criminal Justice and Public Order Act 1994 (section 60)",
        0.025,
        &[
            ("Offensive weapons", 0.8),
            ("Anything to threaten or harm anyone", 0.2),
        ],
    ),
    ("Firearms Act 1968 (section 47)", 0.01, &[("Firearms", 1.0)]),
    (
        "Criminal Justice Act 1988 (section 139B)",
        0.003,
        &[("Offensive weapons", 1.0)],
    ),
    (
        "Psychoactive Substances Act 2016 (s36(2))",
        0.002,
        &[("Psychoactive substances", 1.0)],
    ),
    (
        "Terrorism Act 2000 (section 43)",
        0.001,
        &[("Evidence of offences under the Act", 1.0)],
    ),
    (
        "Poaching Prevention Act 1862 (section 2)",
        0.001,
        &[("Game or poaching equipment", 1.0)],
    ),
    (
        "Wildlife and Countryside Act 1981 (section 19)",
        0.001,
        &[("Evidence of wildlife offences", 1.0)],
    ),
    (
        "Customs and Excise Management Act 1979 (section 163)",
        0.0005,
        &[("Goods on which duty has not been paid etc.", 1.0)],
    ),
    (
        "Crossbows Act 1987 (section 4)",
        0.0005,
        &[("Crossbows", 1.0)],
    ),
    (
        "Deer Act 1991 (section 12)",
        0.0005,
        &[("Evidence of wildlife offences", 1.0)],
    ),
];

const NO_FURTHER_ACTION: &str = "A no further action disposal";

/// Outcomes a child under 10, below the age of criminal responsibility, cannot have.
const UNDER_10_IMPOSSIBLE: &[&str] = &[
    "Arrest",
    "Summons / charged by post",
    "Caution (simple or conditional)",
];

const OUTCOMES_DRUGS: &[(&str, f64)] = &[
    (NO_FURTHER_ACTION, 0.66),
    ("Arrest", 0.10),
    ("Khat or Cannabis warning", 0.10),
    ("Community resolution", 0.07),
    ("Summons / charged by post", 0.04),
    ("Penalty Notice for Disorder", 0.02),
    ("Caution (simple or conditional)", 0.01),
];

const OUTCOMES_OTHER: &[(&str, f64)] = &[
    (NO_FURTHER_ACTION, 0.76),
    ("Arrest", 0.16),
    ("Summons / charged by post", 0.03),
    ("Community resolution", 0.02),
    ("Caution (simple or conditional)", 0.01),
    ("Penalty Notice for Disorder", 0.01),
    ("Article found - Detailed outcome unavailable", 0.01),
];

/// Searches by hour of day (relative): evening peak, early-morning trough.
const HOURS: [f64; 24] = [
    5.0, 4.0, 3.5, 2.5, 1.5, 1.0, 1.0, 1.5, 2.0, 3.0, 3.5, 4.0, 4.5, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0,
    7.0, 7.0, 6.5, 6.0, 5.5,
];

/// Searches by weekday, Monday first (relative).
const WEEKDAYS: [f64; 7] = [0.95, 0.95, 1.0, 1.0, 1.1, 1.1, 0.9];

// ---------------------------------------------------------------------------------------------
// Blanks
// ---------------------------------------------------------------------------------------------

/// Columns whose blanks are placed by quota, in the order of `BLANK_BASE`.
const B_PART: usize = 0;
const B_LOCATION: usize = 1;
const B_GENDER: usize = 2;
const B_AGE: usize = 3;
const B_SDE: usize = 4;
const B_ODE: usize = 5;
const B_LEGISLATION: usize = 6;
const B_OBJECT: usize = 7;
const B_OUTCOME: usize = 8;
const B_LINKED: usize = 9;
const B_REMOVAL: usize = 10;
const BLANKABLE: usize = 11;

/// Typical blank shares, before each force's own recording practice is applied.
const BLANK_BASE: [f64; BLANKABLE] = [
    0.25, 0.03, 0.02, 0.03, 0.06, 0.04, 0.01, 0.012, 0.004, 0.2, 0.03,
];

/// The warning thresholds of `pipelines/stop_search.toml`; clean returns stay below 80% of them.
const BLANK_WARN: [f64; BLANKABLE] = [0.5, 0.1, 0.1, 0.1, 0.15, 0.15, 0.05, 0.05, 0.05, 0.5, 0.5];

/// Blank shares of a force's month: the base times a per-force factor (0.4 to 1.6) and a
/// per-month wobble (±10%), capped well below the warning thresholds.
fn blank_rates(seed: u64, f: &ForceInfo, period: Period) -> [f64; BLANKABLE] {
    let mut force_rng = Rng::new(&[seed, tag(f.id), tag("blanks")]);
    let mut month_rng = Rng::new(&[seed, tag(f.id), period_key(period), tag("blanks")]);
    let mut rates = [0.0; BLANKABLE];
    for (i, rate) in rates.iter_mut().enumerate() {
        let factor = (0.4 + 1.2 * force_rng.unit()) * (0.9 + 0.2 * month_rng.unit());
        *rate = (BLANK_BASE[i] * factor).min(0.8 * BLANK_WARN[i]);
    }
    rates
}

/// Exactly `floor(rows × rate)` blanks among `rows`, placed uniformly (selection sampling).
struct Quota {
    left: u64,
    of: u64,
}

impl Quota {
    fn new(rows: usize, rate: f64) -> Quota {
        let of = rows as u64;
        Quota {
            left: ((rows as f64 * rate.clamp(0.0, 1.0)).floor() as u64).min(of),
            of,
        }
    }

    /// Whether the next row is blank.
    fn take(&mut self, rng: &mut Rng) -> bool {
        let blank = self.left > 0 && rng.below(self.of.max(1)) < self.left;
        if blank {
            self.left -= 1;
        }
        self.of = self.of.saturating_sub(1);
        blank
    }
}

// ---------------------------------------------------------------------------------------------
// Random numbers
// ---------------------------------------------------------------------------------------------

/// splitmix64: small, fast and good enough for synthetic data; fully reproducible.
struct Rng(u64);

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a of a name, to seed by force or purpose.
fn tag(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

fn period_key(p: Period) -> u64 {
    u64::from(p.year().unsigned_abs()) * 12 + u64::from(p.month())
}

impl Rng {
    fn new(parts: &[u64]) -> Rng {
        Rng(parts
            .iter()
            .fold(GOLDEN, |s, &p| mix64(s ^ p).wrapping_add(GOLDEN)))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Roughly bell-shaped in [-1, 1] (mean of three uniforms).
    fn centred(&mut self) -> f64 {
        (self.unit() + self.unit() + self.unit()) / 1.5 - 1.0
    }

    /// Roughly standard normal (Irwin–Hall: twelve uniforms).
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.unit()).sum::<f64>() - 6.0
    }

    /// Poisson-distributed count with mean `lambda`: normal approximation for large means,
    /// binomial with many trials for small ones.
    fn poisson(&mut self, lambda: f64) -> usize {
        if lambda <= 0.0 {
            0
        } else if lambda >= 30.0 {
            (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as usize
        } else {
            let p = lambda / 1000.0;
            (0..1000).filter(|_| self.chance(p)).count()
        }
    }

    /// An index drawn by cumulative weights.
    fn pick(&mut self, cumulative: &[f64]) -> usize {
        let total = cumulative.last().copied().unwrap_or(0.0);
        let x = self.unit() * total;
        cumulative
            .partition_point(|&c| c <= x)
            .min(cumulative.len().saturating_sub(1))
    }
}

fn cumulate(weights: impl IntoIterator<Item = f64>) -> Vec<f64> {
    weights
        .into_iter()
        .scan(0.0, |sum, w| {
            *sum += w.max(0.0);
            Some(*sum)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Vocabulary: weighted choices resolved against the code lists
// ---------------------------------------------------------------------------------------------

/// One value a column can take.
struct Item {
    code: String,
    label: String,
    group: String,
}

/// A weighted choice among code-list entries. Codes missing from the code lists are left out.
struct Picker {
    items: Vec<Item>,
    cumulative: Vec<f64>,
}

impl Picker {
    fn new<'w>(
        list: Option<&CodeList>,
        weights: impl IntoIterator<Item = (&'w str, f64)>,
    ) -> Picker {
        let mut items = Vec::new();
        let mut w = Vec::new();
        if let Some(list) = list {
            for (code, weight) in weights {
                if let Some((i, _)) = list.lookup(code) {
                    let entry = &list.codes[i as usize];
                    items.push(Item {
                        code: entry.code.clone(),
                        label: entry.label.clone(),
                        group: list.attribute(i, "group").to_owned(),
                    });
                    w.push(weight);
                }
            }
        }
        Picker {
            items,
            cumulative: cumulate(w),
        }
    }

    fn pick(&self, rng: &mut Rng) -> Option<&Item> {
        if self.items.is_empty() {
            // Keep the stream aligned whatever the code lists hold.
            rng.next_u64();
            return None;
        }
        Some(&self.items[rng.pick(&self.cumulative)])
    }
}

/// Everything rows are drawn from, built once per run.
struct Vocab {
    /// The territorial forces the code lists know, in `FORCES` order.
    forces: Vec<&'static ForceInfo>,
    force_labels: Vec<String>,
    force_cumulative: Vec<f64>,
    places: Vec<Vec<(String, String)>>,
    search_type: Picker,
    gender: Picker,
    age: Picker,
    sde: Vec<(Mix, Picker)>,
    ode: Vec<(&'static str, Picker)>,
    legislation: Picker,
    objects: Vec<Picker>,
    outcome_drugs: Picker,
    outcome_other: Picker,
    /// Current outcome label → its first legacy spelling.
    outcome_legacy: Vec<(String, String)>,
}

impl Vocab {
    fn new(code_lists: &CodeLists, seed: u64) -> Vocab {
        let list = |id: &str| code_lists.get(id).map(AsRef::as_ref);
        let force_list = list("forces");
        let forces: Vec<&'static ForceInfo> = FORCES
            .iter()
            .filter(|f| force_list.is_some_and(|l| l.codes.iter().any(|c| c.code == f.id)))
            .collect();
        let force_labels = forces
            .iter()
            .map(|f| {
                force_list
                    .and_then(|l| l.codes.iter().find(|c| c.code == f.id))
                    .map_or_else(|| f.id.to_owned(), |c| c.label.clone())
            })
            .collect();
        let sde_list = list("self_defined_ethnicity");
        let sde = GROUP_SHARES
            .iter()
            .map(|(mix, shares)| {
                let weights = SDE_WITHIN.iter().map(|&(code, within)| {
                    let group = sde_list
                        .and_then(|l| l.lookup(code))
                        .map(|(i, _)| sde_list.map_or("", |l| l.attribute(i, "group")))
                        .unwrap_or_default();
                    let share = GROUPS
                        .iter()
                        .position(|g| *g == group)
                        .map_or(0.0, |g| shares[g]);
                    (code, share * within)
                });
                (*mix, Picker::new(sde_list, weights))
            })
            .collect();
        let ode_list = list("officer_defined_ethnicity");
        let legislation_list = list("legislation");
        let object_list = list("object_of_search");
        let outcome_list = list("outcome");
        let legislation = Picker::new(
            legislation_list,
            LEGISLATION.iter().map(|&(code, w, _)| (code, w)),
        );
        let objects = legislation
            .items
            .iter()
            .map(|item| {
                let table = LEGISLATION
                    .iter()
                    .find(|(code, _, _)| *code == item.code)
                    .map_or(&[][..], |t| t.2);
                Picker::new(object_list, table.iter().copied())
            })
            .collect();
        let outcome_legacy = outcome_list
            .map(|l| {
                l.codes
                    .iter()
                    .filter_map(|c| c.legacy.first().map(|old| (c.label.clone(), old.clone())))
                    .collect()
            })
            .unwrap_or_default();
        Vocab {
            force_cumulative: cumulate(forces.iter().map(|f| f.weight)),
            places: forces.iter().map(|f| places(seed, f)).collect(),
            forces,
            force_labels,
            search_type: Picker::new(list("search_type"), SEARCH_TYPES.iter().copied()),
            gender: Picker::new(list("gender"), GENDERS.iter().copied()),
            age: Picker::new(list("age_range"), AGES.iter().copied()),
            sde,
            ode: ODE_GIVEN
                .iter()
                .map(|&(group, table)| (group, Picker::new(ode_list, table.iter().copied())))
                .collect(),
            legislation,
            objects,
            outcome_drugs: Picker::new(outcome_list, OUTCOMES_DRUGS.iter().copied()),
            outcome_other: Picker::new(outcome_list, OUTCOMES_OTHER.iter().copied()),
            outcome_legacy,
        }
    }

    fn sde(&self, mix: Mix) -> Option<&Picker> {
        self.sde.iter().find(|(m, _)| *m == mix).map(|(_, p)| p)
    }

    fn ode(&self, group: &str) -> Option<&Picker> {
        self.ode
            .iter()
            .find(|(g, _)| *g == group)
            .or_else(|| self.ode.iter().find(|(g, _)| *g == "Not stated"))
            .map(|(_, p)| p)
    }
}

// ---------------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------------

/// The data.police.uk stop-and-search header.
pub const HEADER: [&str; 15] = [
    "Type",
    "Date",
    "Part of a policing operation",
    "Policing operation",
    "Latitude",
    "Longitude",
    "Gender",
    "Age range",
    "Self-defined ethnicity",
    "Officer-defined ethnicity",
    "Legislation",
    "Object of search",
    "Outcome",
    "Outcome linked to object of search",
    "Removal of more than just outer clothing",
];

const C_TYPE: usize = 0;
const C_DATE: usize = 1;
const C_PART: usize = 2;
const C_OPERATION: usize = 3;
const C_LAT: usize = 4;
const C_LON: usize = 5;
const C_GENDER: usize = 6;
const C_AGE: usize = 7;
const C_OUTCOME: usize = 12;
const C_REMOVAL: usize = 14;

type Row<'v> = Vec<Cow<'v, str>>;

fn bool_cell(value: bool) -> Cow<'static, str> {
    Cow::Borrowed(if value { "True" } else { "False" })
}

/// Distinct, sorted times (seconds from the start of the month) with realistic days and
/// hours. Distinct times keep every row of a file distinct.
fn month_times(rng: &mut Rng, period: Period, n: usize) -> Vec<u32> {
    let days = period.days();
    let seconds = days * 86_400;
    let n = n.min(seconds as usize);
    let first = period.first_day().weekday().num_days_from_monday();
    let day_cumulative = cumulate((0..days).map(|d| WEEKDAYS[((first + d) % 7) as usize]));
    let hour_cumulative = cumulate(HOURS);
    let mut times: Vec<u32> = (0..n)
        .map(|_| {
            let day = rng.pick(&day_cumulative) as u32;
            let hour = rng.pick(&hour_cumulative) as u32;
            let rest = rng.below(3600) as u32;
            day * 86_400 + hour * 3600 + rest
        })
        .collect();
    times.sort_unstable();
    for i in 1..times.len() {
        if times[i] <= times[i - 1] {
            times[i] = times[i - 1] + 1;
        }
    }
    // Pushing ties forward can run past the month's end; pull the tail back (n fits).
    let last = seconds - 1;
    let mut cap = last;
    for t in times.iter_mut().rev() {
        if *t <= cap {
            break;
        }
        *t = cap;
        cap = cap.saturating_sub(1);
    }
    times
}

fn format_time(period: Period, t: u32) -> String {
    let day = t / 86_400 + 1;
    let rest = t % 86_400;
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00",
        period.year(),
        period.month(),
        day,
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Where a month's rows come from.
#[derive(Clone, Copy)]
enum Source {
    /// One force (index into `Vocab::forces`).
    Force(usize),
    /// Every force, in proportion (the national extract).
    National,
}

/// Generates the rows of one month, one at a time.
struct MonthGen<'v> {
    vocab: &'v Vocab,
    rng: Rng,
    period: Period,
    source: Source,
    times: Vec<u32>,
    next: usize,
    quotas: Vec<Quota>,
    sde_as_codes: bool,
}

impl<'v> MonthGen<'v> {
    fn new(
        vocab: &'v Vocab,
        seed: u64,
        source: Source,
        period: Period,
        n: usize,
        rates: &[f64; BLANKABLE],
    ) -> Self {
        let name = match source {
            Source::Force(f) => vocab.forces[f].id,
            Source::National => "national",
        };
        let mut rng = Rng::new(&[seed, tag(name), period_key(period), tag("rows")]);
        let times = month_times(&mut rng, period, n);
        let quotas = rates.iter().map(|&r| Quota::new(times.len(), r)).collect();
        MonthGen {
            vocab,
            rng,
            period,
            source,
            times,
            next: 0,
            quotas,
            sde_as_codes: false,
        }
    }

    fn len(&self) -> usize {
        self.times.len()
    }

    /// The next row, or `None` after the last.
    fn row(&mut self) -> Option<Row<'v>> {
        let t = *self.times.get(self.next)?;
        self.next += 1;
        let v = self.vocab;
        let rng = &mut self.rng;
        let force = match self.source {
            Source::Force(f) => f,
            Source::National => rng.pick(&v.force_cumulative),
        };
        let info = v.forces[force];
        let mut blank = [false; BLANKABLE];
        for (b, q) in blank.iter_mut().zip(self.quotas.iter_mut()) {
            *b = q.take(rng);
        }
        let text = |item: Option<&'v Item>, blank: bool| -> Cow<'v, str> {
            match item {
                Some(i) if !blank => Cow::Borrowed(i.label.as_str()),
                _ => Cow::Borrowed(""),
            }
        };
        let mut row: Row<'v> = Vec::with_capacity(HEADER.len());
        row.push(text(v.search_type.pick(rng), false));
        row.push(Cow::Owned(format_time(self.period, t)));
        let part = rng.chance(0.03);
        row.push(if blank[B_PART] {
            Cow::Borrowed("")
        } else {
            bool_cell(part)
        });
        row.push(Cow::Borrowed(""));
        let places = &v.places[force];
        // Skewed towards the first points (u^1.5): a few hot spots, a long tail.
        let u = rng.unit();
        let (lat, lon) = &places[((places.len() as f64) * u * u.sqrt()) as usize % places.len()];
        if blank[B_LOCATION] {
            row.push(Cow::Borrowed(""));
            row.push(Cow::Borrowed(""));
        } else {
            row.push(Cow::Borrowed(lat.as_str()));
            row.push(Cow::Borrowed(lon.as_str()));
        }
        row.push(text(v.gender.pick(rng), blank[B_GENDER]));
        let age = v.age.pick(rng);
        row.push(text(age, blank[B_AGE]));
        let sde = v.sde(info.mix).and_then(|p| p.pick(rng));
        let group = sde.map_or("Not stated", |i| i.group.as_str());
        row.push(match sde {
            Some(i) if !blank[B_SDE] => Cow::Borrowed(if self.sde_as_codes {
                i.code.as_str()
            } else {
                i.label.as_str()
            }),
            _ => Cow::Borrowed(""),
        });
        row.push(text(v.ode(group).and_then(|p| p.pick(rng)), blank[B_ODE]));
        let power = if v.legislation.items.is_empty() {
            rng.next_u64();
            None
        } else {
            Some(rng.pick(&v.legislation.cumulative))
        };
        row.push(text(
            power.map(|i| &v.legislation.items[i]),
            blank[B_LEGISLATION],
        ));
        row.push(text(
            power.and_then(|i| v.objects[i].pick(rng)),
            blank[B_OBJECT],
        ));
        let drugs = power.is_some_and(|i| v.legislation.items[i].code == MISUSE_OF_DRUGS);
        let mut outcome = if drugs {
            v.outcome_drugs.pick(rng)
        } else {
            v.outcome_other.pick(rng)
        };
        // The same draws whatever the outcome becomes, so that the rest of the file is unchanged.
        let linked = outcome.is_some_and(|o| o.code != NO_FURTHER_ACTION) && rng.chance(0.8);
        // A child under 10 cannot be arrested, charged or cautioned (the pipeline's rule
        // `under_10_arrested_or_charged`): such a search ends without further action.
        let under_10 = !blank[B_AGE] && age.is_some_and(|a| a.code == "under 10");
        let linked = if under_10
            && outcome.is_some_and(|o| UNDER_10_IMPOSSIBLE.contains(&o.code.as_str()))
        {
            outcome = v
                .outcome_other
                .items
                .iter()
                .find(|o| o.code == NO_FURTHER_ACTION);
            false
        } else {
            linked
        };
        row.push(text(outcome, blank[B_OUTCOME]));
        row.push(if blank[B_LINKED] {
            Cow::Borrowed("")
        } else {
            bool_cell(linked)
        });
        let removal = rng.chance(0.04);
        row.push(if blank[B_REMOVAL] {
            Cow::Borrowed("")
        } else {
            bool_cell(removal)
        });
        Some(row)
    }

    fn rows(mut self) -> Vec<Row<'v>> {
        let mut out = Vec::with_capacity(self.len());
        while let Some(row) = self.row() {
            out.push(row);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Writing CSV
// ---------------------------------------------------------------------------------------------

fn push_cell(out: &mut Vec<u8>, cell: &str) {
    if cell.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(cell.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(cell.as_bytes());
    }
}

fn push_row<S: AsRef<str>>(out: &mut Vec<u8>, cells: &[S]) {
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_cell(out, cell.as_ref());
    }
    out.push(b'\n');
}

fn csv<S: AsRef<str>>(header: &[&str], rows: &[Vec<S>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + rows.len() * 220);
    push_row(&mut out, header);
    for row in rows {
        push_row(&mut out, row);
    }
    out
}

/// Writes a whole month straight from the generator.
fn stream_csv(out: &mut Vec<u8>, generator: &mut MonthGen<'_>) {
    while let Some(row) = generator.row() {
        push_row(out, &row);
    }
}

/// Every character as one byte, as Windows-1252 stores the characters below U+0100 that the
/// demo uses (`?` for any other).
fn windows_1252(text: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(text)
        .chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect()
}

/// An ISO 8601 date (`2024-09-03`) or date and time (`2024-09-03T10:15:00+01:00`) as Excel in
/// the UK writes it: `03/09/2024` or `03/09/2024 10:15:00`, local time without the offset.
fn excel_date(iso: &str) -> String {
    let (date, time) = iso.split_at(iso.len().min(10));
    let mut parts = date.split('-');
    let (y, m, d) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    match time.get(1..9) {
        Some(clock) => format!("{d}/{m}/{y} {clock}"),
        None => format!("{d}/{m}/{y}"),
    }
}

/// A CSV as Excel saves it after rows at the bottom were cleared: a UTF-8 byte-order mark,
/// CRLF line ends and three rows of bare commas (`width` cells each) at the end.
fn excel_resaved(text: &[u8], width: usize) -> Vec<u8> {
    let mut out = b"\xef\xbb\xbf".to_vec();
    for line in text.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line.strip_suffix(b"\n").unwrap_or(line));
        out.extend_from_slice(b"\r\n");
    }
    for _ in 0..3 {
        out.extend(std::iter::repeat_n(b',', width - 1));
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// UTF-8 `text` with its second, fourth and sixth `ô` written as Latin-1 stores them (the
/// byte 0xF4): the first stays UTF-8, so the file holds both encodings from its start.
fn latin1_in_places(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    let mut seen = 0;
    while let Some(at) = rest.windows(2).position(|w| w == "ô".as_bytes()) {
        out.extend_from_slice(&rest[..at]);
        if seen % 2 == 1 && seen < 6 {
            out.push(0xF4);
        } else {
            out.extend_from_slice("ô".as_bytes());
        }
        seen += 1;
        rest = &rest[at + 2..];
    }
    out.extend_from_slice(rest);
    out
}

/// The start of an .xlsx workbook: zip local file headers and deflated (random-looking) data.
fn fake_xlsx(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 128);
    for (name, share) in [
        ("[Content_Types].xml", 0.02),
        ("xl/worksheets/sheet1.xml", 0.98),
    ] {
        let len = (size as f64 * share) as u32;
        out.extend_from_slice(b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00\x21\x00");
        out.extend_from_slice(&(rng.next_u64() as u32).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(len * 6).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(name.as_bytes());
        out.extend((0..len).map(|_| rng.next_u64() as u8));
    }
    out
}

const MONTH_ABBREVIATIONS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Rows at evenly spread positions (distinct when `n >= count`).
fn spread(n: usize, count: usize) -> impl Iterator<Item = usize> {
    (1..=count).map(move |k| (k * n / (count + 1)).min(n.saturating_sub(1)))
}

// ---------------------------------------------------------------------------------------------
// The upload stream
// ---------------------------------------------------------------------------------------------

/// Fewest rows in a planted return (so shares and spread rows make sense at any scale).
const MIN_PLANTED_ROWS: usize = 40;

#[derive(Clone, Copy)]
enum Job {
    Clean {
        force: usize,
        period: Period,
    },
    Planted {
        defect: &'static PlantedDefect,
        force: usize,
        period: Period,
    },
}

struct Uploads<'a> {
    config: &'a DemoConfig,
    vocab: Vocab,
    periods: Vec<Period>,
    next_period: usize,
    jobs: VecDeque<Job>,
    keep: Box<Keep<'a>>,
}

/// Which force-months [`uploads_where`] generates.
type Keep<'a> = dyn Fn(&str, Period) -> bool + 'a;

impl Iterator for Uploads<'_> {
    type Item = DemoUpload;

    fn next(&mut self) -> Option<DemoUpload> {
        loop {
            if let Some(job) = self.jobs.pop_front() {
                return Some(self.run(job));
            }
            let period = *self.periods.get(self.next_period)?;
            self.next_period += 1;
            self.plan(period);
        }
    }
}

fn file_name(period: Period, force: &str) -> String {
    format!("{period}-{force}-stop-and-search.csv")
}

fn key(force_folder: &str, period_folder: &str, file: &str) -> String {
    format!("incoming/{force_folder}/stop_search/{period_folder}/{file}")
}

impl Uploads<'_> {
    fn plan(&mut self, period: Period) {
        let config = self.config;
        let planted_here = |f: &ForceInfo, placement: Placement| -> Vec<&'static PlantedDefect> {
            PLANTED
                .iter()
                .filter(|d| {
                    config.defects
                        && d.force == f.id
                        && d.plant.placement() == placement
                        && d.period(config) == period
                })
                .collect()
        };
        let missing = |f: &ForceInfo| {
            incident(config, f.id, period).is_some_and(|i| i.tweak == Tweak::Missing)
        };
        let mut jobs = VecDeque::new();
        let mut after = Vec::new();
        for (force, f) in self.vocab.forces.iter().enumerate() {
            if !(self.keep)(f.id, period) {
                continue;
            }
            for defect in planted_here(f, Placement::Before) {
                jobs.push_back(Job::Planted {
                    defect,
                    force,
                    period,
                });
            }
            match planted_here(f, Placement::Replace).first() {
                Some(&defect) => jobs.push_back(Job::Planted {
                    defect,
                    force,
                    period,
                }),
                // A missing return (an incident) is simply not uploaded.
                None if missing(f) => {}
                None => jobs.push_back(Job::Clean { force, period }),
            }
            for defect in planted_here(f, Placement::After) {
                after.push(Job::Planted {
                    defect,
                    force,
                    period,
                });
            }
        }
        jobs.extend(after);
        self.jobs = jobs;
    }

    fn seed(&self) -> u64 {
        self.config.seed
    }

    fn generator(&self, force: usize, period: Period, n: usize) -> MonthGen<'_> {
        let rates = blank_rates(self.seed(), self.vocab.forces[force], period);
        MonthGen::new(
            &self.vocab,
            self.seed(),
            Source::Force(force),
            period,
            n,
            &rates,
        )
    }

    fn rows(&self, force: usize, period: Period, n: usize) -> Vec<Row<'_>> {
        self.generator(force, period, n).rows()
    }

    fn run(&self, job: Job) -> DemoUpload {
        match job {
            Job::Clean { force, period } => {
                let f = self.vocab.forces[force];
                let incident = incident(self.config, f.id, period);
                let mut n = volume(self.seed(), f, period, self.config.scale).max(1);
                let mut bytes = Vec::with_capacity(64 + n * 220);
                match incident.map(|i| (i, i.tweak)) {
                    None | Some((_, Tweak::Missing)) => {
                        push_row(&mut bytes, &HEADER);
                        stream_csv(&mut bytes, &mut self.generator(force, period, n));
                    }
                    Some((i, tweak)) => {
                        if let Tweak::Volume(factor) = tweak {
                            n = ((n as f64) * factor).round() as usize;
                        }
                        let mut rows = self.rows(force, period, n);
                        let mut rng =
                            Rng::new(&[self.seed(), tag(f.id), period_key(period), tag(i.id)]);
                        apply_tweak(tweak, &mut rows, &mut rng);
                        bytes = csv(&HEADER, &rows);
                    }
                }
                DemoUpload {
                    key: key(f.id, &period.to_string(), &file_name(period, f.id)),
                    bytes,
                    defect: None,
                    incident,
                    uploaded_at: self.upload_time(f.id, period, 0),
                }
            }
            Job::Planted {
                defect,
                force,
                period,
            } => {
                let (key, bytes) = self.planted(defect, force, period);
                let days = match defect.plant.placement() {
                    Placement::Before => -1,
                    Placement::Replace => 0,
                    Placement::After => 3,
                };
                DemoUpload {
                    key,
                    bytes,
                    defect: Some(defect),
                    incident: None,
                    uploaded_at: self.upload_time(self.vocab.forces[force].id, period, days),
                }
            }
        }
    }

    /// When a force uploads its month: 9 o'clock plus up to eight hours, 3 to 22 days after
    /// the month ends (well before the 28-day deadline), moved by `days`.
    fn upload_time(&self, force: &str, period: Period, days: i64) -> DateTime<Utc> {
        let mut rng = Rng::new(&[self.seed(), tag(force), period_key(period), tag("upload")]);
        let start = period
            .next()
            .first_day()
            .and_hms_opt(9, 0, 0)
            .map_or(DateTime::<Utc>::MIN_UTC, |t| t.and_utc());
        start
            + chrono::Duration::days(2 + rng.below(20).cast_signed() + days)
            + chrono::Duration::seconds(rng.below(8 * 3600).cast_signed())
    }

    /// Builds a planted upload: usually the force's month with one kind of defect.
    fn planted(
        &self,
        defect: &'static PlantedDefect,
        force: usize,
        period: Period,
    ) -> (String, Vec<u8>) {
        let f = self.vocab.forces[force];
        let seed = self.seed();
        let n = volume(seed, f, period, self.config.scale).max(MIN_PLANTED_ROWS);
        let mut rng = Rng::new(&[seed, tag(f.id), period_key(period), tag(defect.id)]);
        let month = period.to_string();
        let standard = key(f.id, &month, &file_name(period, f.id));
        let mut header: Vec<&str> = HEADER.to_vec();
        let bytes = match defect.plant {
            Plant::Latin1 => latin1_in_places(&self.operation_month(force, period, n)),
            Plant::Windows1252 => windows_1252(&self.operation_month(force, period, n)),
            Plant::ExcelResaved => {
                let mut rows = self.rows(force, period, n);
                for row in &mut rows {
                    row[C_DATE] = Cow::Owned(excel_date(&row[C_DATE]));
                }
                excel_resaved(&csv(&header, &rows), header.len())
            }
            Plant::Resubmission => {
                let name = format!("{month}-{}-stop-and-search_v2.csv", f.id);
                return (
                    key(f.id, &month, &name),
                    self.operation_month(force, period, n),
                );
            }
            Plant::XlsxRenamed => fake_xlsx(&mut rng, n * 32 + 4096),
            Plant::Empty => Vec::new(),
            Plant::ZeroReport => csv::<&str>(&HEADER, &[]),
            Plant::UnknownForceFolder | Plant::BadMonthFolder => {
                let clean = self.run(Job::Clean { force, period });
                let name = file_name(period, f.id);
                let location = if defect.plant == Plant::UnknownForceFolder {
                    key(&f.id.replace("-and-", "-"), &month, &name)
                } else {
                    key(
                        f.id,
                        &format!("{}-{}", period.year(), period.month()),
                        &name,
                    )
                };
                return (location, clean.bytes);
            }
            Plant::MissingColumn => {
                header.remove(C_REMOVAL);
                let mut rows = self.rows(force, period, n);
                for row in &mut rows {
                    row.remove(C_REMOVAL);
                }
                csv(&header, &rows)
            }
            Plant::UnknownColumn => {
                header.push("Search reference");
                let mut rows = self.rows(force, period, n);
                let prefix = f.id[..2].to_ascii_uppercase();
                for (i, row) in rows.iter_mut().enumerate() {
                    let reference = format!(
                        "{prefix}/{:02}{:02}/{:05}",
                        period.year() % 100,
                        period.month(),
                        i + 1
                    );
                    row.push(Cow::Owned(reference));
                }
                csv(&header, &rows)
            }
            Plant::DuplicateColumn => {
                header.push("Gender");
                let mut rows = self.rows(force, period, n);
                for row in &mut rows {
                    let gender = row[C_GENDER].clone();
                    row.push(gender);
                }
                csv(&header, &rows)
            }
            Plant::TruncatedRow => truncate_last_row(csv(&header, &self.rows(force, period, n))),
            Plant::UnquotedComma => {
                let mut rows = self.rows(force, period, n);
                for i in spread(rows.len(), 3) {
                    let row = &mut rows[i];
                    row[C_PART] = bool_cell(true);
                    row[C_OPERATION] = Cow::Borrowed("Operation Sceptre");
                    // An unquoted comma splits the value into two cells.
                    row.insert(
                        C_OPERATION + 1,
                        Cow::Borrowed(" knife crime week of action"),
                    );
                }
                csv(&header, &rows)
            }
            Plant::UnknownCodes => {
                let mut rows = self.rows(force, period, n);
                let spots: Vec<usize> = spread(rows.len(), 5).collect();
                for (k, &i) in spots.iter().enumerate() {
                    match k {
                        0..=2 => rows[i][C_GENDER] = Cow::Borrowed("M"),
                        3 => rows[i][C_GENDER] = Cow::Borrowed("F"),
                        _ => rows[i][C_AGE] = Cow::Borrowed("35-44"),
                    }
                }
                csv(&header, &rows)
            }
            Plant::ImpossibleDates => {
                let mut rows = self.rows(force, period, n);
                for (k, i) in spread(rows.len(), 3).enumerate() {
                    let date = format!(
                        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00",
                        period.year(),
                        period.month(),
                        period.days() + 1,
                        10 + 3 * k,
                        17 + 11 * k,
                        5 + 13 * k
                    );
                    rows[i][C_DATE] = Cow::Owned(date);
                }
                csv(&header, &rows)
            }
            Plant::DatesWrongMonth => {
                let mut rows = self.rows(force, period, n);
                let previous = period.prev();
                let last_day = (previous.days() - 1) * 86_400;
                let count = (rows.len() / 20).clamp(3, 60);
                for (k, row) in rows.iter_mut().take(count).enumerate() {
                    row[C_DATE] =
                        Cow::Owned(format_time(previous, last_day + 72_000 + 137 * k as u32));
                }
                csv(&header, &rows)
            }
            Plant::ForceColumnOtherForce => {
                header.push("Force");
                let other = self
                    .vocab
                    .forces
                    .iter()
                    .position(|o| o.id == "west-mercia")
                    .unwrap_or((force + 1) % self.vocab.forces.len());
                let own = self.vocab.force_labels[force].as_str();
                let foreign = self.vocab.force_labels[other].as_str();
                let mut rows = self.rows(force, period, n);
                let half = rows.len() / 2;
                for (i, row) in rows.iter_mut().enumerate() {
                    let theirs = i == half || rng.chance(0.08);
                    row.push(Cow::Borrowed(if theirs { foreign } else { own }));
                }
                csv(&header, &rows)
            }
            Plant::PeriodColumnOtherMonth => {
                header.push("Month");
                let previous = period.prev().to_string();
                let mut rows = self.rows(force, period, n);
                let from = rows.len() - (rows.len() / 20).max(1);
                for (i, row) in rows.iter_mut().enumerate() {
                    row.push(Cow::Owned(if i >= from {
                        previous.clone()
                    } else {
                        month.clone()
                    }));
                }
                csv(&header, &rows)
            }
            Plant::PeriodColumnWrongShape => {
                header.push("Month");
                let excel = format!(
                    "{}-{:02}",
                    MONTH_ABBREVIATIONS[(period.month() as usize).clamp(1, 12) - 1],
                    period.year() % 100
                );
                let mut rows = self.rows(force, period, n);
                for row in &mut rows {
                    row.push(Cow::Owned(excel.clone()));
                }
                csv(&header, &rows)
            }
            Plant::LatitudeText => {
                let mut rows = self.rows(force, period, n);
                for i in spread(rows.len(), 4) {
                    rows[i][C_LAT] = Cow::Borrowed("unknown");
                    rows[i][C_LON] = Cow::Borrowed("unknown");
                }
                csv(&header, &rows)
            }
            Plant::LocationSwapped => {
                let mut rows = self.rows(force, period, n);
                let located: Vec<usize> = (0..rows.len())
                    .filter(|&i| !rows[i][C_LAT].is_empty())
                    .collect();
                for k in spread(located.len(), 5) {
                    rows[located[k]].swap(C_LAT, C_LON);
                }
                csv(&header, &rows)
            }
            Plant::OperationTooLong => {
                let mut rows = self.rows(force, period, n);
                for i in spread(rows.len(), 3) {
                    rows[i][C_PART] = bool_cell(true);
                    rows[i][C_OPERATION] = Cow::Owned(long_briefing(250));
                }
                csv(&header, &rows)
            }
            Plant::BlankRequired => {
                let mut rows = self.rows(force, period, n);
                for i in spread(rows.len(), 3) {
                    rows[i][C_TYPE] = Cow::Borrowed("");
                }
                // Two rows with a blank date, chosen so they stay distinct from each other.
                let first = rows.len() / 8;
                rows[first][C_DATE] = Cow::Borrowed("");
                let second = (first + 1..rows.len())
                    .find(|&j| {
                        !rows[j][C_TYPE].is_empty()
                            && (0..HEADER.len())
                                .any(|c| c != C_DATE && rows[j][c] != rows[first][c])
                    })
                    .unwrap_or(rows.len() - 1);
                rows[second][C_DATE] = Cow::Borrowed("");
                csv(&header, &rows)
            }
            Plant::LegacySpellings => {
                let mut rows = self.rows(force, period, n);
                for row in &mut rows {
                    if let Some((_, old)) = self
                        .vocab
                        .outcome_legacy
                        .iter()
                        .find(|(label, _)| *label == row[C_OUTCOME])
                    {
                        row[C_OUTCOME] = Cow::Borrowed(old.as_str());
                    }
                }
                csv(&header, &rows)
            }
            Plant::BlankRateWarning | Plant::BlankRateError => {
                let mut rates = blank_rates(seed, f, period);
                if defect.plant == Plant::BlankRateWarning {
                    rates[B_GENDER] = 0.25;
                } else {
                    rates[B_ODE] = 1.0;
                }
                let generator =
                    MonthGen::new(&self.vocab, seed, Source::Force(force), period, n, &rates);
                csv(&header, &generator.rows())
            }
            Plant::DuplicateRows => {
                let rows = self.rows(force, period, n);
                let complete: Vec<usize> = (0..rows.len())
                    .filter(|&i| {
                        rows[i]
                            .iter()
                            .enumerate()
                            .all(|(c, v)| c == C_OPERATION || !v.is_empty())
                    })
                    .collect();
                let count = (rows.len() * 3 / 200).clamp(2, 40).min(complete.len());
                let twice: Vec<usize> =
                    spread(complete.len(), count).map(|k| complete[k]).collect();
                let mut out = Vec::with_capacity(rows.len() + count);
                for (i, row) in rows.iter().enumerate() {
                    out.push(row.clone());
                    if twice.contains(&i) {
                        out.push(row.clone());
                    }
                }
                csv(&header, &out)
            }
            Plant::FileTooLarge => {
                let months = period.trailing(36);
                let name = format!("{}-to-{month}-{}-stop-and-search.csv", months[0], f.id);
                let mut bytes = Vec::with_capacity(13 << 20);
                push_row(&mut bytes, &HEADER);
                for &m in &months {
                    let rows = volume(seed, f, m, 1.0).max(1);
                    stream_csv(&mut bytes, &mut self.generator(force, m, rows));
                }
                return (key(f.id, &month, &name), bytes);
            }
            Plant::TooManyRows => {
                let name = format!("{month}-all-forces-stop-and-search.csv");
                let mut generator = MonthGen::new(
                    &self.vocab,
                    seed,
                    Source::National,
                    period,
                    41_000,
                    &BLANK_BASE,
                );
                generator.sde_as_codes = true;
                let mut bytes = Vec::with_capacity(8 << 20);
                push_row(&mut bytes, &HEADER);
                stream_csv(&mut bytes, &mut generator);
                return (key(f.id, &month, &name), bytes);
            }
            Plant::UnclosedQuote => {
                let rows = self.rows(force, period, n.max(1200));
                let open = rows.len() / 3;
                let mut bytes = Vec::with_capacity(rows.len() * 220);
                push_row(&mut bytes, &HEADER);
                for (i, row) in rows.iter().enumerate() {
                    if i == open {
                        let mut cells: Vec<&str> = row.iter().map(AsRef::as_ref).collect();
                        cells[C_PART] = "True";
                        cells[C_OPERATION] = "\"Operation Sceptre";
                        bytes.extend_from_slice(cells.join(",").as_bytes());
                        bytes.push(b'\n');
                    } else {
                        push_row(&mut bytes, row);
                    }
                }
                bytes
            }
        };
        (standard, bytes)
    }

    /// North Wales' month with about 5% of searches part of a named operation with a Welsh name.
    fn operation_month(&self, force: usize, period: Period, n: usize) -> Vec<u8> {
        let mut rows = self.rows(force, period, n);
        let count = (rows.len() / 20).max(3);
        for i in spread(rows.len(), count) {
            rows[i][C_PART] = bool_cell(true);
            rows[i][C_OPERATION] = Cow::Borrowed("Operation Môn Ddiogel");
        }
        csv(&HEADER, &rows)
    }
}

/// The incident planted in `force`'s month, when incidents are on.
fn incident(config: &DemoConfig, force: &str, period: Period) -> Option<&'static PlantedIncident> {
    if !config.incidents {
        return None;
    }
    INCIDENTS.iter().find(|i| i.affects(config, force, period))
}

/// Changes a month's rows as an incident does.
fn apply_tweak(tweak: Tweak, rows: &mut Vec<Row<'_>>, rng: &mut Rng) {
    match tweak {
        Tweak::Missing | Tweak::Volume(_) => {}
        Tweak::UpToDay(last) => rows.retain(|r| {
            r[C_DATE]
                .get(8..10)
                .and_then(|d| d.parse::<u32>().ok())
                .is_some_and(|d| d <= last)
        }),
        Tweak::Recode {
            column,
            from,
            to,
            keep,
        } => {
            for row in rows.iter_mut() {
                let cell = &row[column];
                if !cell.is_empty() && cell.starts_with(from) && !rng.chance(keep) {
                    row[column] = Cow::Borrowed(to);
                }
            }
        }
        Tweak::Blank { column, share } => {
            let n = rows.len().max(1) as f64;
            let blank = rows.iter().filter(|r| r[column].is_empty()).count() as f64 / n;
            let p = ((share - blank) / (1.0 - blank)).clamp(0.0, 1.0);
            for row in rows.iter_mut() {
                if !row[column].is_empty() && rng.chance(p) {
                    row[column] = Cow::Borrowed("");
                }
            }
        }
        Tweak::Midnight(share) => {
            for row in rows.iter_mut() {
                if rng.chance(share) {
                    let day = row[C_DATE].get(..10).unwrap_or_default().to_owned();
                    row[C_DATE] = Cow::Owned(format!("{day}T00:00:00+00:00"));
                }
            }
        }
    }
}

/// A free-text briefing pasted into `Policing operation`, exactly `chars` characters long.
fn long_briefing(chars: usize) -> String {
    const TEXT: &str = "Operation Nightfall: joint night-time economy patrols in Oxford, Reading and Slough town \
        centres targeting drug supply, possession of weapons and violence against women and girls, \
        authorised by the Superintendent on call for the whole weekend, with dog units and a drugs search team";
    TEXT.chars().cycle().take(chars).collect()
}

/// Cuts the file inside the last row's ninth cell, as an interrupted upload would.
fn truncate_last_row(mut bytes: Vec<u8>) -> Vec<u8> {
    let body_end = bytes.len().saturating_sub(1);
    let start = bytes[..body_end]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let commas: Vec<usize> = bytes[start..body_end]
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b',')
        .map(|(i, _)| start + i)
        .collect();
    if let Some(&eighth) = commas.get(7) {
        let cell_end = commas.get(8).copied().unwrap_or(body_end);
        let cut = (eighth + 1 + 5).min(cell_end);
        bytes.truncate(cut);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap, HashSet};
    use std::path::Path;

    use super::*;
    use force_returns::config::Project;
    use force_returns::finding::NoSink;
    use force_returns::pipeline::{check_settings, check_upload, parse_upload_key};
    use force_returns::validate::UploadScope;

    fn code_lists() -> CodeLists {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/reference");
        let mut code_lists = CodeLists::default();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
                let text = std::fs::read_to_string(&path).unwrap();
                code_lists.insert(CodeList::parse(&stem, &text).unwrap());
            }
        }
        code_lists
    }

    fn small(seed: u64, months: usize) -> DemoConfig {
        DemoConfig {
            seed,
            months,
            scale: 0.02,
            ..DemoConfig::default()
        }
    }

    fn fingerprint(code_lists: &CodeLists, config: &DemoConfig) -> Vec<(String, u64)> {
        uploads(code_lists, config)
            .map(|u| {
                let hash = u.bytes.iter().fold(tag(&u.key), |h, &b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
                });
                (u.key, hash)
            })
            .collect()
    }

    /// Splits a CSV file into records of cells (quoted cells are not expected in clean files).
    fn records(bytes: &[u8]) -> Vec<Vec<String>> {
        let text = std::str::from_utf8(bytes).unwrap();
        text.lines()
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect()
    }

    #[test]
    fn output_is_deterministic_and_depends_on_the_seed() {
        let code_lists = code_lists();
        let a = fingerprint(&code_lists, &small(7, 2));
        assert_eq!(a, fingerprint(&code_lists, &small(7, 2)));
        let b = fingerprint(&code_lists, &small(8, 2));
        assert_eq!(a.len(), b.len());
        let same = a.iter().zip(&b).filter(|(x, y)| x.1 == y.1).count();
        // Only the fixed planted files (the empty file) may coincide.
        assert!(same <= 2, "{same} uploads identical across seeds");
    }

    #[test]
    fn every_territorial_force_is_generated_and_the_table_resolves_against_the_code_lists() {
        let code_lists = code_lists();
        let vocab = Vocab::new(&code_lists, 1);
        assert_eq!(vocab.forces.len(), 43);
        assert!(vocab.forces.iter().all(|f| f.id != "btp"));
        let forces = code_lists.forces().unwrap();
        let listed: BTreeSet<&str> = forces
            .codes
            .iter()
            .map(|c| c.code.as_str())
            .filter(|c| *c != "btp")
            .collect();
        let ours: BTreeSet<&str> = FORCES.iter().map(|f| f.id).collect();
        assert_eq!(listed, ours);
        for d in PLANTED {
            assert!(
                ours.contains(d.force),
                "{}: unknown force {}",
                d.id,
                d.force
            );
        }
        assert_eq!(vocab.search_type.items.len(), SEARCH_TYPES.len());
        assert_eq!(vocab.gender.items.len(), GENDERS.len());
        assert_eq!(vocab.age.items.len(), AGES.len());
        assert_eq!(vocab.legislation.items.len(), LEGISLATION.len());
        for (picker, (_, _, table)) in vocab.objects.iter().zip(LEGISLATION) {
            assert_eq!(picker.items.len(), table.len());
        }
        for (_, picker) in &vocab.sde {
            assert_eq!(picker.items.len(), SDE_WITHIN.len());
        }
        for ((_, picker), (_, table)) in vocab.ode.iter().zip(ODE_GIVEN) {
            assert_eq!(picker.items.len(), table.len());
        }
        assert_eq!(vocab.outcome_drugs.items.len(), OUTCOMES_DRUGS.len());
        assert_eq!(vocab.outcome_other.items.len(), OUTCOMES_OTHER.len());
        assert!(forces.lookup("devon-cornwall").is_none());
    }

    #[test]
    fn volumes_follow_force_size_and_national_total() {
        let config = DemoConfig::default();
        let months = config.end.trailing(12);
        let year = |force: &str| -> usize {
            months
                .iter()
                .map(|&p| clean_rows(&config, force, p).unwrap())
                .sum()
        };
        let met = year("metropolitan");
        let warwickshire = year("warwickshire");
        assert!(
            met > 20 * warwickshire,
            "met {met}, warwickshire {warwickshire}"
        );
        assert!(year("west-midlands") > year("dorset"));
        for &p in &months {
            let national: usize = FORCES
                .iter()
                .map(|f| clean_rows(&config, f.id, p).unwrap())
                .sum();
            assert!((35_000..=55_000).contains(&national), "{p}: {national}");
        }
        let totals: Vec<usize> = months
            .iter()
            .map(|&p| clean_rows(&config, "metropolitan", p).unwrap())
            .collect();
        let (lo, hi) = (totals.iter().min().unwrap(), totals.iter().max().unwrap());
        assert!(
            *hi < lo * 13 / 10,
            "month-to-month variation too large: {totals:?}"
        );
    }

    #[test]
    fn clean_files_have_the_exact_header_and_fifteen_fields_per_distinct_row() {
        let code_lists = code_lists();
        let config = DemoConfig {
            scale: 0.05,
            months: 2,
            ..DemoConfig::default()
        };
        let mut clean = 0;
        for upload in uploads(&code_lists, &config).filter(|u| u.defect.is_none()) {
            clean += 1;
            let records = records(&upload.bytes);
            assert_eq!(records[0], HEADER, "{}", upload.key);
            let mut seen = HashSet::new();
            for (i, record) in records.iter().enumerate().skip(1) {
                assert_eq!(record.len(), 15, "{} row {}", upload.key, i + 1);
                assert!(record[C_OPERATION].is_empty());
                assert!(
                    seen.insert(record.clone()),
                    "{} row {} repeats",
                    upload.key,
                    i + 1
                );
            }
            let parts: Vec<&str> = upload.key.split('/').collect();
            let period: Period = parts[3].parse().unwrap();
            assert_eq!(
                records.len() - 1,
                clean_rows(&config, parts[1], period).unwrap(),
                "{}",
                upload.key
            );
            assert_eq!(parts[4], file_name(period, parts[1]));
        }
        assert_eq!(
            clean,
            2 * 43
                - PLANTED
                    .iter()
                    .filter(|d| d.plant.placement() == Placement::Replace)
                    .count()
        );
    }

    #[test]
    fn every_code_is_planted_or_documented_as_not_applicable() {
        let mut planted: BTreeSet<Code> = PLANTED
            .iter()
            .flat_map(|d| d.expected.iter().copied())
            .collect();
        for i in INCIDENTS {
            if let Detection::Codes { codes, .. } = i.expected {
                planted.extend(codes.iter().copied());
            }
        }
        for code in Code::ALL {
            assert!(
                planted.contains(code) != NOT_PLANTED.contains(code),
                "{code}: planted (as a defect or an incident) and not applicable must be exclusive and cover every code"
            );
        }
        let doc = include_str!("../../docs/demo.md");
        for d in PLANTED {
            assert!(
                doc.contains(&format!("`{}`", d.id)),
                "{} is not in docs/demo.md",
                d.id
            );
        }
        for code in NOT_PLANTED {
            assert!(
                doc.contains(&format!("`{code}`")),
                "{code} is not in docs/demo.md"
            );
        }
        for i in INCIDENTS {
            assert!(
                doc.contains(&format!("`{}`", i.id)),
                "{} is not in docs/demo.md",
                i.id
            );
        }
    }

    fn history() -> DemoConfig {
        DemoConfig {
            months: 36,
            scale: 0.02,
            incidents: true,
            ..DemoConfig::default()
        }
    }

    #[test]
    fn incidents_stay_inside_the_window_and_clear_of_the_file_defects() {
        let code_lists = code_lists();
        let ours: BTreeSet<&str> = FORCES.iter().map(|f| f.id).collect();
        let ids: HashSet<&str> = INCIDENTS.iter().map(|i| i.id).collect();
        assert_eq!(ids.len(), INCIDENTS.len());
        for months in [12, 24, 36] {
            let config = DemoConfig {
                months,
                ..history()
            };
            for i in INCIDENTS {
                assert!(ours.contains(i.force), "{}: unknown force", i.id);
                for p in i.periods(&config) {
                    for d in PLANTED.iter().filter(|d| d.force == i.force) {
                        assert_ne!(d.period(&config), p, "{} and {} share a month", i.id, d.id);
                    }
                }
                if months == 36 {
                    assert_eq!(i.periods(&config).len(), i.months, "{}", i.id);
                    if let Detection::Codes { months_back, .. } = i.expected {
                        assert!(months_back < 36 && months_back + 1 >= 1, "{}", i.id);
                    }
                }
            }
        }
        // Missing months are not uploaded; every other month of every force is.
        let config = history();
        let keys: HashSet<String> = uploads(&code_lists, &config).map(|u| u.key).collect();
        for i in INCIDENTS.iter().filter(|i| i.tweak == Tweak::Missing) {
            for p in i.periods(&config) {
                assert!(!keys.contains(&key(i.force, &p.to_string(), &file_name(p, i.force))));
            }
        }
        let missing: usize = INCIDENTS
            .iter()
            .filter(|i| i.tweak == Tweak::Missing)
            .map(|i| i.months)
            .sum();
        let extra = PLANTED
            .iter()
            .filter(|d| d.plant.placement() != Placement::Replace)
            .count();
        assert_eq!(keys.len(), 43 * 36 - missing + extra);
    }

    #[test]
    fn uploads_where_gives_the_selected_uploads_of_the_whole_stream() {
        let code_lists = code_lists();
        let config = DemoConfig {
            incidents: true,
            ..small(5, 12)
        };
        let month = config.end.prev();
        let keep = move |force: &str, period: Period| {
            matches!(force, "north-wales" | "devon-and-cornwall")
                || (force == "kent" && period == month)
        };
        // The force a whole-stream upload belongs to: a misfiled attempt's folder names
        // another, so take the planted defect's.
        let force_of = |u: &DemoUpload| -> String {
            u.defect
                .map_or_else(|| u.key.split('/').nth(1).unwrap(), |d| d.force)
                .to_owned()
        };
        let month_of = |u: &DemoUpload| -> Period {
            u.defect.map_or_else(
                || u.key.split('/').nth(3).unwrap().parse().unwrap(),
                |d| d.period(&config),
            )
        };
        let summary = |u: DemoUpload| {
            (
                u.key,
                u.bytes,
                u.uploaded_at,
                u.defect.map(|d| d.id),
                u.incident.map(|i| i.id),
            )
        };
        let expected: Vec<_> = uploads(&code_lists, &config)
            .filter(|u| keep(&force_of(u), month_of(u)))
            .map(summary)
            .collect();
        let selected: Vec<_> = uploads_where(&code_lists, &config, keep)
            .map(summary)
            .collect();
        // Two whole forces (with a misfiled attempt and a resubmission) and one month.
        assert_eq!(expected.len(), 12 + 1 + 12 + 1 + 1);
        assert!(
            selected == expected,
            "the selection differs from the stream"
        );
    }

    #[test]
    fn incidents_change_the_returns_as_documented() {
        let code_lists = code_lists();
        let config = DemoConfig {
            scale: 1.0,
            defects: false,
            ..history()
        };
        let wanted: HashSet<&str> = ["greater-manchester", "durham", "kent", "west-mercia"].into();
        let at = |back: usize| (0..back).fold(config.end, |p, _| p.prev());
        let mut seen = 0;
        for u in uploads(&code_lists, &config) {
            let parts: Vec<&str> = u.key.split('/').collect();
            let (force, period): (&str, Period) = (parts[1], parts[3].parse().unwrap());
            if !wanted.contains(force) {
                continue;
            }
            let rows = records(&u.bytes);
            let body = &rows[1..];
            let expected = clean_rows(&config, force, period).unwrap();
            match (force, u.incident.map(|i| i.id)) {
                ("greater-manchester", Some("four_fold_step")) => {
                    assert_eq!(body.len(), (expected as f64 * 4.0).round() as usize);
                    seen += 1;
                }
                ("durham", Some("half_month_extract")) => {
                    assert!(
                        body.iter()
                            .all(|r| r[C_DATE][8..10].parse::<u32>().unwrap() <= 15)
                    );
                    assert!(
                        body.len() < expected * 6 / 10,
                        "{} of {expected}",
                        body.len()
                    );
                    seen += 1;
                }
                ("kent", Some(_)) => {
                    assert!(body.iter().all(|r| !r[C_SDE].starts_with("Mixed")));
                    seen += 1;
                }
                ("west-mercia", Some("times_at_midnight")) => {
                    let midnight = body
                        .iter()
                        .filter(|r| r[C_DATE].contains("T00:00:00"))
                        .count();
                    assert!(midnight * 2 > body.len(), "{midnight} of {}", body.len());
                    seen += 1;
                }
                (_, None) => {
                    assert_eq!(body.len(), expected, "{}", u.key);
                    if force == "kent" && period == at(17) {
                        assert!(body.iter().any(|r| r[C_SDE].starts_with("Mixed")));
                    }
                }
                (_, Some(other)) => panic!("{}: unexpected incident {other}", u.key),
            }
        }
        // 15 months of the step, 1 half month, 6 months of Kent and 9 of midnight times.
        assert_eq!(seen, 15 + 1 + 6 + 9);
    }

    #[test]
    fn uploads_arrive_after_their_month_and_before_the_deadline() {
        let code_lists = code_lists();
        for u in uploads(&code_lists, &history()) {
            // Misfiled uploads have no readable month folder.
            let Some(Ok(period)) = u.key.split('/').nth(3).map(str::parse::<Period>) else {
                continue;
            };
            let start = period
                .next()
                .first_day()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc();
            let deadline = start + chrono::Duration::days(28);
            assert!(u.uploaded_at < deadline, "{}: {}", u.key, u.uploaded_at);
            if u.defect.is_none() {
                assert!(u.uploaded_at > start, "{}: {}", u.key, u.uploaded_at);
            }
        }
    }

    #[test]
    fn planted_keys_are_distinct_and_ids_unique() {
        let code_lists = code_lists();
        let config = small(3, 12);
        let keys: Vec<String> = uploads(&code_lists, &config).map(|u| u.key).collect();
        let distinct: HashSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
        let ids: HashSet<&str> = PLANTED.iter().map(|d| d.id).collect();
        assert_eq!(ids.len(), PLANTED.len());
        assert_eq!(
            keys.len(),
            43 * 12
                + PLANTED
                    .iter()
                    .filter(|d| d.plant.placement() != Placement::Replace)
                    .count()
        );
    }

    /// Runs every upload of a year at low volume through the real pipeline checks and compares
    /// codes and decision with what `PLANTED` documents (clean returns: accepted, no findings).
    #[test]
    fn planted_uploads_give_exactly_their_documented_findings() {
        let project = Project::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
        let pipeline = project.pipeline("stop_search").unwrap();
        let config = small(DemoConfig::default().seed, 12);
        let limits = demo_limits();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for upload in uploads(&project.code_lists, &config) {
            let (codes, decision) = match parse_upload_key(&upload.key, &project) {
                Err(_) => (BTreeSet::from([Code::UploadLocationInvalid]), "rejected"),
                Ok(location) => {
                    let scope = UploadScope {
                        force: Some(location.force_id),
                        period: Some(location.period),
                        now: Some(upload.uploaded_at),
                    };
                    let outcome = check_upload(
                        upload.bytes.as_slice(),
                        Some(upload.bytes.len() as u64),
                        &check_settings(pipeline),
                        limits,
                        scope,
                        &mut NoSink,
                        &mut |_, _| Ok(()),
                    )
                    .unwrap();
                    (
                        outcome.findings.iter().map(|s| s.code).collect(),
                        outcome.verdict.decision.as_str(),
                    )
                }
            };
            match upload.defect {
                None => assert!(
                    codes.is_empty() && decision == "accepted",
                    "{}: {codes:?} {decision}",
                    upload.key
                ),
                Some(d) => {
                    *seen.entry(d.id).or_default() += 1;
                    let expected: BTreeSet<Code> = d.expected.iter().copied().collect();
                    assert_eq!(codes, expected, "{} ({})", d.id, upload.key);
                    assert_eq!(decision, d.decision, "{} ({})", d.id, upload.key);
                }
            }
        }
        for d in PLANTED {
            assert_eq!(
                seen.get(d.id),
                Some(&1),
                "{} was not uploaded exactly once",
                d.id
            );
        }
    }

    #[test]
    fn over_limit_files_stay_on_the_right_side_of_the_other_limits() {
        let code_lists = code_lists();
        let config = small(11, 12);
        let limits = demo_limits();
        let mut checked = 0;
        for upload in uploads(&code_lists, &config).filter(|u| u.defect.is_some()) {
            let d = upload.defect.unwrap();
            let size = upload.bytes.len() as u64;
            let rows = upload.bytes.split(|&b| b == b'\n').count() as u64 - 1;
            match d.plant {
                Plant::FileTooLarge => {
                    assert!(size > limits.max_file_bytes + (1 << 20), "{size}");
                }
                Plant::TooManyRows => {
                    assert!(rows - 1 > limits.max_rows, "{rows}");
                    assert!(size < limits.max_file_bytes - (256 << 10), "{size}");
                }
                Plant::UnclosedQuote => {
                    let text = String::from_utf8(upload.bytes).unwrap();
                    let quote = text.find('"').unwrap();
                    assert!(text.len() - quote > 100 << 10);
                }
                _ => {
                    assert!(size < 2 << 20, "{}: {size} bytes", d.id);
                    continue;
                }
            }
            checked += 1;
        }
        assert_eq!(checked, 3);
    }

    #[test]
    fn times_are_distinct_and_inside_the_month() {
        let mut rng = Rng::new(&[1]);
        let feb = Period::new(2025, 2).unwrap();
        let times = month_times(&mut rng, feb, 20_000);
        assert!(times.windows(2).all(|w| w[0] < w[1]));
        assert!(*times.last().unwrap() < 28 * 86_400);
        let crowded = month_times(&mut rng, feb, 28 * 86_400);
        assert_eq!(crowded.len(), 28 * 86_400);
        assert!(crowded.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(format_time(feb, 86_400 + 3661), "2025-02-02T01:01:01+00:00");
    }
}
