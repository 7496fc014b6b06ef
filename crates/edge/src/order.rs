//! Seam 3 of `docs/recovery.md`: a delivery from a history partition's
//! owner to this edge is a core-NATS publish, at most once. Every such
//! message carries an [`Order`]: the owner's fencing token and its number
//! among those the owner sent this node, and an owner that has sent a node
//! nothing for a second sends a tick with its count. A loss shows up as a
//! gap in the numbers, a tick counting more than arrived, or a newer
//! owner (whose predecessor's last messages may be lost).
//!
//! What is in doubt is healed in place ([`crate::recovery::heal`]): the
//! connections concerned hold their live deliveries, read what is
//! addressed to them above their position from the log, then release what
//! they held; nothing twice (per-connection `seq`), no gap. On a gap or a
//! tick, every connection of the partition is healed up to the log's head;
//! on a newer owner, those that joined under an older one, up to the new
//! owner's fence. A connection holding already (still registering,
//! replaying or healing) owes the heal, read when that hold is released. A
//! connection that cannot be healed in place (its socket is full, the range
//! is too long, the log cannot be read) is closed with 1012 (SPEC §2:
//! reconnect) and recovers. Messages of an
//! older owner that arrive after a newer one was heard are dropped (their
//! entries are in the log).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use switchboard_protocol::envelope::Order;
use switchboard_protocol::CloseCode;

use crate::edge::EdgeInner;
use crate::recovery;
use crate::registry::{Conn, Hold, HEAD};

/// How long [`EdgeInner::hold_everything`] waits for a connection that is
/// held already.
const HOLD_PATIENCE: Duration = Duration::from_secs(2);

/// Which connections of a partition a doubt concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Doubt {
    /// Every one, up to the log's head: a message of the current owner
    /// was lost.
    All,
    /// Those that joined under an owner older than this token, up to the
    /// entry before its fence.
    JoinedBefore(u64),
}

impl EdgeInner {
    /// Checks a message's place; false when it comes from an owner older
    /// than one already heard (drop it).
    pub(crate) fn check_order(self: &Arc<Self>, o: Order) -> bool {
        let mut doubt = None;
        {
            let mut orders = self.orders().lock();
            let (token, received) = orders.entry(o.partition).or_insert((0, 0));
            if o.token < *token {
                return false;
            }
            if o.token > *token {
                doubt = Some(Doubt::JoinedBefore(o.token));
                *token = o.token;
                *received = 0;
            }
            let lost = if o.tick { o.n > *received } else { o.n != *received + 1 };
            if lost {
                doubt = Some(Doubt::All);
            }
            *received = (*received).max(o.n);
        }
        if let Some(d) = doubt {
            self.doubt(o.partition, o.token, d);
        }
        true
    }

    /// The newer owner's token when a connection that joined partition `p`
    /// under owner `token` is already behind a newer owner this edge heard
    /// from (it would never learn of a loss before that owner): then it is
    /// healed from the log before anything live reaches it.
    pub(crate) fn joined_stale(&self, p: u32, token: u64) -> Option<u64> {
        if token == 0 {
            return None;
        }
        self.orders().lock().get(&p).map(|(t, _)| *t).filter(|t| *t > token)
    }

    /// Heals the connections of partition `p` that `d` names (the owner's
    /// token is now `token`).
    fn doubt(self: &Arc<Self>, p: u32, token: u64, d: Doubt) {
        let through = match d {
            Doubt::All => HEAD,
            Doubt::JoinedBefore(t) => t.saturating_sub(1),
        };
        let mut heal = Vec::new();
        let mut owed = 0usize;
        self.registry().for_each_arc(|c| {
            let Some((cp, joined)) = c.joined() else { return };
            let hit = cp == p
                && match d {
                    Doubt::All => true,
                    Doubt::JoinedBefore(t) => joined < t,
                };
            if !hit {
                return;
            }
            // It joined under an older owner: from now on it is this one's.
            c.set_joined(p, joined.max(token));
            if c.held_for_resync() && self.resync_hold().doubted() {
                // The resync's heal, still to come, reads up to the head.
                return;
            }
            match c.hold_or_owe(through) {
                Hold::Now => heal.push(c.clone()),
                // Registering, replaying or healing: healed when that
                // hold is released.
                Hold::Owed => owed += 1,
            }
        });
        if owed > 0 {
            self.metrics().heals.inc_by(owed as u64);
            tracing::info!(
                partition = p,
                ?d,
                connections = owed,
                "a delivery from the partition's owner may be lost; healing from the log once their hold is released"
            );
        }
        if heal.is_empty() {
            return;
        }
        tracing::info!(
            partition = p,
            ?d,
            connections = heal.len(),
            "a delivery from the partition's owner may be lost; healing from the log"
        );
        tokio::spawn(recovery::heal(self.clone(), p, heal, through));
    }

    /// Holds the live deliveries of every connection with history, by
    /// partition, for a heal after a resync ([`Self::heal_held`]). A
    /// connection held already (registering, replaying, or healing after
    /// a gap or an earlier resync) is tried again for up to
    /// [`HOLD_PATIENCE`], then closed with 1012 to recover.
    ///
    /// Why hold first: when this node was purged while alive, sends to its
    /// connections were stored and not delivered. Once the resync puts them
    /// back in presence, live deliveries flow again and would move each
    /// connection's position past the stored ones; held, they wait, and
    /// the heal reads everything above the position from the log.
    pub(crate) async fn hold_everything(&self) -> HashMap<u32, Vec<Arc<Conn>>> {
        let mut by_partition: HashMap<u32, Vec<Arc<Conn>>> = HashMap::new();
        let mut busy = Vec::new();
        self.registry().for_each_arc(|c| {
            if c.joined().is_some() {
                busy.push(c.clone());
            }
        });
        let deadline = tokio::time::Instant::now() + HOLD_PATIENCE;
        loop {
            busy.retain(|c| match c.joined() {
                Some((p, _)) if c.hold_for_resync() => {
                    by_partition.entry(p).or_default().push(c.clone());
                    false
                }
                Some(_) => !c.outbox.is_closing(),
                None => false,
            });
            if busy.is_empty() || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let closed = busy.iter().filter(|c| c.outbox.close(CloseCode::Draining)).count();
        if closed > 0 {
            tracing::info!(
                closed,
                "connections still busy after the hold's patience closed to recover (1012)"
            );
            self.metrics().recovery_closes.inc_by(closed as u64);
        }
        by_partition
    }

    /// Heals what [`Self::hold_everything`] held, up to each partition's
    /// head, once the resync re-asserted presence: routers may have taken
    /// these connections out of presence meanwhile (a purge while alive),
    /// so sends to them were stored and not delivered.
    pub(crate) fn heal_held(self: &Arc<Self>, held: HashMap<u32, Vec<Arc<Conn>>>) {
        for (p, conns) in held {
            tracing::info!(
                partition = p,
                connections = conns.len(),
                "presence re-asserted; healing from the log what was stored meanwhile"
            );
            tokio::spawn(recovery::heal(self.clone(), p, conns, HEAD));
        }
    }

    /// Releases what [`Self::hold_everything`] held without reading the
    /// log: the resync found every entry still there, so nothing was
    /// stored for these connections that was not delivered.
    pub(crate) fn release_held_all(self: &Arc<Self>, held: HashMap<u32, Vec<Arc<Conn>>>) {
        for (p, conns) in held {
            recovery::release_all(self, p, conns);
        }
    }
}
