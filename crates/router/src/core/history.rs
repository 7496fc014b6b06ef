//! History (SPEC §7) where one process is the only writer of every
//! partition (`standalone`; `docs/recovery.md`, "Standalone"): a send of a
//! history-on bizCode is planned, appended to its partition's log and
//! dispatched under the partition's lock, so dispatch order is log order
//! (seam 1); a connection joins between two planned entries, under the same
//! lock (seam 2); and dispatch is a direct call that cannot be lost
//! (seam 3).
//!
//! Here: the partitions' state (their log position, the cached settings of
//! their bizCodes, whose changes are applied under the lock too), logged
//! sends, joins, `get_history` and `delete_history`, and the history
//! switch of `register`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use switchboard_log::{partition_of, EntryKind, HistoryConfig, PartitionLog};
use switchboard_protocol::envelope::{self, DeliverTo, EntryTo, Joined, LogEntry, NodeCommand};
use switchboard_protocol::frame::{self, SendTarget};
use switchboard_protocol::subject::presence_key;
use switchboard_runtime::now_ms;
use tokio::sync::{Mutex, MutexGuard};

use super::route::Deliveries;
use super::{Router, CAS_ATTEMPTS};
use crate::error::RouterError;
use crate::outbound::Outbound;
use crate::store::{BizSettings, StoreError};

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
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").field("config", &self.config).finish_non_exhaustive()
    }
}

/// One partition, under its lock.
#[derive(Default)]
struct Part {
    /// `None` until the partition's log is opened.
    open: Option<Open>,
}

/// An opened partition.
struct Open {
    /// When the log was created (part of every epoch).
    created_ns: u64,
    /// The highest stored `seq`.
    last: u64,
    /// Settings of the partition's bizCodes, as this writer last wrote or
    /// read them.
    settings: HashMap<String, BizSettings>,
}

/// A partition opened, under its lock.
struct Locked<'a> {
    p: u32,
    guard: MutexGuard<'a, Part>,
}

