//! History (SPEC §7, `docs/recovery.md`): each history partition has one
//! writer, which plans a send of a history-on bizCode, appends it to the
//! partition's log and dispatches it under the partition's lock, so
//! dispatch order is log order (seam 1); a connection joins (and a bind
//! lands) between two planned entries, under the same lock (seam 2).
//!
//! Two modes:
//! - `standalone` ([`History::new`]): this process writes every partition
//!   of a memory log, and dispatch is a direct call that cannot be lost;
//! - a cluster ([`History::leased`]): a router writes only the partitions
//!   whose lease it holds ([`Router::acquire`], fenced at `token`); every
//!   other router forwards to the owner ([`OwnerLink`]). The owner numbers
//!   what it sends each node per (partition, token) and sends a tick when
//!   it has sent a node nothing for a second, so an edge detects a lost
//!   message (seam 3).
//!
//! Here: the partitions' state (log position, token, per-node numbering,
//! the cached settings of their bizCodes, whose changes are applied under
//! the lock too), logged sends, joins, the owner's side of the forwarded
//! requests, `get_history`, `delete_history` and `register`'s history
//! switch.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use switchboard_log::{partition_of, EntryKind, HistoryConfig, PartitionLog};
use switchboard_protocol::envelope::{
    self, DeliverTo, EntryTo, Joined, LogEntry, LoggedSend, NodeCommand, Order, PartReply, PartRequest, PresenceValue,
    RouteReply,
};
use switchboard_protocol::frame::{self, SendTarget};
use switchboard_protocol::subject::presence_key;
use switchboard_runtime::now_ms;
use tokio::sync::{Mutex, MutexGuard};

use super::route::{render, Deliveries};
use super::{Router, CAS_ATTEMPTS};
use crate::error::RouterError;
use crate::link::OwnerLink;
use crate::outbound::{Origin, Outbound};
use crate::owner::LeaseHandle;
use crate::store::{BizSettings, StoreError};
use crate::wire;

/// How long a non-owner trusts a bizCode's history switch it read.
const SWITCH_CACHE: Duration = Duration::from_secs(5);

/// Most bizCodes whose settings one partition's writer caches.
const SETTINGS_CACHE: usize = 4096;

/// A node that heard nothing from a partition's owner for this long gets
/// a tick.
const TICK_AFTER: Duration = Duration::from_secs(1);

/// Most entries one `get_history` answers.
pub const MAX_HISTORY_LIMIT: usize = 1_000;

/// Entries `get_history` answers when the call names no `limit`.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;

/// The logs of every partition, and what this process knows of them.
pub struct History {
    log: Arc<dyn PartitionLog>,
    config: HistoryConfig,
    parts: Box<[Mutex<Part>]>,
    /// Source of `Nats-Msg-Id`s: `<prefix>.<n>`.
    next_id: AtomicU64,
    id_prefix: String,
    /// The other partitions' owners (cluster); `None`: this process writes
    /// every partition (`standalone`).
    owners: Option<Arc<dyn OwnerLink>>,
    /// The lease loop's view of which leases are surely still held (set
    /// once partitions are served, `nats::serve_partitions`): an owner
    /// whose lease may have passed to another router answers for it no
    /// more, even before the loop reports it lost.
    leases: std::sync::OnceLock<LeaseHandle>,
    /// Non-owners' view of bizCodes' history switches: (on, read at).
    switches: parking_lot::Mutex<HashMap<String, (bool, Instant)>>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// One partition, under its lock.
#[derive(Default)]
struct Part {
    /// `None` until the partition's log is opened (`standalone`), or while
    /// this router does not own it (cluster).
    open: Option<Open>,
}

/// An opened partition.
struct Open {
    /// When the log was created (part of every epoch).
    created_ns: u64,
    /// The highest stored `seq`.
    last: u64,
    /// The owner's fencing token (cluster); `None` in `standalone`.
    token: Option<u64>,
    /// Per node: messages sent under this token, and when the last one
    /// went (seam 3).
    sent: HashMap<Arc<str>, (u64, Instant)>,
    /// Settings of the partition's bizCodes, as this writer last wrote or
    /// read them.
    settings: HashMap<String, BizSettings>,
}

impl Open {
    fn new(created_ns: u64, last: u64, token: Option<u64>) -> Self {
        Self {
            created_ns,
            last,
            token,
            sent: HashMap::new(),
            settings: HashMap::new(),
        }
    }

    /// The next [`Order`] for a message to `node` (`None` in `standalone`).
    fn order(&mut self, p: u32, node: &Arc<str>) -> Option<Order> {
        let token = self.token?;
        let e = self.sent.entry(node.clone()).or_insert((0, Instant::now()));
        e.0 += 1;
        e.1 = Instant::now();
        Some(Order {
            partition: p,
            token,
            n: e.0,
            tick: false,
        })
    }
}

/// A partition this process writes, under its lock.
struct Locked<'a> {
    p: u32,
    guard: MutexGuard<'a, Part>,
}

impl Locked<'_> {
    fn open(&mut self) -> &mut Open {
        // `History::lock` hands out only opened partitions.
        self.guard.open.get_or_insert_with(|| Open::new(0, 0, None))
    }
}

/// Whether a partition is this process's to write.
enum Lock<'a> {
    Mine(Locked<'a>),
    /// Another router owns partition `.0`.
    Theirs(u32),
}

/// What `get_history` asks for.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// What the log holds for this client.
    pub client: Option<String>,
    /// What the log holds for this group.
    pub group: Option<String>,
    /// Only entries after this `seq` (the first `limit` of them); without
    /// it, the newest `limit`.
    pub since: Option<u64>,
    /// At most this many ([`DEFAULT_HISTORY_LIMIT`], at most
    /// [`MAX_HISTORY_LIMIT`]).
    pub limit: usize,
}

/// What `get_history` answers.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// The bizCode's epoch.
    pub epoch: String,
    /// The bizCode's log head: the highest stored `seq` of its partition.
    pub seq: u64,
    /// Delivery frames, as clients receive them, in log order.
    pub list: Vec<Bytes>,
}

