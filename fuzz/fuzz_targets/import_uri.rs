//! Any text never panics web-download's URL filter; what it passes is http(s) on an allowed port.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| glance_api::fuzzing::import_uri(data));
