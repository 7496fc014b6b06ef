//! `fanout`: group sends to groups whose members are split across the
//! targets; some members of each group send, taking turns, optionally in
//! bursts so frames queue up at the edges; optionally next to members that
//! never read (slow consumers).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use switchboard_protocol::frame::{SendTarget, MODE_GROUP};
use tokio_tungstenite::tungstenite::Message;

use crate::client::Ws;
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
    /// Extra members per group that never read.
    pub(crate) stalled: usize,
    /// Payload padding bytes per message.
    pub(crate) payload: usize,
}

/// How a member that never read ended, seen when it finally reads.
#[derive(Default)]
struct StalledEnd {
    /// A close frame with 4008.
    closed_4008: u64,
    /// A close frame with another code.
    closed_other: u64,
    /// The connection ended without a close frame.
    cut: u64,
    /// Still open.
    open: u64,
}

/// Reads what each stalled member's socket holds, up to its end.
async fn stalled_ends(stalled: Vec<Option<Ws>>) -> StalledEnd {
    let reads = stalled.into_iter().flatten().map(|mut ws| async move {
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return None,
                }
            }
        });
        read.await
    });
    let mut end = StalledEnd::default();
    for r in futures_util::future::join_all(reads).await {
        match r {
            Ok(Some(4008)) => end.closed_4008 += 1,
            Ok(Some(_)) => end.closed_other += 1,
            Ok(None) => end.cut += 1,
            Err(_) => end.open += 1,
        }
    }
    end
}

/// Runs `fanout`: `senders` members of each group send at `rate`/s, all
/// groups together, for `duration`.
pub(crate) async fn run(common: Common, shape: FanoutShape, rate: u64, duration: Duration) -> anyhow::Result<Report> {
    let FanoutShape {
        groups,
        size,
        senders: per_group,
        burst,
        stalled,
        payload,
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
    // Members that read their welcome and then nothing more.
    let stalled_members = if stalled > 0 {
        let s = open_many(
            &common,
            groups * stalled,
            0,
            |i| i,
            |i| format!("{}&group={}", common.query("st", i), group(i / stalled)),
        )
        .await;
        anyhow::ensure!(s.failures == 0, "{} stalled connections failed", s.failures);
        s.clients
    } else {
        Vec::new()
    };
    let pad = "x".repeat(payload);
    let mut roles = roles(opened.clients, |i| i % size < per_group, MODE_GROUP)?;
    let started = Instant::now();
    let (sent, lag_us) = open_loop(rate, burst, duration, &roles.senders, |i, s, t| {
        let probe = Probe {
            t,
            s,
            f: i as u64,
            r: None,
            p: &pad,
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
    let promised = acks.recipients.load(Ordering::Relaxed);
    let accepted = acks.ok.load(Ordering::Relaxed);
    // With stalled members the promise counts them too (until they are
    // cut off): every reading member is owed every accepted send of its
    // group but its own.
    let expected = if stalled > 0 {
        accepted * (size as u64 - 1)
    } else {
        promised
    };
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
    if stalled > 0 {
        let end = stalled_ends(stalled_members).await;
        r.set("stalled", groups * stalled);
        r.set("promised_deliveries", promised);
        r.set("stalled_closed_4008", end.closed_4008);
        r.set("stalled_closed_other", end.closed_other);
        r.set("stalled_cut", end.cut);
        r.set("stalled_open", end.open);
    }
    check_delivery(&mut r, expected, received, accepted, sent, "group sends");
    Ok(r)
}
