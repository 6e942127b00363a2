//! Configuration: pipelines, schemas, code lists and service settings.
//!
//! A *project* is a folder holding `pipelines/` (one TOML file per dataset) and `schemas/`
//! (record schemas per dataset and version, code lists under `schemas/reference/`). Loading
//! parses everything, resolves each pipeline's schema and reports **every** problem at once,
//! with file and line where it can be known, so `force-returns check-config` gives an operator
//! the whole list in one go. Service settings (where the bucket is) come from flags and
//! environment variables, read by `main.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use serde::Deserialize;

use crate::catalogue::MetricCatalogue;
use crate::finding::{Code, Severity};
use crate::model::analysis::{AnomalySettings, PopulationSettings};
use crate::model::observe::ObserveSettings;
use crate::model::{BlankThreshold, Limits, ReadingSettings};
use crate::period::{CADENCE_NAMES, Cadence, Deadline, Period, SnapshotDates};
use crate::rules::{DECLARED_CODES, RuleDecl, RuleSet};
use crate::schema::{CodeList, CodeLists, Population, RecordSchema};
use crate::validate::table::{DEFAULT_MARKERS, DimensionColumn, TableCheck};

/// One problem found while loading configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The file the problem is in.
    pub file: PathBuf,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every problem found, for reporting together.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} configuration problem(s):\n{}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

/// The `[period]` section as written: the cadence and deadline rule, read and checked into
/// [`PeriodSettings`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeriodFile {
    /// `month` (the default), `quarter`, `financial_year` or `snapshot`; `type = "monthly"`
    /// is the old spelling of a month.
    #[serde(default, alias = "type")]
    cadence: Option<toml::Spanned<String>>,
    /// A snapshot cadence's dates of the year, `MM-DD`.
    #[serde(default)]
    snapshot_dates: Option<toml::Spanned<Vec<String>>>,
    #[serde(default)]
    deadline_days: Option<u32>,
    #[serde(default)]
    deadline_date: Option<toml::Spanned<String>>,
    #[serde(default)]
    first: Option<toml::Spanned<String>>,
    #[serde(default = "all_forces")]
    expected_forces: Vec<String>,
}

/// What a dataset's returns cover and when each is due.
#[derive(Debug, Clone)]
pub struct PeriodSettings {
    /// How often a return is sent: the kind of period each covers.
    pub cadence: Cadence,
    /// When a period's return is due (`deadline_days` after the period ends, or a
    /// `deadline_date` of the year; whole days in UTC).
    pub deadline: Deadline,
    /// The first period returns are expected for (default: the earliest period received).
    pub first: Option<Period>,
    /// Whose returns are expected: force ids, `all` or `territorial` (default `all`).
    pub expected_forces: Vec<String>,
}

fn all_forces() -> Vec<String> {
    vec!["all".to_owned()]
}

/// How findings turn into a decision.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionSettings {
    /// Share of rows with errors that may be left out of the snapshot (0 = any error rejects).
    #[serde(default)]
    pub max_error_row_share: f64,
    /// Examples of each code kept in the report (the count is always in full).
    #[serde(default = "default_examples")]
    pub examples_per_code: usize,
    /// Findings of each code listed one by one in the findings CSV and table; past it, one
    /// closing finding says how many more there were (the count is always in full).
    #[serde(default = "default_findings_per_code")]
    pub findings_per_code: u64,
    /// Severity overrides by finding code.
    #[serde(default)]
    pub severity: BTreeMap<String, Severity>,
}

fn default_examples() -> usize {
    crate::finding::DEFAULT_EXAMPLES_PER_CODE
}

fn default_findings_per_code() -> u64 {
    crate::finding::DEFAULT_LISTED_PER_CODE
}

impl Default for DecisionSettings {
    fn default() -> Self {
        DecisionSettings {
            max_error_row_share: 0.0,
            examples_per_code: default_examples(),
            findings_per_code: default_findings_per_code(),
            severity: BTreeMap::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    dataset: String,
    title: String,
    schema: String,
    schedule: toml::Spanned<String>,
    period: PeriodFile,
    #[serde(default)]
    decision: DecisionSettings,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    reading: ReadingSettings,
    #[serde(default)]
    blank_rates: BTreeMap<String, BlankThreshold>,
    #[serde(default)]
    rules: Vec<RuleDecl>,
    #[serde(default)]
    anomalies: AnomalySettings,
    #[serde(default)]
    population: Option<PopulationSettings>,
    #[serde(default)]
    observe: ObserveSettings,
    #[serde(default)]
    catalogue: Option<CatalogueSection>,
}

/// The `[catalogue]` section: the return is an aggregate one, in long form, checked against the
/// metric catalogue; the properties holding each part of a row.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueSection {
    /// The catalogue's version (default: the latest).
    #[serde(default)]
    version: Option<u32>,
    /// The property holding the metric's id.
    metric: String,
    /// The property holding the value.
    value: String,
    /// The property holding the numerator, if the return has one.
    #[serde(default)]
    numerator: Option<String>,
    /// The property holding the denominator, if the return has one.
    #[serde(default)]
    denominator: Option<String>,
    /// The suppression markers (default: those of official statistics).
    #[serde(default)]
    markers: Option<Vec<String>>,
}

/// A loaded and checked pipeline: one dataset's schema, schedule and rules.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The dataset id (`stop_search`).
    pub dataset: String,
    /// Its title.
    pub title: String,
    /// The record schema.
    pub schema: Arc<RecordSchema>,
    /// The cron expression (seconds first; see `docs/pipelines.md`).
    pub schedule: String,
    /// Period settings.
    pub period: PeriodSettings,
    /// Decision rules.
    pub decision: DecisionSettings,
    /// Severity overrides, parsed.
    pub severity_overrides: BTreeMap<Code, Severity>,
    /// Limits.
    pub limits: Limits,
    /// How cell values are read.
    pub reading: ReadingSettings,
    /// Blank-rate thresholds by property name.
    pub blank_rates: BTreeMap<String, BlankThreshold>,
    /// The declared plausibility rules (`[[rules]]`), compiled against the schema.
    pub rules: Arc<RuleSet>,
    /// Gap and anomaly settings.
    pub anomalies: AnomalySettings,
    /// What the records yield (`[observe]`).
    pub observe: ObserveSettings,
    /// The population reference for rates per 1,000, when configured and present.
    pub population: Option<Arc<Population>>,
    /// For an aggregate return (`[catalogue]`), its checks against the metric catalogue.
    pub table: Option<Arc<TableCheck>>,
    /// The forces whose returns are expected (resolved ids, sorted).
    pub expected_forces: Vec<String>,
    /// The file it came from.
    pub file: PathBuf,
}

