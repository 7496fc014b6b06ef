//! Recovery (SPEC §7, `docs/recovery.md` "Recovery" and seam 2): where a
//! new connection stands in its bizCode's log, the replay of what a
//! recovering client missed, and the release of the live deliveries held
//! meanwhile.
//!
//! A connection holds its logged deliveries from its start (see
//! [`Conn::offer_logged`]). Its join answers `W`, the highest stored `seq`
//! planned without it; everything after `W` reaches it live. A fresh
//! connection starts at `W`. A recovering one (`recover=s&epoch=e`) is
//! recovered when the epoch matches and nothing of its bizCode above `s`
//! left the log; a first pass over `(s, W]` keeps the `seq` of each entry
//! addressed to it (at most `history.max_replay`, scanning at most 100
//! times that). After the welcome, a second pass queues those entries,
//! paced by the socket; then the held deliveries follow (those at or below
//! what was replayed are dropped), then live ones go straight out.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use switchboard_log::{EntryKind, LogError, StoredEntry};
use switchboard_protocol::envelope::{self, Joined, LogEntry};
use switchboard_protocol::frame::WelcomeLog;
use switchboard_protocol::CloseCode;

use crate::edge::{EdgeHistory, EdgeInner};
use crate::handshake::Recover;
use crate::outbox::{self, Pushed};
use crate::registry::{Conn, Release, HEAD};

/// Attempts after a failed first pass (500 ms apart).
const FIRST_PASS_RETRIES: usize = 6;

/// How often a paced replay looks whether the socket took what was queued.
const PACE: Duration = Duration::from_millis(2);

/// What a connection's start decided about the log.
#[derive(Debug, Default)]
pub(crate) struct Start {
    /// The welcome's `epoch` and `seq` (history on).
    pub(crate) position: Option<(String, u64)>,
    /// The welcome's `recovered` (the client asked to recover).
    pub(crate) recovered: Option<bool>,
    /// What to replay after the welcome.
    pub(crate) replay: Option<Replay>,
}

impl Start {
    /// What the welcome says.
    pub(crate) fn welcome(&self) -> WelcomeLog<'_> {
        WelcomeLog {
            position: self.position.as_ref().map(|(e, s)| (e.as_str(), *s)),
            recovered: self.recovered,
        }
    }
}

/// The entries to replay: those at `seqs`, in `(after, through]` of a
/// partition.
#[derive(Debug)]
pub(crate) struct Replay {
    partition: u32,
    after: u64,
    through: u64,
    seqs: Vec<u64>,
}

/// Decides where `conn` starts in its bizCode's log, and sets its
/// position: `joined` is the router's answer (`None` with history off),
/// `recover` what the client asked.
pub(crate) async fn start(edge: &EdgeInner, conn: &Conn, joined: Option<&Joined>, recover: Option<&Recover>) -> Start {
    let Some(j) = joined else {
        // History off (or an older router): no position, and a recovery
        // asked for cannot succeed.
        if recover.is_some() {
            edge.metrics().recoveries_failed.inc();
        }
        return Start {
            position: None,
            recovered: recover.map(|_| false),
            replay: None,
        };
    };
    conn.set_joined(j.partition, j.token);
    let Some(r) = recover else {
        return fresh(conn, j, None);
    };
    let start = recover_from(edge, conn, j, r).await;
    if start.recovered == Some(true) {
        edge.metrics().recoveries.inc();
    } else {
        edge.metrics().recoveries_failed.inc();
    }
    start
}

/// A connection that starts at the log's head `W` (nothing replayed).
fn fresh(conn: &Conn, j: &Joined, recovered: Option<bool>) -> Start {
    conn.set_log_position(j.seq);
    Start {
        position: Some((j.epoch.clone(), j.seq)),
        recovered,
        replay: None,
    }
}

