//! force-returns: receives the monthly data returns of the police forces of England and Wales,
//! validates them against versioned schemas, stores accepted data as Parquet snapshots and
//! reports back to each force.
//!
//! The crate is one library with a thin binary. Data flows down the module list; nothing lower
//! calls back up (see `ARCHITECTURE.md`):
//!
//! - [`config`] loads pipelines, schemas and settings;
//! - [`store`] is the only code that talks to object storage;
//! - [`encoding`] recognises how an upload is encoded and converts UTF-16 and Windows-1252 to
//!   UTF-8;
//! - [`ingest`] turns uploaded bytes into Arrow batches and decode findings;
//! - [`schema`] parses record schemas and reference code lists;
//! - [`validate`] checks batches column by column and decides; [`normalise`] reads values
//!   as Excel writes them (dates, thousands separators, smart quotes, placeholders);
//! - [`snapshot`] writes typed Parquet snapshots, quality tables and the manifest;
//! - [`spill`] finds repeated rows and values in bounded memory, via local temporary files;
//! - [`analyze`] finds gaps and anomalies, derives monthly metrics and the status of expected
//!   returns;
//! - [`feedback`] renders the report back to the force;
//! - [`lease`] gives workers expiring, exclusive holds (claims, the manifest lock) from
//!   create-only writes;
//! - [`pipeline`] runs discover → claim → decode → validate → write → report;
//! - [`scheduler`] follows each pipeline's cron schedule with bounded concurrency and a
//!   graceful [`shutdown`]; [`metrics`] counts what it does and [`api`] serves health and
//!   metrics over HTTP;
//! - [`demo`] generates realistic synthetic returns for the demo and tests;
//! - [`evaluate`] measures the analysis on the demo's planted incidents.

pub mod analyze;
pub mod api;
pub mod clock;
pub mod config;
pub mod demo;
pub mod encoding;
pub mod evaluate;
pub mod feedback;
pub mod finding;
pub mod ingest;
pub mod lease;
pub mod metrics;
pub mod normalise;
pub mod period;
pub mod pipeline;
pub mod scheduler;
pub mod schema;
pub mod shutdown;
pub mod snapshot;
pub mod spill;
pub mod store;
pub mod validate;
