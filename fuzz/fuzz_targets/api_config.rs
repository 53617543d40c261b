//! Arbitrary text never panics glance-api's TOML config checker; accepted configs stay within their bounds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| glance_api::fuzzing::config(data));