/// Everything loaded from a project folder.
#[derive(Debug, Clone)]
pub struct Project {
    /// The folder.
    pub root: PathBuf,
    /// Code lists.
    pub code_lists: CodeLists,
    /// The metric catalogues of `schemas/catalogue/`, oldest version first.
    pub catalogues: Vec<Arc<MetricCatalogue>>,
    /// Pipelines by dataset id.
    pub pipelines: BTreeMap<String, Pipeline>,
}

impl Project {
    /// Loads and checks `root/pipelines` and `root/schemas`, returning every problem found.
    pub fn load(root: &Path) -> Result<Project, ConfigErrors> {
        let mut problems = Vec::new();
        let code_lists = load_code_lists(&root.join("schemas").join("reference"), &mut problems);
        if code_lists.forces().is_none() {
            problems.push(ConfigProblem {
                file: root.join("schemas/reference/forces.json"),
                line: None,
                message: "the forces code list is missing".into(),
            });
        }
        let catalogues = load_catalogues(
            &root.join("schemas").join("catalogue"),
            &code_lists,
            &mut problems,
        );
        let mut pipelines = BTreeMap::new();
        let before_pipelines = problems.len();
        let dir = root.join("pipelines");
        match sorted_files(&dir, "toml") {
            Ok(files) if files.is_empty() => problems.push(ConfigProblem {
                file: dir.clone(),
                line: None,
                message: "no pipeline files (*.toml)".into(),
            }),
            Ok(files) => {
                for file in files {
                    if let Some(p) =
                        load_pipeline(root, &file, &code_lists, &catalogues, &mut problems)
                    {
                        if pipelines.contains_key(&p.dataset) {
                            problems.push(ConfigProblem {
                                file: file.clone(),
                                line: None,
                                message: format!("dataset `{}` is defined twice", p.dataset),
                            });
                        }
                        pipelines.insert(p.dataset.clone(), p);
                    }
                }
            }
            Err(e) => problems.push(ConfigProblem {
                file: dir,
                line: None,
                message: format!("cannot read the folder: {e}"),
            }),
        }
        // A pipeline that failed to load is not named missing again.
        let all_loaded = problems.len() == before_pipelines;
        reconciled_sources(root, &catalogues, &pipelines, all_loaded, &mut problems);
        if problems.is_empty() {
            Ok(Project {
                root: root.to_owned(),
                code_lists,
                catalogues,
                pipelines,
            })
        } else {
            Err(ConfigErrors(problems))
        }
    }

    /// The pipeline of a dataset.
    pub fn pipeline(&self, dataset: &str) -> Option<&Pipeline> {
        self.pipelines.get(dataset)
    }

    /// The metric catalogue of this version, or the latest without one.
    pub fn catalogue(&self, version: Option<u32>) -> Option<&Arc<MetricCatalogue>> {
        match version {
            Some(v) => self.catalogues.iter().find(|c| c.version == v),
            None => self.catalogues.last(),
        }
    }
}

/// Checks each catalogue metric's `computed_from` against the pipelines: its dataset has one
/// (unless a pipeline failed to load, which may be it), and each dimension it names is a
/// dimension of that dataset's schema.
fn reconciled_sources(
    root: &Path,
    catalogues: &[Arc<MetricCatalogue>],
    pipelines: &BTreeMap<String, Pipeline>,
    all_loaded: bool,
    problems: &mut Vec<ConfigProblem>,
) {
    for catalogue in catalogues {
        let file = root
            .join("schemas/catalogue")
            .join(format!("v{}.json", catalogue.version));
        for m in &catalogue.metrics {
            let Some(c) = &m.computed_from else {
                continue;
            };
            let mut problem = |message: String| {
                problems.push(ConfigProblem {
                    file: file.clone(),
                    line: None,
                    message: format!("metric `{}`: {message}", m.id),
                });
            };
            let Some(source) = pipelines.get(&c.dataset) else {
                if !all_loaded {
                    continue;
                }
                problem(format!(
                    "computed_from names dataset `{}`, which has no pipeline (known: {:?})",
                    c.dataset,
                    pipelines.keys().collect::<Vec<_>>()
                ));
                continue;
            };
            let dimensions = source.schema.dimensions();
            for (name, from) in &c.dimensions {
                match dimensions.get(from) {
                    None => problem(format!(
                        "computed_from takes {name} from `{from}`, which is not a dimension of schema {} (one of {:?})",
                        source.schema.id,
                        dimensions.keys().collect::<Vec<_>>()
                    )),
                    Some(values) => {
                        let codes = m.dimension(name).map_or(&[][..], |d| &d.codes[..]);
                        let unknown: Vec<&String> =
                            codes.iter().filter(|c| !values.contains(c)).collect();
                        let blank = c.blank.get(name);
                        let unknown: Vec<&&String> =
                            unknown.iter().filter(|c| Some(**c) != blank).collect();
                        if !unknown.is_empty() {
                            problem(format!(
                                "computed_from takes {name} from `{from}`, whose categories do not include {unknown:?}"
                            ));
                        }
                    }
                }
            }
        }
    }
}

