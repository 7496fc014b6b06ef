//! `ws_frame`: see `switchboard_edge::fuzzing::ws_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_edge::fuzzing::ws_frame(data));
