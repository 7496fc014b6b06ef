//! Replays the saved fuzz corpus of the edge's targets (`fuzz/`) as
//! ordinary tests, so CI runs every saved input without a fuzzer.

use switchboard_edge::fuzzing;
use switchboard_protocol::fuzzing::replay;

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
