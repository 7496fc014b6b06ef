//! The wait after the kill: until every dropped client is registered and
//! reachable again, re-probing clients whose probe did not come.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::state::{dur_ns, Shared, AWAITING_PROBE, DOWN};

/// How often the clients' slots are looked at.
const POLL: Duration = Duration::from_millis(50);
/// No new drop for this long: every socket of the killed process has
/// closed (they close at once).
const QUIET: Duration = Duration::from_millis(500);

/// Waits until clients were dropped, all are reachable again and no new
/// drop was noticed for [`QUIET`], or until `kill_at + recover_timeout`.
/// A client awaiting its probe for longer than `probe_timeout` is probed
/// again. Returns (recovered, probes sent again).
pub(crate) async fn wait_recovered(
    shared: &Shared,
    ids: &[String],
    kill_at: Instant,
    probe_timeout: Duration,
    recover_timeout: Duration,
) -> (bool, u64) {
    let mut probe_retries = 0u64;
    let deadline = kill_at + recover_timeout;
    let mut quiet_since = Instant::now();
    let mut last_dropped = 0;
    loop {
        tokio::time::sleep(POLL).await;
        let now_ns = shared.since_kill();
        let (mut down, mut pending) = (0usize, 0usize);
        for (i, s) in shared.slots.iter().enumerate() {
            match s.state.load(Ordering::Acquire) {
                DOWN => down += 1,
                AWAITING_PROBE => {
                    pending += 1;
                    let probed = s.probed_ns.load(Ordering::Relaxed);
                    if now_ns.saturating_sub(probed) > dur_ns(probe_timeout) {
                        s.probed_ns.store(now_ns, Ordering::Relaxed);
                        let _ = shared.probe_queue.send(i);
                        probe_retries += 1;
                        if probe_retries <= 5 {
                            eprintln!(
                                "storm: no probe for {} {probe_timeout:?} after its welcome, probing again",
                                ids[i]
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        let dropped = shared
            .slots
            .iter()
            .filter(|s| s.lost_ns.load(Ordering::Relaxed) > 0)
            .count();
        if dropped != last_dropped {
            last_dropped = dropped;
            quiet_since = Instant::now();
        }
        if dropped > 0 && down == 0 && pending == 0 && quiet_since.elapsed() > QUIET {
            return (true, probe_retries);
        }
        if Instant::now() > deadline {
            return (false, probe_retries);
        }
    }
}
