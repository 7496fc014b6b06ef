//! `storm`: an edge dies under its clients and they all reconnect at once.
//!
//! N clients connect over `--targets`, then `--kill` runs (e.g.
//! `kill -9 <edge pid>`). Every client whose connection drops reconnects
//! with full-jitter exponential backoff, trying the targets in turn from
//! the one after its last (a client-side endpoint list; behind a load
//! balancer every target would be the balancer). After each welcome the
//! client asks for a probe: an API `send_to_clients` through the router,
//! which must arrive on the new connection. Reported: time until every
//! dropped client is registered (welcome) and reachable (probe arrived),
//! each client's first reconnect attempt → reachable, connect→welcome of
//! the reconnects, failed attempts, and presence drift (`get_online_list`
//! count minus the clients held) right away and after `--settle`, when the
//! routers have purged the dead edge; a last probe round then checks that
//! every client is still reachable. A probe the API counted as delivered
//! that never arrived (`probes_lost`) fails the run: SPEC §2 promises that
//! a send starting after the welcome reaches the client.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Mutex, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Ws};
use crate::report::{Latency, Report};
use crate::scenarios::{id, open_many, query};
use crate::Common;

/// `sendUserId` of the probes, so clients tell them from anything else.
const PROBE_FROM: &str = "storm-probe";
/// Most client ids in one `send_to_clients` (the API's default limit).
const PROBE_BATCH: usize = 1000;
/// Probe requests in flight at once.
const PROBES_IN_FLIGHT: usize = 4;

/// Full-jitter exponential backoff: attempt `k` (0 = the first reconnect)
/// waits a uniform random time in `[0, min(cap, base · 2^k)]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub(crate) base: Duration,
    pub(crate) cap: Duration,
}

impl Backoff {
    /// The upper bound of attempt `k`'s wait.
    fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(30));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait before attempt `k`.
    fn delay(&self, attempt: u32) -> Duration {
        self.ceiling(attempt).mul_f64(rand::random::<f64>())
    }
}

/// The storm's settings besides [`Common`].
pub(crate) struct StormOptions {
    pub(crate) clients: usize,
    /// Shell command that kills an edge.
    pub(crate) kill: String,
    pub(crate) backoff: Backoff,
    /// Longest one reconnect attempt may take (TCP connect to welcome).
    pub(crate) attempt_timeout: Duration,
    /// A probe not received after this is sent again.
    pub(crate) probe_timeout: Duration,
    /// Longest wait for every client to be reachable again.
    pub(crate) recover_timeout: Duration,
    /// Wait after recovery before the last drift check and probe round
    /// (longer than the routers' `node_timeout`).
    pub(crate) settle: Duration,
    pub(crate) api: String,
    pub(crate) api_key: String,
}

/// Where a client is.
const CONNECTED: u8 = 0;
const DOWN: u8 = 1;
const AWAITING_PROBE: u8 = 2;
const REACHABLE: u8 = 3;

/// One client's progress; times are ns since the kill (0: not yet).
#[derive(Default)]
struct Slot {
    state: AtomicU8,
    /// When it first noticed its connection was gone.
    lost_ns: AtomicU64,
    /// Its first reconnect attempt.
    first_attempt_ns: AtomicU64,
    /// Its welcome after the storm.
    registered_ns: AtomicU64,
    /// A probe arrived after that welcome.
    reachable_ns: AtomicU64,
    /// Last probe asked for (for re-probing).
    probed_ns: AtomicU64,
    /// The final round's probe arrived.
    final_probe: AtomicU8,
}

/// What every client task shares.
struct Shared {
    slots: Vec<Slot>,
    /// Set when the kill command starts.
    kill_at: std::sync::OnceLock<Instant>,
    probe_queue: mpsc::UnboundedSender<usize>,
    attempts: AtomicU64,
    refused: AtomicU64,
    timed_out: AtomicU64,
    other_failures: AtomicU64,
    closed_before_kill: AtomicU64,
    /// Client ids named in probe requests, and the recipients the API
    /// counted for them (fewer: it found some not online).
    probed_ids: AtomicU64,
    probe_recipients: AtomicU64,
    /// Storm probes that arrived (a re-probed client may get two).
    probes_received: AtomicU64,
    first_error: Mutex<Option<String>>,
    reconnect_latency: Mutex<Latency>,
}

impl Shared {
    /// ns since the kill, at least 1 (0 means "not yet").
    fn since_kill(&self) -> u64 {
        self.kill_at
            .get()
            .map(|t| u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1))
            .unwrap_or(1)
    }
}

