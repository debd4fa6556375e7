#![no_main]
// The `lines_json` target of `sluice::fuzz`, coverage-guided.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzz::run("lines_json", data));
