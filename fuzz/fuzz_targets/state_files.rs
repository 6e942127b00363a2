//! Bytes read as each state file the service reads from the bucket.
//! The body is `force_returns_dev::fuzzing::state_files`, which the tests replay the corpus through.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| force_returns_dev::fuzzing::state_files(data));
