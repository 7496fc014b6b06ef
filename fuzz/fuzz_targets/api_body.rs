//! `api_body`: see `switchboard_router::api::fuzzing::api_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_router::api::fuzzing::api_body(data));
