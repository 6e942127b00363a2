//! Developer tools for force-returns, kept out of the service: the tests, the benchmarks and the
//! README's demo command use them; the `force-returns` binary never links them.
//!
//! - [`demo`] generates realistic synthetic returns for 43 forces, with planted file defects
//!   and, on request, planted data-quality incidents;
//! - [`eval`] is the honest evaluation of the gap and anomaly analysis: its own generated history
//!   with fifteen planted incident classes, run through the engine's real checks and scored;
//! - [`pack_eval`] is the same for the data pack's figures: its own generated packs with ten
//!   planted incident classes;
//! - [`fuzzing`] holds the bodies of the fuzz targets in `fuzz/`, which the tests replay;
//! - [`tick`] times runs over a bucket holding many finished uploads (the state benchmark).

pub mod demo;
pub mod eval;
pub mod fuzzing;
pub mod pack_eval;
pub mod tick;
