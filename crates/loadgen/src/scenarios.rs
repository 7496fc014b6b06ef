//! The scenarios. Each one opens its clients, runs bounded in count and
//! time, and returns a [`Report`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{mpsc, Mutex, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, now_ns, Sink, Stream, Ws};
use crate::report::{Latency, Report};
use crate::Common;

/// Opens `n` clients; client `i` gets `query(i)` and target/source by `i`.
pub(crate) async fn open_many(
    common: &Common,
    n: usize,
    rate: u64,
    target_of: impl Fn(usize) -> usize,
    query: impl Fn(usize) -> String,
) -> (Vec<Option<Ws>>, Latency, usize, Duration) {
    let sem = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let mut set = JoinSet::new();
    let started = Instant::now();
    for i in 0..n {
        if rate > 0 {
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let target = common.targets[target_of(i) % common.targets.len()].clone();
        let source = common.sources[i % common.sources.len()];
        let q = query(i);
        set.spawn(async move {
            let r = client::connect(&target, source, &q).await;
            drop(permit);
            (i, r)
        });
    }
    let mut out: Vec<Option<Ws>> = (0..n).map(|_| None).collect();
    let mut lat = Latency::new();
    let mut failures = 0;
    let mut first_error = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok((i, Ok((ws, d)))) => {
                lat.record(d);
                out[i] = Some(ws);
            }
            Ok((_, Err(e))) => {
                failures += 1;
                first_error.get_or_insert(format!("{e:#}"));
            }
            Err(e) => {
                failures += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    if let Some(e) = first_error {
        eprintln!("loadgen: {failures} connection(s) failed, first: {e}");
    }
    (out, lat, failures, started.elapsed())
}

pub(crate) fn id(common: &Common, kind: &str, i: usize) -> String {
    format!("{}-{kind}{i}", common.prefix)
}

/// The handshake query of client `i` of a kind.
pub(crate) fn query(common: &Common, kind: &str, i: usize) -> String {
    format!("bizCode={}&clientId={}", common.biz, id(common, kind, i))
}

/// `idle`: open, hold, report connect rate and connect→welcome latency.
pub(crate) async fn idle(common: Common, n: usize, rate: u64, hold: Duration) -> anyhow::Result<Report> {
    let (clients, lat, failures, took) = open_many(&common, n, rate, |i| i, |i| query(&common, "i", i)).await;
    let open = clients.iter().filter(|c| c.is_some()).count();
    let mut r = Report::new("idle");
    r.set("connections", open);
    r.set("failures", failures);
    r.set("connect_seconds", took.as_secs_f64());
    r.set("connects_per_sec", open as f64 / took.as_secs_f64().max(1e-9));
    r.set("connect_to_welcome", lat.summary());
    if failures > 0 {
        r.problems.push(format!("{failures} connections failed"));
    }
    eprintln!("READY {open}");
    tokio::time::sleep(hold).await;
    drop(clients);
    Ok(r)
}

/// Per-receiver accounting of sequence numbers.
struct Seen {
    lat: Latency,
    received: u64,
    duplicates: u64,
    out_of_order: u64,
}

fn spawn_receiver(
    mut rx: Stream,
    expect_mode: u64,
    stop: Arc<AtomicUsize>,
    total: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut seen = Seen {
            lat: Latency::new(),
            received: 0,
            duplicates: 0,
            out_of_order: 0,
        };
        let mut last: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
        loop {
            let msg = match tokio::time::timeout(Duration::from_millis(200), rx.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(_) => break,
                Err(_) => {
                    if stop.load(Ordering::Acquire) == 1 {
                        break;
                    }
                    continue;
                }
            };
            let Some(d) = client::delivery(&msg) else { continue };
            if u64::from(d.mode) != expect_mode {
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
struct Acks {
    /// Mode-2 replies with code 0.
    ok: AtomicU64,
    /// Sum of their `recipients`: the deliveries the gateway promised.
    recipients: AtomicU64,
    /// Mode-2 replies with another code.
    errors: AtomicU64,
    /// Deliveries of the run's mode that reached senders (fellow group
    /// members' messages).
    delivered_to_senders: AtomicU64,
}

/// A writer task per sender: frames in, replies counted.
fn spawn_sender(mut tx: Sink, mut rx: Stream, acks: Arc<Acks>, mode: u64) -> mpsc::UnboundedSender<String> {
    let (q, mut frames) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(f) = frames.recv().await {
            if tx.send(Message::text(f)).await.is_err() {
                break;
            }
        }
        let _ = tx.close().await;
    });
    tokio::spawn(async move {
        while let Some(Ok(m)) = rx.next().await {
            if let Some(v) = client::json(&m) {
                if v["mode"] == 2 {
                    if v["code"] == 0 {
                        acks.ok.fetch_add(1, Ordering::Relaxed);
                        let n = v["data"]["recipients"].as_u64().unwrap_or(0);
                        acks.recipients.fetch_add(n, Ordering::Relaxed);
                    } else {
                        acks.errors.fetch_add(1, Ordering::Relaxed);
                    }
                } else if v["mode"] == mode {
                    acks.delivered_to_senders.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    q
}

/// Waits (bounded) until every send is answered, then until deliveries
/// stop arriving; returns how long the answers took after the last send.
async fn settle(acks: &Acks, sent: u64, delivered: impl Fn() -> u64) -> Duration {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(15);
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
struct Roles {
    stop: Arc<AtomicUsize>,
    acks: Arc<Acks>,
    total: Arc<AtomicU64>,
    senders: Vec<mpsc::UnboundedSender<String>>,
    /// Each receiver's task, and its write half (kept open).
    receivers: Vec<(tokio::task::JoinHandle<Seen>, Sink)>,
}

/// Client `i` sends if `is_sender(i)`, else receives deliveries of `mode`.
fn roles(clients: Vec<Option<Ws>>, is_sender: impl Fn(usize) -> bool, mode: u64) -> anyhow::Result<Roles> {
    let mut r = Roles {
        stop: Arc::new(AtomicUsize::new(0)),
        acks: Arc::new(Acks::default()),
        total: Arc::new(AtomicU64::new(0)),
        senders: Vec::new(),
        receivers: Vec::new(),
    };
    for (i, ws) in clients.into_iter().enumerate() {
        let (tx, rx) = split(ws.context("missing client")?);
        if is_sender(i) {
            r.senders.push(spawn_sender(tx, rx, r.acks.clone(), mode));
        } else {
            let h = spawn_receiver(rx, mode, r.stop.clone(), r.total.clone());
            r.receivers.push((h, tx));
        }
    }
    Ok(r)
}

fn split(ws: Ws) -> (Sink, Stream) {
    ws.split()
}

/// Sends `total` frames open-loop at `rate`/s through `senders`
/// (round-robin), `burst` at a time. The scheduler never waits on the system under test (it
/// hands frames to unbounded per-sender queues), so a stall of the gateway
/// cannot slow the offered load: no coordinated omission. The timestamp is
/// taken at the hand-off, not at the intended time, because tokio's timer
/// wakes on a 1 ms grid and that jitter belongs to the load generator.
/// Returns (frames sent, worst lag behind the schedule in µs).
async fn open_loop(
    rate: u64,
    burst: u64,
    duration: Duration,
    senders: &[mpsc::UnboundedSender<String>],
    frame: impl Fn(usize, u64, u64) -> String,
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

/// `unicast`: pairs across targets 0 and 1, open-loop at `rate`.
pub(crate) async fn unicast(
    common: Common,
    pairs: usize,
    rate: u64,
    duration: Duration,
    size: usize,
) -> anyhow::Result<Report> {
    let n = pairs * 2;
    // Even: senders on target 0; odd: receivers on target 1.
    let (clients, _, failures, _) = open_many(&common, n, 0, |i| i % 2, |i| query(&common, "u", i)).await;
    anyhow::ensure!(failures == 0, "{failures} connections failed");
    let Roles {
        stop,
        acks,
        total,
        senders,
        receivers,
    } = roles(clients, |i| i % 2 == 0, 100)?;
    let pad = "x".repeat(size);
    let biz_prefix = common.prefix.clone();
    let (sent, lag_us) = open_loop(rate, 1, duration, &senders, |i, s, t| {
        json!({"mode":100,"msgId":s.to_string(),"targetClientId":format!("{biz_prefix}-u{}", 2 * i + 1),
               "content":{"t":t,"s":s,"f":i,"p":pad}})
        .to_string()
    })
    .await;
    let tail = settle(&acks, sent, || total.load(Ordering::Relaxed)).await;
    stop.store(1, Ordering::Release);
    let mut lat = Latency::new();
    let (mut received, mut dups, mut ooo) = (0, 0, 0);
    for (h, _tx) in receivers {
        let s = h.await?;
        lat.add(&s.lat);
        received += s.received;
        dups += s.duplicates;
        ooo += s.out_of_order;
    }
    let mut r = Report::new("unicast");
    r.set("pairs", pairs);
    r.set("offered_rate", rate);
    let accepted = acks.ok.load(Ordering::Relaxed);
    let promised = acks.recipients.load(Ordering::Relaxed);
    r.set("sent", sent);
    r.set("accepted", accepted);
    r.set(
        "unanswered",
        sent.saturating_sub(accepted + acks.errors.load(Ordering::Relaxed)),
    );
    r.set("received", received);
    r.set("lost", promised.saturating_sub(received));
    r.set("duplicates", dups);
    r.set("out_of_order", ooo);
    r.set("send_errors", acks.errors.load(Ordering::Relaxed));
    r.set("schedule_lag_max_us", lag_us);
    r.set("answers_done_after_ms", tail.as_millis() as u64);
    r.set("latency", lat.summary());
    check_delivery(&mut r, promised, received, accepted, sent, "sends");
    Ok(r)
}

/// The groups of a `fanout` run.
pub(crate) struct FanoutShape {
    pub(crate) groups: usize,
    pub(crate) size: usize,
    /// Members of each group that send.
    pub(crate) senders: usize,
    /// Sends fired together per tick.
    pub(crate) burst: u64,
}

/// `fanout`: groups split across targets, `senders` members of each send.
pub(crate) async fn fanout(
    common: Common,
    shape: FanoutShape,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<Report> {
    let FanoutShape {
        groups,
        size,
        senders: per_group,
        burst,
    } = shape;
    anyhow::ensure!(size >= 2, "--group-size must be at least 2");
    anyhow::ensure!(
        (1..size).contains(&per_group),
        "--senders-per-group must be at least 1 and below --group-size"
    );
    anyhow::ensure!(burst >= 1, "--burst must be at least 1");
    let n = groups * size;
    let (clients, _, failures, _) = open_many(
        &common,
        n,
        0,
        |i| i,
        |i| {
            let g = i / size;
            format!(
                "bizCode={}&clientId={}&group={}-g{g}",
                common.biz,
                id(&common, "f", i),
                common.prefix
            )
        },
    )
    .await;
    anyhow::ensure!(failures == 0, "{failures} connections failed");
    let Roles {
        stop,
        acks,
        total,
        senders,
        receivers,
    } = roles(clients, |i| i % size < per_group, 200)?;
    let prefix = common.prefix.clone();
    let started = Instant::now();
    let (sent, lag_us) = open_loop(rate, burst, duration, &senders, |i, s, t| {
        let g = i / per_group;
        json!({"mode":200,"msgId":s.to_string(),"group":format!("{prefix}-g{g}"),"content":{"t":t,"s":s,"f":i}})
            .to_string()
    })
    .await;
    let send_window = started.elapsed();
    let to_senders = || acks.delivered_to_senders.load(Ordering::Relaxed);
    settle(&acks, sent, || total.load(Ordering::Relaxed) + to_senders()).await;
    stop.store(1, Ordering::Release);
    let mut lat = Latency::new();
    // Senders also get their fellow senders' messages (counted, no latency).
    let (mut received, mut dups) = (to_senders(), 0);
    for (h, _tx) in receivers {
        let s = h.await?;
        lat.add(&s.lat);
        received += s.received;
        dups += s.duplicates;
    }
    let expected = acks.recipients.load(Ordering::Relaxed);
    let accepted = acks.ok.load(Ordering::Relaxed);
    let mut r = Report::new("fanout");
    r.set("groups", groups);
    r.set("group_size", size);
    r.set("senders_per_group", per_group);
    r.set("burst", burst);
    r.set("group_sends", sent);
    r.set("accepted", accepted);
    r.set("expected_deliveries", expected);
    r.set("deliveries", received);
    r.set("lost", expected.saturating_sub(received));
    r.set("duplicates", dups);
    r.set(
        "deliveries_per_sec",
        received as f64 / send_window.as_secs_f64().max(1e-9),
    );
    r.set("schedule_lag_max_us", lag_us);
    r.set("send_errors", acks.errors.load(Ordering::Relaxed));
    r.set("latency", lat.summary());
    check_delivery(&mut r, expected, received, accepted, sent, "group sends");
    Ok(r)
}

/// Records loss (promised deliveries that did not arrive) and saturation
/// (sends the gateway did not accept in time) as problems of the run.
fn check_delivery(r: &mut Report, promised: u64, received: u64, accepted: u64, sent: u64, what: &str) {
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

/// `broadcast`: one broadcast at a time to `n` clients; time to the last
/// delivery per broadcast.
pub(crate) async fn broadcast(common: Common, n: usize, reps: usize, rate: u64) -> anyhow::Result<Report> {
    let (clients, lat_connect, failures, took) = open_many(&common, n + 1, 0, |i| i, |i| query(&common, "b", i)).await;
    anyhow::ensure!(failures == 0, "{failures} connections failed");
    let mut clients = clients.into_iter();
    let sender = clients.next().flatten().context("missing sender")?;
    // Per repetition: arrivals and the latest arrival time.
    let arrivals: Arc<Vec<AtomicU64>> = Arc::new((0..reps).map(|_| AtomicU64::new(0)).collect());
    let last: Arc<Vec<AtomicU64>> = Arc::new((0..reps).map(|_| AtomicU64::new(0)).collect());
    let mut tasks = Vec::new();
    for ws in clients {
        let (tx, mut rx) = split(ws.context("missing client")?);
        let (arrivals, last) = (arrivals.clone(), last.clone());
        tasks.push((
            tokio::spawn(async move {
                while let Some(Ok(m)) = rx.next().await {
                    let Some(d) = client::delivery(&m) else { continue };
                    if d.mode != 300 {
                        continue;
                    }
                    let rep = d.content.r.unwrap_or(u64::MAX) as usize;
                    if rep < arrivals.len() {
                        last[rep].fetch_max(now_ns(), Ordering::Relaxed);
                        arrivals[rep].fetch_add(1, Ordering::Relaxed);
                    }
                }
            }),
            tx,
        ));
    }
    let (mut stx, srx) = split(sender);
    let errors = Arc::new(AtomicU64::new(0));
    let e2 = errors.clone();
    tokio::spawn(async move {
        let mut srx = srx;
        while let Some(Ok(m)) = srx.next().await {
            if let Some(v) = client::json(&m) {
                if v["mode"] == 2 && v["code"] != 0 {
                    e2.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    let mut lat = Latency::new();
    let mut incomplete = 0;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let run_start = Instant::now();
    for rep in 0..reps {
        let t0 = Instant::now();
        let sent_ns = now_ns();
        stx.send(Message::text(
            json!({"mode":300,"msgId":rep.to_string(),"content":{"r":rep,"t":sent_ns}}).to_string(),
        ))
        .await
        .context("send broadcast")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while arrivals[rep].load(Ordering::Relaxed) < n as u64 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        if arrivals[rep].load(Ordering::Relaxed) < n as u64 {
            incomplete += 1;
        } else {
            lat.record_ns(last[rep].load(Ordering::Relaxed).saturating_sub(sent_ns));
        }
        let spent = t0.elapsed();
        if spent < interval {
            tokio::time::sleep(interval - spent).await;
        }
    }
    let run = run_start.elapsed();
    let mut r = Report::new("broadcast");
    r.set("clients", n);
    r.set("connect_seconds", took.as_secs_f64());
    r.set("connect_to_welcome", lat_connect.summary());
    r.set("broadcasts", reps);
    r.set("broadcasts_per_sec", reps as f64 / run.as_secs_f64().max(1e-9));
    r.set("incomplete", incomplete);
    r.set("send_errors", errors.load(Ordering::Relaxed));
    r.set("time_to_last_delivery", lat.summary());
    if incomplete > 0 {
        r.problems.push(format!(
            "{incomplete} broadcasts did not reach every client within 10 s"
        ));
    }
    drop(tasks);
    Ok(r)
}

/// `churn`: connect and disconnect at `rate`/s around a pool; presence
/// drift from `get_online_list` at the end must be 0.
pub(crate) async fn churn(
    common: Common,
    pool: usize,
    rate: u64,
    duration: Duration,
    api: String,
    key: String,
) -> anyhow::Result<Report> {
    let (initial, _, failures0, _) = open_many(&common, pool, 0, |i| i, |i| query(&common, "c", i)).await;
    let live: Arc<Mutex<VecDeque<Ws>>> = Arc::new(Mutex::new(initial.into_iter().flatten().collect()));
    let connects = Arc::new(AtomicU64::new(0));
    let disconnects = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(failures0 as u64));
    let lat = Arc::new(Mutex::new(Latency::new()));
    let sem = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let start = Instant::now();
    let total = (rate as f64 * duration.as_secs_f64()) as usize;
    let mut set = JoinSet::new();
    for k in 0..total {
        tokio::time::sleep_until((start + Duration::from_secs_f64(k as f64 / rate as f64)).into()).await;
        // One disconnect...
        if let Some(mut old) = live.lock().await.pop_front() {
            let d = disconnects.clone();
            set.spawn(async move {
                let _ = old.close(None).await;
                d.fetch_add(1, Ordering::Relaxed);
            });
        }
        // ...and one connect.
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let i = pool + k;
        let target = common.targets[i % common.targets.len()].clone();
        let source = common.sources[i % common.sources.len()];
        let q = query(&common, "c", i);
        let (live, connects, failures, lat) = (live.clone(), connects.clone(), failures.clone(), lat.clone());
        set.spawn(async move {
            match client::connect(&target, source, &q).await {
                Ok((ws, d)) => {
                    lat.lock().await.record(d);
                    connects.fetch_add(1, Ordering::Relaxed);
                    live.lock().await.push_back(ws);
                }
                Err(_) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        });
    }
    while set.join_next().await.is_some() {}
    let churned = start.elapsed();
    // Close everything, then presence must be empty.
    let rest: Vec<Ws> = live.lock().await.drain(..).collect();
    let remaining = rest.len();
    let mut closing = JoinSet::new();
    for mut ws in rest {
        closing.spawn(async move {
            let _ = ws.close(None).await;
        });
    }
    while closing.join_next().await.is_some() {}
    let mut drift = -1i64;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match crate::api::online_count(&api, &key, &common.biz).await {
            Ok(n) => {
                drift = n;
                if n == 0 {
                    break;
                }
            }
            Err(e) => eprintln!("loadgen: presence check failed: {e:#}"),
        }
    }
    let mut r = Report::new("churn");
    r.set("pool", pool);
    r.set("rate", rate);
    r.set("churn_seconds", churned.as_secs_f64());
    r.set("connects", connects.load(Ordering::Relaxed));
    r.set("disconnects", disconnects.load(Ordering::Relaxed));
    r.set("closed_at_end", remaining);
    r.set("failures", failures.load(Ordering::Relaxed));
    r.set("connect_to_welcome", lat.lock().await.summary());
    r.set("presence_drift", drift);
    if drift != 0 {
        r.problems.push(format!(
            "presence drift {drift} (get_online_list after all clients left)"
        ));
    }
    if failures.load(Ordering::Relaxed) > 0 {
        r.problems
            .push(format!("{} connects failed", failures.load(Ordering::Relaxed)));
    }
    Ok(r)
}
