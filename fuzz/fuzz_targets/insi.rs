#![no_main]
//! libFuzzer target: [`passerelle_fuzzing::insi`].
libfuzzer_sys::fuzz_target!(|data: &[u8]| passerelle_fuzzing::insi(data));
