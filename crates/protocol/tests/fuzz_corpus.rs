//! Replays the saved fuzz corpus of the protocol's targets (`fuzz/`) as
//! ordinary tests, so CI runs every saved input without a fuzzer.

use switchboard_protocol::fuzzing;

#[test]
fn client_frame_corpus_replays() {
    let n = fuzzing::replay("client_frame", fuzzing::client_frame, &fuzzing::client_frame_seeds());
    assert!(n > 0);
}

#[test]
fn bus_envelope_corpus_replays() {
    let n = fuzzing::replay("bus_envelope", fuzzing::bus_envelope, &fuzzing::bus_envelope_seeds());
    assert!(n > 0);
}
