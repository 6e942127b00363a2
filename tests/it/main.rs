//! Integration tests: one binary, each test with its own bucket and temp dir.
//!
//! External pieces (the Python Parquet readers, headless Chromium, `../shared/fixtures`) are
//! found through `tests/run`'s environment. A test that needs a missing piece says so and
//! passes trivially when run by hand, but fails when `FORCE_RETURNS_TEST_REQUIRE_ALL` is set,
//! as it is in CI.

mod analysis;
mod cli;
mod common;
mod corpus;
mod report_browser;
mod runs;