impl History {
    /// History over `log` where this process writes every partition
    /// (`standalone`); `id_prefix` makes its `Nats-Msg-Id`s unique (its
    /// node id).
    pub fn new(log: Arc<dyn PartitionLog>, config: HistoryConfig, id_prefix: &str) -> Self {
        Self::with_owners(log, config, id_prefix, None)
    }

    /// History over `log` where this router writes the partitions whose
    /// lease it holds ([`Router::acquire`]) and forwards the rest to their
    /// owners through `owners`.
    pub fn leased(
        log: Arc<dyn PartitionLog>,
        config: HistoryConfig,
        id_prefix: &str,
        owners: Arc<dyn OwnerLink>,
    ) -> Self {
        Self::with_owners(log, config, id_prefix, Some(owners))
    }

    fn with_owners(
        log: Arc<dyn PartitionLog>,
        config: HistoryConfig,
        id_prefix: &str,
        owners: Option<Arc<dyn OwnerLink>>,
    ) -> Self {
        let parts = (0..config.partitions.max(1))
            .map(|_| Mutex::new(Part::default()))
            .collect();
        Self {
            log,
            config,
            parts,
            next_id: AtomicU64::new(0),
            id_prefix: format!("{id_prefix}.{:x}", rand::random::<u32>()),
            owners,
            leases: std::sync::OnceLock::new(),
            switches: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// Follows `leases`: a partition whose lease is not surely held any
    /// more is answered for by its owner, whoever that is now.
    pub fn follow_leases(&self, leases: LeaseHandle) {
        let _ = self.leases.set(leases);
    }

    /// The configuration.
    pub fn config(&self) -> &HistoryConfig {
        &self.config
    }

    /// The log (edges read it for replay).
    pub fn log(&self) -> Arc<dyn PartitionLog> {
        self.log.clone()
    }

    fn part(&self, p: u32) -> Result<&Mutex<Part>, RouterError> {
        self.parts
            .get(p as usize)
            .ok_or_else(|| RouterError::Log(switchboard_log::LogError::Invalid(format!("partition {p}"))))
    }

    /// Locks `biz`'s partition if this process writes it (opening its log
    /// first in `standalone`).
    async fn lock(&self, biz: &str) -> Result<Lock<'_>, RouterError> {
        let p = partition_of(biz, self.config.partitions);
        let mut guard = self.part(p)?.lock().await;
        if let (Some(leases), Some(token)) = (self.leases.get(), guard.open.as_ref().and_then(|o| o.token)) {
            if !leases.valid(p, token) {
                return Ok(Lock::Theirs(p));
            }
        }
        if guard.open.is_none() {
            if self.owners.is_some() {
                return Ok(Lock::Theirs(p));
            }
            let b = self.log.ensure(p).await?;
            guard.open = Some(Open::new(b.created_ns, b.last, None));
        }
        Ok(Lock::Mine(Locked { p, guard }))
    }

    fn msg_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n}", self.id_prefix)
    }

    /// Whether `settings` turn history on.
    fn on(&self, settings: &BizSettings) -> bool {
        settings.history.unwrap_or(self.config.enabled)
    }

    /// The epoch of `biz` in an opened partition.
    fn epoch(open: &Open, settings: &BizSettings) -> String {
        format!("{:x}-{}-{}", open.created_ns, settings.epoch_salt, settings.generation)
    }

    /// Asks partition `p`'s owner.
    async fn ask(&self, p: u32, req: &PartRequest) -> Result<PartReply, RouterError> {
        let owners = self.owners.as_ref().ok_or(RouterError::HistoryOff)?;
        match owners.ask(p, req).await? {
            PartReply::Failed(code) => Err(RouterError::Forwarded(code)),
            PartReply::NotOwner => Err(RouterError::Forwarded(
                switchboard_protocol::ErrorCode::Internal.as_u16(),
            )),
            reply => Ok(reply),
        }
    }
}

/// An owner's answer to one logged send.
fn send_reply(result: Option<Result<u32, RouterError>>) -> RouteReply {
    wire::route_reply(&result.unwrap_or(Ok(0)))
}

/// What a forwarded send's reply means to its sender.
fn from_reply(r: &RouteReply) -> Result<u32, RouterError> {
    if r.code == switchboard_protocol::ErrorCode::Ok.as_u16() {
        Ok(r.recipients)
    } else if r.code == switchboard_protocol::ErrorCode::Offline.as_u16() {
        Err(RouterError::Offline)
    } else {
        Err(RouterError::Forwarded(r.code))
    }
}

impl Router {
    fn history(&self) -> Option<&History> {
        self.inner.history.as_deref()
    }

    /// See [`History::follow_leases`].
    pub fn follow_leases(&self, leases: LeaseHandle) {
        if let Some(h) = self.history() {
            h.follow_leases(leases);
        }
    }

