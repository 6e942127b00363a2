//! force-returns: receives the monthly data returns of the police forces of England and Wales,
//! validates them against versioned schemas, stores accepted data as Parquet snapshots and
//! reports back to each force.
//!
//! The crate is one library with a thin binary. Data flows down the module list; nothing lower
//! calls back up (see `ARCHITECTURE.md`):
//!
//! - [`config`] loads pipelines, schemas and settings;
//! - [`store`] is the only code that talks to object storage;
//! - [`ingest`] turns uploaded bytes into Arrow batches and decode findings;
//! - [`schema`] parses record schemas and reference code lists;
//! - [`validate`] checks batches column by column and decides;
//! - [`snapshot`] writes typed Parquet snapshots, quality tables and the manifest;
//! - [`analyze`] finds gaps and anomalies, derives monthly metrics and the status of expected
//!   returns;
//! - [`feedback`] renders the report back to the force;
//! - [`pipeline`] runs discover → claim → decode → validate → write → report;
//! - [`demo`] generates realistic synthetic returns for the demo and tests;
//! - [`evaluate`] measures the analysis on the demo's planted incidents.

pub mod analyze;
pub mod clock;
pub mod config;
pub mod demo;
pub mod evaluate;
pub mod feedback;
pub mod finding;
pub mod ingest;
pub mod period;
pub mod pipeline;
pub mod schema;
pub mod snapshot;
pub mod store;
pub mod validate;