/// The file in `schemas/catalogue/` that every catalogue is checked against.
pub const CATALOGUE_SCHEMA_FILE: &str = "catalogue.schema.json";

/// Loads every `v<N>.json` of `dir` (none when the folder does not exist), each checked against
/// `dir/catalogue.schema.json`, sorted by version.
fn load_catalogues(
    dir: &Path,
    code_lists: &CodeLists,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<Arc<MetricCatalogue>> {
    if !dir.exists() {
        return Vec::new();
    }
    let problem = |file: &Path, line: Option<usize>, message: String| ConfigProblem {
        file: file.to_owned(),
        line,
        message,
    };
    let schema_file = dir.join(CATALOGUE_SCHEMA_FILE);
    let meta: serde_json::Value = match std::fs::read_to_string(&schema_file)
        .map_err(|e| format!("cannot read the catalogue's schema: {e}"))
        .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("not valid JSON: {e}")))
    {
        Ok(v) => v,
        Err(message) => {
            problems.push(problem(&schema_file, None, message));
            return Vec::new();
        }
    };
    let files = match sorted_files(dir, "json") {
        Ok(files) => files,
        Err(e) => {
            problems.push(problem(dir, None, format!("cannot read the folder: {e}")));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for file in files.iter().filter(|f| **f != schema_file) {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                problems.push(problem(file, None, format!("cannot read: {e}")));
                continue;
            }
        };
        match MetricCatalogue::parse(stem, &text, &meta, code_lists) {
            Ok(c) => out.push(Arc::new(c)),
            Err(errs) => {
                problems.extend(errs.into_iter().map(|e| problem(file, e.line, e.message)));
            }
        }
    }
    out.sort_by_key(|c| c.version);
    out
}

fn sorted_files(dir: &Path, ext: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext) && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

fn load_code_lists(dir: &Path, problems: &mut Vec<ConfigProblem>) -> CodeLists {
    let mut code_lists = CodeLists::default();
    let files = match sorted_files(dir, "json") {
        Ok(f) => f,
        Err(e) => {
            problems.push(ConfigProblem {
                file: dir.to_owned(),
                line: None,
                message: format!("cannot read the folder: {e}"),
            });
            return code_lists;
        }
    };
    for file in files {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let parsed = std::fs::read_to_string(&file)
            .map_err(|e| {
                vec![crate::schema::SchemaProblem {
                    message: format!("cannot read: {e}"),
                    line: None,
                }]
            })
            .and_then(|text| CodeList::parse(stem, &text));
        match parsed {
            Ok(list) => code_lists.insert(list),
            Err(errs) => problems.extend(errs.into_iter().map(|e| ConfigProblem {
                file: file.clone(),
                line: e.line,
                message: e.message,
            })),
        }
    }
    code_lists
}

/// Loads a record schema file by id (`stop_search/v1` → `schemas/stop_search/v1.json`).
pub fn load_schema(
    root: &Path,
    id: &str,
    code_lists: &CodeLists,
) -> Result<RecordSchema, Vec<ConfigProblem>> {
    let file = root.join("schemas").join(format!("{id}.json"));
    let text = std::fs::read_to_string(&file).map_err(|e| {
        vec![ConfigProblem {
            file: file.clone(),
            line: None,
            message: format!("cannot read schema `{id}`: {e}"),
        }]
    })?;
    RecordSchema::parse(id, &text, code_lists).map_err(|errs| {
        errs.into_iter()
            .map(|e| ConfigProblem {
                file: file.clone(),
                line: e.line,
                message: e.message,
            })
            .collect()
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with(key) && l[key.len()..].trim_start().starts_with('=')
        })
        .map(|i| i + 1)
}

