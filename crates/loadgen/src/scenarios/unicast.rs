//! `unicast`: sender/receiver pairs across targets 0 and 1, sending
//! open-loop at a fixed rate; reports latency, loss, duplicates and order.

use std::sync::atomic::Ordering;
use std::time::Duration;

use switchboard_protocol::frame::{SendTarget, MODE_UNICAST};

use crate::common::Common;
use crate::frames::{self, Probe};
use crate::open::open_many;
use crate::report::Report;
use crate::traffic::{check_delivery, open_loop, roles, settle};

/// The shape of a `unicast` run.
pub(crate) struct UnicastShape {
    /// Sender/receiver pairs.
    pub(crate) pairs: usize,
    /// Messages per second, all senders together.
    pub(crate) rate: u64,
    /// How long to send.
    pub(crate) duration: Duration,
    /// Padding bytes per message.
    pub(crate) size: usize,
}

/// Runs `unicast`: client `2i` sends to client `2i + 1`.
pub(crate) async fn run(common: Common, shape: UnicastShape) -> anyhow::Result<Report> {
    let UnicastShape {
        pairs,
        rate,
        duration,
        size,
    } = shape;
    let n = pairs * 2;
    // Even: senders on target 0; odd: receivers on target 1.
    let opened = open_many(&common, n, 0, |i| i % 2, |i| common.query("u", i)).await;
    anyhow::ensure!(opened.failures == 0, "{} connections failed", opened.failures);
    let mut roles = roles(opened.clients, |i| i % 2 == 0, MODE_UNICAST)?;
    let pad = "x".repeat(size);
    let (sent, lag_us) = open_loop(rate, 1, duration, &roles.senders, |i, s, t| {
        let probe = Probe {
            t,
            s,
            f: i as u64,
            r: None,
            p: &pad,
        };
        let target = SendTarget::Client(common.id("u", 2 * i + 1));
        frames::send(target, s.to_string(), probe.json())
    })
    .await;
    let total = roles.total.clone();
    let tail = settle(&roles.acks, sent, || total.load(Ordering::Relaxed)).await;
    let seen = roles.finish().await?;
    let acks = &roles.acks;
    let mut r = Report::new("unicast");
    r.set("pairs", pairs);
    r.set("offered_rate", rate);
    let accepted = acks.ok.load(Ordering::Relaxed);
    let promised = acks.recipients.load(Ordering::Relaxed);
    let errors = acks.errors.load(Ordering::Relaxed);
    r.set("sent", sent);
    r.set("accepted", accepted);
    r.set("unanswered", sent.saturating_sub(accepted + errors));
    r.set("received", seen.received);
    r.set("lost", promised.saturating_sub(seen.received));
    r.set("duplicates", seen.duplicates);
    r.set("out_of_order", seen.out_of_order);
    r.set("send_errors", errors);
    r.set("schedule_lag_max_us", lag_us);
    r.set("answers_done_after_ms", tail.as_millis() as u64);
    r.set("latency", seen.lat.summary());
    check_delivery(&mut r, promised, seen.received, accepted, sent, "sends");
    Ok(r)
}
