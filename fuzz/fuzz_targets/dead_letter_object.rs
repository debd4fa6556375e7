#![no_main]
// The `dead_letter_object` target of `sluice::fuzz`, coverage-guided.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzz::run("dead_letter_object", data));
