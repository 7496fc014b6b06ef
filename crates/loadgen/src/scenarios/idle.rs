//! `idle`: open N connections, hold them, report the connect rate and the
//! connect→welcome latency. Prints `READY <n>` on stderr once all are open
//! (bench.py samples the gateway's memory then).

use std::time::Duration;

use crate::common::Common;
use crate::open::open_many;
use crate::report::Report;

/// Opens `n` clients at `rate`/s (0: as fast as possible) and holds them
/// for `hold`.
pub(crate) async fn run(common: Common, n: usize, rate: u64, hold: Duration) -> anyhow::Result<Report> {
    let opened = open_many(&common, n, rate, |i| i, |i| common.query("i", i)).await;
    let open = opened.clients.iter().filter(|c| c.is_some()).count();
    let took = opened.took;
    let mut r = Report::new("idle");
    r.set("connections", open);
    r.set("failures", opened.failures);
    r.set("connect_seconds", took.as_secs_f64());
    r.set("connects_per_sec", open as f64 / took.as_secs_f64().max(1e-9));
    r.set("connect_to_welcome", opened.latency.summary());
    if opened.failures > 0 {
        r.problems.push(format!("{} connections failed", opened.failures));
    }
    eprintln!("READY {open}");
    tokio::time::sleep(hold).await;
    drop(opened.clients);
    Ok(r)
}
