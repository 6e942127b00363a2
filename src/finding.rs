//! Findings: one thing wrong or notable about an upload, with a stable code.
//!
//! Every stage that looks at data (decode, validate, analyze) reports what it sees as
//! [`Finding`]s rather than errors, so a bad file becomes a readable report and never a
//! crash. Codes are stable identifiers documented for forces in `docs/findings.md`;
//! [`Code`] is the one list of them, and a unit test keeps that document in step.
//!
//! [`FindingLog`] keeps what a report needs in bounded memory however many findings a file
//! produces: a full count per code, a capped list of examples per code, and a sink that
//! receives the first `findings_per_code` findings of each code, then one closing finding per
//! code saying how many more there were (the CSV report and the quality table stream from it,
//! so their size is bounded too).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

/// How serious a finding is. Ordered so that `Error` is the greatest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; does not affect the decision.
    Info,
    /// Accepted, but the force should look at it.
    Warning,
    /// Stops the row (or, for file-level findings, the whole upload) being accepted.
    Error,
}

impl Severity {
    /// The lowercase name used in reports and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! codes {
    ($( $variant:ident => $name:literal, $severity:ident, $scope:ident; )*) => {
        /// A stable finding code. The string form is what forces see and what pipelines name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code {
            $(
                #[doc = concat!("`", $name, "`: see docs/findings.md.")]
                $variant,
            )*
        }

        impl Code {
            /// Every code, in catalogue order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The code as forces see it, for example `value_not_in_list`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $name),* }
            }

            /// The severity a code has unless a pipeline overrides it.
            pub fn default_severity(self) -> Severity {
                match self { $(Code::$variant => Severity::$severity),* }
            }

            /// Whether the code concerns the whole file (an error then rejects the upload)
            /// rather than one row.
            pub fn is_file_level(self) -> bool {
                match self { $(Code::$variant => Scope::$scope == Scope::File),* }
            }
        }
    };
}

#[derive(PartialEq, Eq)]
enum Scope {
    File,
    Row,
}

