//! Arbitrary PATCH bodies never panic glance-api's JSON-patch parser or applier; an applied patch keeps read-only fields and stores back unchanged.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| glance_api::fuzzing::json_patch(data));
