//! force-returns: receives the monthly data returns of the police forces of England and Wales,
//! validates them against versioned schemas, stores accepted data as Parquet snapshots and
//! reports back to each force.
//!
//! The crate is one library with a thin binary. Its modules form layers with no import cycle
//! (`tests/it/architecture.rs` checks it; see `ARCHITECTURE.md`); from the bottom:
//!
//! - [`model`] holds the values several layers share (the decision, upload limits and reading
//!   settings, analysis settings, what a return's records yield (`[observe]`), manifests,
//!   receipts, tokens); [`period`], [`finding`] and
//!   [`clock`] are bottom modules of their own;
//! - [`schema`] parses record schemas, reference code lists and the population reference;
//!   [`rules`] applies the plausibility rules a pipeline declares in its profile; [`catalogue`]
//!   parses and checks the metric catalogue (metrics, units, dimensions, their rules);
//! - [`store`] is the only code that talks to object storage; [`layout`] builds and parses
//!   every bucket key (pure); [`state`] is the commit protocol over the store: claims and locks
//!   (leases from create-only writes), the ledger of finished uploads, manifests and receipts;
//! - [`encoding`] recognises how an upload is encoded and converts UTF-16 and Windows-1252 to
//!   UTF-8; [`ingest`] turns uploaded bytes (CSV text, or a workbook's sheet read as
//!   CSV text) into Arrow batches and decode findings;
//! - [`validate`] checks batches column by column and decides, given a
//!   [`validate::CheckSettings`]; [`normalise`] reads values as Excel writes them (dates,
//!   thousands separators, smart quotes, placeholders);
//! - [`spill`] finds repeated rows and values in bounded memory, via local temporary files;
//!   [`workdir`] gives each process folders of its own, cleared once it has died;
//! - [`config`] loads pipelines, schemas and settings into the values above;
//! - [`snapshot`] writes typed Parquet snapshots and quality tables; [`observe`] reduces a
//!   submission's accepted rows to the observations its profile declares, in the same pass;
//! - [`analyze`] finds gaps and anomalies over observations, derives metrics and the status of
//!   expected returns; it names no field of any return;
//! - [`feedback`] renders the report back to the force and its monthly summary;
//! - [`pipeline`] runs discover → claim → decode → validate → write → observe → report;
//! - [`scheduler`] follows each pipeline's cron schedule with bounded concurrency and a
//!   graceful [`shutdown`]; [`telemetry`] counts what it does and [`api`] serves health and
//!   metrics over HTTP; [`template`] writes the workbook a force fills in for a return.
//!
//! The demo, the evaluation and the data generators live in the `force-returns-dev` crate
//! (`dev-tools/`), which tests and benchmarks use and the service binary never links.

pub mod analyze;
pub mod api;
pub mod catalogue;
pub mod clock;
pub mod config;
pub mod encoding;
pub mod feedback;
pub mod finding;
pub mod ingest;
pub mod layout;
pub mod model;
pub mod normalise;
pub mod observe;
pub mod period;
pub mod pipeline;
pub mod rules;
pub mod scheduler;
pub mod schema;
pub mod shutdown;
pub mod snapshot;
pub mod spill;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod template;
pub mod validate;
pub mod workdir;
