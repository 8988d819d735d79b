#![no_main]
//! See `chute::fuzzing::tus_headers`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| chute::fuzzing::tus_headers(data));
