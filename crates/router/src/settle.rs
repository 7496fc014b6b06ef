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
//! purges) costs each caller the rest of the window once, then commands to
//! it pass again. Commands to one node keep their order: they queue on a
//! per-node lock, taken only while the window is open. Outside the window
//! the cost is one atomic load per command.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// How long one ping waits for its answer before the next one.
const PING_PATIENCE: Duration = Duration::from_millis(250);
/// Pause after a ping found no subscriber (NATS answers that at once).
const PING_PAUSE: Duration = Duration::from_millis(25);

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
    /// Per node: whether it answered (or the window gave up on it); the
    /// lock orders its commands while the window is open.
    nodes: HashMap<Arc<str>, Arc<tokio::sync::Mutex<bool>>>,
}

impl Settle {
    /// Opens a window of `length` from now; nodes must answer again.
    pub(crate) fn open(&self, length: Duration) {
        let mut w = self.state.lock();
        w.until = Some(Instant::now() + length);
        w.nodes.clear();
        self.open.store(true, Ordering::Release);
    }

    /// Runs `op` for `node`: at once outside a window; inside one, after
    /// the node answered `ping` (or the window ended), in arrival order.
    pub(crate) async fn gated<T, P, PF, O, OF>(&self, node: &str, ping: P, op: O) -> T
    where
        P: Fn() -> PF,
        PF: Future<Output = bool>,
        O: FnOnce() -> OF,
        OF: Future<Output = T>,
    {
        if !self.open.load(Ordering::Acquire) {
            return op().await;
        }
        let Some((gate, until)) = self.gate(node) else {
            return op().await;
        };
        let mut reached = gate.lock().await;
        while !*reached {
            let now = Instant::now();
            if now >= until {
                tracing::debug!(node_id = %node, "node did not answer after the bus came back; sending anyway");
                *reached = true;
                break;
            }
            match tokio::time::timeout(PING_PATIENCE.min(until - now), ping()).await {
                Ok(true) => *reached = true,
                Ok(false) => tokio::time::sleep(PING_PAUSE.min(until - now)).await,
                Err(_) => {}
            }
        }
        op().await
    }

    /// The gate of `node` and the window's end, or `None` (and the window
    /// closed) once it has ended.
    fn gate(&self, node: &str) -> Option<(Arc<tokio::sync::Mutex<bool>>, Instant)> {
        let mut w = self.state.lock();
        let until = w.until?;
        if Instant::now() >= until {
            w.until = None;
            w.nodes = HashMap::new();
            self.open.store(false, Ordering::Release);
            return None;
        }
        let gate = match w.nodes.get(node) {
            Some(g) => g.clone(),
            None => {
                let g = Arc::new(tokio::sync::Mutex::new(false));
                w.nodes.insert(node.into(), g.clone());
                g
            }
        };
        Some((gate, until))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn outside_a_window_nothing_is_pinged() {
        let s = Settle::default();
        let pings = AtomicU32::new(0);
        let out = s
            .gated(
                "n",
                || async { pings.fetch_add(1, Ordering::Relaxed) > 0 },
                || async { 7 },
            )
            .await;
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
        s.gated("n", ping, || async {}).await;
        assert_eq!(pings.load(Ordering::Relaxed), 3);
        assert!(t0.elapsed() < Duration::from_secs(1));
        s.gated("n", ping, || async {}).await;
        assert_eq!(pings.load(Ordering::Relaxed), 3, "an answered node is not pinged again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_node_costs_the_window_once() {
        let s = Settle::default();
        s.open(Duration::from_secs(2));
        let t0 = Instant::now();
        s.gated("dead", || async { false }, || async {}).await;
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100),
            "{waited:?}"
        );
        let t1 = Instant::now();
        s.gated("dead", || async { false }, || async {}).await;
        assert_eq!(t1.elapsed(), Duration::ZERO);
        assert!(!s.open.load(Ordering::Acquire), "the window closes once it ended");
    }

    #[tokio::test(start_paused = true)]
    async fn commands_to_one_node_keep_their_order_while_it_is_awaited() {
        let s = Arc::new(Settle::default());
        s.open(Duration::from_secs(3));
        let order = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (s, order, answers) = (s.clone(), order.clone(), answers.clone());
            tasks.push(tokio::spawn(async move {
                let ping = || {
                    let answers = answers.clone();
                    async move { answers.load(Ordering::Relaxed) }
                };
                s.gated("n", ping, || async { order.lock().push(i) }).await;
            }));
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(order.lock().is_empty(), "nothing passes before the node answers");
        answers.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap_or_default();
        }
        assert_eq!(*order.lock(), vec![0, 1, 2, 3, 4]);
    }
}
