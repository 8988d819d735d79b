#![no_main]
//! See `chute::fuzzing::ietf_headers`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| chute::fuzzing::ietf_headers(data));
