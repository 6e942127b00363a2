//! Developer tools for force-returns, kept out of the service: the tests, the benchmarks and the
//! README's demo command use them; the `force-returns` binary never links them.
//!
//! - [`demo`] generates realistic synthetic returns for 43 forces, with planted file defects
//!   and, on request, planted data-quality incidents;
//! - [`eval`] generates a history apart from the demo, with fifteen planted incident classes;
//! - [`evaluate`] measures the gap and anomaly analysis on the demo's planted incidents;
//! - [`fuzzing`] holds the bodies of the fuzz targets in `fuzz/`, which the tests replay;
//! - [`tick`] times runs over a bucket holding many finished uploads (the state benchmark).

pub mod demo;
pub mod eval;
pub mod evaluate;
pub mod fuzzing;
pub mod tick;
