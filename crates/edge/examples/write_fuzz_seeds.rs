//! Writes the edge targets' seeds into `fuzz/corpus/` (run by
//! `scripts/fuzz.sh` before fuzzing; the replay tests run the seeds
//! themselves, so CI needs no files written).

use switchboard_edge::fuzzing;
use switchboard_protocol::fuzzing::write_seeds;

fn main() {
    write_seeds("ws_frame", &fuzzing::ws_frame_seeds());
    write_seeds("handshake_query", &fuzzing::handshake_query_seeds());
}
