//! Arbitrary bytes never panic the HTTP request-head parser and stay within its limit.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| glance_stream::fuzzing::request_head(data));