impl Locked<'_> {
    fn open(&mut self) -> &mut Open {
        // `History::lock` opens the partition before it hands this out.
        self.guard.open.get_or_insert_with(|| Open {
            created_ns: 0,
            last: 0,
            settings: HashMap::new(),
        })
    }
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
    /// History over `log` with `config`; `id_prefix` makes this process's
    /// `Nats-Msg-Id`s unique (its node id).
    pub fn new(log: Arc<dyn PartitionLog>, config: HistoryConfig, id_prefix: &str) -> Self {
        let parts = (0..config.partitions.max(1)).map(|_| Mutex::new(Part::default())).collect();
        Self {
            log,
            config,
            parts,
            next_id: AtomicU64::new(0),
            id_prefix: format!("{id_prefix}.{:x}", rand::random::<u32>()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HistoryConfig {
        &self.config
    }

    /// The log (edges read it for replay).
    pub fn log(&self) -> Arc<dyn PartitionLog> {
        self.log.clone()
    }

    /// Locks `biz`'s partition, opening its log first if needed.
    async fn lock(&self, biz: &str) -> Result<Locked<'_>, RouterError> {
        let p = partition_of(biz, self.config.partitions);
        let part = self
            .parts
            .get(p as usize)
            .ok_or_else(|| RouterError::Log(switchboard_log::LogError::Invalid(format!("partition {p}"))))?;
        let mut guard = part.lock().await;
        if guard.open.is_none() {
            let b = self.log.ensure(p).await?;
            guard.open = Some(Open {
                created_ns: b.created_ns,
                last: b.last,
                settings: HashMap::new(),
            });
        }
        Ok(Locked { p, guard })
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
}

impl Router {
    fn history(&self) -> Option<&History> {
        self.inner.history.as_deref()
    }

    /// `biz`'s settings, cached in its locked partition (read, or created,
    /// on first use).
    async fn settings_in<'a>(&self, open: &'a mut Open, biz: &str) -> Result<&'a mut BizSettings, RouterError> {
        if !open.settings.contains_key(biz) {
            let s = self.load_settings(biz).await?;
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

    /// Whether `biz` has history on (a logged send, a recorded departure).
    ///
    /// # Errors
    /// If the log or the settings cannot be read.
    pub(super) async fn history_on(&self, biz: &str) -> Result<bool, RouterError> {
        let Some(h) = self.history() else {
            return Ok(false);
        };
        let mut part = h.lock(biz).await?;
        let s = self.settings_in(part.open(), biz).await?;
        Ok(h.on(s))
    }

    /// Routes a send of a history-on bizCode: planned, appended and
    /// dispatched under its partition's lock. `None` when the bizCode has
    /// history off (the caller routes it as ever).
    pub(super) async fn route_logged(&self, send: &Outbound<'_>) -> Option<Result<u32, RouterError>> {
        let h = self.history()?;
        let mut part = match h.lock(send.biz).await {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        match self.settings_in(part.open(), send.biz).await {
            Ok(s) if !h.on(s) => return None,
            Ok(_) => {}
            Err(e) => return Some(Err(e)),
        }
        Some(self.append_and_dispatch(h, &mut part, send).await)
    }

    async fn append_and_dispatch(
        &self,
        h: &History,
        part: &mut Locked<'_>,
        send: &Outbound<'_>,
    ) -> Result<u32, RouterError> {
        let expected = part.open().last;
        let seq = expected + 1;
        let frame = Bytes::from(frame::logged_delivery(
            send.target,
            send.msg_id,
            send.from,
            send.content,
            now_ms(),
            Some(seq),
        ));
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
        self.append(h, part, send.biz, &entry, seq).await?;
        let mut reply = [Ok(recipients)];
        self.hand_over(out, &mut reply).await;
        let [reply] = reply;
        reply
    }

    /// Appends `entry`, which must land at `seq`.
    async fn append(
        &self,
        h: &History,
        part: &mut Locked<'_>,
        biz: &str,
        entry: &LogEntry,
        seq: u64,
    ) -> Result<(), RouterError> {
        let payload = envelope::encode(entry)
            .map_err(|e| RouterError::Log(switchboard_log::LogError::Invalid(e.to_string())))?;
        let p = part.p;
        let pending = h.log.append(p, biz, &h.msg_id(), seq - 1, None, payload).await;
        let stored = match pending {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match stored {
            Ok(a) if a.seq == seq => {
                part.open().last = seq;
                Ok(())
            }
            Ok(a) => {
                // Another writer: this process is meant to be the only one.
                tracing::error!(partition = p, expected = seq, got = a.seq, "log entry stored out of place");
                part.guard.open = None;
                Err(RouterError::Log(switchboard_log::LogError::WrongLastSequence { last: Some(a.seq) }))
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "log append failed");
                // Re-read the position before the next append.
                part.guard.open = None;
                Err(e.into())
            }
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
    ) -> Option<Result<u32, RouterError>> {
        let h = self.history()?;
        let mut part = match h.lock(biz).await {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        match self.settings_in(part.open(), biz).await {
            Ok(s) if !h.on(s) => return None,
            Ok(_) => {}
            Err(e) => return Some(Err(e)),
        }
        let seq = part.open().last + 1;
        let target = SendTarget::Client(String::new());
        let frame = Bytes::from(frame::logged_delivery(
            &target,
            Some(msg_id),
            from,
            content,
            now_ms(),
            Some(seq),
        ));
        let (out, n) = match self.clients_by_node(biz, clients, &frame, Some(seq)).await {
            Ok(planned) => planned,
            Err(e) => return Some(Err(e)),
        };
        let entry = LogEntry {
            to: EntryTo::Clients(clients.iter().map(|c| (*c).to_owned()).collect()),
            sender: None,
            frame,
        };
        if let Err(e) = self.append(h, &mut part, biz, &entry, seq).await {
            return Some(Err(e));
        }
        let mut reply = [Ok(n)];
        self.hand_over(out, &mut reply).await;
        let [reply] = reply;
        Some(reply)
    }

    /// Where a connection that just entered presence (and the index) joins
    /// its bizCode's log: taken under the partition's lock, so every entry
    /// planned before it is at or below the answer and every later one was
    /// planned with the connection in the index. `None` with history off.
    pub(super) async fn join(&self, biz: &str) -> Result<Option<Joined>, RouterError> {
        let Some(h) = self.history() else {
            return Ok(None);
        };
        let mut part = h.lock(biz).await?;
        let p = part.p;
        let open = part.open();
        let (created_ns, last) = (open.created_ns, open.last);
        let s = self.settings_in(open, biz).await?.clone();
        if !h.on(&s) {
            return Ok(None);
        }
        let removed = h.log.low_water(p, biz).await?;
        Ok(Some(Joined {
            epoch: format!("{created_ns:x}-{}-{}", s.epoch_salt, s.generation),
            seq: last,
            low_water: removed.max(s.low_water),
            partition: p,
        }))
    }

    /// Whether a client that is not online left less than `history.ttl`
    /// ago (its unicasts are then stored for its recovery).
    async fn recently_offline(&self, biz: &str, client: &str) -> Result<bool, RouterError> {
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
    /// store and log failures.
    pub async fn set_history(&self, biz: &str, on: bool) -> Result<(), RouterError> {
        let h = self.history().ok_or(RouterError::HistoryOff)?;
        let mut part = h.lock(biz).await?;
        let default = h.config.enabled;
        let open = part.open();
        self.change_settings(open, biz, |s| {
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
    /// [`RouterError::HistoryOff`] for a bizCode with history off; store
    /// and log failures.
    pub async fn delete_history(&self, biz: &str) -> Result<(String, u64), RouterError> {
        let h = self.history().ok_or(RouterError::HistoryOff)?;
        let mut part = h.lock(biz).await?;
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
    /// (`get_history`).
    ///
    /// # Errors
    /// [`RouterError::HistoryOff`] for a bizCode with history off; store
    /// and log failures.
    pub async fn get_history(&self, biz: &str, q: &HistoryQuery) -> Result<HistoryPage, RouterError> {
        let h = self.history().ok_or(RouterError::HistoryOff)?;
        let (p, epoch, last) = {
            let mut part = h.lock(biz).await?;
            let p = part.p;
            let s = self.settings_in(part.open(), biz).await?.clone();
            if !h.on(&s) {
                return Err(RouterError::HistoryOff);
            }
            let open = part.open();
            (p, History::epoch(open, &s), open.last)
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
}

/// The Deliver of a logged entry to some connections of one node.
pub(super) fn deliver_conns(conns: Vec<u64>, frame: &Bytes, seq: Option<u64>) -> NodeCommand {
    NodeCommand::Deliver {
        mode: frame::MODE_UNICAST,
        to: DeliverTo::Conns(conns),
        frame: frame.clone(),
        seq,
    }
}
