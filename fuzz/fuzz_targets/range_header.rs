//! Arbitrary `Range` values never panic the parser; partial ranges lie inside the image.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| glance_stream::fuzzing::range_header(data));