    /// `biz`'s settings, cached in its locked partition (read, or created,
    /// on first use).
    async fn settings_in<'a>(&self, open: &'a mut Open, biz: &str) -> Result<&'a mut BizSettings, RouterError> {
        if !open.settings.contains_key(biz) {
            let s = self.load_settings(biz).await?;
            // Bounded: past this many bizCodes the cache starts over (the
            // store has them all).
            if open.settings.len() >= SETTINGS_CACHE {
                open.settings.clear();
            }
            open.settings.insert(biz.to_owned(), s);
        }
        open.settings
            .get_mut(biz)
            .ok_or_else(|| RouterError::Store(StoreError::Unavailable("settings cache".into())))
    }

    async fn load_settings(&self, biz: &str) -> Result<BizSettings, RouterError> {
        let registry = &self.inner.registry;
        for _ in 0..CAS_ATTEMPTS {
            if let Some((s, _)) = registry.settings(biz).await? {
                return Ok(s);
            }
            let fresh = BizSettings::new();
            match registry.put_settings(biz, &fresh, None).await {
                Ok(_) => return Ok(fresh),
                Err(StoreError::WrongRevision) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RouterError::Contended(CAS_ATTEMPTS))
    }

    /// Applies `change` to `biz`'s stored settings (compare-and-set) and
    /// to the cached copy.
    async fn change_settings(
        &self,
        open: &mut Open,
        biz: &str,
        change: impl Fn(&mut BizSettings),
    ) -> Result<BizSettings, RouterError> {
        let registry = &self.inner.registry;
        for _ in 0..CAS_ATTEMPTS {
            let (mut s, rev) = match registry.settings(biz).await? {
                Some((s, rev)) => (s, Some(rev)),
                None => (BizSettings::new(), None),
            };
            change(&mut s);
            match registry.put_settings(biz, &s, rev).await {
                Ok(_) => {
                    open.settings.insert(biz.to_owned(), s.clone());
                    return Ok(s);
                }
                Err(StoreError::WrongRevision) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RouterError::Contended(CAS_ATTEMPTS))
    }

    /// Whether `biz` has history on: its owner's view when this router
    /// owns it, otherwise the settings store's, read at most every few
    /// seconds (a stale answer costs a send one forwarding hop, or for a
    /// bizCode just switched on a few seconds unlogged; the switch changes
    /// the epoch either way).
    ///
    /// # Errors
    /// If the log or the settings cannot be read.
    pub(super) async fn history_on(&self, biz: &str) -> Result<bool, RouterError> {
        let Some(h) = self.history() else {
            return Ok(false);
        };
        if let Some((on, at)) = h.switches.lock().get(biz) {
            if at.elapsed() < SWITCH_CACHE {
                return Ok(*on);
            }
        }
        let on = match h.lock(biz).await? {
            Lock::Mine(mut part) => h.on(self.settings_in(part.open(), biz).await?),
            Lock::Theirs(_) => h.on(&self.load_settings(biz).await?),
        };
        let mut switches = h.switches.lock();
        if switches.len() >= 100_000 {
            switches.clear();
        }
        switches.insert(biz.to_owned(), (on, Instant::now()));
        Ok(on)
    }

    /// Routes the sends of history-on bizCodes among `sends`: per
    /// partition, planned, appended (pipelined) and dispatched by its
    /// writer (here, or forwarded to the owner in one request). One answer
    /// per send; `None` for a send of a bizCode with history off (the
    /// caller routes it as ever).
    pub(super) async fn route_logged(&self, sends: &[Outbound<'_>]) -> Vec<Option<Result<u32, RouterError>>> {
        let mut answers: Vec<Option<Result<u32, RouterError>>> = sends.iter().map(|_| None).collect();
        let Some(h) = self.history() else {
            return answers;
        };
        let mut by_part: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, s) in sends.iter().enumerate() {
            by_part
                .entry(partition_of(s.biz, h.config.partitions))
                .or_default()
                .push(i);
        }
        for (_, idx) in by_part {
            let Some(&first) = idx.first() else { continue };
            match h.lock(sends[first].biz).await {
                Err(e) => {
                    for &i in &idx {
                        answers[i] = Some(Err(RouterError::Forwarded(e.code().as_u16())));
                    }
                }
                Ok(Lock::Mine(mut part)) => {
                    let group: Vec<&Outbound<'_>> = idx.iter().map(|&i| &sends[i]).collect();
                    let got = self.logged_batch_here(h, &mut part, &group, &[]).await;
                    for (i, a) in idx.into_iter().zip(got) {
                        answers[i] = a;
                    }
                }
                Ok(Lock::Theirs(p)) => {
                    let mut forward = Vec::new();
                    for &i in &idx {
                        match self.history_on(sends[i].biz).await {
                            Ok(true) => forward.push(i),
                            Ok(false) => {}
                            Err(e) => answers[i] = Some(Err(e)),
                        }
                    }
                    if forward.is_empty() {
                        continue;
                    }
                    let req = PartRequest::Sends(forward.iter().map(|&i| logged_send(&sends[i], h.msg_id())).collect());
                    match h.ask(p, &req).await {
                        Ok(PartReply::Sent(replies)) if replies.len() == forward.len() => {
                            for (i, r) in forward.into_iter().zip(replies) {
                                answers[i] = Some(from_reply(&r));
                            }
                        }
                        Ok(_) => {
                            for i in forward {
                                answers[i] = Some(Err(unexpected()));
                            }
                        }
                        Err(e) => {
                            let code = e.code().as_u16();
                            for i in forward {
                                answers[i] = Some(Err(RouterError::Forwarded(code)));
                            }
                        }
                    }
                }
            }
        }
        answers
    }

    /// Sends of one partition this process writes: each planned at the
    /// next `seq`, all appended at once (the k-th expecting `last + k - 1`),
    /// then, in order, each acknowledged one dispatched and answered. An
    /// append that fails fails the rest (1500, the client retries); the
    /// log's tail is read and the nodes heal whatever was stored anyway.
    /// `None` for a send of a bizCode with history off.
    async fn logged_batch_here(
        &self,
        h: &History,
        part: &mut Locked<'_>,
        sends: &[&Outbound<'_>],
        log_ids: &[Option<&str>],
    ) -> Vec<Option<Result<u32, RouterError>>> {
        let mut answers: Vec<Option<Result<u32, RouterError>>> = sends.iter().map(|_| None).collect();
        let mut planned = Vec::new();
        let mut next = part.open().last;
        for (j, send) in sends.iter().enumerate() {
            match self.settings_in(part.open(), send.biz).await {
                Ok(st) if !h.on(st) => continue,
                Ok(_) => {}
                Err(e) => {
                    answers[j] = Some(Err(e));
                    continue;
                }
            }
            let seq = next + 1;
            match self.plan_entry(send, seq).await {
                Ok((entry, out, recipients)) => {
                    next = seq;
                    planned.push((j, seq, entry, out, recipients));
                }
                Err(e) => answers[j] = Some(Err(e)),
            }
        }
        let p = part.p;
        let token = part.open().token;
        let mut pending = Vec::with_capacity(planned.len());
        for (j, seq, entry, _, _) in &planned {
            let Ok(payload) = envelope::encode(entry) else { break };
            let id = log_ids
                .get(*j)
                .copied()
                .flatten()
                .map_or_else(|| h.msg_id(), str::to_owned);
            match h.log.append(p, sends[*j].biz, &id, seq - 1, token, payload).await {
                Ok(ack) => pending.push(ack),
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "log append failed");
                    break;
                }
            }
        }
        let mut pending = pending.into_iter();
        let mut failed = false;
        // The stored entries' deliveries, in log order, go out together:
        // one bus message per node (split at its size limit), numbered.
        let mut all = Deliveries::default();
        let mut counts: Vec<Result<u32, RouterError>> = sends.iter().map(|_| Ok(0)).collect();
        let mut stored_sends = Vec::new();
        for (j, seq, _, out, recipients) in planned {
            let stored = match (failed, pending.next()) {
                (false, Some(ack)) => match ack.await {
                    Ok(a) if a.duplicate => {
                        // Asked again: stored (and dispatched, or healed
                        // from the log) by the first attempt. Answered,
                        // not delivered twice; the rest of the batch
                        // expected this entry and fails.
                        failed = true;
                        answers[j] = Some(Ok(recipients));
                        continue;
                    }
                    Ok(a) if a.seq == seq => true,
                    Ok(a) => {
                        tracing::error!(
                            partition = p,
                            expected = seq,
                            got = a.seq,
                            "log entry stored out of place"
                        );
                        false
                    }
                    Err(e) => {
                        tracing::warn!(partition = p, error = %e, "log append failed");
                        false
                    }
                },
                _ => false,
            };
            if !stored {
                failed = true;
                answers[j] = Some(Err(RouterError::Log(switchboard_log::LogError::Unavailable(
                    "the log did not store the entry".into(),
                ))));
                continue;
            }
            part.open().last = seq;
            all.absorb(out, j);
            counts[j] = Ok(recipients);
            stored_sends.push(j);
        }
        if !stored_sends.is_empty() {
            let p = part.p;
            let open = part.open();
            all.number(|node| open.order(p, node));
            self.hand_over(all, &mut counts).await;
            let mut counts: Vec<Option<Result<u32, RouterError>>> = counts.into_iter().map(Some).collect();
            for j in stored_sends {
                answers[j] = counts[j].take();
            }
        }
        if failed {
            self.reopen(h, part).await;
        }
        answers
    }

    /// A send planned as the entry at `seq`: the entry, its deliveries and
    /// how many connections it reaches (a unicast to a client offline for
    /// less than `history.ttl` reaches none and is stored).
    async fn plan_entry(&self, send: &Outbound<'_>, seq: u64) -> Result<(LogEntry, Deliveries, u32), RouterError> {
        let frame = render(send, Some(seq));
        let mut out = Deliveries::default();
        let recipients = match self.plan(send, 0, &mut out, &frame, Some(seq)).await {
            Ok(n) => n,
            Err(RouterError::Offline) => {
                let SendTarget::Client(target) = send.target else {
                    return Err(RouterError::Offline);
                };
                if !self.recently_offline(send.biz, target).await? {
                    return Err(RouterError::Offline);
                }
                0
            }
            Err(e) => return Err(e),
        };
        let to = match send.target {
            SendTarget::Client(c) => EntryTo::Client(c.clone()),
            SendTarget::Group(g) => EntryTo::Group(g.clone()),
            SendTarget::Biz => EntryTo::Biz,
        };
        let entry = LogEntry {
            to,
            sender: send.origin.map(|_| send.from.to_owned()),
            frame,
        };
        Ok((entry, out, recipients))
    }

    /// Hands a stored entry's deliveries to the bus, numbered per node
    /// (cluster), still under the partition's lock: log order.
    async fn dispatch(
        &self,
        part: &mut Locked<'_>,
        mut out: Deliveries,
        recipients: Result<u32, RouterError>,
    ) -> Result<u32, RouterError> {
        let p = part.p;
        let open = part.open();
        out.number(|node| open.order(p, node));
        let mut reply = [recipients];
        self.hand_over(out, &mut reply).await;
        let [reply] = reply;
        reply
    }

    /// Appends `entry`, which must land at `seq`, with `Nats-Msg-Id`
    /// `log_id` (a fresh one if `None`).
    async fn append(
        &self,
        h: &History,
        part: &mut Locked<'_>,
        biz: &str,
        entry: &LogEntry,
        seq: u64,
        log_id: Option<&str>,
    ) -> Result<Appended, RouterError> {
        let payload =
            envelope::encode(entry).map_err(|e| RouterError::Log(switchboard_log::LogError::Invalid(e.to_string())))?;
        let p = part.p;
        let token = part.open().token;
        let id = log_id.map_or_else(|| h.msg_id(), str::to_owned);
        let pending = h.log.append(p, biz, &id, seq - 1, token, payload).await;
        let stored = match pending {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match stored {
            Ok(a) if a.duplicate => Ok(Appended::Again),
            Ok(a) if a.seq == seq => {
                part.open().last = seq;
                Ok(Appended::Here)
            }
            Ok(a) => {
                // Another writer: this process is meant to be the only one.
                tracing::error!(
                    partition = p,
                    expected = seq,
                    got = a.seq,
                    "log entry stored out of place"
                );
                self.reopen(h, part).await;
                Err(RouterError::Log(switchboard_log::LogError::WrongLastSequence {
                    last: Some(a.seq),
                }))
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "log append failed");
                self.reopen(h, part).await;
                Err(e.into())
            }
        }
    }

    /// After a failed append: re-reads the position (standalone), or
    /// checks the fence and gives the partition up if a newer owner fenced
    /// it (cluster).
    async fn reopen(&self, h: &History, part: &mut Locked<'_>) {
        let p = part.p;
        let Some(token) = part.open().token else {
            part.guard.open = None;
            return;
        };
        let from = part.open().last;
        match h.log.tail(p, from, 10_000).await {
            Ok(tail) => {
                let fenced = tail
                    .iter()
                    .any(|e| matches!(e.kind, EntryKind::Fence { token: t, .. } if t > token));
                if fenced {
                    tracing::warn!(partition = p, token, "fenced out by a newer owner; partition given up");
                    part.guard.open = None;
                } else if let Some(last) = tail.last().map(|e| e.seq) {
                    // Stored although its append failed (a timeout): its
                    // deliveries never went out. Every node heals from the
                    // log (seam 3), which delivers it.
                    part.open().last = last;
                    tracing::warn!(
                        partition = p,
                        stored = tail.len(),
                        "entries stored by failed appends; nodes heal them"
                    );
                    self.declare_doubt(part).await;
                }
            }
            Err(e) => tracing::warn!(partition = p, error = %e, "cannot read the log's tail"),
        }
    }

    /// Makes every node this router knows doubt partition `part`: each
    /// gets a tick counting one more message than was sent, as if one had
    /// been lost, and heals its connections of the partition from the log.
    async fn declare_doubt(&self, part: &mut Locked<'_>) {
        let p = part.p;
        let known: Vec<Arc<str>> = self
            .inner
            .nodes
            .lock()
            .iter()
            .filter(|(_, n)| !n.dead)
            .map(|(id, _)| id.clone())
            .collect();
        let open = part.open();
        let Some(token) = open.token else { return };
        for node in known {
            open.sent.entry(node).or_insert((0, Instant::now()));
        }
        let ticks: Vec<(Arc<str>, u64)> = open
            .sent
            .iter_mut()
            .map(|(node, (n, at))| {
                *n += 1;
                *at = Instant::now();
                (node.clone(), *n)
            })
            .collect();
        for (node, n) in ticks {
            let _ = self.inner.edges.send(&node, tick(p, token, n)).await;
        }
    }

    /// `send_to_clients` of a history-on bizCode (see
    /// [`Router::route_logged`]): one entry addressed to the list.
    pub(super) async fn send_clients_logged(
        &self,
        biz: &str,
        clients: &[&str],
        from: &str,
        msg_id: &str,
        content: &str,
        ack: bool,
    ) -> Option<Result<u32, RouterError>> {
        let h = self.history()?;
        match h.lock(biz).await {
            Err(e) => Some(Err(e)),
            Ok(Lock::Mine(mut part)) => {
                self.clients_here(h, &mut part, biz, clients, from, msg_id, content, ack, None)
                    .await
            }
            Ok(Lock::Theirs(p)) => {
                match self.history_on(biz).await {
                    Ok(true) => {}
                    Ok(false) => return None,
                    Err(e) => return Some(Err(e)),
                }
                let req = PartRequest::Clients {
                    biz: biz.to_owned(),
                    clients: clients.iter().map(|c| (*c).to_owned()).collect(),
                    from: from.to_owned(),
                    msg_id: msg_id.to_owned(),
                    content: content.to_owned(),
                    log_id: Some(h.msg_id()),
                    ack,
                };
                Some(match h.ask(p, &req).await {
                    Ok(PartReply::Sent(replies)) => replies.first().map_or(Ok(0), from_reply),
                    Ok(_) => Err(unexpected()),
                    Err(e) => Err(e),
                })
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn clients_here(
        &self,
        h: &History,
        part: &mut Locked<'_>,
        biz: &str,
        clients: &[&str],
        from: &str,
        msg_id: &str,
        content: &str,
        ack: bool,
        log_id: Option<&str>,
    ) -> Option<Result<u32, RouterError>> {
        match self.settings_in(part.open(), biz).await {
            Ok(s) if !h.on(s) => return None,
            Ok(_) => {}
            Err(e) => return Some(Err(e)),
        }
        let seq = part.open().last + 1;
        let frame = super::route::render_clients(msg_id, from, content, ack, Some(seq));
        let (out, n) = match self.clients_by_node(biz, clients, &frame, Some(seq)).await {
            Ok(planned) => planned,
            Err(e) => return Some(Err(e)),
        };
        let entry = LogEntry {
            to: EntryTo::Clients(clients.iter().map(|c| (*c).to_owned()).collect()),
            sender: None,
            frame,
        };
        match self.append(h, part, biz, &entry, seq, log_id).await {
            Err(e) => Some(Err(e)),
            // Asked again: stored and dispatched by the first attempt.
            Ok(Appended::Again) => Some(Ok(n)),
            Ok(Appended::Here) => Some(self.dispatch(part, out, Ok(n)).await),
        }
    }

    /// Where a connection whose presence entry is `value` (at `revision`)
    /// joins its bizCode's log: its partition's writer indexes the entry
    /// under the partition's lock, so every entry planned before is at or
    /// below the answer and every later one is planned with the
    /// connection. Also how a bind or unbind reaches the writer's index
    /// before it is acknowledged. `None` with history off.
    ///
    /// # Errors
    /// If the log, the settings or the owner cannot be reached.
    pub(super) async fn join(&self, value: &PresenceValue, revision: u64) -> Result<Option<Joined>, RouterError> {
        let Some(h) = self.history() else {
            return Ok(None);
        };
        match h.lock(&value.biz).await? {
            Lock::Mine(mut part) => self.join_here(h, &mut part, value, revision).await,
            Lock::Theirs(p) => {
                if !self.history_on(&value.biz).await? {
                    return Ok(None);
                }
                let req = PartRequest::Join {
                    value: value.clone(),
                    revision,
                };
                match h.ask(p, &req).await? {
                    PartReply::Joined(j) => Ok(j),
                    _ => Err(unexpected()),
                }
            }
        }
    }

    async fn join_here(
        &self,
        h: &History,
        part: &mut Locked<'_>,
        value: &PresenceValue,
        revision: u64,
    ) -> Result<Option<Joined>, RouterError> {
        // Between two planned entries (a no-op when this router indexed
        // the same revision already, or a newer one).
        self.index_put(value, revision);
        let p = part.p;
        let open = part.open();
        let (created_ns, last, token) = (open.created_ns, open.last, open.token.unwrap_or(0));
        let s = self.settings_in(open, &value.biz).await?.clone();
        if !h.on(&s) {
            return Ok(None);
        }
        let removed = h.log.low_water(p, &value.biz).await?;
        Ok(Some(Joined {
            epoch: format!("{created_ns:x}-{}-{}", s.epoch_salt, s.generation),
            seq: last,
            low_water: removed.max(s.low_water),
            partition: p,
            token,
        }))
    }

    /// Whether a client that is not online left less than `history.ttl`
    /// ago (its unicasts are then stored for its recovery).
    pub(super) async fn recently_offline(&self, biz: &str, client: &str) -> Result<bool, RouterError> {
        let Some(h) = self.history() else {
            return Ok(false);
        };
        let ttl = u64::try_from(h.config.ttl.as_millis()).unwrap_or(u64::MAX);
        let Some((m, _)) = self.inner.members.get(&presence_key(biz, client)).await? else {
            return Ok(false);
        };
        // A record not yet stamped belongs to a client that was online
        // moments ago (the stamp follows the departure).
        Ok(m.offline_since.is_none_or(|since| now_ms().saturating_sub(since) < ttl))
    }

    /// Turns history on or off for `biz` (`register`'s `history`), which
    /// changes its epoch when the switch changes what is logged.
    ///
    /// # Errors
    /// [`RouterError::HistoryOff`] when this process keeps no history;
    /// store, log and owner failures.
    pub async fn set_history(&self, biz: &str, on: bool) -> Result<(), RouterError> {
        let h = self.history().ok_or(RouterError::HistoryOff)?;
        h.switches.lock().remove(biz);
        match h.lock(biz).await? {
            Lock::Mine(mut part) => self.set_history_here(h, &mut part, biz, on).await,
            Lock::Theirs(p) => {
                let req = PartRequest::SetHistory {
                    biz: biz.to_owned(),
                    on,
                };
                h.ask(p, &req).await.map(|_| ())
            }
        }
    }

    async fn set_history_here(
        &self,
        h: &History,
        part: &mut Locked<'_>,
        biz: &str,
        on: bool,
    ) -> Result<(), RouterError> {
        let default = h.config.enabled;
        self.change_settings(part.open(), biz, |s| {
            if s.history.unwrap_or(default) != on {
                s.generation += 1;
            }
            s.history = Some(on);
        })
        .await?;
        Ok(())
    }

    /// Empties `biz`'s log (`delete_history`); its epoch changes, so no
    /// client recovers across the deletion. Answers the new epoch and the
    /// log head.
    ///
    /// # Errors
    /// [`RouterError::HistoryOff`] for a bizCode with history off; store,
    /// log and owner failures.
    pub async fn delete_history(&self, biz: &str) -> Result<(String, u64), RouterError> {
        let h = self.history().ok_or(RouterError::HistoryOff)?;
        match h.lock(biz).await? {
            Lock::Mine(mut part) => self.delete_history_here(h, &mut part, biz).await,
            Lock::Theirs(p) => match h.ask(p, &PartRequest::DeleteHistory { biz: biz.to_owned() }).await? {
                PartReply::Done { epoch, seq } => Ok((epoch, seq)),
                _ => Err(unexpected()),
            },
        }
    }

    async fn delete_history_here(
        &self,
        h: &History,
        part: &mut Locked<'_>,
        biz: &str,
    ) -> Result<(String, u64), RouterError> {
        let p = part.p;
        let s = self.settings_in(part.open(), biz).await?;
        if !h.on(s) {
            return Err(RouterError::HistoryOff);
        }
        let last = part.open().last;
        h.log.purge(p, biz, last).await?;
        let open = part.open();
        let s = self
            .change_settings(open, biz, |s| {
                s.generation += 1;
                s.low_water = s.low_water.max(last);
            })
            .await?;
        Ok((History::epoch(open, &s), last))
    }

    /// What `biz`'s log holds for a client, a group or the whole bizCode
    /// (`get_history`). Any router answers it (a read).
    ///
    /// # Errors
    /// [`RouterError::HistoryOff`] for a bizCode with history off; store
    /// and log failures.
    pub async fn get_history(&self, biz: &str, q: &HistoryQuery) -> Result<HistoryPage, RouterError> {
        let h = self.history().ok_or(RouterError::HistoryOff)?;
        let (p, epoch, last) = match h.lock(biz).await? {
            Lock::Mine(mut part) => {
                let p = part.p;
                let s = self.settings_in(part.open(), biz).await?.clone();
                if !h.on(&s) {
                    return Err(RouterError::HistoryOff);
                }
                let open = part.open();
                (p, History::epoch(open, &s), open.last)
            }
            Lock::Theirs(p) => {
                let s = self.load_settings(biz).await?;
                if !h.on(&s) {
                    return Err(RouterError::HistoryOff);
                }
                let b = h.log.ensure(p).await?;
                let open = Open::new(b.created_ns, b.last, None);
                (p, History::epoch(&open, &s), b.last)
            }
        };
        let groups = match &q.client {
            Some(c) => Some(self.groups_of(biz, c).await?),
            None => None,
        };
        let wanted = |e: &LogEntry| match (&q.client, &q.group) {
            (Some(c), _) => e.addressed_to(c, |g| groups.as_ref().is_some_and(|gs| gs.contains(g))),
            (None, Some(g)) => matches!(&e.to, EntryTo::Group(eg) if eg == g),
            (None, None) => true,
        };
        let limit = q.limit.clamp(1, MAX_HISTORY_LIMIT);
        let mut list = VecDeque::with_capacity(limit.min(64));
        let mut entries = h.log.read_range(p, Some(biz), q.since.unwrap_or(0), last).await?;
        while let Some(stored) = entries.next().await {
            let stored = stored?;
            if !matches!(stored.kind, EntryKind::Entry { .. }) {
                continue;
            }
            let Ok(entry) = envelope::decode::<LogEntry>(&stored.payload) else {
                tracing::warn!(partition = p, seq = stored.seq, "undecodable log entry skipped");
                continue;
            };
            if !wanted(&entry) {
                continue;
            }
            if list.len() == limit {
                if q.since.is_some() {
                    break;
                }
                list.pop_front();
            }
            list.push_back(entry.frame);
        }
        Ok(HistoryPage {
            epoch,
            seq: last,
            list: list.into(),
        })
    }

    /// The groups a client is in for `get_history`: its live connection's,
    /// or its bound groups while it is offline.
    async fn groups_of(&self, biz: &str, client: &str) -> Result<HashSet<String>, RouterError> {
        if let Some(e) = self.inner.index.lock().get(biz, client) {
            return Ok(e.groups.iter().map(ToString::to_string).collect());
        }
        let record = self.inner.members.get(&presence_key(biz, client)).await?;
        Ok(record.map(|(m, _)| m.bound.into_iter().collect()).unwrap_or_default())
    }

    /// Answers a request forwarded to partition `p`'s owner: this router,
    /// or [`PartReply::NotOwner`] if it no longer owns `p`.
    pub async fn serve_partition(&self, p: u32, req: PartRequest) -> PartReply {
        let Some(h) = self.history() else {
            return PartReply::NotOwner;
        };
        let biz = match &req {
            PartRequest::Sends(sends) => match sends.first() {
                Some(s) => s.biz.clone(),
                None => return PartReply::Sent(Vec::new()),
            },
            PartRequest::Clients { biz, .. }
            | PartRequest::SetHistory { biz, .. }
            | PartRequest::DeleteHistory { biz } => biz.clone(),
            PartRequest::Join { value, .. } => value.biz.clone(),
        };
        if partition_of(&biz, h.config.partitions) != p {
            return PartReply::Failed(switchboard_protocol::ErrorCode::InvalidFrame.as_u16());
        }
        let mut part = match h.lock(&biz).await {
            Ok(Lock::Mine(part)) => part,
            Ok(Lock::Theirs(_)) => return PartReply::NotOwner,
            Err(e) => return PartReply::Failed(e.code().as_u16()),
        };
        let failed = |e: RouterError| PartReply::Failed(e.code().as_u16());
        match req {
            PartRequest::Sends(sends) => {
                let bad = |s: &LoggedSend| s.biz != biz && partition_of(&s.biz, h.config.partitions) != p;
                if sends.iter().any(bad) {
                    return PartReply::Failed(switchboard_protocol::ErrorCode::InvalidFrame.as_u16());
                }
                let ids: Vec<Option<&str>> = sends.iter().map(|s| s.log_id.as_deref()).collect();
                let sends: Vec<Outbound<'_>> = sends.iter().map(outbound).collect();
                let group: Vec<&Outbound<'_>> = sends.iter().collect();
                let got = self.logged_batch_here(h, &mut part, &group, &ids).await;
                let mut replies = Vec::with_capacity(sends.len());
                for (send, answer) in sends.iter().zip(got) {
                    let result = match answer {
                        Some(r) => r,
                        // History turned off meanwhile: routed as ever.
                        None => self.route_direct(send).await,
                    };
                    replies.push(send_reply(Some(result)));
                }
                PartReply::Sent(replies)
            }
            PartRequest::Clients {
                biz,
                clients,
                from,
                msg_id,
                content,
                ack,
                log_id,
            } => {
                let clients: Vec<&str> = clients.iter().map(String::as_str).collect();
                let result = self
                    .clients_here(
                        h,
                        &mut part,
                        &biz,
                        &clients,
                        &from,
                        &msg_id,
                        &content,
                        ack,
                        log_id.as_deref(),
                    )
                    .await;
                PartReply::Sent(vec![send_reply(result)])
            }
            PartRequest::Join { value, revision } => match self.join_here(h, &mut part, &value, revision).await {
                Ok(j) => PartReply::Joined(j),
                Err(e) => failed(e),
            },
            PartRequest::SetHistory { biz, on } => match self.set_history_here(h, &mut part, &biz, on).await {
                Ok(()) => PartReply::Done {
                    epoch: String::new(),
                    seq: part.open().last,
                },
                Err(e) => failed(e),
            },
            PartRequest::DeleteHistory { biz } => match self.delete_history_here(h, &mut part, &biz).await {
                Ok((epoch, seq)) => PartReply::Done { epoch, seq },
                Err(e) => failed(e),
            },
        }
    }

    /// This router owns partition `p` from now on, fenced at `token`: its
    /// log position is read, and every node this router knows gets a tick
    /// with the new token, so an edge that missed the previous owner's
    /// last messages finds out (seam 3).
    ///
    /// # Errors
    /// If the log cannot be read (the partition stays unowned here).
    pub async fn acquire(&self, p: u32, token: u64) -> Result<(), RouterError> {
        let Some(h) = self.history() else {
            return Ok(());
        };
        let mut guard = h.part(p)?.lock().await;
        let b = h.log.bounds(p).await?;
        let mut open = Open::new(b.created_ns, b.last.max(token), Some(token));
        let nodes: Vec<Arc<str>> = self
            .inner
            .nodes
            .lock()
            .iter()
            .filter(|(_, n)| !n.dead)
            .map(|(id, _)| id.clone())
            .collect();
        for node in nodes {
            open.sent.insert(node.clone(), (0, Instant::now()));
            let _ = self.inner.edges.send(&node, tick(p, token, 0)).await;
        }
        guard.open = Some(open);
        tracing::info!(partition = p, token, last = b.last, "partition acquired");
        Ok(())
    }

    /// This router no longer owns partition `p`.
    pub async fn release(&self, p: u32) {
        let Some(h) = self.history() else {
            return;
        };
        if let Ok(part) = h.part(p) {
            part.lock().await.open = None;
            tracing::info!(partition = p, "partition released");
        }
    }

    /// Sends a tick to every node a partition's owner sent messages to and
    /// then nothing for a second, every half second, until `shutdown`.
    pub fn spawn_ticks(&self, shutdown: tokio_util::sync::CancellationToken) {
        let router = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK_AFTER / 2);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = every.tick() => {}
                }
                router.tick_idle_nodes().await;
            }
        });
    }

    async fn tick_idle_nodes(&self) {
        let Some(h) = self.history() else {
            return;
        };
        for (p, part) in (0u32..).zip(h.parts.iter()) {
            let mut guard = part.lock().await;
            let Some(open) = guard.open.as_mut() else { continue };
            let Some(token) = open.token else { continue };
            let due: Vec<(Arc<str>, u64)> = open
                .sent
                .iter_mut()
                .filter(|(_, (_, at))| at.elapsed() >= TICK_AFTER)
                .map(|(node, (n, at))| {
                    *at = Instant::now();
                    (node.clone(), *n)
                })
                .collect();
            for (node, n) in due {
                let _ = self.inner.edges.send(&node, tick(p, token, n)).await;
            }
        }
    }
}

