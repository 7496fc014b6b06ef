//! Replays the saved fuzz corpus of the router's target (`fuzz/`) as an
//! ordinary test, so CI runs every saved input without a fuzzer.

use switchboard_protocol::fuzzing::replay;
use switchboard_router::api::fuzzing;

#[test]
fn api_body_corpus_replays() {
    let n = replay("api_body", fuzzing::api_body, &fuzzing::api_body_seeds());
    assert!(n > 0);
}
