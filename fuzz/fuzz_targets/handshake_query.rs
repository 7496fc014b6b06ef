//! `handshake_query`: see `switchboard_edge::fuzzing::handshake_query`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_edge::fuzzing::handshake_query(data));
