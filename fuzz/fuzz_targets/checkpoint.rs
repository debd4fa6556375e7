#![no_main]
// The `checkpoint` target of `sluice::fuzz`, coverage-guided.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzz::run("checkpoint", data));
