//! Holding commands to a node until its inbox is back, after this router's
//! bus link returns.
//!
//! Core NATS drops a publish nobody is subscribed to, silently. After a NATS
//! restart every process reconnects on its own schedule (each backs off to
//! `nats.max_reconnect_delay`), and a node's inbox subscription exists on
//! the server again only once that node has reconnected. A delivery or a
//! presence notice this router publishes in between is lost, and the send
//! it serves was already counted in `recipients`. Seen in CI: an edge's
//! disconnect, retried through a NATS outage, reached a router 1.5 ms
//! before the other edge re-subscribed, and that edge's clients never got
//! the `offline` notice.
//!
//! So for a window after the link comes back ([`Settle::open`]), the first
//! command to each node waits until the node answers a ping (an empty
//! `Holds` question: an edge answers once its inbox is subscribed, and NATS
//! keeps one connection's operations in order), at most until the window
//! ends. A node that does not answer in time (a dead edge, which liveness
//! purges) costs the rest of the window once, then commands to it pass
//! again; the router hands deliveries to nodes one after another, so until
//! then it also holds back deliveries to other nodes in the same batch.
//! Publishes to one node keep their order: they queue on a per-node lock,
//! held across the publish (which only buffers); a request waits its turn
//! but does not hold the lock while it waits for its answer. The window
//! closes only once no command is queued at a gate, so a command arriving
//! late cannot overtake one still waiting. Outside the window the cost is
//! one atomic load per command.
//!
//! What this does not cover: an edge whose own link drops while this
//! router stays connected. Its inbox is gone until it reconnects, and the
//! router cannot tell; what is published meanwhile is lost (SPEC §5:
//! at-most-once), as before.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

/// How long one ping waits for its answer before the next one.
const PING_PATIENCE: Duration = Duration::from_millis(250);
/// Pause after a ping found no subscriber (NATS answers that at once).
const PING_PAUSE: Duration = Duration::from_millis(25);

/// A node's place in line, with the window number it last answered in.
pub(crate) type Turn = OwnedMutexGuard<u64>;

/// The window after a link comes back, and which nodes answered in it.
#[derive(Debug, Default)]
pub(crate) struct Settle {
    /// True while a window is open (checked first, without the lock).
    open: AtomicBool,
    state: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    until: Option<Instant>,
    /// Numbers the windows; a node has answered in this one when its gate
    /// holds this number.
    number: u64,
    /// Per node: the window it last answered in (or was given up on); the
    /// lock orders its commands.
    nodes: HashMap<Arc<str>, Arc<tokio::sync::Mutex<u64>>>,
}

impl Settle {
    /// Opens a window of `length` from now: every node must answer again.
    pub(crate) fn open(&self, length: Duration) {
        let mut w = self.state.lock();
        w.until = Some(Instant::now() + length);
        w.number += 1;
        self.open.store(true, Ordering::Release);
    }

    /// Waits for `node`'s turn: at once (`None`) outside a window; inside
    /// one, after the commands queued before and once the node answered
    /// `ping` (or the window ended). The turn lasts while the returned
    /// guard lives.
    pub(crate) async fn turn<P, PF>(&self, node: &str, ping: P) -> Option<Turn>
    where
        P: Fn() -> PF,
        PF: Future<Output = bool>,
    {
        if !self.open.load(Ordering::Acquire) {
            return None;
        }
        let (gate, number, until) = self.gate(node)?;
        let mut answered = gate.lock_owned().await;
        while *answered < number {
            let now = Instant::now();
            if now >= until {
                tracing::debug!(node_id = %node, "node did not answer after the bus came back; sending anyway");
                *answered = number;
                break;
            }
            match tokio::time::timeout(PING_PATIENCE.min(until - now), ping()).await {
                Ok(true) => *answered = number,
                Ok(false) => tokio::time::sleep(PING_PAUSE.min(until - now)).await,
                Err(_) => {}
            }
        }
        Some(answered)
    }

