//! The `force-returns` command: parses the command line, sets up logging, loads configuration
//! and calls the library. Exit status: 0 success (for `validate`: the file would be accepted),
//! 1 failure (for `validate`: the file would be rejected), 2 usage, configuration or IO error.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use force_returns::analyze::status::render_text;
use force_returns::api;
use force_returns::catalogue;
use force_returns::clock::{Clock, FixedClock, SystemClock};
use force_returns::config::Project;
use force_returns::finding;
use force_returns::ingest::{tables, workbook};
use force_returns::model::{Decision, Limits};
use force_returns::period::Deadline;
use force_returns::pipeline::{CheckOutcome, RunOptions, Service, check_settings, validate_local};
use force_returns::scheduler::{self, PipelineRunner, Stopped, Worker};
use force_returns::schema::{CodeLists, RecordSchema};
use force_returns::shutdown::ShutdownController;
use force_returns::store::{self, S3Location, S3Options, S3Store};
use force_returns::telemetry::Metrics;
use force_returns::template;
use force_returns::validate::{CheckSettings, UploadScope};
use serde_json::{Value, json};
use tokio::signal::unix::{Signal, SignalKind, signal};

#[derive(Parser)]
#[command(
    name = "force-returns",
    version,
    about = "Monthly data returns of the police forces of England and Wales: validate, snapshot, report"
)]
struct Cli {
    /// Folder holding pipelines/ and schemas/ (default: the current folder if it has them).
    #[arg(long, global = true, env = "FORCE_RETURNS_PROJECT")]
    project: Option<PathBuf>,
    /// Log format: pretty on a terminal, JSON otherwise, unless chosen here.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum CatalogueFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Subcommand)]
enum Command {
    /// Process every new upload in the bucket once, then exit.
    Run {
        /// Process what is there once and exit (the scheduled worker is `worker`).
        #[arg(long)]
        once: bool,
        /// The bucket: `s3://bucket/prefix` or a local directory (the embedded default).
        #[arg(long, env = "FORCE_RETURNS_BUCKET", default_value = "data/bucket")]
        bucket: String,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Print a presigned URL a force can upload one file to with
    /// `curl --fail -H 'if-none-match: *' -T FILE URL`.
    UploadUrl {
        /// Force: data.police.uk id (south-yorkshire), ONS code (E23000011) or name.
        #[arg(long)]
        force: String,
        /// Dataset id, e.g. `stop_search`.
        #[arg(long)]
        dataset: String,
        /// Period the file is for, in its dataset's cadence: 2024-03, 2024-Q1, FY2023-24 or
        /// 2024-03-31.
        #[arg(long)]
        period: String,
        /// The file name the upload will have.
        #[arg(long)]
        file: String,
        /// The bucket, `s3://bucket/prefix`.
        #[arg(long, env = "FORCE_RETURNS_BUCKET")]
        bucket: Option<String>,
        /// Minutes the URL stays valid (at most 7 days; and no longer than the credentials
        /// signing it).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=10_080))]
        expires_minutes: u64,
    },
    /// Check a file before uploading it: the same checks the service runs, with no bucket.
    Validate {
        /// The CSV file.
        file: PathBuf,
        /// Dataset id (with --force and --period), e.g. `stop_search`.
        #[arg(long, requires_all = ["force", "period"], conflicts_with = "schema")]
        dataset: Option<String>,
        /// Force: data.police.uk id (south-yorkshire), ONS code (E23000011) or name.
        #[arg(long)]
        force: Option<String>,
        /// Period the file is for, in its dataset's cadence: 2024-03, 2024-Q1, FY2023-24 or
        /// 2024-03-31.
        #[arg(long)]
        period: Option<String>,
        /// Validate against any JSON Schema for one row instead of a dataset.
        #[arg(long, required_unless_present = "dataset")]
        schema: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
    },
    /// Load every pipeline, schema and code list and report every problem at once.
    CheckConfig,
    /// Print the metric catalogue: every metric forces report in aggregate returns, its unit,
    /// dimensions, parts, alignment and rules (`--format markdown` is docs/catalogue.md).
    Catalogue {
        /// The catalogue's version (default: the latest in schemas/catalogue/).
        #[arg(long)]
        version: Option<u32>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: CatalogueFormat,
    },
    /// Write a workbook a force fills in for one return: the header the schema names,
    /// drop-downs from its code lists and, for an aggregate return, every mandatory row of the
    /// catalogue pre-filled with its metric and breakdown.
    Template {
        /// Dataset id, e.g. `data_pack`.
        dataset: String,
        /// Force: data.police.uk id (south-yorkshire), ONS code (E23000011) or name.
        #[arg(long)]
        force: String,
        /// Period the return is for, in its dataset's cadence: FY2024-25, 2024-03, ...
        #[arg(long)]
        period: String,
        /// Where to write the workbook (.xlsx).
        #[arg(long)]
        out: PathBuf,
    },
    /// List a workbook's sheets and the tables found on each (header rows, body, column
    /// names), as in published statistics with titles, notes and several tables to a sheet.
    Tables {
        /// The workbook (.xlsx, .ods, .xlsb, .xls).
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
    },
    /// Print a dataset's record schema with code lists expanded (the contract for forces).
    Schema {
        /// Dataset id.
        dataset: String,
    },
    /// Run every pipeline on its schedule until SIGTERM or SIGINT, serving health and metrics.
    Worker(WorkerArgs),
    /// Print the status of every expected return: who is late, missing or rejected.
    Status {
        /// The bucket: a local directory.
        #[arg(long, env = "FORCE_RETURNS_BUCKET", default_value = "data/bucket")]
        bucket: String,
        /// The status at the end of this day (YYYY-MM-DD) instead of now.
        #[arg(long)]
        as_of: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
    },
}

/// How a process shares the bucket's state with others, for `run` and `worker` alike.
#[derive(clap::Args)]
struct StateArgs {
    /// Seconds a claim on an upload holds unless renewed. The process working on the upload
    /// renews it every third of that, so the upload of a process that died is taken over by
    /// another about this long after.
    #[arg(long, env = "FORCE_RETURNS_CLAIM_TTL_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(3..))]
    claim_ttl_seconds: u64,
    /// Local folder in which uploads are downloaded and checked (default: force-returns-work
    /// in the temporary folder). What a killed process left there is removed at start.
    #[arg(long, env = "FORCE_RETURNS_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// Days a finished upload stays in incoming/ after it was uploaded; then it is removed (its
    /// exact bytes stay in archive/ with their SHA-256). At least 7, the longest an upload link
    /// lives.
    #[arg(long, env = "FORCE_RETURNS_INCOMING_RETENTION_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u64).range(7..=36_500))]
    incoming_retention_days: u64,
}

impl StateArgs {
    fn options(&self) -> RunOptions {
        let defaults = RunOptions::default();
        RunOptions {
            claim_ttl: Duration::from_secs(self.claim_ttl_seconds),
            work_root: self.work_dir.clone().unwrap_or(defaults.work_root.clone()),
            incoming_retention: Duration::from_hours(self.incoming_retention_days * 24),
            ..defaults
        }
    }
}

#[derive(clap::Args)]
struct WorkerArgs {
    /// The bucket: a local directory (the embedded default).
    #[arg(long, env = "FORCE_RETURNS_BUCKET", default_value = "data/bucket")]
    bucket: String,
    /// Address of the HTTP endpoint (/healthz, /readyz, /metrics); port 0 picks a free port.
    #[arg(long, env = "FORCE_RETURNS_LISTEN", default_value = "127.0.0.1:9187")]
    listen: std::net::SocketAddr,
    /// Most uploads processed at once, across all pipelines.
    #[arg(long, env = "FORCE_RETURNS_MAX_IN_FLIGHT", default_value_t = 2)]
    max_in_flight: usize,
    /// After SIGTERM or SIGINT, how long uploads in flight may take to finish before they are
    /// dropped and their claims released (`30s`, `2m`, `500ms`).
    #[arg(long, env = "FORCE_RETURNS_SHUTDOWN_DEADLINE", default_value = "30s", value_parser = scheduler::parse_duration)]
    shutdown_deadline: Duration,
    #[command(flatten)]
    state: StateArgs,
    /// How long /readyz trusts what it last heard of the bucket: at most one probe per
    /// interval, and not ready for an interval after a request the bucket failed (`30s`).
    #[arg(long, env = "FORCE_RETURNS_READY_INTERVAL", default_value = "30s", value_parser = scheduler::parse_duration)]
    ready_interval: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(
        cli.log_format,
        !matches!(cli.command, Command::Run { .. } | Command::Worker(_)),
    );
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: Option<LogFormat>, quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FORCE_RETURNS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Pretty) => false,
        None => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.compact().init();
    }
}

