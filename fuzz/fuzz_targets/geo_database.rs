#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| meridian::fuzzing::geo_database(data));
