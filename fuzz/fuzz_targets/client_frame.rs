//! `client_frame`: see `switchboard_protocol::fuzzing::client_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_protocol::fuzzing::client_frame(data));
