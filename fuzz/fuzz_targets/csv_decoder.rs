//! An upload's bytes through the CSV decoder with the stop-and-search schema and limits.
//! The body is `force_returns_dev::fuzzing::csv_decoder`, which the tests replay the corpus through.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| force_returns_dev::fuzzing::csv_decoder(data));
