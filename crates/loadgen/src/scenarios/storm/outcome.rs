//! The storm's figures, read from the clients' slots and the shared
//! counters into the report.

use std::sync::atomic::Ordering;

use serde_json::json;

use super::backoff::Backoff;
use super::state::{Shared, Slot, CONNECTED, REACHABLE};
use crate::report::{Latency, Report};

/// Timings of the dropped clients, from the kill: first close, first
/// attempt, all registered, all reachable, and each client's own first
/// attempt → reachable.
pub(crate) fn timings(shared: &Shared, r: &mut Report) {
    let victims: Vec<&Slot> = shared
        .slots
        .iter()
        .filter(|s| s.lost_ns.load(Ordering::Relaxed) > 0)
        .collect();
    r.set("dropped_clients", victims.len());
    let ms = |ns: u64| ns as f64 / 1e6;
    let first_close = victims
        .iter()
        .map(|s| s.lost_ns.load(Ordering::Relaxed))
        .min()
        .unwrap_or(0);
    let first_attempt = victims
        .iter()
        .map(|s| s.first_attempt_ns.load(Ordering::Relaxed))
        .filter(|&t| t > 0)
        .min()
        .unwrap_or(0);
    let last_registered = victims
        .iter()
        .map(|s| s.registered_ns.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let last_reachable = victims
        .iter()
        .map(|s| s.reachable_ns.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    r.set("kill_to_first_close_ms", ms(first_close));
    r.set("kill_to_first_attempt_ms", ms(first_attempt));
    r.set(
        "all_registered_after_first_attempt_ms",
        ms(last_registered.saturating_sub(first_attempt)),
    );
    r.set(
        "all_reachable_after_first_attempt_ms",
        ms(last_reachable.saturating_sub(first_attempt)),
    );
    r.set("all_reachable_after_kill_ms", ms(last_reachable));
    let mut own = Latency::new();
    for s in &victims {
        let (a, b) = (
            s.first_attempt_ns.load(Ordering::Relaxed),
            s.reachable_ns.load(Ordering::Relaxed),
        );
        if a > 0 && b > 0 {
            own.record_ns(b.saturating_sub(a));
        }
    }
    r.set("own_first_attempt_to_reachable", own.summary());
    if victims.is_empty() {
        r.problems
            .push("no client lost its connection: did --kill kill an edge that held clients?".into());
    }
}

/// The reconnect attempts and the probes: connect→welcome of the
/// reconnects, failures by kind, probes sent and not online.
pub(crate) async fn attempts(shared: &Shared, r: &mut Report, probe_retries: u64, backoff: Backoff) {
    r.set(
        "reconnect_connect_to_welcome",
        shared.reconnect_latency.lock().await.summary(),
    );
    r.set("reconnect_attempts", shared.attempts.load(Ordering::Relaxed));
    r.set("attempts_refused", shared.refused.load(Ordering::Relaxed));
    r.set("attempts_timed_out", shared.timed_out.load(Ordering::Relaxed));
    r.set(
        "attempts_failed_otherwise",
        shared.other_failures.load(Ordering::Relaxed),
    );
    if let Some(e) = shared.first_error.lock().await.as_ref() {
        r.set("first_other_failure", e.clone());
    }
    r.set("probe_retries", probe_retries);
    let probed = shared.probed_ids.load(Ordering::Relaxed);
    r.set("probes", probed);
    r.set(
        "probes_not_online",
        probed.saturating_sub(shared.probe_recipients.load(Ordering::Relaxed)),
    );
    r.set(
        "backoff",
        json!({"base_ms": backoff.base.as_millis() as u64, "cap_ms": backoff.cap.as_millis() as u64}),
    );
    let closed_early = shared.closed_before_kill.load(Ordering::Relaxed);
    if closed_early > 0 {
        r.problems
            .push(format!("{closed_early} connections closed before the kill"));
    }
}

/// Clients neither reachable again nor untouched by the kill.
pub(crate) fn unreachable(shared: &Shared) -> usize {
    shared
        .slots
        .iter()
        .filter(|s| {
            let state = s.state.load(Ordering::Acquire);
            state != REACHABLE && state != CONNECTED
        })
        .count()
}

/// Probes the API counted as delivered that never arrived; SPEC §2: a send
/// that starts after the welcome reaches the client, so each is a problem.
/// Counted after the settle: a probe that was late, not lost, is in.
pub(crate) fn lost_probes(shared: &Shared, r: &mut Report) {
    let received = shared.probes_received.load(Ordering::Relaxed);
    let lost = shared.probe_recipients.load(Ordering::Relaxed).saturating_sub(received);
    r.set("probes_received", received);
    r.set("probes_lost", lost);
    if lost > 0 {
        r.problems.push(format!(
            "{lost} probes the API counted as delivered never arrived \
             (SPEC §2: a send that starts after the welcome reaches the client)"
        ));
    }
}
