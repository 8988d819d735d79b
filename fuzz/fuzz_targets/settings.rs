#![no_main]
//! See `chute::fuzzing::settings`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| chute::fuzzing::settings(data));
