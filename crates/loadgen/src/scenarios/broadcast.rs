//! `broadcast`: one broadcast at a time from one client to N others of the
//! same bizCode; reports the time from each send to its last delivery.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use switchboard_protocol::frame::{SendTarget, MODE_BROADCAST};

use crate::client::{now_ns, Stream};
use crate::common::Common;
use crate::frames::{self, Incoming, Probe};
use crate::open::open_many;
use crate::report::{Latency, Report};

/// Longest wait for one broadcast to reach every client.
const COMPLETE_WITHIN: Duration = Duration::from_secs(10);

/// Per repetition: deliveries so far and the latest arrival (ns of
/// [`now_ns`]).
struct Arrivals {
    count: Vec<AtomicU64>,
    last_ns: Vec<AtomicU64>,
}

/// Counts every receiver's deliveries of repetition `r` in `arrivals`.
fn spawn_receiver(mut rx: Stream, arrivals: Arc<Arrivals>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(Ok(m)) = rx.next().await {
            let Some(d) = Incoming::parse(&m) else { continue };
            if d.mode != MODE_BROADCAST {
                continue;
            }
            let rep = d.content.r.unwrap_or(u64::MAX) as usize;
            if rep < arrivals.count.len() {
                arrivals.last_ns[rep].fetch_max(now_ns(), Ordering::Relaxed);
                arrivals.count[rep].fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

/// Runs `broadcast`: `reps` broadcasts to `n` clients, at most `rate`/s.
pub(crate) async fn run(common: Common, n: usize, reps: usize, rate: u64) -> anyhow::Result<Report> {
    let opened = open_many(&common, n + 1, 0, |i| i, |i| common.query("b", i)).await;
    anyhow::ensure!(opened.failures == 0, "{} connections failed", opened.failures);
    let mut clients = opened.clients.into_iter();
    let sender = clients.next().flatten().context("missing sender")?;
    let arrivals = Arc::new(Arrivals {
        count: (0..reps).map(|_| AtomicU64::new(0)).collect(),
        last_ns: (0..reps).map(|_| AtomicU64::new(0)).collect(),
    });
    let mut tasks = Vec::new();
    for ws in clients {
        let (tx, rx) = ws.context("missing client")?.split();
        tasks.push((spawn_receiver(rx, arrivals.clone()), tx));
    }
    let (mut stx, mut srx) = sender.split();
    let errors = Arc::new(AtomicU64::new(0));
    let e2 = errors.clone();
    tokio::spawn(async move {
        while let Some(Ok(m)) = srx.next().await {
            if let Some(Some(Err(_))) = Incoming::parse(&m).map(|v| v.reply()) {
                e2.fetch_add(1, Ordering::Relaxed);
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
        let probe = Probe {
            t: sent_ns,
            r: Some(rep as u64),
            ..Probe::default()
        };
        stx.send(frames::send(SendTarget::Biz, rep.to_string(), probe.json()))
            .await
            .context("send broadcast")?;
        let deadline = Instant::now() + COMPLETE_WITHIN;
        while arrivals.count[rep].load(Ordering::Relaxed) < n as u64 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        if arrivals.count[rep].load(Ordering::Relaxed) < n as u64 {
            incomplete += 1;
        } else {
            lat.record_ns(arrivals.last_ns[rep].load(Ordering::Relaxed).saturating_sub(sent_ns));
        }
        let spent = t0.elapsed();
        if spent < interval {
            tokio::time::sleep(interval - spent).await;
        }
    }
    let run = run_start.elapsed();
    let mut r = Report::new("broadcast");
    r.set("clients", n);
    r.set("connect_seconds", opened.took.as_secs_f64());
    r.set("connect_to_welcome", opened.latency.summary());
    r.set("broadcasts", reps);
    r.set("broadcasts_per_sec", reps as f64 / run.as_secs_f64().max(1e-9));
    r.set("incomplete", incomplete);
    r.set("send_errors", errors.load(Ordering::Relaxed));
    r.set("time_to_last_delivery", lat.summary());
    if incomplete > 0 {
        r.problems.push(format!(
            "{incomplete} broadcasts did not reach every client within {COMPLETE_WITHIN:?}"
        ));
    }
    drop(tasks);
    Ok(r)
}