codes! {
    FileEmpty => "file_empty", Error, File;
    FileNotText => "file_not_text", Error, File;
    FileTooLarge => "file_too_large", Error, File;
    TooManyRows => "too_many_rows", Error, File;
    NoRows => "no_rows", Warning, File;
    UploadLocationInvalid => "upload_location_invalid", Error, File;
    PeriodWrongCadence => "period_wrong_cadence", Error, File;
    PeriodNotBegun => "period_not_begun", Error, File;
    EncodingConverted => "encoding_converted", Info, File;
    SepLineSkipped => "sep_line_skipped", Info, File;
    DelimiterNotComma => "delimiter_not_comma", Info, File;
    HeaderMissingColumn => "header_missing_column", Error, File;
    HeaderDuplicateColumn => "header_duplicate_column", Error, File;
    HeaderUnknownColumn => "header_unknown_column", Warning, File;
    TooManyColumns => "too_many_columns", Error, File;
    RowsAboveHeader => "rows_above_header", Info, File;
    HeaderEmptyColumns => "header_empty_columns", Info, File;
    EncodingInvalidUtf8 => "encoding_invalid_utf8", Error, Row;
    RowTooFewFields => "row_too_few_fields", Error, Row;
    RowTooManyFields => "row_too_many_fields", Error, Row;
    CellTooLong => "cell_too_long", Error, Row;
    BlankRowsSkipped => "blank_rows_skipped", Info, File;
    ValueRequired => "value_required", Error, Row;
    ValueWrongType => "value_wrong_type", Error, Row;
    ValueNotInList => "value_not_in_list", Error, Row;
    ValuePattern => "value_pattern", Error, Row;
    ValueBadDate => "value_bad_date", Error, Row;
    ValueOutOfRange => "value_out_of_range", Error, Row;
    ValueLength => "value_length", Error, Row;
    ValueNotUnique => "value_not_unique", Error, Row;
    ValueSchema => "value_schema", Error, Row;
    ForceMismatch => "force_mismatch", Error, Row;
    PeriodMismatch => "period_mismatch", Error, Row;
    DateOutOfPeriod => "date_out_of_period", Error, Row;
    DuplicateRow => "duplicate_row", Warning, Row;
    BlankRate => "blank_rate", Warning, File;
    RowsExcluded => "rows_excluded", Warning, File;
    ValueLegacySpelling => "value_legacy_spelling", Info, Row;
    ValueImplausible => "value_implausible", Warning, Row;
    DateNearPeriod => "date_near_period", Warning, Row;
    DateInFuture => "date_in_future", Error, Row;
    FieldsInconsistent => "fields_inconsistent", Warning, Row;
    ValueExcelDate => "value_excel_date", Info, File;
    ValueAmbiguousDate => "value_ambiguous_date", Error, Row;
    ValueThousandsSeparator => "value_thousands_separator", Info, File;
    ValueSmartQuotes => "value_smart_quotes", Info, File;
    ValuePlaceholder => "value_placeholder", Info, File;
    GapDaysWithoutRecords => "gap_days_without_records", Warning, File;
    BlankRateVsHistory => "blank_rate_vs_history", Warning, File;
    AnomalyVolume => "anomaly_volume", Warning, File;
    AnomalyLevelShift => "anomaly_level_shift", Warning, File;
    AnomalyCategoryShare => "anomaly_category_share", Warning, File;
    AnomalyCategoryVanished => "anomaly_category_vanished", Warning, File;
    AnomalyRecordingShare => "anomaly_recording_share", Warning, File;
    AnomalyPeerShare => "anomaly_peer_share", Info, File;
    AnomalyResentRecords => "anomaly_resent_records", Warning, File;
    AnomalyDistributionShift => "anomaly_distribution_shift", Warning, File;
    AnomalyFieldsAgree => "anomaly_fields_agree", Warning, File;
    AnomalyFigure => "anomaly_figure", Warning, File;
    AnomalyFiguresResent => "anomaly_figures_resent", Warning, File;
    WorkbookUnreadable => "workbook_unreadable", Error, File;
    WorkbookSheetRead => "workbook_sheet_read", Info, File;
    MetricUnknown => "metric_unknown", Error, Row;
    MetricDimensionUnknown => "metric_dimension_unknown", Error, Row;
    MetricValueInvalid => "metric_value_invalid", Error, Row;
    MetricDuplicate => "metric_duplicate", Error, Row;
    MetricOutOfRange => "metric_out_of_range", Error, Row;
    MetricPartsTotal => "metric_parts_total", Error, Row;
    MetricNumeratorAboveDenominator => "metric_numerator_above_denominator", Error, Row;
    MetricDisagreesWithParts => "metric_disagrees_with_parts", Warning, Row;
    MetricSuppressed => "metric_suppressed", Info, File;
    MetricMissing => "metric_missing", Warning, File;
    ReconciliationDiffers => "reconciliation_differs", Warning, File;
    ReconciliationAgrees => "reconciliation_agrees", Info, File;
    ReconciliationPending => "reconciliation_pending", Info, File;
}

impl Code {
    /// Looks a code up by the name forces see.
    pub fn parse(name: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.as_str() == name)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Code::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown finding code `{name}`")))
    }
}

/// One thing wrong or notable about an upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// How serious it is, after the pipeline's overrides.
    pub severity: Severity,
    /// The stable code.
    pub code: Code,
    /// What is wrong, in plain words.
    pub message: String,
    /// Spreadsheet row number (header = 1), when the finding is about one row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    /// The column as the force's header names it, when the finding is about one column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// The offending value as sent (shown to the submitting force only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The rule broken, for example `enum` or `format: date-time` or `blank_rate.error_above`.
    pub rule: String,
    /// JSON pointer into the schema, when a schema rule was broken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_path: Option<String>,
    /// The cell of a workbook upload the finding is about (`data!D17`), when it has a row and
    /// a column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<String>,
    /// How to fix it, in plain words.
    pub hint: String,
}

impl Finding {
    /// A finding with the code's default severity and no location.
    pub fn new(code: Code, message: impl Into<String>, rule: impl Into<String>) -> Self {
        Finding {
            severity: code.default_severity(),
            code,
            message: message.into(),
            row: None,
            column: None,
            value: None,
            rule: rule.into(),
            schema_path: None,
            cell: None,
            hint: hint(code).to_owned(),
        }
    }

    /// Sets the row number.
    #[must_use]
    pub fn at_row(mut self, row: u64) -> Self {
        self.row = Some(row);
        self
    }