/// `storm`: see the module documentation.
pub(crate) async fn storm(common: Common, o: StormOptions) -> anyhow::Result<Report> {
    anyhow::ensure!(o.clients > 0, "--clients must be positive");
    anyhow::ensure!(!o.kill.trim().is_empty(), "--kill is required");
    let (clients, initial_lat, failures, took) =
        open_many(&common, o.clients, 0, |i| i, |i| query(&common, "s", i)).await;
    anyhow::ensure!(failures == 0, "{failures} initial connections failed");
    eprintln!("storm: {} clients connected in {:.2}s", o.clients, took.as_secs_f64());

    let (probe_queue, probe_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        slots: (0..o.clients).map(|_| Slot::default()).collect(),
        kill_at: std::sync::OnceLock::new(),
        probe_queue,
        attempts: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        timed_out: AtomicU64::new(0),
        other_failures: AtomicU64::new(0),
        closed_before_kill: AtomicU64::new(0),
        probed_ids: AtomicU64::new(0),
        probe_recipients: AtomicU64::new(0),
        probes_received: AtomicU64::new(0),
        first_error: Mutex::new(None),
        reconnect_latency: Mutex::new(Latency::new()),
    });
    let ids: Arc<Vec<String>> = Arc::new((0..o.clients).map(|i| id(&common, "s", i)).collect());
    let mut tasks = JoinSet::new();
    tasks.spawn(run_prober(
        probe_rx,
        shared.clone(),
        ids.clone(),
        common.clone(),
        o.api.clone(),
        o.api_key.clone(),
    ));
    let endpoints = distinct(&common.targets);
    for (i, ws) in clients.into_iter().enumerate() {
        let ws = ws.context("missing client")?;
        let at = endpoints
            .iter()
            .position(|t| *t == common.targets[i % common.targets.len()])
            .unwrap_or(0);
        let ctx = ClientCtx {
            i,
            shared: shared.clone(),
            endpoints: endpoints.clone(),
            source: common.sources[i % common.sources.len()],
            query: query(&common, "s", i),
            backoff: o.backoff,
            attempt_timeout: o.attempt_timeout,
        };
        tasks.spawn(run_client(ctx, ws, at));
    }

    // The kill.
    let kill_at = Instant::now();
    let _ = shared.kill_at.set(kill_at);
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&o.kill)
        .status()
        .await
        .context("run --kill")?;
    anyhow::ensure!(status.success(), "--kill exited with {status}");

    // Wait until every dropped client is reachable again, re-probing
    // clients whose probe did not come.
    let mut probe_retries = 0u64;
    let deadline = kill_at + o.recover_timeout;
    let mut quiet_since = Instant::now();
    let mut last_dropped = 0;
    let recovered = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now_ns = shared.since_kill();
        let (mut down, mut pending) = (0usize, 0usize);
        for (i, s) in shared.slots.iter().enumerate() {
            match s.state.load(Ordering::Acquire) {
                DOWN => down += 1,
                AWAITING_PROBE => {
                    pending += 1;
                    let probed = s.probed_ns.load(Ordering::Relaxed);
                    if now_ns.saturating_sub(probed) > dur_ns(o.probe_timeout) {
                        s.probed_ns.store(now_ns, Ordering::Relaxed);
                        let _ = shared.probe_queue.send(i);
                        probe_retries += 1;
                        if probe_retries <= 5 {
                            eprintln!(
                                "storm: no probe for {} {:?} after its welcome, probing again",
                                ids[i], o.probe_timeout
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
        // Done when clients were dropped, all are back, and no new drop
        // was noticed for a moment (every socket of a killed process
        // closes at once).
        if dropped > 0 && down == 0 && pending == 0 && quiet_since.elapsed() > Duration::from_millis(500) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
    };

    let mut r = Report::new("storm");
    r.set("clients", o.clients);
    r.set("initial_connect_seconds", took.as_secs_f64());
    r.set("initial_connect_to_welcome", initial_lat.summary());
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
        json!({"base_ms": o.backoff.base.as_millis() as u64, "cap_ms": o.backoff.cap.as_millis() as u64}),
    );
    if victims.is_empty() {
        r.problems
            .push("no client lost its connection: did --kill kill an edge that held clients?".into());
    }
    let closed_early = shared.closed_before_kill.load(Ordering::Relaxed);
    if closed_early > 0 {
        r.problems
            .push(format!("{closed_early} connections closed before the kill"));
    }
    if !recovered {
        let missing = shared
            .slots
            .iter()
            .filter(|s| s.state.load(Ordering::Acquire) != REACHABLE && s.state.load(Ordering::Acquire) != CONNECTED)
            .count();
        r.problems.push(format!(
            "{missing} clients not reachable {:?} after the kill",
            o.recover_timeout
        ));
        tasks.abort_all();
        return Ok(r);
    }

    let held = o.clients as i64;
    let drift_now = crate::api::online_count(&o.api, &o.api_key, &common.biz)
        .await
        .map(|n| n - held);
    r.set(
        "presence_drift_at_recovery",
        drift_now.as_ref().map(|d| json!(d)).unwrap_or(Value::Null),
    );
    // Past the routers' node timeout: the dead edge's entries are purged,
    // the clients' new ones must survive it.
    tokio::time::sleep(o.settle).await;
    let drift = crate::api::online_count(&o.api, &o.api_key, &common.biz)
        .await
        .context("presence check after --settle")?
        - held;
    r.set("settle_seconds", o.settle.as_secs_f64());
    // Counted after the settle: a probe that was late, not lost, is in.
    // SPEC §2: a send that starts after the welcome reaches the client, so
    // a probe the API counted as a recipient and that never came is lost.
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
    r.set("presence_drift", drift);
    if drift != 0 {
        r.problems.push(format!(
            "presence drift {drift} after --settle (get_online_list count minus the {held} clients held)"
        ));
    }
    let (missing, recipients) = final_probe_round(&shared, &ids, &common, &o).await?;
    r.set("final_probe_recipients", recipients);
    r.set("final_probe_missing", missing);
    if missing > 0 {
        r.problems.push(format!(
            "{missing} clients did not get the final probe (after --settle)"
        ));
    }
    tasks.abort_all();
    Ok(r)
}

fn dur_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The targets without repeats, in order (a target listed twice gets twice
/// the initial clients, but is tried once in a reconnect round).
fn distinct(targets: &[String]) -> Arc<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for t in targets {
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    Arc::new(out)
}

/// What one client task needs.
struct ClientCtx {
    i: usize,
    shared: Arc<Shared>,
    endpoints: Arc<Vec<String>>,
    source: IpAddr,
    query: String,
    backoff: Backoff,
    attempt_timeout: Duration,
}

/// Holds a connection, reading probes; when it drops, reconnects with
/// backoff and asks for a probe after the welcome.
async fn run_client(ctx: ClientCtx, mut ws: Ws, mut at: usize) {
    let slot = &ctx.shared.slots[ctx.i];
    loop {
        read_until_closed(&ctx, &mut ws).await;
        // Its socket goes now, not when the new one is in: 10k clients
        // reconnecting at once would otherwise hold two descriptors each.
        drop(ws);
        if ctx.shared.kill_at.get().is_none() {
            ctx.shared.closed_before_kill.fetch_add(1, Ordering::Relaxed);
        }
        slot.state.store(DOWN, Ordering::Release);
        if slot.lost_ns.load(Ordering::Relaxed) == 0 {
            slot.lost_ns.store(ctx.shared.since_kill(), Ordering::Relaxed);
        }
        let mut attempt = 0u32;
        ws = loop {
            tokio::time::sleep(ctx.backoff.delay(attempt)).await;
            attempt = attempt.saturating_add(1);
            at = (at + 1) % ctx.endpoints.len();
            let started = ctx.shared.since_kill();
            let _ = slot
                .first_attempt_ns
                .compare_exchange(0, started, Ordering::Relaxed, Ordering::Relaxed);
            ctx.shared.attempts.fetch_add(1, Ordering::Relaxed);
            let tried = tokio::time::timeout(
                ctx.attempt_timeout,
                client::connect(&ctx.endpoints[at], ctx.source, &ctx.query),
            )
            .await;
            match tried {
                Ok(Ok((ws, took))) => {
                    ctx.shared.reconnect_latency.lock().await.record(took);
                    break ws;
                }
                Ok(Err(e)) => count_failure(&ctx.shared, &e).await,
                Err(_) => {
                    ctx.shared.timed_out.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        let now = ctx.shared.since_kill();
        slot.registered_ns.store(now, Ordering::Relaxed);
        slot.probed_ns.store(now, Ordering::Relaxed);
        slot.state.store(AWAITING_PROBE, Ordering::Release);
        let _ = ctx.shared.probe_queue.send(ctx.i);
    }
}

/// Reads until the connection ends, marking probes as they arrive.
async fn read_until_closed(ctx: &ClientCtx, ws: &mut Ws) {
    let slot = &ctx.shared.slots[ctx.i];
    while let Some(Ok(m)) = ws.next().await {
        let Message::Text(t) = &m else { continue };
        let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
            continue;
        };
        if v["mode"] != 100 || v["from"] != PROBE_FROM {
            continue;
        }
        if v["content"]["data"]["final"] == true {
            slot.final_probe.store(1, Ordering::Release);
            continue;
        }
        ctx.shared.probes_received.fetch_add(1, Ordering::Relaxed);
        if slot.state.load(Ordering::Acquire) == AWAITING_PROBE {
            slot.reachable_ns.store(ctx.shared.since_kill(), Ordering::Relaxed);
            slot.state.store(REACHABLE, Ordering::Release);
        }
    }
}

async fn count_failure(shared: &Shared, e: &anyhow::Error) {
    let refused = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    });
    if refused {
        shared.refused.fetch_add(1, Ordering::Relaxed);
    } else {
        shared.other_failures.fetch_add(1, Ordering::Relaxed);
        shared.first_error.lock().await.get_or_insert_with(|| format!("{e:#}"));
    }
}

/// Sends a probe to every client queued, in `send_to_clients` batches.
async fn run_prober(
    mut queue: mpsc::UnboundedReceiver<usize>,
    shared: Arc<Shared>,
    ids: Arc<Vec<String>>,
    common: Common,
    api: String,
    key: String,
) {
    let in_flight = Arc::new(Semaphore::new(PROBES_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < PROBE_BATCH {
            match queue.try_recv() {
                Ok(i) => batch.push(i),
                Err(_) => break,
            }
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let body = probe_body(&ids, &batch, false);
        let (api, key, biz, shared) = (api.clone(), key.clone(), common.biz.clone(), shared.clone());
        let named = batch.len() as u64;
        tokio::spawn(async move {
            match crate::api::post(&api, &key, &biz, "send_to_clients", &body).await {
                Ok(v) => {
                    shared.probed_ids.fetch_add(named, Ordering::Relaxed);
                    let n = v["data"]["recipients"].as_u64().unwrap_or(0);
                    shared.probe_recipients.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    let mut first = shared.first_error.lock().await;
                    first.get_or_insert_with(|| format!("probe: {e:#}"));
                }
            }
            drop(permit);
        });
    }
}

fn probe_body(ids: &[String], batch: &[usize], last: bool) -> Value {
    let list: Vec<&str> = batch.iter().map(|&i| ids[i].as_str()).collect();
    json!({"clientIds": list, "sendUserId": PROBE_FROM, "code": 0, "msg": "probe", "data": {"final": last}})
}

/// One more probe to every client: (clients that did not get it within a
/// few seconds, recipients the API counted).
async fn final_probe_round(
    shared: &Shared,
    ids: &[String],
    common: &Common,
    o: &StormOptions,
) -> anyhow::Result<(usize, u64)> {
    let all: Vec<usize> = (0..ids.len()).collect();
    let mut recipients = 0;
    for chunk in all.chunks(PROBE_BATCH) {
        let body = probe_body(ids, chunk, true);
        let v = crate::api::post(&o.api, &o.api_key, &common.biz, "send_to_clients", &body)
            .await
            .context("final probe")?;
        recipients += v["data"]["recipients"].as_u64().unwrap_or(0);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let missing = shared
            .slots
            .iter()
            .filter(|s| s.final_probe.load(Ordering::Acquire) == 0)
            .count();
        if missing == 0 || Instant::now() > deadline {
            return Ok((missing, recipients));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_under_a_growing_capped_ceiling() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        };
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(1), Duration::from_millis(200));
        assert_eq!(b.ceiling(4), Duration::from_millis(1600));
        assert_eq!(b.ceiling(5), Duration::from_secs(2), "capped");
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(2), "no overflow");
        let delays: Vec<Duration> = (0..1000).map(|_| b.delay(3)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(800)));
        // Spread over the whole window, not bunched at its end.
        assert!(delays.iter().any(|d| *d < Duration::from_millis(200)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(600)));
    }

    #[test]
    fn reconnects_try_each_target_once_per_round() {
        let t = distinct(&["a".into(), "a".into(), "b".into()]);
        assert_eq!(*t, vec!["a".to_owned(), "b".to_owned()]);
    }
}