/// A tick: a Deliver to nobody that says how many messages partition `p`'s
/// owner (at `token`) sent the node so far.
fn tick(p: u32, token: u64, n: u64) -> NodeCommand {
    NodeCommand::Deliver {
        mode: 0,
        to: DeliverTo::Conns(Vec::new()),
        frame: Bytes::new(),
        seq: None,
        order: Some(Order {
            partition: p,
            token,
            n,
            tick: true,
        }),
    }
}

/// An answer that does not fit the question (a bug or a newer peer).
fn unexpected() -> RouterError {
    RouterError::Forwarded(switchboard_protocol::ErrorCode::Internal.as_u16())
}

/// Whether [`Router::append`] stored the entry or found it stored by an
/// earlier attempt with the same `Nats-Msg-Id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Appended {
    Here,
    Again,
}

/// A send as forwarded to its partition's owner, stored under `log_id`.
fn logged_send(send: &Outbound<'_>, log_id: String) -> LoggedSend {
    LoggedSend {
        log_id: Some(log_id),
        origin: send.origin.map(|o| (o.node.to_owned(), o.conn)),
        biz: send.biz.to_owned(),
        from: send.from.to_owned(),
        msg_id: send.msg_id.map(str::to_owned),
        target: send.target.clone(),
        content: send.content.to_owned(),
        ack: send.ack,
    }
}

