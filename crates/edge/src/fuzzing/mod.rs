//! Fuzz entry points (not part of the API): the bodies of the `fuzz/`
//! targets `ws_frame` and `handshake_query`, also run by
//! `tests/fuzz_corpus.rs` over the saved corpus so `cargo test` replays it.
//!
//! Each function takes arbitrary bytes, drives the real code over them and
//! panics when an invariant breaks, so the fuzzer reports it as a crash.
//!
//! - `frames`: the `ws_frame` target (frame reader and message assembler)
//!   and its seeds;
//! - `model`: RFC 6455's rules for a sequence of frames, written plainly,
//!   which `ws_frame` holds the assembler to;
//! - `query`: the `handshake_query` target and its seeds.

mod frames;
mod model;
mod query;

pub use frames::{ws_frame, ws_frame_seeds};
pub use query::{handshake_query, handshake_query_seeds};
