//! `fanout`: group sends to groups whose members are split across the
//! targets; some members of each group send, taking turns, optionally in
//! bursts so frames queue up at the edges.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use switchboard_protocol::frame::{SendTarget, MODE_GROUP};

use crate::common::Common;
use crate::frames::{self, Probe};
use crate::open::open_many;
use crate::report::Report;
use crate::traffic::{check_delivery, open_loop, roles, settle};

/// The groups of a `fanout` run.
pub(crate) struct FanoutShape {
    pub(crate) groups: usize,
    pub(crate) size: usize,
    /// Members of each group that send.
    pub(crate) senders: usize,
    /// Sends fired together per tick.
    pub(crate) burst: u64,
}

/// Runs `fanout`: `senders` members of each group send at `rate`/s, all
/// groups together, for `duration`.
pub(crate) async fn run(common: Common, shape: FanoutShape, rate: u64, duration: Duration) -> anyhow::Result<Report> {
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
    let group = |g: usize| format!("{}-g{g}", common.prefix);
    let opened = open_many(
        &common,
        n,
        0,
        |i| i,
        |i| format!("{}&group={}", common.query("f", i), group(i / size)),
    )
    .await;
    anyhow::ensure!(opened.failures == 0, "{} connections failed", opened.failures);
    let mut roles = roles(opened.clients, |i| i % size < per_group, MODE_GROUP)?;
    let started = Instant::now();
    let (sent, lag_us) = open_loop(rate, burst, duration, &roles.senders, |i, s, t| {
        let probe = Probe {
            t,
            s,
            f: i as u64,
            r: None,
            p: "",
        };
        frames::send(SendTarget::Group(group(i / per_group)), s.to_string(), probe.json())
    })
    .await;
    let send_window = started.elapsed();
    let (acks, total) = (roles.acks.clone(), roles.total.clone());
    let to_senders = || acks.delivered_to_senders.load(Ordering::Relaxed);
    settle(&acks, sent, || total.load(Ordering::Relaxed) + to_senders()).await;
    // Senders also get their fellow senders' messages (counted, no latency).
    let to_senders_at_end = to_senders();
    let seen = roles.finish().await?;
    let received = to_senders_at_end + seen.received;
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
    r.set("duplicates", seen.duplicates);
    r.set(
        "deliveries_per_sec",
        received as f64 / send_window.as_secs_f64().max(1e-9),
    );
    r.set("schedule_lag_max_us", lag_us);
    r.set("send_errors", acks.errors.load(Ordering::Relaxed));
    r.set("latency", seen.lat.summary());
    check_delivery(&mut r, expected, received, accepted, sent, "group sends");
    Ok(r)
}