/// [`start`] for a connection that asked to recover.
async fn recover_from(edge: &EdgeInner, conn: &Conn, j: &Joined, r: &Recover) -> Start {
    let fresh = |recovered| fresh(conn, j, recovered);
    let from = match (r.seq, r.epoch.as_deref()) {
        (Some(s), Some(e)) if e == j.epoch && s >= j.low_water && s <= j.seq => s,
        _ => {
            tracing::info!(
                conn_id = conn.id,
                biz = %conn.biz,
                asked = ?r.seq,
                same_epoch = r.epoch.as_deref() == Some(j.epoch.as_str()),
                low_water = j.low_water,
                head = j.seq,
                "cannot recover: the position is not in the log (recovered: false)"
            );
            return fresh(Some(false));
        }
    };
    let Some(h) = edge.history() else {
        return fresh(Some(false));
    };
    // A read can fail for a moment (a stream leader election after a NATS
    // server was lost): tried again before the recovery is given up.
    let mut pass = first_pass(h, conn, j.partition, from, j.seq).await;
    for _ in 0..FIRST_PASS_RETRIES {
        if pass.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        pass = first_pass(h, conn, j.partition, from, j.seq).await;
    }
    match pass {
        Ok(Some(seqs)) => {
            conn.set_log_position(from);
            Start {
                position: Some((j.epoch.clone(), from)),
                recovered: Some(true),
                replay: Some(Replay {
                    partition: j.partition,
                    after: from,
                    through: j.seq,
                    seqs,
                }),
            }
        }
        Ok(None) => {
            tracing::info!(conn_id = conn.id, biz = %conn.biz, from, head = j.seq, "cannot recover: more to replay than history.max_replay (recovered: false)");
            fresh(Some(false))
        }
        Err(e) => {
            tracing::warn!(conn_id = conn.id, biz = %conn.biz, error = %e, "recovery read failed");
            fresh(Some(false))
        }
    }
}

/// Whether `entry` is addressed to `conn` (SPEC §7: its unicasts, its
/// groups' sends and its bizCode's broadcasts, but not its own group
/// sends and broadcasts).
fn addressed(conn: &Conn, entry: &LogEntry) -> bool {
    entry.addressed_to(&conn.client, |g| conn.in_group(g))
}

/// Decodes a stored send; `None` for a fence or what does not decode.
fn decode(stored: &StoredEntry) -> Option<LogEntry> {
    if !matches!(stored.kind, EntryKind::Entry { .. }) {
        return None;
    }
    envelope::decode::<LogEntry>(&stored.payload)
        .inspect_err(|e| tracing::warn!(seq = stored.seq, error = %e, "undecodable log entry skipped"))
        .ok()
}

/// The `seq`s of the entries in `(after, through]` addressed to `conn`;
/// `None` when there are more than `max_replay` of them or the range is
/// longer than `max_scan` entries.
async fn first_pass(
    h: &EdgeHistory,
    conn: &Conn,
    partition: u32,
    after: u64,
    through: u64,
) -> Result<Option<Vec<u64>>, LogError> {
    let mut entries = h.log.read_range(partition, Some(&conn.biz), after, through).await?;
    let mut seqs = Vec::new();
    let mut scanned = 0usize;
    while let Some(stored) = entries.next().await {
        let stored = stored?;
        scanned += 1;
        if scanned > h.max_scan {
            return Ok(None);
        }
        if decode(&stored).is_some_and(|e| addressed(conn, &e)) {
            if seqs.len() == h.max_replay {
                return Ok(None);
            }
            seqs.push(stored.seq);
        }
    }
    Ok(Some(seqs))
}

/// After the welcome: replays `replay` (if any), then releases what was
/// held, until logged deliveries go straight out. Runs on its own task
/// when there is anything to do, so the session's writer drains the
/// socket meanwhile.
pub(crate) fn release(edge: &Arc<EdgeInner>, conn: &Arc<Conn>, replay: Option<Replay>, partition: Option<u32>) {
    if replay.is_none() {
        match conn.release_held() {
            Release::Done => return,
            first => {
                let (edge, conn) = (edge.clone(), conn.clone());
                tokio::spawn(async move { release_from(&edge, &conn, first, partition).await });
                return;
            }
        }
    }
    let (edge, conn) = (edge.clone(), conn.clone());
    tokio::spawn(async move {
        if let Some(r) = replay {
            if let Err(why) = second_pass(&edge, &conn, &r).await {
                tracing::info!(conn_id = conn.id, biz = %conn.biz, why, "replay incomplete, closing");
                if conn.outbox.close(CloseCode::Draining) {
                    edge.metrics().recovery_closes.inc();
                }
                return;
            }
        }
        let first = conn.release_held();
        release_from(&edge, &conn, first, partition).await;
    });
}

