//! The edge's local registry: connection id → connection, and the indexes a
//! delivery needs: (bizCode, group) → members and bizCode → connections.
//!
//! All operations are synchronous and short; nothing awaits under the lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use switchboard_protocol::envelope::{ConnInfo, DeliverTo};
use switchboard_protocol::CloseCode;

use crate::outbox::{Outbox, Pushed};

/// [`Conn::phase`]: presence is being registered.
const REGISTERING: u32 = 0;
/// [`Conn::phase`]: welcomed, deliveries reach it.
const ACTIVE: u32 = 1;
/// [`Conn::phase`] flag: a close (the low 16 bits) waits for the welcome.
const CLOSE_PENDING: u32 = 1 << 16;

/// A heal's `through` that means up to the log's head, read when the range is.
pub const HEAD: u64 = u64::MAX;

/// One client connection on this node.
#[derive(Debug)]
pub struct Conn {
    /// Unique within the node.
    pub id: u64,
    /// bizCode.
    pub biz: Arc<str>,
    /// clientId.
    pub client: Arc<str>,
    /// Groups, kept for resync and bind/unbind.
    groups: Mutex<Vec<Arc<str>>>,
    /// Frames waiting for the writer.
    pub outbox: Outbox,
    /// Coarse clock second of the last frame from the client (idle timeout).
    last_seen: AtomicU64,
    /// [`REGISTERING`] until presence is written and the welcome queued
    /// (deliveries before that are skipped so the welcome stays the first
    /// frame), then [`ACTIVE`]; [`CLOSE_PENDING`] | code when a close arrived
    /// while registering (see [`Conn::close_after_welcome`]).
    phase: AtomicU32,
    /// Token expiry, seconds since the epoch (0: none); closed with 4001 then.
    pub expires_at: u64,
    /// The groups the token allows sending to (`None`: any).
    pub send_groups: Option<Box<[String]>>,
    /// Logged deliveries (history on, SPEC §7): the highest `seq` queued,
    /// and those held back until the welcome and any replay are out.
    log: Mutex<LogState>,
    /// Delivery receipts (mode 4) delivered to this connection so far: its
    /// reader frees that many of its sends with `"ack":true` in flight
    /// (`edge.max_acks_in_flight`).
    pub receipts: AtomicU32,
}

/// Where a connection stands in its bizCode's log.
#[derive(Debug)]
struct LogState {
    /// The highest `seq` queued to the client (or skipped: at or below
    /// the welcome's `seq`); a delivery at or below it is a duplicate.
    last: u64,
    /// The history partition and owner token it joined under (history
    /// on): a lost message from that partition's owner, or a newer owner,
    /// heals it from the log ([`crate::order`]).
    joined: Option<(u32, u64)>,
    /// Logged deliveries are held (from the connection's start until
    /// [`Conn::release_held`] is done), not queued.
    holding: bool,
    /// The hold is a resync's ([`Conn::hold_for_resync`]).
    for_resync: bool,
    /// A heal owed once the hold is released ([`Conn::hold_or_owe`]): the
    /// range above the position up to this `seq` ([`HEAD`]: the log's
    /// head) is read first; 0 when none is owed.
    owed_through: u64,
    /// What is held, made on the first held delivery.
    held: Option<Box<Held>>,
}

/// Logged deliveries held back: the merge buffer of `docs/recovery.md`.
#[derive(Debug, Default)]
struct Held {
    frames: Vec<(u64, Bytes)>,
    bytes: usize,
    /// The highest `seq` dropped because the buffer was full: the range up
    /// to it is read from the log again instead.
    dropped_through: u64,
}

/// What [`Conn::hold_or_owe`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// It holds its deliveries now, for the caller's heal.
    Now,
    /// It was held already; the heal is owed at its release.
    Owed,
}

/// What [`Conn::offer_logged`] did with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Queued, as [`Pushed`] says.
    Pushed(Pushed),
    /// Held until the welcome and replay are out.
    Held,
    /// At or below what the connection already has.
    Duplicate,
}