fn project_root(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| {
        let here = PathBuf::from(".");
        if here.join("pipelines").is_dir() {
            here
        } else {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        }
    })
}

fn load_project(root: &Path) -> Result<Project> {
    Project::load(root).map_err(|e| anyhow::anyhow!("{e}"))
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    let root = project_root(cli.project);
    match cli.command {
        Command::CheckConfig => {
            let project = load_project(&root)?;
            for p in project.pipelines.values() {
                println!(
                    "ok  {}  schema {}  schedule \"{}\"  ({} columns, {} blank-rate thresholds, {} rules)",
                    p.dataset,
                    p.schema.id,
                    p.schedule,
                    p.schema.properties.len(),
                    p.blank_rates.len(),
                    p.rules.len()
                );
                println!(
                    "    expects {} forces each {}, deadline {}; anomalies {} ({} dimensions, {} peer series); {}",
                    p.expected_forces.len(),
                    p.period.cadence.name(),
                    match p.period.deadline {
                        Deadline::DaysAfter(days) => format!("{days} days after the period ends"),
                        Deadline::DayOfYear(month, day) => format!("the next {month:02}-{day:02}"),
                    },
                    if p.anomalies.enabled { "on" } else { "off" },
                    p.anomalies.dimensions.len(),
                    p.anomalies.peers.series.len(),
                    p.population.as_ref().map_or_else(
                        || "no population reference: rates per 1,000 left out".to_owned(),
                        |pop| format!("population: {} ({} areas)", pop.source, pop.areas.len())
                    )
                );
            }
            for c in &project.catalogues {
                println!(
                    "ok  metric catalogue v{}  {} metrics ({} mandatory), {} dimensions",
                    c.version,
                    c.metrics.len(),
                    c.metrics.iter().filter(|m| m.mandatory).count(),
                    c.dimensions().len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Catalogue { version, format } => {
            let project = load_project(&root)?;
            let catalogue = project.catalogue(version).with_context(|| match version {
                Some(v) => format!(
                    "no metric catalogue v{v} in {}",
                    root.join("schemas/catalogue").display()
                ),
                None => format!(
                    "no metric catalogue in {}",
                    root.join("schemas/catalogue").display()
                ),
            })?;
            match format {
                CatalogueFormat::Text => print!("{}", catalogue::render::text(catalogue)),
                CatalogueFormat::Json => {
                    println!("{}", serde_json::to_string_pretty(&catalogue.to_json())?);
                }
                CatalogueFormat::Markdown => print!("{}", catalogue::render::markdown(catalogue)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Template {
            dataset,
            force,
            period,
            out,
        } => template_command(&root, &dataset, &force, &period, &out),
        Command::Tables { file, format } => tables_command(&file, format),
        Command::Schema { dataset } => {
            let project = load_project(&root)?;
            let p = project
                .pipeline(&dataset)
                .with_context(|| format!("no pipeline for dataset `{dataset}`"))?;
            println!("{}", serde_json::to_string_pretty(&p.schema.resolved)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate {
            file,
            dataset,
            force,
            period,
            schema,
            format,
        } => validate_command(&root, &file, dataset, force, period, schema, format),
        Command::Run {
            once,
            bucket,
            state,
        } => {
            if !once {
                bail!(
                    "say `run --once` to process what is in the bucket now; the scheduled worker is `force-returns worker`"
                );
            }
            let project = Arc::new(load_project(&root)?);
            let options = state.options();
            let runtime = tokio::runtime::Runtime::new()?;
            let outcome = runtime.block_on(async {
                let store = store::open(&bucket).await?;
                Service::new(project, store, Arc::new(SystemClock), options)
                    .run_once()
                    .await
                    .map_err(anyhow::Error::from)
            })?;
            let mut by_decision: BTreeMap<&str, usize> = BTreeMap::new();
            for s in &outcome.processed {
                *by_decision.entry(s.decision.as_str()).or_default() += 1;
                println!(
                    "{:<24} {:<60} {}",
                    s.decision.as_str(),
                    s.received.upload.source_key,
                    s.outputs.report_html.as_deref().unwrap_or("-")
                );
            }
            println!(
                "processed {} upload(s) {:?}; {} skipped (held or finished by another worker, or replaced since listed); {} failed",
                outcome.processed.len(),
                by_decision,
                outcome.skipped,
                outcome.failed.len()
            );
            for (key, error) in &outcome.failed {
                eprintln!("failed: {key}: {error}");
            }
            Ok(if outcome.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Worker(args) => worker_command(&root, &args),
        Command::UploadUrl {
            force,
            dataset,
            period,
            file,
            bucket,
            expires_minutes,
        } => upload_url_command(
            &root,
            &force,
            &dataset,
            &period,
            &file,
            bucket,
            expires_minutes,
        ),
        Command::Status {
            bucket,
            as_of,
            format,
        } => status_command(&root, &bucket, as_of.as_deref(), format),
    }
}

fn worker_command(root: &Path, args: &WorkerArgs) -> Result<ExitCode> {
    let project = Arc::new(load_project(root)?);
    let runtime = tokio::runtime::Runtime::new()?;
    let stopped = runtime.block_on(async {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let metrics = Arc::new(Metrics::new(project.pipelines.keys().map(String::as_str)));
        let readiness = Arc::new(api::Readiness::new(Arc::clone(&clock), args.ready_interval));
        let store = store::open_observed(
            &args.bucket,
            vec![
                Arc::clone(&metrics) as Arc<dyn store::S3Observer>,
                Arc::clone(&readiness) as Arc<dyn store::S3Observer>,
            ],
        )
        .await?;
        let service = Arc::new(Service::new(
            Arc::clone(&project),
            Arc::clone(&store),
            Arc::clone(&clock),
            args.state.options(),
        ));
        // Clears what a killed worker left in the work root before anything else starts.
        service.work().await?;
        let runner = PipelineRunner::new(
            service,
            &project,
            Arc::clone(&clock),
            Arc::clone(&metrics),
            args.max_in_flight,
        );
        let worker = Worker::new(&project, clock, Arc::new(runner))?;
        let controller = Arc::new(ShutdownController::new().0);
        // Listen for signals before anything starts, so none is missed.
        let term = signal(SignalKind::terminate()).context("failed to listen for SIGTERM")?;
        let int = signal(SignalKind::interrupt()).context("failed to listen for SIGINT")?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("failed to listen on {}", args.listen))?;
        tracing::info!(
            address = %listener.local_addr()?,
            bucket = %args.bucket,
            pipelines = ?project.pipelines.keys().collect::<Vec<_>>(),
            max_in_flight = args.max_in_flight,
            "worker started; serving /healthz, /readyz and /metrics"
        );
        let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
        let api = tokio::spawn(api::serve(
            listener,
            api::ApiState {
                metrics,
                store,
                readiness,
                shutdown: controller.subscribe(),
            },
            async {
                let _ = api_stopped.await;
            },
        ));
        tokio::spawn(on_signals(term, int, Arc::clone(&controller)));
        let stopped =
            scheduler::run_until_shutdown(&worker, &controller, args.shutdown_deadline).await;
        let _ = stop_api.send(());
        if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), api).await {
            tracing::warn!(error = %e, "the HTTP endpoint failed while stopping");
        }
        Ok::<_, anyhow::Error>(stopped)
    })?;
    // Threads still checking abandoned uploads are not waited for: their claims are released
    // and nothing of theirs is visible (every put is atomic; the done-marker comes last).
    runtime.shutdown_background();
    match stopped {
        Stopped::Finished => tracing::info!("every schedule has run out; worker stopped"),
        Stopped::Drained { took } => tracing::info!(
            seconds = took.as_secs_f64(),
            "worker stopped after finishing the uploads in flight"
        ),
        Stopped::Abandoned { took } => tracing::warn!(
            seconds = took.as_secs_f64(),
            "worker stopped; uploads still in flight were released for the next run"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// The first SIGTERM or SIGINT drains the worker; a second abandons work in flight at once.
async fn on_signals(mut term: Signal, mut int: Signal, controller: Arc<ShutdownController>) {
    for n in 0.. {
        let signal = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        if n == 0 {
            tracing::info!(signal, "shutdown requested");
            controller.drain();
        } else {
            tracing::warn!(signal, "second signal: dropping uploads in flight now");
            controller.abandon();
            return;
        }
    }
}

fn upload_url_command(
    root: &Path,
    force: &str,
    dataset: &str,
    period: &str,
    file: &str,
    bucket: Option<String>,
    expires_minutes: u64,
) -> Result<ExitCode> {
    let project = load_project(root)?;
    let force = project
        .code_lists
        .forces()
        .and_then(|f| f.lookup_loose(force))
        .with_context(|| format!("`{force}` is not a force id, ONS code or name"))?;
    if project.pipeline(dataset).is_none() {
        bail!(
            "no pipeline for dataset `{dataset}`; known: {:?}",
            project.pipelines.keys().collect::<Vec<_>>()
        );
    }
    let period = project
        .pipeline(dataset)
        .map(|p| p.period.cadence.parse(period))
        .transpose()?
        .with_context(|| format!("no pipeline for dataset `{dataset}`"))?;
    if file.is_empty() || file.starts_with('.') || file.contains(['/', '\\', '\0']) {
        bail!("`{file}` is not a plain file name (no folders, no leading dot)");
    }
    let bucket = bucket.context(
        "no bucket: say --bucket s3://bucket/prefix or set FORCE_RETURNS_BUCKET (presigned URLs need S3)",
    )?;
    if !bucket.starts_with("s3://") {
        bail!("`{bucket}` is not an S3 bucket (s3://bucket/prefix): presigned URLs need S3");
    }
    let key = force_returns::layout::incoming_key(&force.code, dataset, period, file);
    let runtime = tokio::runtime::Runtime::new()?;
    let presigned = runtime.block_on(async {
        let store = S3Store::connect(S3Location::parse(&bucket)?, S3Options::from_env()?).await?;
        store
            .presign_put(&key, std::time::Duration::from_secs(expires_minutes * 60))
            .await
    })?;
    let headers = presigned
        .headers
        .iter()
        .fold(String::new(), |mut out, (name, value)| {
            let _ = write!(out, " -H '{name}: {value}'");
            out
        });
    eprintln!(
        "upload one file to {key} within {expires_minutes} minutes with:\n  curl --fail{headers} -T <your file> '<the URL below>'\nthe URL takes one upload: once the file is there, another is refused (412 Precondition Failed); to correct it, ask for a URL for a new file name"
    );
    println!("{}", presigned.url);
    Ok(ExitCode::SUCCESS)
}

fn tables_command(file: &Path, format: OutputFormat) -> Result<ExitCode> {
    let limit = Limits::default().max_file_bytes;
    let size = std::fs::metadata(file)
        .with_context(|| format!("failed to read {}", file.display()))?
        .len();
    if size > limit {
        bail!(
            "{} is {size} bytes, above the {limit} bytes an upload may have",
            file.display()
        );
    }
    let bytes =
        std::fs::read(file).with_context(|| format!("failed to read {}", file.display()))?;
    let sheets = workbook::sheets(bytes).map_err(|f| anyhow::anyhow!("{}", f.message))?;
    let found: Vec<Value> = sheets
        .iter()
        .map(|sheet| {
            let (top, left) = (sheet.origin.0 as usize, sheet.origin.1 as usize);
            let tables: Vec<Value> = sheet.grid.as_ref().map_or_else(
                |_| Vec::new(),
                |grid| {
                    tables::find(grid)
                        .iter()
                        .map(|t| {
                            let row = |r: usize| top + r + 1;
                            let letter = |c: usize| finding::column_letters((left + c) as u32);
                            let first_row = t.header.map_or(t.body.0, |h| h.0);
                            json!({
                                "range": format!("{}{}:{}{}", letter(t.columns.0), row(first_row), letter(t.columns.1), row(t.body.1)),
                                "header_rows": t.header.map(|(a, b)| [row(a), row(b)]),
                                "body_rows": [row(t.body.0), row(t.body.1)],
                                "rows": t.rows,
                                "columns": t.names.iter().enumerate().map(|(i, n)| json!({"column": letter(t.columns.0 + i), "name": n})).collect::<Vec<_>>(),
                            })
                        })
                        .collect()
                },
            );
            json!({"sheet": sheet.name, "error": sheet.grid.as_ref().err(), "tables": tables})
        })
        .collect();
    match format {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"file": file.display().to_string(), "sheets": found})
            )?
        ),
        OutputFormat::Text => {
            println!("{}: {} sheet(s)", file.display(), found.len());
            for sheet in &found {
                let name = sheet["sheet"].as_str().unwrap_or_default();
                if let Some(e) = sheet["error"].as_str() {
                    println!("  {name}: could not be read: {e}");
                    continue;
                }
                let tables = sheet["tables"].as_array().map_or(&[][..], Vec::as_slice);
                if tables.is_empty() {
                    println!("  {name}: no table (no row of figures)");
                }
                for t in tables {
                    let header = match t["header_rows"].as_array() {
                        Some(h) if h[0] == h[1] => format!("header row {}", h[0]),
                        Some(h) => format!("header rows {}-{}", h[0], h[1]),
                        None => "no header".to_owned(),
                    };
                    let columns: Vec<&str> = t["columns"]
                        .as_array()
                        .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
                        .unwrap_or_default();
                    println!(
                        "  {name}!{}: {header}, {} row(s) of figures: {}",
                        t["range"].as_str().unwrap_or_default(),
                        t["rows"],
                        columns.join(" | ")
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn template_command(
    root: &Path,
    dataset: &str,
    force: &str,
    period: &str,
    out: &Path,
) -> Result<ExitCode> {
    let project = load_project(root)?;
    let pipeline = project.pipeline(dataset).with_context(|| {
        format!(
            "no pipeline for dataset `{dataset}`; known: {:?}",
            project.pipelines.keys().collect::<Vec<_>>()
        )
    })?;
    let force = project
        .code_lists
        .forces()
        .and_then(|f| f.lookup_loose(force))
        .with_context(|| format!("`{force}` is not a force id, ONS code or name"))?;
    let period = pipeline.period.cadence.parse(period)?;
    let bytes = template::write(template::TemplateFor {
        pipeline,
        force,
        period: &period,
    })
    .context("failed to build the workbook")?;
    std::fs::write(out, bytes).with_context(|| format!("failed to write {}", out.display()))?;
    println!(
        "wrote {} ({} for {}, {}): fill in the sheet `{}`",
        out.display(),
        pipeline.title,
        force.label,
        period,
        template::DATA_SHEET
    );
    Ok(ExitCode::SUCCESS)
}

fn validate_command(
    root: &Path,
    file: &Path,
    dataset: Option<String>,
    force: Option<String>,
    period: Option<String>,
    schema: Option<PathBuf>,
    format: OutputFormat,
) -> Result<ExitCode> {
    let (settings, limits, scope) = if let Some(schema_path) = schema {
        let text = std::fs::read_to_string(&schema_path)
            .with_context(|| format!("failed to read schema {}", schema_path.display()))?;
        let code_lists =
            Project::load(root).map_or_else(|_| CodeLists::default(), |p| p.code_lists);
        let id = schema_path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let schema = RecordSchema::parse(&id, &text, &code_lists).map_err(|errs| {
            anyhow::anyhow!(
                "the schema {} has problems:\n{}",
                schema_path.display(),
                errs.iter()
                    .map(|e| format!("  {e}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })?;
        (
            CheckSettings::schema_only(schema),
            Limits::default(),
            UploadScope {
                now: Some(SystemClock.now()),
                ..UploadScope::default()
            },
        )
    } else {
        let project = load_project(root)?;
        let dataset = dataset.unwrap_or_default();
        let pipeline = project.pipeline(&dataset).with_context(|| {
            format!(
                "no pipeline for dataset `{dataset}`; known: {:?}",
                project.pipelines.keys().collect::<Vec<_>>()
            )
        })?;
        let force = force.unwrap_or_default();
        let entry = project
            .code_lists
            .forces()
            .and_then(|f| f.lookup_loose(&force))
            .with_context(|| format!("`{force}` is not a force id, ONS code or name"))?;
        let period = pipeline.period.cadence.parse(&period.unwrap_or_default())?;
        (
            check_settings(pipeline),
            pipeline.limits,
            UploadScope {
                force: Some(entry.code.clone()),
                period: Some(period),
                // The edge of the program: the one place `validate` takes the system clock.
                now: Some(SystemClock.now()),
            },
        )
    };
    let outcome = validate_local(file, &settings, limits, scope.clone())
        .with_context(|| format!("failed to check {}", file.display()))?;
    match format {
        OutputFormat::Json => print_json(file, &settings, &scope, &outcome)?,
        OutputFormat::Text => print_text(file, &settings, &scope, &outcome),
    }
    Ok(if outcome.verdict.decision == Decision::Rejected {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_json(
    file: &Path,
    settings: &CheckSettings,
    scope: &UploadScope,
    o: &CheckOutcome,
) -> Result<()> {
    let value = serde_json::json!({
        "file": file.display().to_string(),
        "schema": settings.schema.id,
        "force": scope.force,
        "period": scope.period.map(|p| p.to_string()),
        "decision": o.verdict.decision,
        "rows_read": o.decode.records,
        "flagged_rows": o.verdict.error_rows,
        "findings": o.findings,
        "columns": o.verdict.columns,
    });
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

fn print_text(file: &Path, settings: &CheckSettings, scope: &UploadScope, o: &CheckOutcome) {
    let decision = match o.verdict.decision {
        Decision::Accepted => "ACCEPTED",
        Decision::AcceptedWithWarnings => "ACCEPTED WITH WARNINGS",
        Decision::Rejected => "REJECTED",
    };
    let context = match (&scope.force, scope.period) {
        (Some(f), Some(p)) => format!(", force {f}, period {p}"),
        _ => String::new(),
    };
    println!(
        "{}: {decision} (schema {}{context})",
        file.display(),
        settings.schema.id
    );
    println!(
        "  rows read {}, flagged rows (with an error) {}",
        o.decode.records, o.verdict.error_rows
    );
    for s in &o.findings {
        println!(
            "  {:<8} {:<26} {:>9}",
            s.severity.as_str(),
            s.code.as_str(),
            s.count
        );
        for f in s.examples.iter().take(3) {
            let mut at = Vec::new();
            if let Some(r) = f.row {
                at.push(format!("row {r}"));
            }
            if let Some(c) = &f.column {
                at.push(format!("column \"{c}\""));
            }
            if let Some(cell) = &f.cell {
                at.push(format!("cell {cell}"));
            }
            let at = if at.is_empty() {
                String::new()
            } else {
                format!("{}: ", at.join(", "))
            };
            println!("           {at}{}", f.message);
        }
        if let Some(first) = s.examples.first() {
            println!("           how to fix: {}", first.hint);
        }
    }
    if o.findings.is_empty() {
        println!("  no findings");
    }
}

fn status_command(
    root: &Path,
    bucket: &str,
    as_of: Option<&str>,
    format: OutputFormat,
) -> Result<ExitCode> {
    let project = Arc::new(load_project(root)?);
    let now = match as_of {
        Some(day) => chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
            .with_context(|| format!("--as-of `{day}` is not a date written YYYY-MM-DD"))?
            .and_hms_opt(23, 59, 59)
            .context("no end of day")?
            .and_utc(),
        None => SystemClock.now(),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let store = runtime.block_on(store::open(bucket))?;
    let service = Service::new(
        project,
        store,
        Arc::new(FixedClock::new(now)),
        RunOptions::default(),
    );
    let tables = runtime.block_on(service.status_tables(now))?;
    if format == OutputFormat::Json {
        let value: Vec<serde_json::Value> = tables
            .iter()
            .map(|(dataset, _, rows)| serde_json::json!({"dataset": dataset, "as_of": now, "rows": rows}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("as of {}", now.format("%Y-%m-%d %H:%M:%S UTC"));
        for (dataset, periods, rows) in &tables {
            println!();
            print!("{}", render_text(dataset, periods, rows));
        }
        if tables.is_empty() {
            println!("no returns received yet");
        }
    }
    Ok(ExitCode::SUCCESS)
}
