//! Opening many clients at once, bounded by `--connect-concurrency` and
//! optionally paced at a connect rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{self, Ws};
use crate::common::Common;
use crate::report::Latency;

/// Clients opened by [`open_many`].
pub(crate) struct Opened {
    /// Client `i`'s stream, `None` where its connect failed.
    pub(crate) clients: Vec<Option<Ws>>,
    /// Connect→welcome of those that connected.
    pub(crate) latency: Latency,
    /// Connects that failed.
    pub(crate) failures: usize,
    /// How long opening them all took.
    pub(crate) took: Duration,
}

/// Opens `n` clients at `rate` per second (0: as fast as the concurrency
/// allows); client `i` gets `query(i)`, target `target_of(i)` (modulo the
/// targets) and source `i` (modulo the sources).
pub(crate) async fn open_many(
    common: &Common,
    n: usize,
    rate: u64,
    target_of: impl Fn(usize) -> usize,
    query: impl Fn(usize) -> String,
) -> Opened {
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
        let target = common.target(target_of(i)).to_owned();
        let source = common.source(i);
        let q = query(i);
        set.spawn(async move {
            let r = client::connect(&target, source, &q).await;
            drop(permit);
            (i, r)
        });
    }
    let mut clients: Vec<Option<Ws>> = (0..n).map(|_| None).collect();
    let mut latency = Latency::new();
    let mut failures = 0;
    let mut first_error = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok((i, Ok((ws, d)))) => {
                latency.record(d);
                clients[i] = Some(ws);
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
    Opened {
        clients,
        latency,
        failures,
        took: started.elapsed(),
    }
}