/// What [`Conn::release_held`] asks of its caller next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Held deliveries to queue in order (paced); then ask again.
    Frames(Vec<(u64, Bytes)>),
    /// Read `(after, through]` from the log for this connection and queue
    /// it, then ask again: the buffer overflowed, or a heal is owed
    /// ([`Conn::hold_or_owe`]).
    Reread {
        /// The connection's position.
        after: u64,
        /// The highest `seq` dropped, or the owed heal's end ([`HEAD`]: the
        /// log's head, read when the range is).
        through: u64,
        /// An owed heal: it scans at most what a recovery may.
        owed: bool,
    },
    /// Nothing is held any more: logged deliveries are queued directly.
    Done,
}

impl Conn {
    /// A new, not yet active connection.
    pub fn new(id: u64, biz: &str, client: &str, groups: &[String], now: u64) -> Self {
        Self::with_token(id, biz, client, groups, now, 0, None)
    }

    /// A new connection admitted with a token expiring at `expires_at`.
    pub fn with_token(
        id: u64,
        biz: &str,
        client: &str,
        groups: &[String],
        now: u64,
        expires_at: u64,
        send_groups: Option<Box<[String]>>,
    ) -> Self {
        Self {
            expires_at,
            send_groups,
            id,
            biz: biz.into(),
            client: client.into(),
            groups: Mutex::new(groups.iter().map(|g| Arc::from(g.as_str())).collect()),
            outbox: Outbox::default(),
            last_seen: AtomicU64::new(now),
            phase: AtomicU32::new(REGISTERING),
            receipts: AtomicU32::new(0),
            log: Mutex::new(LogState {
                last: 0,
                joined: None,
                holding: true,
                for_resync: false,
                owed_through: 0,
                held: None,
            }),
        }
    }

    /// Sets the connection's log position (the welcome's `seq`): logged
    /// deliveries at or below it are duplicates.
    pub fn set_log_position(&self, seq: u64) {
        self.log.lock().last = seq;
    }

    /// Records the history partition and owner token it joined under.
    pub fn set_joined(&self, partition: u32, token: u64) {
        self.log.lock().joined = Some((partition, token));
    }

    /// The history partition and owner token it joined under, if any.
    pub fn joined(&self) -> Option<(u32, u64)> {
        self.log.lock().joined
    }

    /// The connection's log position: the highest `seq` it has.
    pub fn log_position(&self) -> u64 {
        self.log.lock().last
    }

    /// A live logged delivery at `seq` (framed): queued once, in `seq`
    /// order, or held while the welcome and any replay are not out yet
    /// (the held buffer is bounded by `limit`, like the send queue).
    pub fn offer_logged(&self, seq: u64, frame: &Bytes, limit: usize) -> Offered {
        let mut st = self.log.lock();
        if seq <= st.last {
            return Offered::Duplicate;
        }
        if st.holding {
            let held = st.held.get_or_insert_with(Box::default);
            if held.bytes + frame.len() > limit {
                // Dropped, with everything held before it: the range is
                // read from the log again on release.
                held.dropped_through = held.dropped_through.max(seq);
                held.frames.clear();
                held.bytes = 0;
            } else {
                held.bytes += frame.len();
                held.frames.push((seq, frame.clone()));
            }
            return Offered::Held;
        }
        st.last = seq;
        Offered::Pushed(self.outbox.enqueue(frame.clone(), limit))
    }

    /// A replayed entry at `seq` (framed): queued unless the connection
    /// already has it. Paced by the caller ([`Outbox::room`]).
    pub fn push_replayed(&self, seq: u64, frame: Bytes, limit: usize) -> Option<Pushed> {
        let mut st = self.log.lock();
        if seq <= st.last {
            return None;
        }
        st.last = seq;
        Some(self.outbox.push_text(frame, limit))
    }

    /// [`Conn::hold`] for a resync that may have to heal it: a doubt that
    /// finds it held this way leaves it to that heal
    /// ([`Conn::held_for_resync`]).
    pub fn hold_for_resync(&self) -> bool {
        let mut st = self.log.lock();
        if st.holding {
            return false;
        }
        st.holding = true;
        st.for_resync = true;
        true
    }

    /// For a heal through `through` ([`HEAD`]: up to the log's head):
    /// starts holding its logged deliveries ([`Hold::Now`]: the caller
    /// heals it, then releases it), or, if it holds them already (it is
    /// registering, replaying or healing), owes the heal ([`Hold::Owed`]):
    /// the release that ends the current hold reads the range first
    /// ([`Release::Reread`]), so it is healed in place, not closed.
    pub fn hold_or_owe(&self, through: u64) -> Hold {
        let mut st = self.log.lock();
        if st.holding {
            st.owed_through = st.owed_through.max(through);
            return Hold::Owed;
        }
        st.holding = true;
        Hold::Now
    }

