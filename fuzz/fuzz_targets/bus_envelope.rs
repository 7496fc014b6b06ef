//! `bus_envelope`: see `switchboard_protocol::fuzzing::bus_envelope`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_protocol::fuzzing::bus_envelope(data));
