#![no_main]
//! libFuzzer target: [`passerelle_fuzzing::config`].
libfuzzer_sys::fuzz_target!(|data: &[u8]| passerelle_fuzzing::config(data));