    /// Whether it holds its deliveries for a resync's heal.
    pub fn held_for_resync(&self) -> bool {
        let st = self.log.lock();
        st.holding && st.for_resync
    }

    /// The next step of releasing what was held: frames to queue, a range
    /// to read again, or done (logged deliveries then go straight out).
    pub fn release_held(&self) -> Release {
        let mut st = self.log.lock();
        let last = st.last;
        let owed = std::mem::take(&mut st.owed_through);
        if owed > last {
            return Release::Reread {
                after: last,
                through: owed,
                owed: true,
            };
        }
        let Some(held) = st.held.as_mut() else {
            st.holding = false;
            st.for_resync = false;
            return Release::Done;
        };
        if held.dropped_through > last {
            let through = std::mem::take(&mut held.dropped_through);
            return Release::Reread {
                after: last,
                through,
                owed: false,
            };
        }
        if held.frames.is_empty() {
            st.held = None;
            st.holding = false;
            st.for_resync = false;
            return Release::Done;
        }
        held.bytes = 0;
        Release::Frames(std::mem::take(&mut held.frames))
    }

    /// Queues the welcome and makes the connection eligible for deliveries;
    /// a close that arrived while registering is queued right after it.
    ///
    /// The welcome is queued, then the connection made active, and only then
    /// written: once the client can read its welcome (and act on it, e.g.
    /// make a peer leave), every delivery already reaches it. Deliveries in
    /// between queue behind the welcome.
    pub fn activate(&self, welcome: Bytes, limit: usize) {
        self.outbox.enqueue(welcome, limit);
        let before = self.phase.swap(ACTIVE, Ordering::AcqRel);
        if before & CLOSE_PENDING != 0 {
            // Only `close_after_welcome` writes the low bits, from a
            // `CloseCode`, so the number is always one of ours.
            let code = CloseCode::from_u16((before & 0xFFFF) as u16).unwrap_or(CloseCode::GoingAway);
            self.outbox.close(code);
        }
        self.outbox.flush();
    }

    /// Whether deliveries reach it.
    pub fn is_active(&self) -> bool {
        self.phase.load(Ordering::Acquire) == ACTIVE
    }

    /// Closes with `code`, but never before the welcome (SPEC §2: the welcome
    /// is always the first frame): a close that arrives while presence is
    /// being registered — a newer connection with the same clientId
    /// replacing this one (4009) in a same-id race, `close_client` — waits
    /// for [`activate`](Self::activate). If registration fails instead, the
    /// connection closes with 1013 and the pending close is moot. Returns
    /// false if a close was already pending or queued.
    pub fn close_after_welcome(&self, code: CloseCode) -> bool {
        match self.phase.compare_exchange(
            REGISTERING,
            CLOSE_PENDING | u32::from(code.as_u16()),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => true,
            Err(phase) if phase & CLOSE_PENDING != 0 => false,
            Err(_) => self.outbox.close(code),
        }
    }

    /// Records a frame from the client at coarse second `now`.
    pub fn touch(&self, now: u64) {
        self.last_seen.store(now, Ordering::Relaxed);
    }

    /// Coarse second of the last frame from the client.
    pub fn last_seen(&self) -> u64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    /// Current groups.
    pub fn groups(&self) -> Vec<String> {
        self.groups.lock().iter().map(|g| g.to_string()).collect()
    }

    /// Whether the connection is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.lock().iter().any(|g| **g == *group)
    }

    /// This connection as presence info for `node`.
    pub fn info(&self, node: &str) -> ConnInfo {
        ConnInfo {
            node: node.to_owned(),
            conn: self.id,
            biz: self.biz.to_string(),
            client: self.client.to_string(),
            groups: self.groups(),
        }
    }
}

#[derive(Debug, Default)]
struct Biz {
    conns: HashMap<u64, Arc<Conn>>,
    groups: HashMap<Arc<str>, HashMap<u64, Arc<Conn>>>,
}

