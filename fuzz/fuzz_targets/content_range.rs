#![no_main]
//! See `chute::fuzzing::content_range`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| chute::fuzzing::content_range(data));
