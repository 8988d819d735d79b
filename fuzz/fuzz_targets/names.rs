#![no_main]
//! See `chute::fuzzing::names`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| chute::fuzzing::names(data));