    /// Sets the column.
    #[must_use]
    pub fn in_column(mut self, column: impl Into<String>) -> Self {
        self.column = Some(column.into());
        self
    }

    /// Sets the offending value.
    #[must_use]
    pub fn with_value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Sets the schema path.
    #[must_use]
    pub fn with_schema_path(mut self, path: impl Into<String>) -> Self {
        self.schema_path = Some(path.into());
        self
    }

    /// Sets the severity.
    #[must_use]
    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }
}

/// The plain-words hint shown with each code (kept in step with `docs/findings.md`).
pub fn hint(code: Code) -> &'static str {
    match code {
        Code::FileEmpty => {
            "export the extract again; to report no events this period, send the header with no rows"
        }
        Code::FileNotText => "save the sheet as \"CSV UTF-8 (comma delimited)\" and upload that",
        Code::FileTooLarge => {
            "split the return by month, or ask the national centre to raise the limit"
        }
        Code::TooManyRows => "check that the extract covers one period of one force",
        Code::NoRows => "accepted as a zero report; if there were events this period, export again",
        Code::UploadLocationInvalid => {
            "upload to incoming/<force>/<dataset>/<YYYY-MM>/<file> with your force's folder"
        }
        Code::PeriodWrongCadence => {
            "upload again under a period folder of the form the message names (month 2024-03, quarter 2024-Q1, financial year FY2023-24 or snapshot date 2024-03-31, as the dataset is returned)"
        }
        Code::PeriodNotBegun => {
            "upload the return under the folder of the period it covers, once that period has begun"
        }
        Code::EncodingConverted => {
            "nothing to do; to be sure every character is read as meant, save as \"CSV UTF-8\""
        }
        Code::SepLineSkipped => "nothing to do; the line is Excel's own",
        Code::DelimiterNotComma => {
            "nothing to do; to be sure, save as \"CSV UTF-8 (comma delimited)\""
        }
        Code::RowsAboveHeader => {
            "nothing to do; to be sure, export the records with the header first"
        }
        Code::HeaderEmptyColumns => "nothing to do; the columns held no values",
        Code::HeaderMissingColumn => {
            "add the column to the header (its cells may be blank where blanks are allowed)"
        }
        Code::HeaderDuplicateColumn => "remove or rename one of the two columns",
        Code::HeaderUnknownColumn => {
            "remove the column, or check its spelling against the schema's header spellings"
        }
        Code::TooManyColumns => {
            "check that the first line is the header; remove empty or unused columns at the right"
        }
        Code::BlankRowsSkipped => "nothing to do; the rows held no values",
        Code::EncodingInvalidUtf8 => "save the file as \"CSV UTF-8\" rather than ANSI or Latin-1",
        Code::RowTooFewFields => {
            "the row may be cut short: check it in the source system and export again"
        }
        Code::RowTooManyFields => "put quotes around values that contain commas",
        Code::CellTooLong => "close any unclosed quote, or shorten the value",
        Code::ValueRequired => "fill in the value",
        Code::ValueWrongType => "correct the value to the column's type",
        Code::ValueNotInList => "use a value from the column's code list (schemas/reference/)",
        Code::ValuePattern => "correct the value to the shape the column requires",
        Code::ValueBadDate => {
            "use ISO 8601, e.g. 2020-01-31T13:45:00+00:00; check for day/month swaps and impossible days"
        }
        Code::ValueOutOfRange => {
            "correct the value; for locations, check that latitude and longitude are not swapped"
        }
        Code::ValueLength => "shorten or complete the value",
        Code::ValueNotUnique => "give each record its own identifier",
        Code::ValueSchema => "correct the value as the message says",
        Code::ForceMismatch => {
            "upload each force's records under its own folder; never file another force's data"
        }
        Code::PeriodMismatch => "upload each period under its own folder",
        Code::DateOutOfPeriod => "move the record to the return of its period, or correct the date",
        Code::DuplicateRow => {
            "check whether the record was exported twice; people searched together can give identical rows"
        }
        Code::BlankRate => "complete the field in the source system",
        Code::RowsExcluded => "correct the listed rows and upload the return again",
        Code::ValueLegacySpelling => "use the current code list in future returns",
        Code::ValueImplausible => {
            "check the value in the source system; for locations, check that latitude and longitude are not swapped"
        }
        Code::DateNearPeriod => {
            "check the date and its time zone; if the record belongs to the neighbouring period, move it to that period's return"
        }
        Code::DateInFuture => "correct the date: a record cannot be dated after the file was sent",
        Code::FieldsInconsistent => {
            "check both fields of the record in the source system and correct the one that is wrong"
        }
        Code::ValueExcelDate => {
            "nothing to do; to be sure of every date, format the column as text yyyy-mm-ddThh:mm:ss before saving"
        }
        Code::ValueAmbiguousDate => {
            "write the date in ISO 8601 (2020-01-02T10:00:00+00:00); check the column's day/month order"
        }
        Code::ValueThousandsSeparator => "nothing to do; numbers may be written without separators",
        Code::ValueSmartQuotes => {
            "nothing to do; to be sure, turn off Excel's AutoCorrect \"smart quotes\""
        }
        Code::ValuePlaceholder => "leave cells with no value empty",
        Code::GapDaysWithoutRecords => {
            "check the date range of the export; if records are missing, upload the whole month again"
        }
        Code::BlankRateVsHistory => {
            "check that the field is still recorded and exported; if it is, complete it in the source system"
        }
        Code::AnomalyVolume => {
            "check that the extract covers the whole month and only your force; if the number is right, say what changed"
        }
        Code::AnomalyLevelShift => {
            "if a records system or recording practice changed, tell the national centre; otherwise correct the months affected"
        }
        Code::AnomalyCategoryShare | Code::AnomalyPeerShare => {
            "check how your records system maps this field's codes; if the figure is right, no action is needed"
        }
        Code::AnomalyCategoryVanished => {
            "check whether the category is still recorded or has been mapped to another code"
        }
        Code::AnomalyRecordingShare => {
            "check that the field is still recorded and exported in full; the finding's message says what to look at"
        }
        Code::AnomalyDistributionShift => {
            "check how your records system maps this field's codes (two codes exchanged, or one folded into another); if the figures are right, say what changed"
        }
        Code::AnomalyFieldsAgree => {
            "check that each field is recorded in its own right and not filled in from the other"
        }
        Code::AnomalyResentRecords => {
            "check that the file is this period's extract of your own force; if it is not, upload the right one"
        }
        Code::AnomalyFigure => {
            "check that the figures cover the whole period and only your force, that each breakdown's codes are mapped as the catalogue defines them, and each rate's denominator; if the figures are right, say what changed"
        }
        Code::AnomalyFiguresResent => {
            "check that the file is this period's return of your own force; if it is not, upload the right one"
        }
        Code::ReconciliationDiffers => {
            "find which is right: a pack compiled from an earlier extract, or records added or corrected since, explain most differences; send again whichever is wrong"
        }
        Code::ReconciliationAgrees => "nothing to do",
        Code::ReconciliationPending => {
            "nothing to do now: the figures are compared when the rest of the records arrive"
        }
        Code::WorkbookUnreadable => {
            "save the workbook without a password as .xlsx (or the sheet as CSV UTF-8) and upload that"
        }
        Code::WorkbookSheetRead => {
            "nothing to do; to send another sheet, name it `data` or put it first"
        }
        Code::MetricUnknown => {
            "use a metric id of the catalogue (`force-returns catalogue`, or the template's rows)"
        }
        Code::MetricDimensionUnknown => {
            "leave blank the breakdowns the metric does not have, and use the codes of each code list"
        }
        Code::MetricValueInvalid => {
            "give each value as a number, or as a suppression marker where the figure is withheld"
        }
        Code::MetricDuplicate => "keep one row per metric and breakdown, and remove the other",
        Code::MetricOutOfRange => "check the figure: its unit does not allow this value",
        Code::MetricPartsTotal => {
            "check that the breakdown and its total come from the same count, or mark a withheld part as suppressed"
        }
        Code::MetricNumeratorAboveDenominator => {
            "check that the numerator counts a part of what the denominator counts"
        }
        Code::MetricDisagreesWithParts => {
            "recompute the rate from its numerator and denominator, or correct whichever of the three is wrong"
        }
        Code::MetricSuppressed => "nothing to do, unless a figure was withheld by mistake",
        Code::MetricMissing => {
            "add the missing rows; a zero is a figure, and a withheld figure is a marker"
        }
    }
}

