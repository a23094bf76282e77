#![no_main]
//! libFuzzer target: [`passerelle_fuzzing::c14n`].
libfuzzer_sys::fuzz_target!(|data: &[u8]| passerelle_fuzzing::c14n(data));