fn load_pipeline(
    root: &Path,
    file: &Path,
    code_lists: &CodeLists,
    catalogues: &[Arc<MetricCatalogue>],
    problems: &mut Vec<ConfigProblem>,
) -> Option<Pipeline> {
    let problem = |line: Option<usize>, message: String| ConfigProblem {
        file: file.to_owned(),
        line,
        message,
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            problems.push(problem(None, format!("cannot read: {e}")));
            return None;
        }
    };
    let parsed: PipelineFile = match toml::from_str(&text) {
        Ok(p) => p,
        Err(e) => {
            let line = e.span().map(|s| line_of(&text, s.start));
            problems.push(problem(line, e.message().to_owned()));
            return None;
        }
    };
    let start = problems.len();
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if parsed.dataset != stem {
        problems.push(problem(
            line_of_key(&text, "dataset"),
            format!(
                "dataset `{}` does not match the file name `{stem}.toml`",
                parsed.dataset
            ),
        ));
    }
    let schedule_line = Some(line_of(&text, parsed.schedule.span().start));
    match cron::Schedule::from_str(parsed.schedule.get_ref()) {
        Err(e) => problems.push(problem(
            schedule_line,
            format!(
                "schedule `{}` is not a valid cron expression (sec min hour day-of-month month day-of-week, see docs/pipelines.md): {e}",
                parsed.schedule.get_ref()
            ),
        )),
        Ok(s) if s.upcoming(chrono::Utc).next().is_none() => problems.push(problem(
            schedule_line,
            format!(
                "schedule `{}` never comes round: no date matches it from now on",
                parsed.schedule.get_ref()
            ),
        )),
        Ok(_) => {}
    }
    let share = parsed.decision.max_error_row_share;
    if !(0.0..=1.0).contains(&share) {
        problems.push(problem(
            line_of_key(&text, "max_error_row_share"),
            format!("max_error_row_share must be between 0 and 1, not {share}"),
        ));
    }
    if parsed.limits.max_columns == 0 {
        problems.push(problem(
            line_of_key(&text, "max_columns"),
            "max_columns must be at least 1".to_owned(),
        ));
    }
    for placeholder in &parsed.reading.placeholders {
        if placeholder.trim().is_empty() || placeholder.trim() != placeholder {
            problems.push(problem(
                line_of_key(&text, "placeholders"),
                format!(
                    "placeholder `{placeholder}` is blank or has blanks before or after it: a placeholder is compared with the whole cell"
                ),
            ));
        }
    }
    let mut severity_overrides = BTreeMap::new();
    for (name, severity) in &parsed.decision.severity {
        match Code::parse(name) {
            Some(code) if DECLARED_CODES.contains(&code) => problems.push(problem(
                line_of_key(&text, name),
                format!(
                    "`{name}` takes its severity from each rule in [[rules]]; set it there, not in [decision.severity]"
                ),
            )),
            Some(code) => {
                severity_overrides.insert(code, *severity);
            }
            None => problems.push(problem(
                line_of_key(&text, name),
                format!("`{name}` is not a finding code (see docs/findings.md)"),
            )),
        }
    }
    let schema = match load_schema(root, &parsed.schema, code_lists) {
        Ok(s) => Some(s),
        Err(mut errs) => {
            problems.push(problem(
                line_of_key(&text, "schema"),
                format!(
                    "schema `{}` could not be loaded (problems follow)",
                    parsed.schema
                ),
            ));
            problems.append(&mut errs);
            None
        }
    };
    if let Some(schema) = &schema {
        if schema.dataset.as_deref() != Some(parsed.dataset.as_str()) {
            problems.push(problem(
                line_of_key(&text, "schema"),
                format!(
                    "schema `{}` is for dataset {:?}, not `{}`",
                    parsed.schema, schema.dataset, parsed.dataset
                ),
            ));
        }
        if let Err(e) = schema.compile_reference() {
            problems.push(problem(line_of_key(&text, "schema"), e));
        }
        for column in schema.clashing_columns() {
            problems.push(problem(
                line_of_key(&text, "schema"),
                format!(
                    "schema `{}` would give the snapshot two `{column}` columns (lineage or \
                     code attributes use that name): rename the property and keep the file's \
                     header in its `x-aliases`",
                    parsed.schema
                ),
            ));
        }
    }
    for (column, threshold) in &parsed.blank_rates {
        if let Some(schema) = &schema
            && schema.property(column).is_none()
        {
            problems.push(problem(
                text.lines()
                    .position(|l| l.contains(&format!("blank_rates.{column}")))
                    .map(|i| i + 1),
                format!("blank_rates names `{column}`, which is not a property of the schema"),
            ));
        }
        for v in [threshold.warn_above, threshold.error_above]
            .into_iter()
            .flatten()
        {
            if !(0.0..=1.0).contains(&v) {
                problems.push(problem(
                    None,
                    format!("blank_rates.{column}: thresholds are shares between 0 and 1, not {v}"),
                ));
            }
        }
    }
    let rules = schema.as_ref().and_then(|schema| {
        RuleSet::compile(&parsed.rules, schema)
            .map_err(|errs| {
                problems.extend(
                    errs.into_iter()
                        .map(|e| problem(e.span.map(|s| line_of(&text, s.start)), e.message)),
                );
            })
            .ok()
    });
    let section_line = |section: &str| {
        text.lines()
            .position(|l| l.trim_start().starts_with(&format!("[{section}")))
            .map(|i| i + 1)
    };
    if let Some(schema) = &schema {
        let dimensions = schema.dimensions();
        for message in parsed.anomalies.check(&dimensions, &parsed.observe) {
            problems.push(problem(section_line("anomalies"), message));
        }
        let properties: Vec<String> = schema.properties.iter().map(|p| p.name.clone()).collect();
        for message in parsed.observe.check(&dimensions, &properties) {
            problems.push(problem(section_line("observe"), message));
        }
    }
    let period = period_settings(&text, parsed.period, &mut |line, message| {
        problems.push(problem(line, message));
    });
    let expected = match expected_forces(&period.expected_forces, code_lists) {
        Ok(f) => f,
        Err(message) => {
            problems.push(problem(line_of_key(&text, "expected_forces"), message));
            Vec::new()
        }
    };
    if let (Some(schema), Some(settings)) = (&schema, &parsed.population) {
        for message in population_problems(schema, settings, &parsed.observe) {
            problems.push(problem(section_line("population"), message));
        }
    }
    let population = parsed.population.as_ref().and_then(|settings| {
        load_population(
            root,
            settings,
            code_lists,
            problems,
            section_line("population"),
        )
    });
    let table = match (&schema, &parsed.catalogue) {
        (Some(schema), Some(section)) => {
            let built = table_check(
                schema,
                section,
                catalogues,
                code_lists,
                period.cadence.name(),
                parsed.decision.max_error_row_share,
            );
            match built {
                Ok(t) => Some(Arc::new(t)),
                Err(messages) => {
                    for message in messages {
                        problems.push(problem(section_line("catalogue"), message));
                    }
                    None
                }
            }
        }
        _ => None,
    };
    if problems.len() > start {
        return None;
    }
    Some(Pipeline {
        dataset: parsed.dataset,
        title: parsed.title,
        schema: Arc::new(schema?),
        schedule: parsed.schedule.into_inner(),
        period,
        decision: parsed.decision,
        severity_overrides,
        limits: parsed.limits,
        reading: parsed.reading,
        blank_rates: parsed.blank_rates,
        rules: Arc::new(rules?),
        anomalies: parsed.anomalies,
        observe: parsed.observe,
        population,
        table,
        expected_forces: expected,
        file: file.to_owned(),
    })
}

