//! Writes the protocol targets' seeds into `fuzz/corpus/` (run by
//! `scripts/fuzz.sh` before fuzzing; the replay tests run the seeds
//! themselves, so CI needs no files written).

use switchboard_protocol::fuzzing;

fn main() {
    fuzzing::write_seeds("client_frame", &fuzzing::client_frame_seeds());
    fuzzing::write_seeds("bus_envelope", &fuzzing::bus_envelope_seeds());
}