    /// The gate of `node`, the window's number and end; `None` once the
    /// window has ended and no command waits at any gate (the window is
    /// then closed).
    fn gate(&self, node: &str) -> Option<(Arc<tokio::sync::Mutex<u64>>, u64, Instant)> {
        let mut w = self.state.lock();
        let until = w.until?;
        let number = w.number;
        if Instant::now() >= until {
            if w.nodes.values().all(|g| g.try_lock().is_ok()) {
                w.until = None;
                w.nodes = HashMap::new();
                self.open.store(false, Ordering::Release);
                return None;
            }
            // Commands still queued: a node's next one lines up behind them.
            return w.nodes.get(node).map(|g| (g.clone(), number, until));
        }
        let gate = match w.nodes.get(node) {
            Some(g) => g.clone(),
            None => {
                let g = Arc::new(tokio::sync::Mutex::new(0));
                w.nodes.insert(node.into(), g.clone());
                g
            }
        };
        Some((gate, number, until))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    /// Runs `op` in `node`'s turn, as a publish does.
    async fn in_turn<P, PF, T>(s: &Settle, node: &str, ping: P, op: impl FnOnce() -> T) -> T
    where
        P: Fn() -> PF,
        PF: Future<Output = bool>,
    {
        let _turn = s.turn(node, ping).await;
        op()
    }

    #[tokio::test(start_paused = true)]
    async fn outside_a_window_nothing_is_pinged() {
        let s = Settle::default();
        let pings = AtomicU32::new(0);
        let out = in_turn(&s, "n", || async { pings.fetch_add(1, Ordering::Relaxed) > 0 }, || 7).await;
        assert_eq!((out, pings.load(Ordering::Relaxed)), (7, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_is_pinged_until_it_answers_then_passes_freely() {
        let s = Settle::default();
        s.open(Duration::from_secs(3));
        let pings = AtomicU32::new(0);
        // Answers from the third ping on.
        let ping = || async { pings.fetch_add(1, Ordering::Relaxed) >= 2 };
        let t0 = Instant::now();
        in_turn(&s, "n", ping, || ()).await;
        assert_eq!(pings.load(Ordering::Relaxed), 3);
        assert!(t0.elapsed() < Duration::from_secs(1));
        in_turn(&s, "n", ping, || ()).await;
        assert_eq!(pings.load(Ordering::Relaxed), 3, "an answered node is not pinged again");
        // A new window: the node must answer again.
        s.open(Duration::from_secs(3));
        in_turn(&s, "n", ping, || ()).await;
        assert_eq!(pings.load(Ordering::Relaxed), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_node_costs_the_window_once() {
        let s = Settle::default();
        s.open(Duration::from_secs(2));
        let t0 = Instant::now();
        in_turn(&s, "dead", || async { false }, || ()).await;
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100),
            "{waited:?}"
        );
        let t1 = Instant::now();
        in_turn(&s, "dead", || async { false }, || ()).await;
        assert_eq!(t1.elapsed(), Duration::ZERO);
        assert!(!s.open.load(Ordering::Acquire), "the window closes once it ended");
    }

    /// Commands queued while the node is awaited, and one arriving after
    /// the window ended, go in arrival order.
    #[tokio::test(start_paused = true)]
    async fn commands_to_one_node_keep_their_order_across_the_window_end() {
        let s = Arc::new(Settle::default());
        s.open(Duration::from_secs(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (s, order) = (s.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let turn = s.turn("n", || async { false }).await;
                // Holds its turn a moment, as a slow publish would.
                tokio::time::sleep(Duration::from_millis(100)).await;
                order.lock().push(i);
                drop(turn);
            }));
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(order.lock().is_empty(), "nothing passes before the node answers");
        // After the window: the first queued command is in its turn now.
        tokio::time::sleep(Duration::from_millis(550)).await;
        let (s2, order2) = (s.clone(), order.clone());
        let late = tokio::spawn(async move {
            let _turn = s2.turn("n", || async { true }).await;
            order2.lock().push(5);
        });
        for t in tasks {
            assert!(t.await.is_ok());
        }
        assert!(late.await.is_ok());
        assert_eq!(*order.lock(), vec![0, 1, 2, 3, 4, 5]);
    }
}