/// Compiles the `[catalogue]` section against the schema: each named property exists, and
/// every dimension of the catalogue is a property of the schema with the dimension's code list.
fn table_check(
    schema: &RecordSchema,
    section: &CatalogueSection,
    catalogues: &[Arc<MetricCatalogue>],
    code_lists: &CodeLists,
    cadence: &str,
    max_error_row_share: f64,
) -> Result<TableCheck, Vec<String>> {
    let mut problems = Vec::new();
    let catalogue = match section.version {
        Some(v) => catalogues.iter().find(|c| c.version == v),
        None => catalogues.last(),
    };
    let Some(catalogue) = catalogue else {
        return Err(vec![match section.version {
            Some(v) => format!(
                "there is no usable metric catalogue v{v} in schemas/catalogue/ (a catalogue with problems is not loaded)"
            ),
            None => "there is no usable metric catalogue in schemas/catalogue/ (a catalogue with problems is not loaded)".to_owned(),
        }]);
    };
    let mut property = |role: &str, name: &str| {
        let index = schema.properties.iter().position(|p| p.name == name);
        if index.is_none() {
            problems.push(format!(
                "{role} = \"{name}\" is not a property of schema {}",
                schema.id
            ));
        }
        index
    };
    let metric = property("metric", &section.metric);
    let value = property("value", &section.value);
    let numerator = section
        .numerator
        .as_deref()
        .and_then(|n| property("numerator", n));
    let denominator = section
        .denominator
        .as_deref()
        .and_then(|n| property("denominator", n));
    let mut dimensions = Vec::new();
    for d in catalogue.dimensions() {
        let Some(index) = schema.properties.iter().position(|p| p.name == d.name) else {
            problems.push(format!(
                "the catalogue's dimension `{}` is not a property of schema {}: an aggregate return has a column for each",
                d.name, schema.id
            ));
            continue;
        };
        if let Some(list) = &schema.properties[index].codelist
            && list.id != d.codelist
        {
            problems.push(format!(
                "property `{}` of schema {} uses code list `{}`, but the catalogue's dimension uses `{}`",
                d.name, schema.id, list.id, d.codelist
            ));
        }
        if let Some(list) = code_lists.get(&d.codelist) {
            dimensions.push(DimensionColumn {
                name: d.name.clone(),
                property: index,
                list: Arc::clone(list),
            });
        }
    }
    let markers: Vec<String> = section
        .markers
        .clone()
        .unwrap_or_else(|| DEFAULT_MARKERS.iter().map(|m| (*m).to_owned()).collect());
    // A marker the schema refuses never reaches the catalogue's checks: the row is an error first.
    for index in [value, numerator, denominator].into_iter().flatten() {
        let property = &schema.properties[index];
        let Ok(validator) = crate::schema::reference_options().build(&property.schema) else {
            continue;
        };
        let refused: Vec<&str> = markers
            .iter()
            .filter(|m| !validator.is_valid(&serde_json::Value::String((*m).clone())))
            .map(String::as_str)
            .collect();
        if !refused.is_empty() {
            problems.push(format!(
                "the suppression markers {refused:?} are not values schema {} accepts for `{}`: add them to its anyOf, or leave them out of [catalogue] markers",
                schema.id, property.name
            ));
        }
    }
    if max_error_row_share > 0.0 {
        problems.push(format!(
            "an aggregate return is taken whole or not at all (its rules look across rows): [decision] max_error_row_share must be 0, not {max_error_row_share}"
        ));
    }
    match (metric, value) {
        (Some(metric), Some(value)) if problems.is_empty() => Ok(TableCheck {
            catalogue: Arc::clone(catalogue),
            cadence: cadence.to_owned(),
            metric,
            value,
            numerator,
            denominator,
            dimensions,
            markers,
        }),
        _ => Err(problems),
    }
}