/// Queues the entries the first pass kept. An entry that left the log
/// between the passes fails the replay (the connection closes with 1012;
/// its next attempt reports `recovered: false`).
async fn second_pass(edge: &EdgeInner, conn: &Conn, r: &Replay) -> Result<(), &'static str> {
    let Some(h) = edge.history() else {
        return Err("no log");
    };
    let mut want = r.seqs.iter().copied().peekable();
    if want.peek().is_none() {
        return Ok(());
    }
    let mut entries = h
        .log
        .read_range(r.partition, Some(&conn.biz), r.after, r.through)
        .await
        .map_err(|_| "log unavailable")?;
    while let Some(stored) = entries.next().await {
        let stored = stored.map_err(|_| "log read failed")?;
        let Some(&next) = want.peek() else { break };
        if stored.seq < next {
            continue;
        }
        if stored.seq > next {
            return Err("an entry left the log during the replay");
        }
        want.next();
        let Some(entry) = decode(&stored) else {
            return Err("an entry does not decode");
        };
        if !push_paced(edge, conn, stored.seq, entry.mode(), outbox::text_frame(&entry.frame)).await {
            return Err("connection closed");
        }
    }
    if want.peek().is_some() {
        return Err("an entry left the log during the replay");
    }
    Ok(())
}

/// Releases what was held, step by step, until nothing is.
async fn release_from(edge: &EdgeInner, conn: &Conn, mut step: Release, partition: Option<u32>) {
    loop {
        match step {
            Release::Done => return,
            Release::Frames(frames) => {
                for (seq, framed) in frames {
                    if !push_paced(edge, conn, seq, 0, framed).await {
                        return;
                    }
                }
            }
            Release::Reread { after, through, owed } => {
                if let Err(why) = reread(edge, conn, partition, after, through, owed).await {
                    tracing::info!(conn_id = conn.id, biz = %conn.biz, why, "held deliveries lost, closing");
                    if conn.outbox.close(CloseCode::Draining) {
                        edge.metrics().recovery_closes.inc();
                    }
                    return;
                }
            }
        }
        step = conn.release_held();
    }
}

/// Queues the entries in `(after, through]` addressed to `conn` (`through`
/// [`HEAD`]: up to the log's head now): the held deliveries that were
/// dropped because the buffer was full, or a heal it `owed`, which, like a
/// heal, scans at most what a recovery may.
async fn reread(
    edge: &EdgeInner,
    conn: &Conn,
    partition: Option<u32>,
    after: u64,
    through: u64,
    owed: bool,
) -> Result<(), &'static str> {
    let (Some(h), Some(p)) = (edge.history(), partition) else {
        return Err("no log");
    };
    let through = resolve(h, p, through).await?;
    if through <= after {
        return Ok(());
    }
    let mut entries = h
        .log
        .read_range(p, Some(&conn.biz), after, through)
        .await
        .map_err(|_| "log unavailable")?;
    let mut scanned = 0usize;
    while let Some(stored) = entries.next().await {
        let stored = stored.map_err(|_| "log read failed")?;
        scanned += 1;
        if owed && scanned > h.max_scan {
            return Err("too much to heal");
        }
        let Some(entry) = decode(&stored).filter(|e| addressed(conn, e)) else {
            continue;
        };
        if !push_paced(edge, conn, stored.seq, entry.mode(), outbox::text_frame(&entry.frame)).await {
            return Err("connection closed");
        }
    }
    Ok(())
}

/// Queues a framed logged frame once the socket has room for it (never
/// tripping the slow-consumer limit by itself). False once the connection
/// is closing.
async fn push_paced(edge: &EdgeInner, conn: &Conn, seq: u64, mode: u16, framed: Bytes) -> bool {
    let limit = edge.config().send_queue_bytes;
    loop {
        if conn.outbox.is_closing() {
            return false;
        }
        if conn.outbox.room(framed.len(), limit) {
            break;
        }
        tokio::time::sleep(PACE).await;
    }
    match conn.push_replayed(seq, framed, limit) {
        Some(Pushed::Queued { .. }) => {
            let metrics = edge.metrics();
            metrics.deliveries.inc();
            if mode != 0 {
                metrics.frames_sent.get(mode).inc();
            }
            true
        }
        None => true,
        Some(Pushed::Overflow | Pushed::Closed) => false,
    }
}

