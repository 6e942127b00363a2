//! A bucket key through the layout's router and key parsers.
//! The body is `force_returns_dev::fuzzing::keys`, which the tests replay the corpus through.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| force_returns_dev::fuzzing::keys(data));
