#![no_main]
//! libFuzzer target: [`passerelle_fuzzing::dmp`].
libfuzzer_sys::fuzz_target!(|data: &[u8]| passerelle_fuzzing::dmp(data));