/// Receives every row-level finding in order (the CSV report and the findings table).
pub trait FindingSink {
    /// Takes one finding.
    fn accept(&mut self, finding: &Finding) -> std::io::Result<()>;
}

/// A sink that drops everything (for callers that only want the summary).
pub struct NoSink;

impl FindingSink for NoSink {
    fn accept(&mut self, _finding: &Finding) -> std::io::Result<()> {
        Ok(())
    }
}

/// How the cells of a workbook's sheet are named: `data!D17` for row 17 of the column whose
/// header is the fourth of the sheet's used columns.
#[derive(Debug, Clone)]
pub struct CellNames {
    sheet: String,
    first_column: u32,
    columns: HashMap<String, u32>,
}

impl CellNames {
    /// The sheet's name and its first used column (0 for A).
    pub fn new(sheet: String, first_column: u32) -> Self {
        CellNames {
            sheet,
            first_column,
            columns: HashMap::new(),
        }
    }

    /// The header cells, in column order, that findings name their column by.
    pub fn set_headers(&mut self, headers: &[String]) {
        self.columns = headers
            .iter()
            .enumerate()
            .map(|(i, h)| (h.clone(), i as u32))
            .collect();
    }

    /// `sheet!<column letters><row>` for a row and a header, when the header is known.
    pub fn name(&self, row: u64, header: &str) -> Option<String> {
        let index = self.columns.get(header)? + self.first_column;
        let quoted = if self
            .sheet
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.sheet.clone()
        } else {
            format!("'{}'", self.sheet.replace('\'', "''"))
        };
        Some(format!("{quoted}!{}{row}", column_letters(index)))
    }
}