/// Heals `conns` of partition `p` in place (seam 3): each holds its live
/// deliveries (the caller made it), gets from the log every entry addressed
/// to it above its position, up to `through` (the log's head: [`HEAD`]),
/// then releases what it held. One read of the partition serves them all;
/// a connection whose socket has no room, or all of them if the range is
/// longer than a recovery may scan or cannot be read, is closed with 1012
/// and recovers instead.
pub(crate) async fn heal(edge: Arc<EdgeInner>, p: u32, conns: Vec<Arc<Conn>>, through: u64) {
    let mut open: Vec<Arc<Conn>> = conns;
    if let Err(why) = heal_from_log(&edge, p, &mut open, through).await {
        tracing::info!(partition = p, why, "cannot heal from the log; closing to recover");
        for c in &open {
            if c.outbox.close(CloseCode::Draining) {
                edge.metrics().recovery_closes.inc();
            }
        }
        return;
    }
    edge.metrics().heals.inc_by(open.len() as u64);
    for c in open {
        let first = c.release_held();
        let edge = edge.clone();
        tokio::spawn(async move { release_from(&edge, &c, first, Some(p)).await });
    }
}

/// Releases what `conns` of partition `p` held, without reading the log
/// (a hold that turned out needless).
pub(crate) fn release_all(edge: &Arc<EdgeInner>, p: u32, conns: Vec<Arc<Conn>>) {
    for c in conns {
        let first = c.release_held();
        if first == Release::Done {
            continue;
        }
        let edge = edge.clone();
        tokio::spawn(async move { release_from(&edge, &c, first, Some(p)).await });
    }
}

/// The read of [`heal`]; connections closed on the way leave `conns`.
async fn heal_from_log(edge: &EdgeInner, p: u32, conns: &mut Vec<Arc<Conn>>, through: u64) -> Result<(), &'static str> {
    let h = edge.history().ok_or("no log")?;
    let head = resolve(h, p, through).await?;
    let Some(from) = conns.iter().map(|c| c.log_position()).min() else {
        return Ok(());
    };
    tracing::info!(
        partition = p,
        from,
        head,
        connections = conns.len(),
        "healing: reading the log"
    );
    if head <= from {
        return Ok(());
    }
    let mut entries = h
        .log
        .read_range(p, None, from, head)
        .await
        .map_err(|_| "log unavailable")?;
    let limit = edge.config().send_queue_bytes;
    let mut scanned = 0usize;
    while let Some(stored) = entries.next().await {
        let stored = stored.map_err(|_| "log read failed")?;
        scanned += 1;
        if scanned > h.max_scan {
            return Err("too much to heal");
        }
        let EntryKind::Entry { biz, .. } = &stored.kind else {
            continue;
        };
        if !conns.iter().any(|c| *c.biz == **biz) {
            continue;
        }
        let Some(entry) = decode(&stored) else { continue };
        let mut full = Vec::new();
        for c in conns.iter() {
            if *c.biz != **biz || stored.seq <= c.log_position() || !addressed(c, &entry) {
                continue;
            }
            let framed = outbox::text_frame(&entry.frame);
            if !c.outbox.room(framed.len(), limit) {
                full.push(c.id);
                continue;
            }
            if let Some(Pushed::Queued { .. }) = c.push_replayed(stored.seq, framed, limit) {
                edge.metrics().deliveries.inc();
                edge.metrics().frames_sent.get(entry.mode()).inc();
            }
        }
        if !full.is_empty() {
            tracing::info!(partition = p, seq = stored.seq, full = full.len(), "healing: no room");
            conns.retain(|c| {
                if full.contains(&c.id) {
                    if c.outbox.close(CloseCode::Draining) {
                        edge.metrics().recovery_closes.inc();
                    }
                    false
                } else {
                    true
                }
            });
        }
    }
    Ok(())
}

/// `through`, or partition `p`'s head now for [`HEAD`].
async fn resolve(h: &EdgeHistory, p: u32, through: u64) -> Result<u64, &'static str> {
    if through != HEAD {
        return Ok(through);
    }
    Ok(h.log.bounds(p).await.map_err(|_| "log unavailable")?.last)
}
