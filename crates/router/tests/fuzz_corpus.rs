//! Replays the saved fuzz corpus of the router's target (`fuzz/`) as an
//! ordinary test, so CI runs every saved input without a fuzzer.

use switchboard_protocol::fuzzing::{replay, write_seeds};
use switchboard_router::api::fuzzing;

#[test]
fn api_body_corpus_replays() {
    let n = replay("api_body", fuzzing::api_body, &fuzzing::api_body_seeds());
    assert!(n > 0);
}

/// Writes the seeds into `fuzz/corpus/` (`scripts/fuzz.sh` runs it first).
#[test]
#[ignore = "writes files; run by scripts/fuzz.sh"]
fn write_seed_corpus() {
    write_seeds("api_body", &fuzzing::api_body_seeds());
}