/// `A` for 0, `Z` for 25, `AA` for 26, as a spreadsheet names its columns.
pub fn column_letters(index: u32) -> String {
    let mut n = index + 1;
    let mut letters = Vec::new();
    while n > 0 {
        let rem = (n - 1) % 26;
        letters.push(b'A' + rem as u8);
        n = (n - 1) / 26;
    }
    letters.reverse();
    String::from_utf8(letters).unwrap_or_default()
}

/// Counts and capped examples of one code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeSummary {
    /// The code.
    pub code: Code,
    /// Its severity (after overrides).
    pub severity: Severity,
    /// How many times it occurred, in full.
    pub count: u64,
    /// The first few occurrences.
    pub examples: Vec<Finding>,
    /// Occurrences that are not among `examples` (`count` less the examples).
    #[serde(default)]
    pub examples_omitted: u64,
    /// Occurrences listed one by one in the findings CSV and the findings table: all of them,
    /// or the first [`FindingLog::listing_per_code`] when there were more (the outputs then end
    /// the code with one finding saying how many more there were).
    #[serde(default)]
    pub listed: u64,
}

/// Examples of each code kept in the report unless a pipeline sets another number
/// (`decision.examples_per_code`).
pub const DEFAULT_EXAMPLES_PER_CODE: usize = 20;

/// Findings of one code listed one by one in the findings CSV and table unless a pipeline sets
/// another limit (`decision.findings_per_code`).
pub const DEFAULT_LISTED_PER_CODE: u64 = 10_000;

/// The `rule` of the finding that closes a code whose listing was cut short.
pub const LISTING_RULE: &str = "findings_per_code";

/// Bounded-memory record of an upload's findings.
pub struct FindingLog<'s> {
    cells: Option<CellNames>,
    by_code: BTreeMap<Code, CodeSummary>,
    severity_overrides: BTreeMap<Code, Severity>,
    examples_per_code: usize,
    listed_per_code: u64,
    sink: &'s mut dyn FindingSink,
    sink_error: Option<std::io::Error>,
}

impl<'s> FindingLog<'s> {
    /// A log keeping `examples_per_code` examples of each code, passing the first
    /// [`DEFAULT_LISTED_PER_CODE`] findings of each code on to `sink`, and applying the
    /// pipeline's severity overrides.
    pub fn new(
        examples_per_code: usize,
        severity_overrides: BTreeMap<Code, Severity>,
        sink: &'s mut dyn FindingSink,
    ) -> Self {
        FindingLog {
            cells: None,
            by_code: BTreeMap::new(),
            severity_overrides,
            examples_per_code,
            listed_per_code: DEFAULT_LISTED_PER_CODE,
            sink,
            sink_error: None,
        }
    }

