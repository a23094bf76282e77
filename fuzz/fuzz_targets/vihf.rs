#![no_main]
//! libFuzzer target: [`passerelle_fuzzing::vihf`].
libfuzzer_sys::fuzz_target!(|data: &[u8]| passerelle_fuzzing::vihf(data));
