#![no_main]
// The `buffer_record` target of `sluice::fuzz`, coverage-guided.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzz::run("buffer_record", data));