/// Reads the `[period]` section: the cadence (default month) with its snapshot dates, the
/// deadline rule and the first period, reporting each problem with its line.
fn period_settings(
    text: &str,
    file: PeriodFile,
    report: &mut dyn FnMut(Option<usize>, String),
) -> PeriodSettings {
    let line = |span: std::ops::Range<usize>| Some(line_of(text, span.start));
    let dates = match &file.snapshot_dates {
        Some(d) => match SnapshotDates::parse(d.get_ref()) {
            Ok(dates) => Some(dates),
            Err(message) => {
                report(line(d.span()), format!("snapshot_dates: {message}"));
                None
            }
        },
        None => None,
    };
    let cadence = match &file.cadence {
        None => Cadence::Month,
        Some(name) => {
            let snapshot = name.get_ref() == "snapshot";
            let cadence =
                Cadence::from_name(name.get_ref(), dates.unwrap_or(SnapshotDates::WORKFORCE));
            if cadence.is_none() {
                report(
                    line(name.span()),
                    format!(
                        "cadence `{}` is not a cadence (one of {})",
                        name.get_ref(),
                        CADENCE_NAMES.join(", ")
                    ),
                );
            } else if snapshot && file.snapshot_dates.is_none() {
                report(
                    line(name.span()),
                    "a `snapshot` cadence lists its dates of the year: add `snapshot_dates = [\"03-31\", \"09-30\"]`".into(),
                );
            }
            cadence.unwrap_or(Cadence::Month)
        }
    };
    if let (Some(d), false) = (
        &file.snapshot_dates,
        matches!(cadence, Cadence::Snapshot(_)),
    ) {
        report(
            line(d.span()),
            format!(
                "snapshot_dates are for a `snapshot` cadence, not `{}`",
                cadence.name()
            ),
        );
    }
    let deadline = match (file.deadline_days, &file.deadline_date) {
        (Some(days), None) => Deadline::DaysAfter(days),
        (None, Some(date)) => {
            let rule = SnapshotDates::parse(std::slice::from_ref(date.get_ref()))
                .ok()
                .and_then(|_| {
                    let (m, d) = date.get_ref().split_once('-')?;
                    Some(Deadline::DayOfYear(m.parse().ok()?, d.parse().ok()?))
                });
            if let Some(rule) = rule {
                if let Some(message) = rule.misfit(cadence) {
                    report(line(date.span()), message);
                }
                rule
            } else {
                report(
                    line(date.span()),
                    format!(
                        "deadline_date `{}` is not a day every year has, written MM-DD (`07-31`)",
                        date.get_ref()
                    ),
                );
                Deadline::DaysAfter(0)
            }
        }
        (Some(_), Some(date)) => {
            report(
                line(date.span()),
                "give one deadline rule: `deadline_days` or `deadline_date`, not both".into(),
            );
            Deadline::DaysAfter(0)
        }
        (None, None) => {
            report(
                text.lines()
                    .position(|l| l.trim_start().starts_with("[period]"))
                    .map(|i| i + 1),
                "[period] needs a deadline rule: `deadline_days` (days after the period ends) or `deadline_date` (MM-DD)".into(),
            );
            Deadline::DaysAfter(0)
        }
    };
    let first = file
        .first
        .and_then(|first| match cadence.parse(first.get_ref()) {
            Ok(p) => Some(p),
            Err(e) => {
                report(line(first.span()), format!("first: {e}"));
                None
            }
        });
    PeriodSettings {
        cadence,
        deadline,
        first,
        expected_forces: file.expected_forces,
    }
}

/// What is wrong with a population reference for what the pipeline observes: rates need a
/// declared subset, and each group (and the reference group) must be a category of its
/// breakdown.
fn population_problems(
    schema: &RecordSchema,
    settings: &PopulationSettings,
    observe: &ObserveSettings,
) -> Vec<String> {
    let Some(subset) = &observe.subset else {
        return vec![
            "population is given but [observe.subset] is not: rates per 1,000 need the records they count".into(),
        ];
    };
    let groups = schema.dimensions().remove(&subset.by).unwrap_or_default();
    settings
        .groups
        .keys()
        .chain(settings.reference_group.iter())
        .filter(|g| !groups.contains(g))
        .map(|g| {
            format!(
                "population names the group `{g}`, which is not a category of `{}` (one of {groups:?})",
                subset.by
            )
        })
        .collect()
}

/// Reads the population reference. A missing file is a problem only when the pipeline says
/// it is required; otherwise rates are left out.
fn load_population(
    root: &Path,
    settings: &PopulationSettings,
    code_lists: &CodeLists,
    problems: &mut Vec<ConfigProblem>,
    line: Option<usize>,
) -> Option<Arc<Population>> {
    let path = root.join(&settings.file);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !settings.required => return None,
        Err(e) => {
            problems.push(ConfigProblem {
                file: path,
                line,
                message: format!("cannot read the population file: {e}"),
            });
            return None;
        }
    };
    let forces = code_lists.forces()?;
    match Population::parse(&text, settings, forces) {
        Ok(p) => Some(Arc::new(p)),
        Err(errs) => {
            problems.extend(errs.into_iter().map(|(l, message)| ConfigProblem {
                file: path.clone(),
                line: l,
                message,
            }));
            None
        }
    }
}