#[derive(Debug, Default)]
struct Inner {
    conns: HashMap<u64, Arc<Conn>>,
    bizs: HashMap<Arc<str>, Biz>,
}

/// Result of a delivery.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Frames queued.
    pub queued: u64,
    /// Connections that overflowed and are now closing (4008).
    pub overflowed: u64,
}

/// Connections with frames queued by a delivery and not yet flushed.
#[derive(Debug, Default)]
pub struct Dirty(Vec<Arc<Conn>>);

impl Dirty {
    /// Writes what was queued, one `writev` per connection.
    pub fn flush(&mut self) {
        for c in self.0.drain(..) {
            c.outbox.flush();
        }
    }
}

/// The local registry.
#[derive(Debug, Default)]
pub struct Registry {
    inner: RwLock<Inner>,
}

impl Registry {
    /// Adds a connection (not yet active).
    pub fn insert(&self, conn: Arc<Conn>) {
        let mut inner = self.inner.write();
        let biz = inner.bizs.entry(conn.biz.clone()).or_default();
        biz.conns.insert(conn.id, conn.clone());
        for g in conn.groups.lock().iter() {
            biz.groups.entry(g.clone()).or_default().insert(conn.id, conn.clone());
        }
        inner.conns.insert(conn.id, conn);
    }

    /// Removes a connection; returns it if it was there.
    pub fn remove(&self, id: u64) -> Option<Arc<Conn>> {
        let mut inner = self.inner.write();
        let conn = inner.conns.remove(&id)?;
        if let Some(biz) = inner.bizs.get_mut(&conn.biz) {
            biz.conns.remove(&id);
            for g in conn.groups.lock().iter() {
                if let Some(members) = biz.groups.get_mut(g) {
                    members.remove(&id);
                    if members.is_empty() {
                        biz.groups.remove(g);
                    }
                }
            }
            if biz.conns.is_empty() {
                inner.bizs.remove(&conn.biz);
            }
        }
        Some(conn)
    }

    /// A connection by id.
    pub fn get(&self, id: u64) -> Option<Arc<Conn>> {
        self.inner.read().conns.get(&id).cloned()
    }

    /// Number of connections.
    pub fn len(&self) -> usize {
        self.inner.read().conns.len()
    }

    /// Whether there are no connections.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All connections (for resync, sweeps and drain).
    pub fn all(&self) -> Vec<Arc<Conn>> {
        self.inner.read().conns.values().cloned().collect()
    }

    /// Calls `f` for every connection under the read lock (no allocation;
    /// `f` must be quick and must not touch the registry).
    pub fn for_each(&self, mut f: impl FnMut(&Conn)) {
        for c in self.inner.read().conns.values() {
            f(c);
        }
    }

    /// Calls `f` on every connection, shared (under the read lock: `f`
    /// must not touch the registry).
    pub fn for_each_arc(&self, mut f: impl FnMut(&Arc<Conn>)) {
        for c in self.inner.read().conns.values() {
            f(c);
        }
    }

    /// Adds a connection to a group. False if the connection is unknown.
    pub fn bind(&self, id: u64, group: &str) -> bool {
        let mut inner = self.inner.write();
        let Some(conn) = inner.conns.get(&id).cloned() else {
            return false;
        };
        let g: Arc<str> = group.into();
        {
            let mut groups = conn.groups.lock();
            if groups.iter().any(|x| **x == *group) {
                return true;
            }
            groups.push(g.clone());
        }
        let biz = inner.bizs.entry(conn.biz.clone()).or_default();
        biz.groups.entry(g).or_default().insert(id, conn);
        true
    }

    /// Removes a connection from a group. False if the connection is unknown.
    pub fn unbind(&self, id: u64, group: &str) -> bool {
        let mut inner = self.inner.write();
        let Some(conn) = inner.conns.get(&id).cloned() else {
            return false;
        };
        conn.groups.lock().retain(|x| **x != *group);
        if let Some(biz) = inner.bizs.get_mut(&conn.biz) {
            if let Some(members) = biz.groups.get_mut(group) {
                members.remove(&id);
                if members.is_empty() {
                    biz.groups.remove(group);
                }
            }
        }
        true
    }

