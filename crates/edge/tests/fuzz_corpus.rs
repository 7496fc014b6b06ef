//! Replays the saved fuzz corpus of the edge's targets (`fuzz/`) as
//! ordinary tests, so CI runs every saved input without a fuzzer.

use switchboard_edge::fuzzing;
use switchboard_protocol::fuzzing::{replay, write_seeds};

#[test]
fn ws_frame_corpus_replays() {
    let n = replay("ws_frame", fuzzing::ws_frame, &fuzzing::ws_frame_seeds());
    assert!(n > 0);
}

#[test]
fn handshake_query_corpus_replays() {
    let n = replay(
        "handshake_query",
        fuzzing::handshake_query,
        &fuzzing::handshake_query_seeds(),
    );
    assert!(n > 0);
}

/// Writes the seeds into `fuzz/corpus/` (`scripts/fuzz.sh` runs it first).
#[test]
#[ignore = "writes files; run by scripts/fuzz.sh"]
fn write_seed_corpus() {
    write_seeds("ws_frame", &fuzzing::ws_frame_seeds());
    write_seeds("handshake_query", &fuzzing::handshake_query_seeds());
}
