//! An upload's bytes through the whole check of the stop-and-search pipeline.
//! The body is `force_returns_dev::fuzzing::validator`, which the tests replay the corpus through.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| force_returns_dev::fuzzing::validator(data));