/// The forces whose returns are expected, from entries that are force ids or the groups `all`
/// (every force in the forces list) and `territorial` (the forces with an ONS police force area
/// code: the 43 of England and Wales, not British Transport Police).
fn expected_forces(entries: &[String], code_lists: &CodeLists) -> Result<Vec<String>, String> {
    let Some(forces) = code_lists.forces() else {
        return Err("the forces code list is missing".into());
    };
    let mut out: Vec<String> = Vec::new();
    for entry in entries {
        let ids: Vec<String> = match entry.as_str() {
            "all" => forces.codes.iter().map(|c| c.code.clone()).collect(),
            "territorial" => forces
                .codes
                .iter()
                .filter(|c| c.attributes.get("ons_code").is_some_and(|v| !v.is_empty()))
                .map(|c| c.code.clone())
                .collect(),
            id if forces.codes.iter().any(|c| c.code == id) => vec![id.to_owned()],
            other => {
                return Err(format!(
                    "expected_forces: `{other}` is not a force id, `all` or `territorial`"
                ));
            }
        };
        for id in ids {
            if !out.contains(&id) {
                out.push(id);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DEFAULT_MAX_COLUMNS;

    const THINGS: &str =
        r#"{"x-dataset":"things","type":"object","properties":{"a":{"type":"string"}}}"#;

    fn project_with(pipeline: &str) -> (tempfile::TempDir, Result<Project, ConfigErrors>) {
        project_with_schema(pipeline, THINGS)
    }

    fn project_with_schema(
        pipeline: &str,
        schema: &str,
    ) -> (tempfile::TempDir, Result<Project, ConfigErrors>) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("pipelines")).unwrap();
        std::fs::create_dir_all(root.join("schemas/reference")).unwrap();
        std::fs::create_dir_all(root.join("schemas/things")).unwrap();
        std::fs::write(
            root.join("schemas/reference/forces.json"),
            r#"{"id":"forces","title":"F","codes":[{"code":"kent","label":"Kent Police"}]}"#,
        )
        .unwrap();
        std::fs::write(root.join("schemas/things/v1.json"), schema).unwrap();
        std::fs::write(root.join("pipelines/things.toml"), pipeline).unwrap();
        let p = Project::load(root);
        (dir, p)
    }

    const GOOD: &str = r#"dataset = "things"
title = "Things"
schema = "things/v1"
schedule = "0 */5 * * * *"
[period]
cadence = "month"
deadline_days = 20
"#;

    #[test]
    fn a_good_project_loads() {
        let (_d, p) = project_with(GOOD);
        let p = p.unwrap();
        assert_eq!(p.pipeline("things").unwrap().schedule, "0 */5 * * * *");
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let bad = GOOD
            .replace("0 */5 * * * *", "*/5 * * *")
            .replace("[period]", "[decision]\nmax_error_row_share = 2.0\n[decision.severity]\nno_such_code = \"error\"\n[period]");
        let (_d, p) = project_with(&bad);
        let errs = p.unwrap_err().0;
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 3, "{text:#?}");
        assert!(
            text[0].contains("things.toml:4: schedule `*/5 * * *`"),
            "{text:#?}"
        );
        assert!(
            text[1].contains("things.toml:6: max_error_row_share"),
            "{text:#?}"
        );
        assert!(
            text[2].contains("things.toml:8: `no_such_code`"),
            "{text:#?}"
        );
    }

    #[test]
    fn the_cadence_defaults_to_month_and_the_old_spelling_still_loads() {
        let (_d, p) = project_with(&GOOD.replace("cadence = \"month\"\n", ""));
        assert_eq!(
            p.unwrap().pipeline("things").unwrap().period.cadence,
            Cadence::Month
        );
        let (_d, p) = project_with(&GOOD.replace("cadence = \"month\"", "type = \"monthly\""));
        assert_eq!(
            p.unwrap().pipeline("things").unwrap().period.cadence,
            Cadence::Month
        );
        let quarterly = GOOD.replace(
            "cadence = \"month\"",
            "cadence = \"quarter\"\nfirst = \"2024-Q1\"",
        );
        let (_d, p) = project_with(&quarterly);
        let p = p.unwrap();
        let period = &p.pipeline("things").unwrap().period;
        assert_eq!(period.cadence, Cadence::Quarter);
        assert_eq!(
            period.first.map(|f| f.to_string()).as_deref(),
            Some("2024-Q1")
        );
        assert_eq!(period.deadline, Deadline::DaysAfter(20));
        let snapshots = GOOD
            .replace(
                "cadence = \"month\"",
                "cadence = \"snapshot\"\nsnapshot_dates = [\"03-31\", \"09-30\"]",
            )
            .replace("deadline_days = 20", "deadline_days = 40");
        let (_d, p) = project_with(&snapshots);
        assert_eq!(
            p.unwrap().pipeline("things").unwrap().period.cadence,
            Cadence::Snapshot(SnapshotDates::WORKFORCE)
        );
    }

    #[test]
    fn cadence_and_deadline_problems_are_reported_with_their_lines() {
        let problems = |toml: &str| -> Vec<String> {
            let (_d, p) = project_with(toml);
            p.unwrap_err().0.iter().map(ToString::to_string).collect()
        };
        let unknown = problems(&GOOD.replace("cadence = \"month\"", "cadence = \"fortnight\""));
        assert_eq!(unknown.len(), 1, "{unknown:#?}");
        assert!(
            unknown[0].contains("things.toml:6: cadence `fortnight` is not a cadence (one of month, quarter, financial_year, snapshot)"),
            "{unknown:#?}"
        );
        let misfit = problems(
            &GOOD
                .replace("cadence = \"month\"", "cadence = \"quarter\"")
                .replace("deadline_days = 20", "deadline_date = \"07-31\""),
        );
        assert_eq!(misfit.len(), 1, "{misfit:#?}");
        assert!(
            misfit[0].contains("things.toml:7: `deadline_date` is one day of the year, but a `quarter` cadence has 4 periods a year"),
            "{misfit:#?}"
        );
        let yearly = GOOD
            .replace("cadence = \"month\"", "cadence = \"financial_year\"")
            .replace("deadline_days = 20", "deadline_date = \"07-31\"");
        let (_d, p) = project_with(&yearly);
        assert_eq!(
            p.unwrap().pipeline("things").unwrap().period.deadline,
            Deadline::DayOfYear(7, 31)
        );
        let first = problems(&GOOD.replace(
            "deadline_days = 20",
            "deadline_days = 20\nfirst = \"2024-Q1\"",
        ));
        assert!(
            first[0].contains("things.toml:8: first: `2024-Q1` is a quarter period, but this dataset is returned by a month written YYYY-MM"),
            "{first:#?}"
        );
        let dates = problems(&GOOD.replace(
            "cadence = \"month\"",
            "cadence = \"snapshot\"\nsnapshot_dates = [\"02-29\"]",
        ));
        assert!(
            dates[0].contains("things.toml:7: snapshot_dates: `02-29`"),
            "{dates:#?}"
        );
        let none = problems(&GOOD.replace("deadline_days = 20\n", ""));
        assert!(
            none[0].contains("things.toml:5: [period] needs a deadline rule"),
            "{none:#?}"
        );
    }

    #[test]
    fn rule_problems_are_reported_with_the_others_each_with_its_line() {
        let schema = r#"{"x-dataset":"things","type":"object","properties":{
            "a":{"type":"string"},"n":{"type":["number","null"]}}}"#;
        let bad = format!(
            "{GOOD}[decision.severity]\nvalue_implausible = \"error\"\n\n[[rules]]\nname = \"r\"\nkind = \"range\"\nfield = \"m\"\nmin = 1.0\nseverity = \"loud\"\n\n[[rules]]\nname = \"s\"\nkind = \"range\"\nfield = \"n\"\nmin = 2.0\nmax = 1.0\nseverity = \"warning\"\n"
        );
        let (_d, p) = project_with_schema(&bad, schema);
        let text: Vec<String> = p.unwrap_err().0.iter().map(ToString::to_string).collect();
        assert_eq!(
            text.iter()
                .map(|t| t.split_once("things.toml").unwrap().1)
                .collect::<Vec<_>>(),
            [
                ":9: `value_implausible` takes its severity from each rule in [[rules]]; set it there, not in [decision.severity]",
                ":14: rule `r`: field `m` is not a property of schema `things/v1`",
                ":16: rule `r`: severity `loud` is not a severity (error, warning or info)",
                ":22: rule `s`: min 2 is above max 1",
            ],
            "{text:#?}"
        );
        let good = format!(
            "{GOOD}[[rules]]\nname = \"s\"\nkind = \"range\"\nfield = \"n\"\nmax = 1.0\nseverity = \"warning\"\n"
        );
        let (_d, p) = project_with_schema(&good, schema);
        assert!(!p.unwrap().pipeline("things").unwrap().rules.is_empty());
    }

    #[test]
    fn a_schedule_that_never_comes_round_is_a_problem() {
        for never in ["0 0 0 31 2 *", "0 0 0 1 1 * 2019"] {
            let (_d, p) = project_with(&GOOD.replace("0 */5 * * * *", never));
            let errs = p.unwrap_err().0;
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert_eq!(errs[0].line, Some(4));
            assert!(errs[0].message.contains("never comes round"), "{errs:?}");
        }
    }

    #[test]
    fn max_columns_has_a_default_and_must_be_at_least_one() {
        let (_d, p) = project_with(GOOD);
        let limits = p.unwrap().pipeline("things").unwrap().limits;
        assert_eq!(limits.max_columns, DEFAULT_MAX_COLUMNS);
        let zero = format!(
            "{GOOD}[limits]\nmax_file_bytes = 1000\nmax_rows = 10\nmax_cell_bytes = 100\nmax_columns = 0\n"
        );
        let (_d, p) = project_with(&zero);
        let errs = p.unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, Some(12));
        assert!(errs[0].message.contains("max_columns must be at least 1"));
    }

    #[test]
    fn placeholders_default_and_must_be_whole_cell_values() {
        let placeholders = |p: Result<Project, ConfigErrors>| {
            p.unwrap()
                .pipeline("things")
                .unwrap()
                .reading
                .placeholders
                .clone()
        };
        let (_d, p) = project_with(GOOD);
        assert_eq!(placeholders(p), ["NULL", "N/A", "-", "#N/A"]);
        let declared = format!("{GOOD}[reading]\nplaceholders = [\":\", \"..\"]\n");
        let (_d, p) = project_with(&declared);
        assert_eq!(placeholders(p), [":", ".."]);
        let bad = format!("{GOOD}[reading]\nplaceholders = [\"\", \" N/A\"]\n");
        let (_d, p) = project_with(&bad);
        let errs = p.unwrap_err().0;
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs.iter().all(|e| e.line == Some(9)), "{errs:?}");
        assert!(
            errs[1]
                .message
                .contains("placeholder ` N/A` is blank or has blanks before or after it")
        );
    }

    #[test]
    fn toml_syntax_errors_have_lines() {
        let (_d, p) = project_with("dataset = \"things\"\ntitle = \n");
        let errs = p.unwrap_err().0;
        assert_eq!(errs[0].line, Some(2), "{errs:?}");
    }

    #[test]
    fn a_property_named_like_a_lineage_column_is_a_problem() {
        let clash = r#"{"x-dataset":"things","type":"object","properties":{
            "period":{"type":"string"},"a":{"type":"string"}}}"#;
        let (_d, p) = project_with_schema(GOOD, clash);
        let errs = p.unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, Some(3));
        assert!(errs[0].message.contains("two `period` columns"), "{errs:?}");
        let renamed = r#"{"x-dataset":"things","type":"object","properties":{
            "reported_period":{"type":"string","x-aliases":["period"]}}}"#;
        let (_d, p) = project_with_schema(GOOD, renamed);
        assert!(p.is_ok(), "{:?}", p.err());
    }
}
