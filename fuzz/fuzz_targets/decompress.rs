#![no_main]
// The `decompress` target of `sluice::fuzz`, coverage-guided.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzz::run("decompress", data));
