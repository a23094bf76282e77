#![no_main]
//! libFuzzer target: [`passerelle_fuzzing::envelope`].
libfuzzer_sys::fuzz_target!(|data: &[u8]| passerelle_fuzzing::envelope(data));
