//! `churn`: connects and disconnects at a fixed rate around a pool of open
//! connections; once every client has left, the presence count from
//! `get_online_list` must come back to 0 (presence drift).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

use crate::client::{self, Ws};
use crate::common::Common;
use crate::open::open_many;
use crate::report::{Latency, Report};

/// Connections of the run and their counts, shared by the connect tasks.
struct Churned {
    live: Mutex<VecDeque<Ws>>,
    connects: AtomicU64,
    disconnects: AtomicU64,
    failures: AtomicU64,
    latency: Mutex<Latency>,
}

/// Runs `churn`: `rate` connects and as many disconnects per second for
/// `duration`, around `pool` connections; presence is read from the HTTP
/// API at `api` (router or standalone) with `key`.
pub(crate) async fn run(
    common: Common,
    pool: usize,
    rate: u64,
    duration: Duration,
    api: String,
    key: String,
) -> anyhow::Result<Report> {
    let opened = open_many(&common, pool, 0, |i| i, |i| common.query("c", i)).await;
    let state = Arc::new(Churned {
        live: Mutex::new(opened.clients.into_iter().flatten().collect()),
        connects: AtomicU64::new(0),
        disconnects: AtomicU64::new(0),
        failures: AtomicU64::new(opened.failures as u64),
        latency: Mutex::new(Latency::new()),
    });
    let sem = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let start = Instant::now();
    let total = (rate as f64 * duration.as_secs_f64()) as usize;
    let mut set = JoinSet::new();
    for k in 0..total {
        tokio::time::sleep_until((start + Duration::from_secs_f64(k as f64 / rate as f64)).into()).await;
        // One disconnect...
        if let Some(mut old) = state.live.lock().await.pop_front() {
            let state = state.clone();
            set.spawn(async move {
                let _ = old.close(None).await;
                state.disconnects.fetch_add(1, Ordering::Relaxed);
            });
        }
        // ...and one connect.
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let i = pool + k;
        let (target, source, q) = (common.target(i).to_owned(), common.source(i), common.query("c", i));
        let state = state.clone();
        set.spawn(async move {
            match client::connect(&target, source, &q).await {
                Ok((ws, d)) => {
                    state.latency.lock().await.record(d);
                    state.connects.fetch_add(1, Ordering::Relaxed);
                    state.live.lock().await.push_back(ws);
                }
                Err(_) => {
                    state.failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        });
    }
    while set.join_next().await.is_some() {}
    let churned = start.elapsed();
    // Close everything, then presence must be empty.
    let rest: Vec<Ws> = state.live.lock().await.drain(..).collect();
    let remaining = rest.len();
    let mut closing = JoinSet::new();
    for mut ws in rest {
        closing.spawn(async move {
            let _ = ws.close(None).await;
        });
    }
    while closing.join_next().await.is_some() {}
    let drift = presence_after_leaving(&api, &key, &common.biz).await;
    let failures = state.failures.load(Ordering::Relaxed);
    let mut r = Report::new("churn");
    r.set("pool", pool);
    r.set("rate", rate);
    r.set("churn_seconds", churned.as_secs_f64());
    r.set("connects", state.connects.load(Ordering::Relaxed));
    r.set("disconnects", state.disconnects.load(Ordering::Relaxed));
    r.set("closed_at_end", remaining);
    r.set("failures", failures);
    r.set("connect_to_welcome", state.latency.lock().await.summary());
    r.set("presence_drift", drift);
    if drift != 0 {
        r.problems.push(format!(
            "presence drift {drift} (get_online_list after all clients left)"
        ));
    }
    if failures > 0 {
        r.problems.push(format!("{failures} connects failed"));
    }
    Ok(r)
}

/// The presence count once every client has left: polled for up to 10 s
/// until it is 0; -1 if it could never be read.
async fn presence_after_leaving(api: &str, key: &str, biz: &str) -> i64 {
    let mut drift = -1i64;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match crate::api::online_count(api, key, biz).await {
            Ok(n) => {
                drift = n;
                if n == 0 {
                    break;
                }
            }
            Err(e) => eprintln!("loadgen: presence check failed: {e:#}"),
        }
    }
    drift
}
