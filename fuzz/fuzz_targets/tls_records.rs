//! Arbitrary bytes from a client never panic glance-stream's TLS session, whose buffers stay bounded.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| glance_stream::fuzzing::tls_records(data));
