//! Arbitrary Swift authentication answers (tempauth headers, Keystone token
//! bodies) never panic the parser, and what it accepts is well formed.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| glance_link::fuzzing::swift_auth_answer(data));