    /// Passes only the first `limit` findings of each code on to the sink; [`FindingLog::finish`]
    /// then closes each code that had more with one finding saying how many more there were.
    /// A hostile file (a header of millions of unknown columns) so gives outputs of bounded size.
    #[must_use]
    pub fn listing_per_code(mut self, limit: u64) -> Self {
        self.listed_per_code = limit;
        self
    }

    /// The severity a code has here (default or overridden).
    pub fn severity_of(&self, code: Code) -> Severity {
        self.severity_overrides
            .get(&code)
            .copied()
            .unwrap_or_else(|| code.default_severity())
    }

    /// Records a finding, applying the severity override for its code.
    pub fn push(&mut self, mut finding: Finding) {
        if let Some(severity) = self.severity_overrides.get(&finding.code) {
            finding.severity = *severity;
        }
        self.record(finding);
    }

    /// Records a finding whose severity a declared rule of the pipeline chose: the overrides
    /// by code do not apply to it.
    pub fn push_declared(&mut self, finding: Finding) {
        self.record(finding);
    }

    /// Names the cell of each finding with a row and a column from now on (a workbook upload).
    pub fn name_cells(&mut self, cells: CellNames) {
        self.cells = Some(cells);
    }

    fn record(&mut self, mut finding: Finding) {
        if let (Some(cells), Some(row), Some(column), None) =
            (&self.cells, finding.row, &finding.column, &finding.cell)
        {
            finding.cell = cells.name(row, column);
        }
        let summary = self
            .by_code
            .entry(finding.code)
            .or_insert_with(|| CodeSummary {
                code: finding.code,
                severity: finding.severity,
                count: 0,
                examples: Vec::new(),
                examples_omitted: 0,
                listed: 0,
            });
        summary.count += 1;
        summary.severity = summary.severity.max(finding.severity);
        if summary.count <= self.listed_per_code
            && self.sink_error.is_none()
            && let Err(e) = self.sink.accept(&finding)
        {
            self.sink_error = Some(e);
        }
        if summary.examples.len() < self.examples_per_code {
            summary.examples.push(finding);
        }
    }

    /// Whether any finding of this severity or worse was recorded.
    pub fn has_at_least(&self, severity: Severity) -> bool {
        self.by_code.values().any(|s| s.severity >= severity)
    }

    /// Whether any file-level error was recorded.
    pub fn has_file_error(&self) -> bool {
        self.by_code
            .values()
            .any(|s| s.code.is_file_level() && s.severity == Severity::Error)
    }

    /// Whether this code was recorded.
    pub fn contains(&self, code: Code) -> bool {
        self.by_code.contains_key(&code)
    }

