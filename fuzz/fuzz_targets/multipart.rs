#![no_main]
//! See `chute::fuzzing::multipart`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| chute::fuzzing::multipart(data));
