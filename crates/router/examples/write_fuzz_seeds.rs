//! Writes the router target's seeds into `fuzz/corpus/` (run by
//! `scripts/fuzz.sh` before fuzzing; the replay test runs the seeds
//! itself, so CI needs no files written).

use switchboard_protocol::fuzzing::write_seeds;
use switchboard_router::api::fuzzing;

fn main() {
    write_seeds("api_body", &fuzzing::api_body_seeds());
}
