#![no_main]
//! See `chute::fuzzing::range`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| chute::fuzzing::range(data));
