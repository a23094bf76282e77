#![no_main]
//! libFuzzer target: [`passerelle_fuzzing::vihf_headers`].
libfuzzer_sys::fuzz_target!(|data: &[u8]| passerelle_fuzzing::vihf_headers(data));
