//! Whether the routers may have purged this node: when the bus last
//! confirmed that they hear it.
//!
//! A router purges a node it has not heard for `router.node_timeout`
//! (SPEC §2: a dead edge leaves presence within 10 s). A node that was
//! only frozen (`SIGSTOP`, a long pause) or cut off from NATS comes back
//! still holding its clients, while sends to them were stored and not
//! delivered. Its connections must hold their live deliveries before
//! anything reaches them again, or their positions move past what was
//! stored (issue 13: a client on a thawed edge missed the whole freeze).
//! Deliveries reach a purged node again as soon as any entry of it is
//! written back, by its own resync or by a new client's connect, which
//! can come before the routers' `Resync` command.
//!
//! So the node keeps, from the routers' answers to its heartbeats (a
//! request every router answers), the send time of the last one heard.
//! When that is older than [`SUSPECT_AFTER_BEATS`] heartbeats, or a reply
//! shows such a gap behind it, the node is *suspect*: new connections
//! wait before registering, and the next resync first holds every
//! connection with history, then heals them from the log if the routers
//! had to write presence back (see `crate::resync`).
//!
//! Until the first answer (routers from before this check never answer)
//! nothing is suspected.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How many heartbeat intervals without an answer make the node suspect.
/// Routers purge after `router.node_timeout` (6 s by default), which must
/// stay above this many of the edges' `edge.node_heartbeat` (2 s by
/// default: suspect after 4 s).
pub(crate) const SUSPECT_AFTER_BEATS: u32 = 2;

/// Not armed yet: no router answered a heartbeat.
const UNARMED: u64 = u64::MAX;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Heard {
    /// The clock every time here is measured on.
    origin: Instant,
    /// Suspect after this long without an answer.
    limit: Duration,
    /// When (ms since `origin`) the last heartbeat that was answered was
    /// sent, or a resync cycle last held every connection; [`UNARMED`]
    /// before the first answer.
    last_ms: AtomicU64,
    /// A reply showed a gap longer than `limit`: suspect until a resync
    /// cycle holds every connection.
    gap_seen: AtomicBool,
}

impl Heard {
    /// Suspect after `beats` × `heartbeat` without an answer.
    pub(crate) fn new(heartbeat: Duration, beats: u32) -> Self {
        Self {
            origin: Instant::now(),
            limit: heartbeat * beats,
            last_ms: AtomicU64::new(UNARMED),
            gap_seen: AtomicBool::new(false),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_millis()).unwrap_or(UNARMED - 1)
    }

    /// A router answered the heartbeat sent at `sent`. True when it ends a
    /// gap longer than the limit (the node is now suspect: start a resync).
    pub(crate) fn answered(&self, sent: Instant) -> bool {
        let sent = self.ms(sent);
        let before = self.last_ms.fetch_max(sent, Ordering::AcqRel);
        // `fetch_max` treats UNARMED as the largest value: the first answer
        // arms the watch instead.
        if before == UNARMED {
            self.last_ms.store(sent, Ordering::Release);
            return false;
        }
        if sent <= before || sent - before <= self.limit.as_millis() as u64 {
            return false;
        }
        self.gap_seen.store(true, Ordering::Release);
        true
    }

    /// Whether the routers may have purged this node and no resync cycle
    /// has held its connections since.
    pub(crate) fn suspect(&self) -> bool {
        if self.gap_seen.load(Ordering::Acquire) {
            return true;
        }
        let last = self.last_ms.load(Ordering::Acquire);
        last != UNARMED && self.ms(Instant::now()).saturating_sub(last) > self.limit.as_millis() as u64
    }

    /// A resync cycle holds every connection with history (at `at`), and
    /// will heal them if presence had to be written back: what came before
    /// is taken care of.
    pub(crate) fn held(&self, at: Instant) {
        let at = self.ms(at);
        if self.last_ms.load(Ordering::Acquire) != UNARMED {
            self.last_ms.fetch_max(at, Ordering::AcqRel);
        }
        self.gap_seen.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEAT: Duration = Duration::from_millis(100);

    #[test]
    fn nothing_is_suspected_before_a_router_answers() {
        let h = Heard::new(BEAT, 2);
        std::thread::sleep(BEAT * 3);
        assert!(!h.suspect());
    }

    #[test]
    fn answers_in_time_keep_it_trusted() {
        let h = Heard::new(BEAT, 2);
        let t0 = Instant::now();
        assert!(!h.answered(t0));
        assert!(!h.answered(t0 + BEAT));
        // A late answer to an older heartbeat changes nothing.
        assert!(!h.answered(t0));
        assert!(!h.suspect());
    }

    #[test]
    fn silence_past_the_limit_makes_it_suspect_until_a_cycle_holds() {
        let h = Heard::new(BEAT, 2);
        assert!(!h.answered(Instant::now()));
        std::thread::sleep(BEAT * 3);
        assert!(h.suspect(), "no answer for 3 beats");
        // The answer that ends the gap keeps it suspect.
        assert!(h.answered(Instant::now()));
        assert!(h.suspect());
        h.held(Instant::now());
        assert!(!h.suspect());
        // An answer to a heartbeat sent before the hold is no new gap.
        assert!(!h.answered(Instant::now() - BEAT));
        assert!(!h.suspect());
    }
}
