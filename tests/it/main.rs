//! Integration tests: one binary, each test with its own bucket and temp dir.
//!
//! The whole-run tests run twice, on a local bucket and on a bucket of the S3 test server
//! (moto), and `s3` adds what only S3 shows: worker processes racing over one bucket, a
//! worker killed mid-run, presigned uploads with `curl`. `s3_faults` runs the service through
//! `fault_proxy`, a proxy that injects S3 faults (errors, throttling, resets, cut answers,
//! delays, held requests) in front of the test server. `golden` compares everything two
//! whole histories write with the recording in `tests/golden/`. `architecture` fails when the
//! crate's top-level modules import each other in a cycle. `fuzz_replay` runs the fuzz corpora
//! through the fuzz targets' harnesses.
//!
//! External pieces (the Python Parquet readers, headless Chromium, `../shared/fixtures`, the
//! S3 test server, `curl`) are found through `tests/run`'s environment. A test that needs a
//! missing piece fails, naming it and saying how to install it (`common::missing`): no test
//! passes by skipping what it is there to check, by hand or in CI.

mod analysis;
mod architecture;
mod cadence;
mod catalogue;
mod cli;
mod common;
mod corpus;
mod crash;
mod data_pack;
mod fault_proxy;
mod fuzz_replay;
mod golden;
mod new_return;
mod policy;
mod presigned;
mod report_browser;
mod runs;
mod s3;
mod s3_faults;
mod series;
mod workbook;
mod worker;