/// A forwarded send, as the core routes it.
fn outbound(s: &LoggedSend) -> Outbound<'_> {
    Outbound {
        origin: s.origin.as_ref().map(|(node, conn)| Origin { node, conn: *conn }),
        biz: &s.biz,
        from: &s.from,
        msg_id: s.msg_id.as_deref(),
        target: &s.target,
        content: &s.content,
        ack: s.ack,
    }
}

/// The Deliver of a logged entry to some connections of one node.
pub(super) fn deliver_conns(conns: Vec<u64>, frame: &Bytes, seq: Option<u64>) -> NodeCommand {
    NodeCommand::Deliver {
        mode: frame::MODE_UNICAST,
        to: DeliverTo::Conns(conns),
        frame: frame.clone(),
        seq,
        order: None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use switchboard_log::{partition_of, HistoryConfig, MemoryLog};
    use switchboard_protocol::envelope::{LoggedSend, NodeCommand, PartReply, PartRequest};
    use switchboard_protocol::frame::SendTarget;
    use switchboard_runtime::metrics::Metrics;

    use super::History;
    use crate::config::RouterConfig;
    use crate::core::testing::{info, Nodes};
    use crate::core::Router;
    use crate::store::{MemoryMembers, MemoryRegistry, MemoryStore};

    fn deliveries(nodes: &Nodes) -> usize {
        fn count(cmd: &NodeCommand) -> usize {
            match cmd {
                NodeCommand::Deliver { .. } => 1,
                NodeCommand::Batch(cmds) => cmds.iter().map(count).sum(),
                _ => 0,
            }
        }
        nodes.sent.lock().iter().map(|(_, c)| count(c)).sum()
    }

    /// Issue 13: a forwarded send whose first answer was lost (or beaten by
    /// a stale subscriber's "not the owner") is asked again; the owner must
    /// store and deliver it once, and answer both.
    #[tokio::test]
    async fn a_forwarded_send_asked_again_is_stored_and_delivered_once() {
        let config = HistoryConfig::default();
        let log = Arc::new(MemoryLog::new(config.log_config(), 1 << 20));
        let history = Arc::new(History::new(log, config.clone(), "r1"));
        let nodes = Arc::new(Nodes::default());
        let router = Router::new(
            RouterConfig::default(),
            Arc::new(MemoryStore::default()),
            Arc::new(MemoryRegistry::default()),
            Arc::new(MemoryMembers::default()),
            nodes.clone(),
            Some(history),
            Arc::new(Metrics::new()),
        );
        router.connect(info("n2", 7, "x")).await.expect("connect");
        nodes.sent.lock().clear();
        let send = |log_id: &str| LoggedSend {
            origin: Some(("n1".into(), 1)),
            biz: "b".into(),
            from: "a".into(),
            msg_id: Some("m1".into()),
            target: SendTarget::Client("x".into()),
            content: "1".into(),
            log_id: Some(log_id.into()),
            ack: false,
        };
        let p = partition_of("b", config.partitions);
        for _ in 0..3 {
            let reply = router.serve_partition(p, PartRequest::Sends(vec![send("r2.1")])).await;
            assert!(
                matches!(&reply, PartReply::Sent(r) if r.len() == 1 && r[0].code == 0 && r[0].recipients == 1),
                "{reply:?}"
            );
        }
        assert_eq!(deliveries(&nodes), 1, "asked three times, delivered once");
        let reply = router.serve_partition(p, PartRequest::Sends(vec![send("r2.2")])).await;
        assert!(matches!(&reply, PartReply::Sent(r) if r.len() == 1), "{reply:?}");
        assert_eq!(deliveries(&nodes), 2, "another send is delivered");
    }
}