    /// Ends the log: each code whose listing was cut short is closed in the sink by one finding
    /// saying how many more there were (its `value` is that number); then the summaries in code
    /// order, or the error the sink failed with.
    pub fn finish(mut self) -> std::io::Result<Vec<CodeSummary>> {
        let limit = self.listed_per_code;
        for summary in self.by_code.values_mut() {
            summary.listed = summary.count.min(limit);
            summary.examples_omitted = summary.count - summary.examples.len() as u64;
            let more = summary.count - summary.listed;
            if more > 0 && self.sink_error.is_none() {
                let closing = Finding::new(
                    summary.code,
                    format!(
                        "{more} more `{}` findings are not listed here: only the first {limit} of \
                         each code are; the report counts all {}",
                        summary.code, summary.count
                    ),
                    LISTING_RULE,
                )
                .with_value(more.to_string())
                .with_severity(summary.severity);
                if let Err(e) = self.sink.accept(&closing) {
                    self.sink_error = Some(e);
                }
            }
        }
        match self.sink_error {
            Some(e) => Err(e),
            None => Ok(self.by_code.into_values().collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_documented_with_its_default_severity() {
        let doc = include_str!("../docs/findings.md");
        for code in Code::ALL {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", code.as_str())))
                .unwrap_or_else(|| panic!("{code} is not in docs/findings.md"));
            assert!(
                row.contains(&format!("| {} ", code.default_severity())),
                "{code}: docs/findings.md gives another severity: {row}"
            );
        }
        let documented = doc.lines().filter(|l| l.starts_with("| `")).count();
        assert_eq!(
            documented,
            Code::ALL.len(),
            "docs list codes the code lacks"
        );
    }

    struct VecSink<'a>(&'a mut Vec<Finding>);
    impl FindingSink for VecSink<'_> {
        fn accept(&mut self, f: &Finding) -> std::io::Result<()> {
            self.0.push(f.clone());
            Ok(())
        }
    }

    #[test]
    fn log_counts_in_full_but_keeps_capped_examples() {
        let mut sink = Vec::<Finding>::new();
        let mut vs = VecSink(&mut sink);
        let mut log = FindingLog::new(3, BTreeMap::new(), &mut vs);
        for row in 2..1002 {
            log.push(Finding::new(Code::ValueBadDate, "bad", "format").at_row(row));
        }
        let summaries = log.finish().unwrap();
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].count, 1000);
        assert_eq!(summaries[0].examples.len(), 3);
        assert_eq!(summaries[0].examples_omitted, 997);
        assert_eq!(summaries[0].listed, 1000);
        assert_eq!(sink.len(), 1000);
    }

    #[test]
    fn the_sink_lists_a_capped_number_of_each_code_then_says_how_many_more() {
        let mut sink = Vec::<Finding>::new();
        let mut vs = VecSink(&mut sink);
        let overrides = BTreeMap::from([(Code::HeaderUnknownColumn, Severity::Error)]);
        let mut log = FindingLog::new(2, overrides, &mut vs).listing_per_code(5);
        for column in 0..100_000 {
            log.push(
                Finding::new(Code::HeaderUnknownColumn, "unknown", "header")
                    .in_column(format!("c{column}")),
            );
        }
        for row in 2..6 {
            log.push(Finding::new(Code::ValueBadDate, "bad", "format").at_row(row));
        }
        let summaries = log.finish().unwrap();
        let unknown = &summaries[0];
        assert_eq!(unknown.code, Code::HeaderUnknownColumn);
        assert_eq!(
            (unknown.count, unknown.listed, unknown.examples_omitted),
            (100_000, 5, 99_998)
        );
        assert_eq!((summaries[1].count, summaries[1].listed), (4, 4));
        // Five listed, the four dates (under the cap, so no closing line), then the closing line.
        assert_eq!(sink.len(), 5 + 4 + 1, "{sink:#?}");
        let listed: Vec<&str> = sink[..5]
            .iter()
            .filter_map(|f| f.column.as_deref())
            .collect();
        assert_eq!(listed, ["c0", "c1", "c2", "c3", "c4"]);
        let closing = sink.last().unwrap();
        assert_eq!(closing.code, Code::HeaderUnknownColumn);
        assert_eq!(
            closing.severity,
            Severity::Error,
            "the code's severity, overrides applied"
        );
        assert_eq!(closing.rule, LISTING_RULE);
        assert_eq!(closing.value.as_deref(), Some("99995"));
        assert_eq!((closing.row, closing.column.as_deref()), (None, None));
        assert!(
            closing
                .message
                .starts_with("99995 more `header_unknown_column` findings"),
            "{}",
            closing.message
        );
    }

    #[test]
    fn declared_findings_keep_their_own_severity() {
        let mut sink = NoSink;
        let overrides = BTreeMap::from([(Code::DateOutOfPeriod, Severity::Warning)]);
        let mut log = FindingLog::new(1, overrides, &mut sink);
        log.push_declared(
            Finding::new(Code::DateOutOfPeriod, "far", "window").with_severity(Severity::Error),
        );
        assert!(log.has_at_least(Severity::Error));
    }

    #[test]
    fn overrides_change_severity() {
        let mut sink = NoSink;
        let overrides = BTreeMap::from([(Code::DuplicateRow, Severity::Error)]);
        let mut log = FindingLog::new(1, overrides, &mut sink);
        log.push(Finding::new(Code::DuplicateRow, "dup", "unique rows").at_row(3));
        assert!(log.has_at_least(Severity::Error));
        assert!(!log.has_file_error());
    }
}
