//! Arbitrary query strings never panic the link parser, and parse -> format round-trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| glance_link::fuzzing::query_round_trip(data));
