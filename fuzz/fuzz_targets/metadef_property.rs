//! Any JSON never panics glance-api's metadata definitions property checker; what it accepts is well formed and stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| glance_api::fuzzing::metadef_property(data));
