//! Open-loop send traffic and its accounting, shared by `unicast` and
//! `fanout`: sender tasks that count the gateway's replies, receiver tasks
//! that measure latency and check sequence numbers, the schedule, and the
//! wait for the tail of the run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{now_ns, Sink, Stream, Ws};
use crate::frames::Incoming;
use crate::report::{Latency, Report};

/// Longest wait for the answers and deliveries after the last send.
const SETTLE_LIMIT: Duration = Duration::from_secs(15);

/// Per-receiver accounting of sequence numbers.
pub(crate) struct Seen {
    pub(crate) lat: Latency,
    pub(crate) received: u64,
    pub(crate) duplicates: u64,
    pub(crate) out_of_order: u64,
}

impl Seen {
    fn new() -> Self {
        Self {
            lat: Latency::new(),
            received: 0,
            duplicates: 0,
            out_of_order: 0,
        }
    }
}

/// Reads deliveries of `mode` until the stream ends, or `stop` is set and
/// nothing came for 200 ms.
fn spawn_receiver(mut rx: Stream, mode: u16, stop: Arc<AtomicBool>, total: Arc<AtomicU64>) -> JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut seen = Seen::new();
        let mut last: HashMap<u64, u64> = HashMap::new();
        loop {
            let msg = match tokio::time::timeout(Duration::from_millis(200), rx.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(_) => break,
                Err(_) => {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    continue;
                }
            };
            let Some(d) = Incoming::parse(&msg) else { continue };
            if d.mode != mode {
                continue;
            }
            let (t, s, from) = (d.content.t, d.content.s, d.content.f);
            seen.lat.record_ns(now_ns().saturating_sub(t));
            seen.received += 1;
            total.fetch_add(1, Ordering::Relaxed);
            match last.get(&from) {
                Some(&prev) if s == prev => seen.duplicates += 1,
                Some(&prev) if s < prev => seen.out_of_order += 1,
                _ => {}
            }
            last.insert(from, s);
        }
        seen
    })
}

/// What the gateway acknowledged for a set of senders.
#[derive(Default)]
pub(crate) struct Acks {
    /// Mode-2 replies with code 0.
    pub(crate) ok: AtomicU64,
    /// Sum of their `recipients`: the deliveries the gateway promised.
    pub(crate) recipients: AtomicU64,
    /// Mode-2 replies with another code.
    pub(crate) errors: AtomicU64,
    /// Deliveries of the run's mode that reached senders (fellow group
    /// members' messages).
    pub(crate) delivered_to_senders: AtomicU64,
}

/// A writer task per sender: frames in, replies counted.
fn spawn_sender(mut tx: Sink, mut rx: Stream, acks: Arc<Acks>, mode: u16) -> mpsc::UnboundedSender<Message> {
    let (q, mut frames) = mpsc::unbounded_channel::<Message>();
    tokio::spawn(async move {
        while let Some(f) = frames.recv().await {
            if tx.send(f).await.is_err() {
                break;
            }
        }
        let _ = tx.close().await;
    });
    tokio::spawn(async move {
        while let Some(Ok(m)) = rx.next().await {
            let Some(v) = Incoming::parse(&m) else { continue };
            match v.reply() {
                Some(Ok(n)) => {
                    acks.ok.fetch_add(1, Ordering::Relaxed);
                    acks.recipients.fetch_add(n, Ordering::Relaxed);
                }
                Some(Err(_)) => {
                    acks.errors.fetch_add(1, Ordering::Relaxed);
                }
                None if v.mode == mode => {
                    acks.delivered_to_senders.fetch_add(1, Ordering::Relaxed);
                }
                None => {}
            }
        }
    });
    q
}

/// Waits (bounded) until every send is answered, then until deliveries
/// stop arriving; returns how long the answers took after the last send.
pub(crate) async fn settle(acks: &Acks, sent: u64, delivered: impl Fn() -> u64) -> Duration {
    let t0 = Instant::now();
    let deadline = t0 + SETTLE_LIMIT;
    while acks.ok.load(Ordering::Relaxed) + acks.errors.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answered = t0.elapsed();
    let mut last = delivered();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = delivered();
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    answered
}