    /// Queues the framed message `frame` for every active recipient named
    /// by `to`; connections whose queue was empty are added to `dirty`,
    /// which the caller flushes (after this delivery, or after a batch).
    /// A logged delivery (`seq`) reaches each connection once, in `seq`
    /// order, and is held for one that is registering or replaying.
    pub fn deliver(
        &self,
        to: &DeliverTo,
        frame: &Bytes,
        seq: Option<u64>,
        limit: usize,
        dirty: &mut Dirty,
    ) -> Delivered {
        let mut d = Delivered::default();
        let mut push = |c: &Arc<Conn>| {
            let pushed = match seq {
                Some(seq) => match c.offer_logged(seq, frame, limit) {
                    Offered::Pushed(p) => p,
                    Offered::Held | Offered::Duplicate => return,
                },
                None if c.is_active() => c.outbox.enqueue(frame.clone(), limit),
                None => return,
            };
            match pushed {
                Pushed::Queued { first } => {
                    d.queued += 1;
                    if first {
                        dirty.0.push(c.clone());
                    }
                }
                Pushed::Overflow => d.overflowed += 1,
                Pushed::Closed => {}
            }
        };
        let inner = self.inner.read();
        match to {
            DeliverTo::Conns(ids) => {
                for id in ids {
                    if let Some(c) = inner.conns.get(id) {
                        push(c);
                    }
                }
            }
            DeliverTo::Group { biz, group, exclude } => {
                if let Some(members) = inner.bizs.get(biz.as_str()).and_then(|b| b.groups.get(group.as_str())) {
                    for c in members.values() {
                        if Some(c.id) != *exclude {
                            push(c);
                        }
                    }
                }
            }
            DeliverTo::Biz { biz, exclude } => {
                if let Some(b) = inner.bizs.get(biz.as_str()) {
                    for c in b.conns.values() {
                        if Some(c.id) != *exclude {
                            push(c);
                        }
                    }
                }
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Out;

    fn conn(reg: &Registry, id: u64, biz: &str, groups: &[&str]) -> Arc<Conn> {
        let groups: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
        let c = Arc::new(Conn::new(id, biz, &format!("c{id}"), &groups, 0));
        reg.insert(c.clone());
        c.activate(Bytes::from_static(b"welcome"), 1 << 20);
        c.outbox.take();
        c
    }

    fn got(c: &Conn) -> usize {
        c.outbox
            .take()
            .map_or(0, |q| q.iter().filter(|o| matches!(o, Out::Frame(_))).count())
    }

    #[test]
    fn resolves_groups_and_bizcodes_with_exclusion() {
        let reg = Registry::default();
        let c1 = conn(&reg, 1, "d1", &["g1"]);
        let c2 = conn(&reg, 2, "d1", &["g2"]);
        let c3 = conn(&reg, 3, "d1", &["g1", "g2"]);
        let c5 = conn(&reg, 5, "d2", &["g1"]);
        let f = Bytes::from_static(b"x");
        let to = DeliverTo::Group {
            biz: "d1".into(),
            group: "g1".into(),
            exclude: Some(1),
        };
        assert_eq!(reg.deliver(&to, &f, None, 1 << 20, &mut Dirty::default()).queued, 1);
        assert_eq!((got(&c1), got(&c2), got(&c3), got(&c5)), (0, 0, 1, 0));
        let to = DeliverTo::Biz {
            biz: "d1".into(),
            exclude: Some(1),
        };
        assert_eq!(reg.deliver(&to, &f, None, 1 << 20, &mut Dirty::default()).queued, 2);
        assert_eq!((got(&c1), got(&c2), got(&c3), got(&c5)), (0, 1, 1, 0));
        assert_eq!(
            reg.deliver(&DeliverTo::Conns(vec![5, 99]), &f, None, 1 << 20, &mut Dirty::default())
                .queued,
            1
        );
        assert_eq!(got(&c5), 1);
    }

    #[test]
    fn bind_unbind_and_remove_keep_indexes_clean() {
        let reg = Registry::default();
        let c1 = conn(&reg, 1, "d1", &[]);
        assert!(reg.bind(1, "g9"));
        assert!(!reg.bind(42, "g9"));
        let to = DeliverTo::Group {
            biz: "d1".into(),
            group: "g9".into(),
            exclude: None,
        };
        let f = Bytes::from_static(b"x");
        assert_eq!(reg.deliver(&to, &f, None, 1 << 20, &mut Dirty::default()).queued, 1);
        assert_eq!(got(&c1), 1);
        assert!(reg.unbind(1, "g9"));
        assert_eq!(reg.deliver(&to, &f, None, 1 << 20, &mut Dirty::default()).queued, 0);
        assert!(reg.remove(1).is_some());
        assert!(reg.is_empty());
        assert!(reg.inner.read().bizs.is_empty());
    }

    #[test]
    fn inactive_connections_get_nothing() {
        let reg = Registry::default();
        let c = Arc::new(Conn::new(1, "d1", "c1", &[], 0));
        reg.insert(c.clone());
        let to = DeliverTo::Biz {
            biz: "d1".into(),
            exclude: None,
        };
        assert_eq!(
            reg.deliver(&to, &Bytes::from_static(b"x"), None, 1 << 20, &mut Dirty::default())
                .queued,
            0
        );
    }

    #[test]
    fn a_heal_owed_while_held_is_read_first_when_the_hold_is_released() {
        let c = Conn::new(1, "d1", "c1", &[], 0);
        c.set_log_position(10);
        c.activate(Bytes::from_static(b"welcome"), 1 << 20);
        // Registering: it holds already, so a heal is owed, not started.
        assert_eq!(c.offer_logged(12, &Bytes::from_static(b"12"), 1 << 20), Offered::Held);
        assert_eq!(c.hold_or_owe(15), Hold::Owed);
        assert_eq!(c.hold_or_owe(14), Hold::Owed, "the further end is kept");
        assert_eq!(
            c.release_held(),
            Release::Reread {
                after: 10,
                through: 15,
                owed: true
            }
        );
        // The range was read (and pushed the position); then what it held.
        assert!(c.push_replayed(13, Bytes::from_static(b"13"), 1 << 20).is_some());
        assert_eq!(c.release_held(), Release::Frames(vec![(12, Bytes::from_static(b"12"))]));
        assert_eq!(c.release_held(), Release::Done);
        // Released: the next doubt holds it for its own heal.
        assert_eq!(c.hold_or_owe(HEAD), Hold::Now);
        assert_eq!(c.hold_or_owe(HEAD), Hold::Owed);
        assert_eq!(
            c.release_held(),
            Release::Reread {
                after: 13,
                through: HEAD,
                owed: true
            }
        );
        assert_eq!(c.release_held(), Release::Done);
        // A heal owed below the position reads nothing.
        assert_eq!(c.hold_or_owe(5), Hold::Now);
        assert_eq!(c.hold_or_owe(5), Hold::Owed);
        assert_eq!(c.release_held(), Release::Done);
    }

    #[test]
    fn a_close_while_registering_comes_after_the_welcome() {
        let c = Conn::new(1, "d1", "c1", &[], 0);
        assert!(c.close_after_welcome(CloseCode::Replaced));
        assert!(!c.close_after_welcome(CloseCode::ClosedByApi), "one close only");
        assert!(c.outbox.take().is_none(), "nothing before the welcome");
        c.activate(Bytes::from_static(b"welcome"), 1 << 20);
        let q: Vec<_> = c.outbox.take().expect("queued").into_iter().collect();
        assert_eq!(
            q,
            vec![
                Out::Frame(Bytes::from_static(b"welcome")),
                Out::Close(CloseCode::Replaced)
            ]
        );
        // Once active, a close is queued at once.
        let c = Conn::new(2, "d1", "c2", &[], 0);
        c.activate(Bytes::from_static(b"w"), 1 << 20);
        assert!(c.close_after_welcome(CloseCode::ClosedByApi));
        assert_eq!(c.outbox.take().map(|q| q.len()), Some(2));
    }
}

#[cfg(test)]
mod size {
    use super::*;

    /// Issue 12's budget: history may grow an idle connection by at most
    /// 256 bytes. What it added to every connection is its log state (the
    /// held buffer exists only while a connection registers or heals).
    #[test]
    fn the_log_state_of_an_idle_connection_fits_the_budget() {
        let added = std::mem::size_of::<Mutex<LogState>>();
        assert!(added <= 64, "{added} bytes");
        eprintln!(
            "log state per connection: {added} bytes; Conn: {} bytes",
            std::mem::size_of::<Conn>()
        );
    }
}
