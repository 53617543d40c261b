//! Arbitrary bytes never panic the cache index's entry-record decoder; an accepted record encodes back to the same bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| glance_cache::fuzzing::entry_record(data));