/// Senders (with their acknowledgements) and receivers of a run.
pub(crate) struct Roles {
    /// Set when the run is over: receivers stop once quiet.
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) acks: Arc<Acks>,
    /// Deliveries all receivers got so far.
    pub(crate) total: Arc<AtomicU64>,
    pub(crate) senders: Vec<mpsc::UnboundedSender<Message>>,
    /// Each receiver's task, and its write half (kept open).
    pub(crate) receivers: Vec<(JoinHandle<Seen>, Sink)>,
}

/// Client `i` sends if `is_sender(i)`, else receives deliveries of `mode`.
///
/// # Errors
/// If a client is missing (its connect failed).
pub(crate) fn roles(clients: Vec<Option<Ws>>, is_sender: impl Fn(usize) -> bool, mode: u16) -> anyhow::Result<Roles> {
    let mut r = Roles {
        stop: Arc::new(AtomicBool::new(false)),
        acks: Arc::new(Acks::default()),
        total: Arc::new(AtomicU64::new(0)),
        senders: Vec::new(),
        receivers: Vec::new(),
    };
    for (i, ws) in clients.into_iter().enumerate() {
        let (tx, rx) = ws.context("missing client")?.split();
        if is_sender(i) {
            r.senders.push(spawn_sender(tx, rx, r.acks.clone(), mode));
        } else {
            let h = spawn_receiver(rx, mode, r.stop.clone(), r.total.clone());
            r.receivers.push((h, tx));
        }
    }
    Ok(r)
}

impl Roles {
    /// Stops the receivers once quiet and adds up what they saw; the
    /// senders stay connected until `self` is dropped.
    ///
    /// # Errors
    /// If a receiver task panicked.
    pub(crate) async fn finish(&mut self) -> anyhow::Result<Seen> {
        self.stop.store(true, Ordering::Release);
        let mut all = Seen::new();
        for (h, _tx) in self.receivers.drain(..) {
            let s = h.await?;
            all.lat.add(&s.lat);
            all.received += s.received;
            all.duplicates += s.duplicates;
            all.out_of_order += s.out_of_order;
        }
        Ok(all)
    }
}

/// Sends `total` frames open-loop at `rate`/s through `senders`
/// (round-robin), `burst` at a time. The scheduler never waits on the
/// system under test (it hands frames to unbounded per-sender queues), so
/// a stall of the gateway cannot slow the offered load: no coordinated
/// omission. The timestamp is taken at the hand-off, not at the intended
/// time, because tokio's timer wakes on a 1 ms grid and that jitter belongs
/// to the load generator. `frame(sender, sequence, now_ns)` builds a send.
/// Returns (frames sent, worst lag behind the schedule in µs).
pub(crate) async fn open_loop(
    rate: u64,
    burst: u64,
    duration: Duration,
    senders: &[mpsc::UnboundedSender<Message>],
    frame: impl Fn(usize, u64, u64) -> Message,
) -> (u64, u64) {
    let total = (rate as f64 * duration.as_secs_f64()) as u64;
    let start = Instant::now();
    let mut worst_lag = Duration::ZERO;
    for k in 0..total {
        let due = start + Duration::from_secs_f64((k - k % burst) as f64 / rate as f64);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep_until(due.into()).await;
        } else {
            worst_lag = worst_lag.max(now - due);
        }
        let i = (k as usize) % senders.len();
        let _ = senders[i].send(frame(i, k / senders.len() as u64, now_ns()));
    }
    (total, u64::try_from(worst_lag.as_micros()).unwrap_or(u64::MAX))
}

/// Records loss (promised deliveries that did not arrive) and saturation
/// (sends the gateway did not accept in time) as problems of the run.
pub(crate) fn check_delivery(r: &mut Report, promised: u64, received: u64, accepted: u64, sent: u64, what: &str) {
    if received < promised {
        r.problems
            .push(format!("{} promised deliveries lost", promised - received));
    }
    if accepted < sent {
        r.problems.push(format!(
            "{} of {sent} {what} not accepted (saturated or refused)",
            sent - accepted
        ));
    }
}
